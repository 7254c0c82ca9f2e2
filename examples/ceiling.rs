//! The ceiling for `make bench`: the least a tiny_http server can do per request, on the same
//! tiny_http version and thread count as ingestd. Answers every GET with a fixed body of
//! `GET_BYTES` bytes and every other method with `POST_BYTES` bytes (the sizes of ingestd's real
//! answers), so any gap between the two is our own code. Its listener has ingestd's socket
//! options (`TCP_NODELAY`, copied by Linux to accepted sockets), so both write alike.
//!
//! Usage: `ceiling THREADS GET_BYTES POST_BYTES`; prints `listening on http://HOST:PORT`.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Method, Response, Server};

fn main() {
    let mut args =
        std::env::args().skip(1).map(|a| a.parse::<usize>().expect("usage: ceiling THREADS GET_BYTES POST_BYTES"));
    let (threads, get_bytes, post_bytes) =
        (args.next().unwrap_or(32), args.next().unwrap_or(64), args.next().unwrap_or(53));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    socket2::SockRef::from(&listener).set_tcp_nodelay(true).expect("set TCP_NODELAY");
    let server = Arc::new(Server::from_listener(listener, None).expect("serve on the listener"));
    let addr = server.server_addr().to_ip().expect("an IP listener");
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let server = Arc::clone(&server);
            thread::spawn(move || serve(&server, get_bytes, post_bytes))
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// Answers requests until the server goes away; bodies are JSON-shaped so headers match ours.
fn serve(server: &Server, get_bytes: usize, post_bytes: usize) {
    let content_type = Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    let (get_body, post_body) = (vec![b'x'; get_bytes], vec![b'x'; post_bytes]);
    while let Ok(request) = server.recv() {
        let body = if *request.method() == Method::Get { &get_body } else { &post_body };
        let response = Response::from_data(body.clone()).with_header(content_type.clone());
        let _ = request.respond(response);
    }
}
