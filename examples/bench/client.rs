//! A minimal HTTP/1.1 keep-alive client: enough to post work, read answers exactly, and count
//! answers per connection (which wrk does not).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one request and reads its answer: (status, body).
    pub fn call(&mut self, method: &str, path: &str, body: &str) -> Option<(u16, Vec<u8>)> {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n", body.len());
        self.writer.write_all(head.as_bytes()).ok()?;
        self.writer.write_all(body.as_bytes()).ok()?;
        self.answer()
    }

    fn answer(&mut self) -> Option<(u16, Vec<u8>)> {
        let (mut status, mut length, mut line) = (None, 0, String::new());
        loop {
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if status.is_none() {
                status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            } else if line == "\r\n" {
                break;
            } else if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        Some((status?, body))
    }
}

/// A POST /ingest body with `ids` ids starting at `first`.
pub fn ingest_body(first: u32, ids: u32, priority: &str) -> String {
    let ids: Vec<String> = (first..first + ids).map(|id| id.to_string()).collect();
    format!(r#"{{"ids": [{}], "priority": "{priority}"}}"#, ids.join(", "))
}

/// Posts and returns the ingestion id.
pub fn ingest(conn: &mut Conn, body: &str) -> String {
    let (status, answer) = conn.call("POST", "/ingest", body).expect("an answer to POST /ingest");
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON answer");
    assert_eq!(status, 200, "POST /ingest answered {status}: {answer}");
    answer["ingestion_id"].as_str().expect("an ingestion_id").to_owned()
}

/// What a burst of new connections got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Burst {
    /// Connections that never got an answer.
    pub stranded: usize,
    /// Answers other than 200, and connections that broke.
    pub errors: usize,
    pub answers: usize,
    /// From the burst's start to each connection's first answer: the median and the slowest.
    pub first_answer_p50: Duration,
    pub first_answer_max: Duration,
}

/// `connections` new keep-alive connections at once, each alternating `GET status_path` and
/// `POST /ingest` for `window`, every answer counted per connection.
pub fn burst(addr: &str, connections: usize, window: Duration, status_path: &str) -> Burst {
    let start = Arc::new(Barrier::new(connections));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, start, path) = (addr.to_owned(), Arc::clone(&start), status_path.to_owned());
            thread::spawn(move || hammer(&addr, &start, window, &path))
        })
        .collect();
    let mut total = Burst::default();
    let mut firsts = Vec::new();
    for (answers, errors, first) in workers.into_iter().map(|w| w.join().expect("a burst thread")) {
        total.stranded += usize::from(answers == 0);
        total.answers += answers;
        total.errors += errors;
        firsts.extend(first);
    }
    firsts.sort();
    total.first_answer_p50 = firsts.get(firsts.len() / 2).copied().unwrap_or_default();
    total.first_answer_max = firsts.last().copied().unwrap_or_default();
    total
}

/// One connection of a burst: (answers, errors, how long its first answer took).
fn hammer(addr: &str, start: &Barrier, window: Duration, status_path: &str) -> (usize, usize, Option<Duration>) {
    start.wait();
    let began = Instant::now();
    let Ok(mut conn) = Conn::open(addr) else { return (0, 1, None) };
    let post = ingest_body(1, 5, "MEDIUM");
    let (mut answers, mut errors, mut first) = (0, 0, None);
    while began.elapsed() < window {
        let answer =
            if answers % 2 == 0 { conn.call("GET", status_path, "") } else { conn.call("POST", "/ingest", &post) };
        first.get_or_insert_with(|| began.elapsed());
        match answer {
            Some((200, _)) => answers += 1,
            Some(_) => (answers, errors) = (answers + 1, errors + 1),
            None => return (answers, errors + 1, first),
        }
    }
    (answers, errors, first)
}
