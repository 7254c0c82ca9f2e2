//! The tiny_http listener and the pool of handler threads that answer its requests.
//!
//! Each `http-N` thread takes a request from tiny_http, reads its body, calls [`api::handle`]
//! (under `catch_unwind`, so a panic costs one 500, not a thread) and writes the reply. This is
//! the only module that touches tiny_http's request and response types.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use tiny_http::{Header, Request, Response, Server};

use super::api::{self, Reply};
use super::error::ApiError;
use super::telemetry;
use super::unstrand::Unstrander;
use crate::app::App;

/// How the HTTP layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Handler threads.
    pub threads: usize,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

/// The running HTTP side: tiny_http's accept thread and connection pool, our handler threads,
/// and the unstrander. [`HttpServer::stop`] joins what is ours.
pub struct HttpServer {
    server: Arc<Server>,
    handlers: Vec<JoinHandle<()>>,
    unstrander: Unstrander,
    addr: SocketAddr,
}

impl HttpServer {
    pub fn start(listener: TcpListener, app: Arc<App>, options: HttpOptions) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let server = Server::from_listener(listener, None).map_err(io::Error::other)?;
        let server = Arc::new(server);
        let handlers = (0..options.threads.max(1))
            .map(|n| {
                let (server, app) = (Arc::clone(&server), Arc::clone(&app));
                thread::Builder::new().name(format!("http-{n}")).spawn(move || {
                    while let Ok(request) = server.recv() {
                        serve(&app, request, options.max_body);
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let unstrander = Unstrander::start(addr)?;
        Ok(HttpServer { server, handlers, unstrander, addr })
    }

    /// The address the listener is bound to, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the requests already received, then joins the handler threads and closes the
    /// listener.
    pub fn stop(self) {
        self.unstrander.stop();
        // One unblock per handler: each is queued behind the requests already received.
        for _ in &self.handlers {
            self.server.unblock();
        }
        for handler in self.handlers {
            let _ = handler.join();
        }
    }
}

fn serve(app: &App, mut request: Request, max_body: usize) {
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    let started = Instant::now();
    let reply =
        panic::catch_unwind(AssertUnwindSafe(|| api::handle(app, &method, &url, || read_body(&mut request, max_body))))
            .unwrap_or_else(|_| Reply::error(&ApiError::Internal));
    // Handler time: writing the response depends on the client, so it is left out.
    telemetry::record(&method, &url, api::route_label(&url), reply.status, started.elapsed());
    respond(request, reply);
}

fn read_body(request: &mut Request, max_body: usize) -> Result<Vec<u8>, ApiError> {
    if request.body_length().is_some_and(|len| len > max_body) {
        return Err(ApiError::BodyTooLarge { limit: max_body });
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0));
    let limit = u64::try_from(max_body).unwrap_or(u64::MAX).saturating_add(1);
    request
        .as_reader()
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::InvalidJson(format!("the body could not be read ({e})")))?;
    if body.len() > max_body {
        return Err(ApiError::BodyTooLarge { limit: max_body });
    }
    Ok(body)
}

fn respond(request: Request, reply: Reply) {
    let mut response = Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type));
    if let Some(allow) = reply.allow {
        response.add_header(header("Allow", allow));
    }
    // The client may have gone; there is nobody left to tell.
    let _ = request.respond(response);
}

/// Builds a header from our own constant text, never from request data.
fn header(name: &'static str, value: &'static str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant headers are valid")
}
