//! [`channel`]: a FIFO that hands work from some threads to others, where a receiver with
//! nothing to do sleeps at once.
//!
//! Used from the pumps to the `http-body-N` threads, from handlers to the journal thread, and
//! for a durable POST's reply, from the journal back to the thread that waits for it.
//! crossbeam's channels (and `std::sync::mpsc`, built
//! on them) spin and call `sched_yield` several times before a receiver sleeps; with dozens of
//! mostly idle receivers on two busy cores that was five yields per durable POST (counted with
//! `perf`), CPU that the threads with work needed. Here a receiver waits on a condvar, and a sender wakes one only if one sleeps.
//! The lock is `std`'s, which spins briefly and never yields.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Outside the lock: a sender is cloned per request, and that should not contend.
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Receivers asleep in [`Receiver::recv`] or [`Receiver::recv_deadline`].
    sleeping: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing runs under this lock that can panic, but a poisoned queue is still a queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side; the channel closes when the last clone is dropped.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving side; clones share the items (each item goes to one receiver).
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new, empty, unbounded channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), sleeping: 0 }),
        ready: Condvar::new(),
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
    });
    (Sender { shared: Arc::clone(&shared) }, Receiver { shared })
}

impl<T> Sender<T> {
    /// Queues `item`; once every receiver is gone it is dropped instead (so an item carrying a
    /// reply's sender closes that reply, and whoever waits on it learns that nobody will answer).
    pub(crate) fn send(&self, item: T) {
        let mut state = self.shared.lock();
        if self.shared.receivers.load(Ordering::Acquire) == 0 {
            drop(state);
            drop(item);
            return;
        }
        state.items.push_back(item);
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so a receiver between its check and its sleep cannot miss it.
            let _state = self.shared.lock();
            self.shared.ready.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once the channel is closed and empty.
    pub(crate) fn recv(&self) -> Option<T> {
        self.recv_until(None)
    }

    /// Like [`Receiver::recv`], but gives up at `deadline`; `None` then too.
    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Option<T> {
        self.recv_until(Some(deadline))
    }

    /// Everything queued now, without waiting.
    pub(crate) fn drain(&self) -> Vec<T> {
        self.shared.lock().items.drain(..).collect()
    }

    /// Whether every sender is gone (items may still be queued).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Option<T> {
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            state.sleeping += 1;
            state = match deadline {
                None => self.shared.ready.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let (state, _) =
                        self.shared.ready.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner);
                    state
                }
            };
            state.sleeping -= 1;
            if deadline.is_some_and(|d| Instant::now() >= d) && state.items.is_empty() {
                return None;
            }
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::Relaxed);
        Receiver { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let orphans = std::mem::take(&mut self.shared.lock().items);
            drop(orphans);
        }
    }
}

impl<T> Iterator for &Receiver<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_order_and_the_channel_closes_with_its_last_sender() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        tx.send(1);
        tx2.send(2);
        drop(tx);
        assert_eq!(rx.recv(), Some(1));
        assert!(!rx.is_closed());
        drop(tx2);
        assert!(rx.is_closed());
        assert_eq!(rx.recv(), Some(2), "items queued before the close are still delivered");
        assert_eq!(rx.recv(), None);
    }

    #[test]
    fn a_sleeping_receiver_is_woken_by_a_send_and_by_the_close() {
        let (tx, rx) = channel::<u32>();
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || (&rx).collect::<Vec<u32>>())
            })
            .collect();
        for n in 0..1000 {
            tx.send(n);
        }
        drop(tx);
        let mut all: Vec<u32> = receivers.into_iter().flat_map(|r| r.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "each item to exactly one receiver");
    }

    #[test]
    fn items_nobody_can_receive_are_dropped() {
        let (tx, rx) = channel();
        let item = Arc::new(());
        tx.send(Arc::clone(&item));
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "what was queued is dropped with the last receiver");
        tx.send(Arc::clone(&item));
        assert_eq!(Arc::strong_count(&item), 1, "a later send is dropped at once");
    }

    #[test]
    fn recv_deadline_gives_up_at_the_deadline_and_drain_takes_everything() {
        let (tx, rx) = channel();
        assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_millis(1)), None);
        tx.send('a');
        tx.send('b');
        assert_eq!(rx.recv_deadline(Instant::now()), Some('a'), "a queued item is returned even at the deadline");
        tx.send('c');
        assert_eq!(rx.drain(), vec!['b', 'c']);
        assert!(rx.drain().is_empty());
    }
}
