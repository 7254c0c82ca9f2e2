//! A scripted upstream for tests: a tiny_http server on 127.0.0.1:0 in a thread that answers
//! each request with the next [`Reply`] of its script (then 200s), and records every arrival:
//! when, method, path, headers, body and the client's address (the same address twice is one
//! kept-alive connection). Include with `#[path = "common/upstream.rs"] mod upstream;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the upstream answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, an empty body.
    Status(u16),
    /// This status and a text body.
    Body(u16, &'static str),
    /// This status and a body of this many bytes (more than a client reads with the head).
    Large(u16, usize),
    /// This status with `Retry-After: value`.
    RetryAfter(u16, String),
    /// Waits this long, then answers 200 (a stalled upstream, from the client's side).
    Stall(Duration),
    /// Answers 200 with a body of `chunks` × 2 KiB at once in its head, then sends one chunk
    /// every `every`: each read gets bytes soon, the whole call takes `chunks × every`.
    Drip { chunks: usize, every: Duration },
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub peer: Option<SocketAddr>,
}

impl Arrival {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    server: Arc<tiny_http::Server>,
    pub port: u16,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts answering with `script`, one reply per request in arrival order, then 200s.
    pub fn start(script: Vec<Reply>) -> Upstream {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the upstream"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, arrivals) = (Arc::clone(&server), Arc::clone(&arrivals));
            let mut script = VecDeque::from(script);
            std::thread::Builder::new()
                .name("scripted-upstream".into())
                .spawn(move || {
                    while let Ok(request) = server.recv() {
                        let reply = script.pop_front().unwrap_or(Reply::Status(200));
                        let request = record(request, &arrivals);
                        // Slow replies run on their own thread, so the next request still
                        // arrives (and is recorded) on time.
                        match reply {
                            Reply::Stall(_) | Reply::Drip { .. } => {
                                std::thread::spawn(move || answer(request, reply));
                            }
                            _ => answer(request, reply),
                        }
                    }
                })
                .expect("start the upstream thread")
        };
        Upstream { server, port, arrivals, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived, or panics after `timeout`.
    #[track_caller]
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.arrivals();
            if arrivals.len() >= n {
                return arrivals;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests arrived in {timeout:?}: {arrivals:#?}",
                arrivals.len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn record(mut request: tiny_http::Request, arrivals: &Mutex<Vec<Arrival>>) -> tiny_http::Request {
    let at = Instant::now();
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let arrival = Arrival {
        at,
        method: request.method().as_str().to_owned(),
        path: request.url().to_owned(),
        headers: request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_owned()))
            .collect(),
        body,
        peer: request.remote_addr().copied(),
    };
    arrivals.lock().unwrap().push(arrival);
    request
}

fn answer(request: tiny_http::Request, reply: Reply) {
    let empty = |status: u16| tiny_http::Response::from_string("").with_status_code(status);
    let _ = match reply {
        Reply::Status(status) => request.respond(empty(status)),
        Reply::Body(status, body) => request.respond(tiny_http::Response::from_string(body).with_status_code(status)),
        Reply::Large(status, size) => {
            request.respond(tiny_http::Response::from_data(vec![b'x'; size]).with_status_code(status))
        }
        Reply::RetryAfter(status, value) => {
            let header = tiny_http::Header::from_bytes("Retry-After", value.as_bytes()).expect("a header");
            request.respond(empty(status).with_header(header))
        }
        Reply::Stall(delay) => {
            std::thread::sleep(delay);
            request.respond(empty(200))
        }
        Reply::Drip { chunks, every } => {
            let length = chunks * CHUNK;
            let reader = Drip { left: length, every, first: true };
            // With a known length (and no chunked encoding, which tiny_http buffers in 8 KiB).
            let response = tiny_http::Response::new(200.into(), Vec::new(), reader, Some(length), None);
            request.respond(response.with_chunked_threshold(usize::MAX))
        }
    };
}

/// tiny_http buffers writes in 1 KiB; a read of 2 KiB goes to the socket at once.
const CHUNK: usize = 2048;

/// A body that comes one chunk per `every`.
struct Drip {
    left: usize,
    every: Duration,
    first: bool,
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if !std::mem::take(&mut self.first) {
            std::thread::sleep(self.every);
        }
        let n = CHUNK.min(buf.len()).min(self.left);
        buf[..n].fill(b'x');
        self.left -= n;
        Ok(n)
    }
}
