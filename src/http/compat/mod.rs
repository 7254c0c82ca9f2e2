//! Workarounds for tiny_http 0.12.0, behind one small interface: the rest of `http/` sees an
//! ordinary server that takes requests from tiny_http, plus [`Connections`] to learn which client
//! connection a request came on. Each workaround names its upstream defect and the test that
//! shows it; delete it when tiny_http is fixed or replaced.
//!
//! - `relay.rs` + `tracker.rs`: a request line with version `HTTP/2.0` or `HTTP/3.0` deadlocks
//!   a tiny_http connection thread for good (`tests/hostile.rs`). We own the public listener and
//!   relay each connection to tiny_http over loopback, refusing such lines with our own `505`;
//!   the relay also enforces the idle timeout on the client side, answers `408` for a stalled
//!   short body (which tiny_http drops without a word), and cuts every connection at shutdown.

mod relay;
mod tracker;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub(crate) use relay::{Conn, Connections, Cut, Front};

/// Where to reach a listener bound to `addr` from this host.
pub(crate) fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, addr.port())
}
