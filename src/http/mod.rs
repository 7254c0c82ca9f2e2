//! The HTTP shell: translates requests into calls on [`crate::app::App`] and results into JSON.
//!
//! `server.rs` owns the sockets and threads, `api.rs` the routes, `ingest_body.rs` the request
//! body, `error.rs` the error codes, `unstrand.rs` a tiny_http workaround. `pages.rs` serves the
//! dashboard, the docs and the OpenAPI document, `prometheus.rs` renders `/metrics` and
//! `telemetry.rs` counts requests and writes the JSON access log.

pub mod api;
pub mod error;
pub mod ingest_body;
mod pages;
mod prometheus;
pub mod server;
mod telemetry;
mod unstrand;

pub use error::ApiError;
pub use server::{HttpOptions, HttpServer};
