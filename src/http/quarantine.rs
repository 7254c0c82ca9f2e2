//! The connections that sent an ambiguous request head, by remote address: nothing more from
//! them is acted on. Called by the pumps (`http-G-N`) as they take each request, in arrival
//! order; takes `now` as an argument, never blocks beyond its own short lock.
//!
//! tiny_http gives us no way to close a connection, and after a head it misreads, whatever
//! follows on that connection may be a request smuggled inside the previous body. A TCP
//! connection is identified by its remote address and port for as long as it is open, so every
//! later request from the same address is refused. Entries are kept for `ttl` after the last
//! request seen from them (far longer than the idle timeout that closes the connection), and
//! at most `capacity` of them (the oldest goes first), so the set never grows without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct Quarantine {
    seen: Mutex<HashMap<SocketAddr, Instant>>,
    ttl: Duration,
    capacity: usize,
}

impl Quarantine {
    pub fn new(ttl: Duration, capacity: usize) -> Quarantine {
        Quarantine { seen: Mutex::new(HashMap::new()), ttl, capacity: capacity.max(1) }
    }

    /// Refuses everything more from `addr`.
    pub fn add(&self, addr: SocketAddr, now: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= self.capacity && !seen.contains_key(&addr) {
            seen.retain(|_, last| now.saturating_duration_since(*last) < self.ttl);
            if seen.len() >= self.capacity {
                let oldest = seen.iter().min_by_key(|(_, last)| **last).map(|(addr, _)| *addr);
                oldest.map(|oldest| seen.remove(&oldest));
            }
        }
        seen.insert(addr, now);
    }

    /// Whether `addr` is refused; a hit keeps the entry for another `ttl`.
    pub fn holds(&self, addr: SocketAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock();
        match seen.get_mut(&addr) {
            Some(last) if now.saturating_duration_since(*last) < self.ttl => {
                *last = now;
                true
            }
            Some(_) => {
                seen.remove(&addr);
                false
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn holds_an_address_until_it_has_been_quiet_for_the_ttl() {
        let q = Quarantine::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        q.add(addr(1), t0);
        assert!(q.holds(addr(1), t0 + Duration::from_secs(9)));
        assert!(q.holds(addr(1), t0 + Duration::from_secs(18)), "a hit refreshes");
        assert!(!q.holds(addr(2), t0));
        assert!(!q.holds(addr(1), t0 + Duration::from_secs(29)));
        assert!(q.is_empty());
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let q = Quarantine::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for port in 1..=5 {
            q.add(addr(port), t0 + Duration::from_millis(u64::from(port)));
        }
        assert_eq!(q.len(), 3);
        assert!(!q.holds(addr(1), t0 + Duration::from_millis(6)), "the oldest went first");
        assert!(q.holds(addr(5), t0 + Duration::from_millis(6)));
    }
}
