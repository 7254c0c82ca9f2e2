//! The HTTP shell: translates requests into calls on [`crate::app::App`] and results into JSON.
//!
//! `server.rs` owns the listeners and threads, `api.rs` the routes, `ingest_body.rs` the request
//! body, `error.rs` the error codes, `budget.rs` the memory answers hold until written. Checks made before a route runs: `framing.rs` (ambiguous
//! framing; the connection that sent it is quarantined until it closes), `limits.rs` (sizes),
//! `cross_site.rs` (a browser sending a change for another site), `auth.rs` (the token). tiny_http workarounds: `compat/` (the relay in front of tiny_http:
//! unanswerable request lines, the idle timeout, each request's client connection, stranded
//! connections), `supervise.rs` (the accept loop, and pumps enough for clients that do not read),
//! `serial.rs` (a connection's answers one at a time), `pool.rs` (the body threads). `pages.rs`
//! serves the dashboard, the docs and the OpenAPI document, `prometheus.rs` renders `/metrics`
//! and `telemetry.rs` counts requests and writes the JSON access log.

pub mod api;
mod auth;
mod budget;
mod compat;
mod cross_site;
pub(crate) mod error;
mod framing;
pub mod ingest_body;
pub(crate) mod limits;
mod pages;
mod pool;
mod prometheus;
mod serial;
pub(crate) mod server;
mod supervise;
mod telemetry;

pub use budget::ReadBody;
pub use limits::Limits;
pub use server::{HttpOptions, HttpServer};
