//! Workarounds for tiny_http 0.12.0, behind one small interface: the rest of `http/` sees an
//! ordinary server that takes requests from tiny_http, plus [`Connections`] to learn which client
//! connection a request came on. Each workaround names its upstream defect and the test that
//! shows it; delete it when tiny_http is fixed or replaced.
//!
//! - `relay.rs` + `link.rs` + `tracker.rs` + `endpoint.rs`: a request line with version
//!   `HTTP/2.0` or `HTTP/3.0` deadlocks a tiny_http connection thread for good
//!   (`tests/hostile.rs`). We own the public listener and relay each connection to tiny_http,
//!   which listens on a Unix socket only this user can reach, refusing such lines with our own
//!   `505`; the relay also enforces the idle timeout on the client side, answers `408` for a
//!   stalled short body (which tiny_http drops without a word), answers in JSON the heads
//!   tiny_http would refuse with an empty `400` or `417` or drop, cuts every connection at
//!   shutdown, stamps each request with its connection ([`STAMP`]), and lets tiny_http have
//!   only a few of a connection's requests at a time. `relay.rs` is the I/O
//!   (two `http-relay-N` threads, each an epoll loop), `link.rs` one connection's
//!   state and `tracker.rs` where its requests start; the last two are pure.
//! - `strand.rs`: tiny_http's pool leaves some connections of a burst unread until another
//!   connection closes (`tests/burst.rs`); the relay sees which first requests go unanswered
//!   and makes an empty connection to tiny_http for each, which frees one.

mod endpoint;
mod link;
mod relay;
mod strand;
mod tracker;

/// Pending connections on each listening socket, the public one and tiny_http's: a burst of new
/// clients must not find a backlog full (a full TCP backlog drops the SYN, and the client waits
/// a second to send it again; a non-blocking connect to a full Unix socket fails at once).
/// Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

pub(crate) use endpoint::Endpoint;
pub(crate) use relay::{looks, nudges, Conn, Connections, Front, Origin, STAMP};
pub(crate) use tracker::{Caps, BUFFERED_BODY};
