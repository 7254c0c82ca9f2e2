//! Starts the real `ingestd` binary on an ephemeral port and talks to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
    /// Everything the server wrote to stderr, read as it comes so that the pipe never fills.
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// An answer: status code, `Content-Type`, `Allow`, and the body parsed as JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub allow: Option<String>,
    pub json: Value,
}

impl Server {
    /// Starts `ingestd --addr 127.0.0.1:0 ARGS` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(Command::new(env!("CARGO_BIN_EXE_ingestd")).arg("--addr").arg("127.0.0.1:0").args(args))
    }

    pub fn start_with(command: &mut Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start ingestd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read the listening line");
        let base =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let stderr = child.stderr.take().map(drain);
        Server { base: base.to_owned(), child, stderr }
    }

    /// Starts `ingestd --addr 127.0.0.1:0 ARGS` under a file-size limit of `kib` KiB, the way a
    /// full disk looks to the journal (bash's `ulimit -f` counts KiB).
    pub fn start_with_file_limit(kib: u32, args: &[&str]) -> Server {
        let mut command = Command::new("bash");
        let script = format!("ulimit -f {kib} && exec \"$0\" \"$@\"");
        command.args(["-c", &script, env!("CARGO_BIN_EXE_ingestd"), "--addr", "127.0.0.1:0"]).args(args);
        Server::start_with(&mut command)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /ingest` of `body` on `agent`'s own connections; returns the ingestion id.
    pub fn ingest_on(&self, agent: &ureq::Agent, body: Value) -> String {
        let answer: Value =
            agent.post(&format!("{}/ingest", self.base)).send_json(body).expect("an answer").into_json().unwrap();
        answer["ingestion_id"].as_str().unwrap_or_else(|| panic!("no ingestion_id in {answer}")).to_owned()
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        answer(ureq::post(&format!("{}{path}", self.base)).send_string(body))
    }

    pub fn ingest(&self, ids: &[u32], priority: &str) -> String {
        let answer = self.post("/ingest", &serde_json::json!({"ids": ids, "priority": priority}).to_string());
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json["ingestion_id"].as_str().expect("an ingestion_id").to_owned()
    }

    /// The value of an unlabelled `/metrics` sample.
    pub fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.base)).call().expect("metrics").into_string().expect("a body");
        let line = text.lines().find(|line| line.split(' ').next() == Some(name));
        line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    pub fn get(&self, path: &str) -> Answer {
        answer(ureq::get(&format!("{}{path}", self.base)).call())
    }

    pub fn request(&self, method: &str, path: &str) -> Answer {
        answer(ureq::request(method, &format!("{}{path}", self.base)).call())
    }

    pub fn status(&self, ingestion_id: &str) -> Value {
        let answer = self.get(&format!("/status/{ingestion_id}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json
    }

    /// Waits until the ingestion's status is `want`; its status then.
    #[track_caller]
    pub fn wait_status(&self, ingestion_id: &str, want: &str) -> Value {
        wait_for(&format!("ingestion {ingestion_id} to be {want}"), PATIENCE, || {
            let status = self.status(ingestion_id);
            (status["status"] == want).then_some(status)
        })
    }

    /// Ingests, then waits until the pacer has released its first batch. `submit` only wakes
    /// the pacer, so "released at once" is asynchronous to the answer; after this it is so.
    #[track_caller]
    pub fn ingest_released(&self, ids: &[u32], priority: &str) -> String {
        let id = self.ingest(ids, priority);
        wait_for(&format!("the first batch of {id} to be released"), PATIENCE, || {
            (self.status(&id)["batches"][0]["status"] != "yet_to_start").then_some(())
        });
        id
    }

    /// How many ingestions were ever accepted (`/dashboard.json` totals): a count that a
    /// release does not take back, unlike `/queue`'s `queued_ids`.
    pub fn ingestions(&self) -> u64 {
        let answer = self.get("/dashboard.json");
        answer.json["totals"]["ingestions"].as_u64().unwrap_or_else(|| panic!("no totals.ingestions: {answer:?}"))
    }

    /// Sends SIGTERM and waits for the exit; returns the status and everything on stderr.
    pub fn terminate(self) -> (ExitStatus, String) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        self.terminate_wait()
    }

    /// Waits for an exit already asked for; returns the status and everything on stderr.
    pub fn terminate_wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, self.stderr.take().unwrap().join().unwrap())
    }
}

impl Server {
    /// `kill -9`: no chance to save anything.
    pub fn crash(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr.take().unwrap().join().unwrap()
    }

    pub fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = ureq::post(&format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        answer(request.send_string(body))
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ingestd-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(mut stderr: ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    })
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let status = response.status();
    let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
    let allow = response.header("Allow").map(str::to_owned);
    let text = response.into_string().expect("a body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    Answer { status, content_type, allow, json }
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS").to_owned();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How many file descriptors process `pid` has open.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The statuses of an ingestion's batches, in request order.
pub fn batch_statuses(status: &Value) -> Vec<String> {
    status["batches"].as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap().to_owned()).collect()
}

/// How long to wait for a state before failing; never reached when passing.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Sends `bytes` on a new connection to `server` and reads until the server closes it; the
/// answers as text. Fails if the connection is still open after 10 s: every request sent
/// through here must end its connection (`Connection: close`, HTTP/1.0, or an error that
/// closes), so that an answer is never cut short by a quiet moment.
#[track_caller]
pub fn exchange(server: &Server, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.write_all(bytes).unwrap();
    read_to_close(&mut stream, Duration::from_secs(10))
        .unwrap_or_else(|seen| panic!("the connection stayed open 10 s after {seen:?}"))
}

/// Everything the server sends on `stream` until it closes (a reset counts as a close);
/// `Err` with what came so far if it is still open after `within`.
pub fn read_to_close(stream: &mut std::net::TcpStream, within: Duration) -> Result<String, String> {
    use std::io::ErrorKind;
    let deadline = Instant::now() + within;
    let (mut seen, mut buffer) = (Vec::new(), [0; 8192]);
    loop {
        let text = |seen: &[u8]| String::from_utf8_lossy(seen).into_owned();
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { return Err(text(&seen)) };
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(text(&seen)),
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(text(&seen)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(text(&seen)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A loopback port where nothing listens, and nothing else can listen while the returned
/// socket lives: it is bound but not listening, so a connection is refused. (A listener bound
/// then dropped frees the port for a parallel test's server.)
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as the API writes it
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`); panics on anything else.
#[track_caller]
pub fn rfc3339_ms(value: &Value) -> i64 {
    let text = value.as_str().unwrap_or_else(|| panic!("{value} is not a string"));
    let b = text.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "{text:?} is not RFC 3339 UTC with milliseconds");
    let num = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from the civil date (Hinnant), so times compare across midnight.
    let y = if m <= 2 { y - 1 } else { y };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + num(11..13)) * 60 + num(14..16)) * 60_000 + num(17..19) * 1000 + num(20..23)
}
