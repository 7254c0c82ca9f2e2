//! Workarounds for tiny_http 0.12.0, behind one small interface: the rest of `http/` sees an
//! ordinary server that takes requests from tiny_http, plus [`Connections`] to learn which client
//! connection a request came on. Each workaround names its upstream defect and the test that
//! shows it; delete it when tiny_http is fixed or replaced.
//!
//! - `relay.rs` + `link.rs` + `tracker.rs`: a request line with version `HTTP/2.0` or `HTTP/3.0`
//!   deadlocks a tiny_http connection thread for good (`tests/hostile.rs`). We own the public
//!   listener and relay each connection to tiny_http over loopback, refusing such lines with
//!   our own `505`; the relay also enforces the idle timeout on the client side, answers `408`
//!   for a stalled short body (which tiny_http drops without a word), and cuts every connection
//!   at shutdown. `relay.rs` is the I/O (one `http-relay` thread, epoll), `link.rs` one
//!   connection's state and `tracker.rs` where its requests start; the last two are pure.

mod link;
mod relay;
mod tracker;

pub(crate) use relay::{Conn, Connections, Cut, Front};
