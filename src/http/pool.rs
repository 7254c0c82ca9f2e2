//! The `http-body-N` threads, which answer the requests whose body is still on the socket. Work
//! is handed over by the pumps (`http-G-N`) and by the threads themselves (a connection's next
//! answer, `serial.rs`).
//!
//! Why it grows: a client that drips its body, or does not read its answer, holds a thread
//! until the idle timeout cuts it, and a fixed pool would let that many such clients hold up
//! every other streamed body. So each hand-over claims a thread that waits for work, or starts
//! one: work never waits behind a stuck thread. Threads past the base count leave after
//! [`LEAVE_AFTER`] without work; at [`MOST_THREADS`] work queues.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// How long a thread past the base count waits for work before it leaves.
const LEAVE_AFTER: Duration = Duration::from_secs(5);
const MOST_THREADS: usize = 1024;

pub(crate) struct Pool<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// An item, and whether its hand-over claimed a waiting thread for it.
type Handed<T> = (T, bool);

struct Shared<T> {
    name: &'static str,
    base: usize,
    /// [`MOST_THREADS`] and [`LEAVE_AFTER`], but for tests.
    most: usize,
    leave_after: Duration,
    work: Box<dyn Fn(T) + Send + Sync>,
    /// `None` once stopping: the threads finish what is queued, then leave.
    sender: Mutex<Option<Sender<Handed<T>>>>,
    receiver: Receiver<Handed<T>>,
    /// Threads waiting for work that no hand-over has claimed yet.
    unclaimed: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicUsize,
}

impl<T: Send + 'static> Pool<T> {
    /// Starts `base` threads named `name-N` that run `work` on each item handed over.
    pub(crate) fn start(name: &'static str, base: usize, work: Box<dyn Fn(T) + Send + Sync>) -> io::Result<Pool<T>> {
        Pool::sized(name, (base, MOST_THREADS), LEAVE_AFTER, work)
    }

    fn sized(
        name: &'static str,
        (base, most): (usize, usize),
        leave_after: Duration,
        work: Box<dyn Fn(T) + Send + Sync>,
    ) -> io::Result<Pool<T>> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            name,
            base,
            most,
            leave_after,
            work,
            sender: Mutex::new(Some(sender)),
            receiver,
            unclaimed: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
        });
        for _ in 0..base {
            spawn(&shared, None).map_err(|(error, _)| error)?;
        }
        Ok(Pool { shared })
    }

    /// Runs `item` on a thread that waits for work, or on a new one; once the pool is stopping,
    /// on the caller's (a thread started then might never be joined, and queued work be lost).
    pub(crate) fn hand_over(&self, item: T) {
        let shared = &self.shared;
        if shared.sender.lock().is_none() {
            return (shared.work)(item);
        }
        if claim(&shared.unclaimed) {
            return self.queue((item, true));
        }
        let room = {
            let mut threads = shared.threads.lock();
            // `spawn` joins the threads that left; at the most, they must not count either.
            if threads.len() >= shared.most {
                join_finished(&mut threads);
            }
            threads.len() < shared.most
        };
        let item = if room {
            match spawn(shared, Some(item)) {
                Ok(()) => return,
                Err((_, item)) => item,
            }
        } else {
            Some(item)
        };
        if let Some(item) = item {
            self.queue((item, false));
        }
    }

    fn queue(&self, handed: Handed<T>) {
        let sender = self.shared.sender.lock().clone();
        match sender {
            Some(sender) => {
                let _ = sender.send(handed);
            }
            None => (self.shared.work)(handed.0),
        }
    }

    /// Lets the threads finish what is queued, and joins them, and any started meanwhile.
    pub(crate) fn stop(&self) {
        self.shared.sender.lock().take();
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock());
            if threads.is_empty() {
                return;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

/// Takes one from `count` unless it is zero.
fn claim(count: &AtomicUsize) -> bool {
    count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Starts a thread, which runs `first` if given, then waits for work.
fn spawn<T: Send + 'static>(shared: &Arc<Shared<T>>, first: Option<T>) -> Result<(), (io::Error, Option<T>)> {
    let n = shared.started.fetch_add(1, Ordering::Relaxed);
    let mut threads = shared.threads.lock();
    join_finished(&mut threads);
    let first = Arc::new(Mutex::new(first));
    let (runner, taken) = (Arc::clone(shared), Arc::clone(&first));
    let started = thread::Builder::new().name(format!("{}-{n}", shared.name)).spawn(move || {
        if let Some(item) = taken.lock().take() {
            (runner.work)(item);
        }
        serve(&runner, n);
    });
    match started {
        Ok(thread) => {
            threads.push(thread);
            Ok(())
        }
        Err(error) => Err((error, first.lock().take())),
    }
}

/// Joins the threads that left (at once: they are done), so that they no longer count.
fn join_finished(threads: &mut Vec<JoinHandle<()>>) {
    let (gone, live): (Vec<_>, Vec<_>) = threads.drain(..).partition(JoinHandle::is_finished);
    *threads = live;
    for thread in gone {
        let _ = thread.join();
    }
}

fn serve<T>(shared: &Shared<T>, n: usize) {
    loop {
        shared.unclaimed.fetch_add(1, Ordering::SeqCst);
        let (item, claimed) = loop {
            match shared.receiver.recv_timeout(shared.leave_after) {
                Ok(handed) => break handed,
                Err(RecvTimeoutError::Disconnected) => return,
                // A hand-over may have claimed this thread meanwhile: it leaves only while a
                // waiting thread is still unclaimed.
                Err(RecvTimeoutError::Timeout) if n >= shared.base && claim(&shared.unclaimed) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        if !claimed {
            // Queued with every thread busy: this thread, counted as waiting, took it.
            claim(&shared.unclaimed);
        }
        (shared.work)(item);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn work_never_waits_behind_a_stuck_thread_and_the_extra_threads_are_joined() {
        let (release, stuck) = crossbeam_channel::unbounded::<()>();
        let (done, finished) = mpsc::channel();
        let done = Mutex::new(done);
        let work = move |item: u32| {
            if item == 0 {
                let _ = stuck.recv();
            }
            let _ = done.lock().send(item);
        };
        let pool = Pool::start("test-pool", 2, Box::new(work)).unwrap();
        // More stuck items than threads, then one that must still run at once.
        for _ in 0..3 {
            pool.hand_over(0);
        }
        pool.hand_over(7);
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)), Ok(7));
        assert!(pool.shared.threads.lock().len() >= 4, "a thread per stuck item, and one more");
        drop(release);
        let mut rest: Vec<u32> = (0..3).map(|_| finished.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        rest.sort();
        assert_eq!(rest, [0, 0, 0]);
        pool.stop();
    }

    /// Threads that left no longer count toward the most: after one burst filled the pool, work
    /// used to queue behind stuck threads for good.
    #[test]
    fn threads_that_left_make_room_for_new_ones() {
        let (release, stuck) = crossbeam_channel::unbounded::<()>();
        let (done, finished) = crossbeam_channel::unbounded();
        let work = move |item: u32| {
            if item == 0 {
                let _ = stuck.recv();
            }
            let _ = done.send(item);
        };
        let pool = Pool::sized("test-pool", (1, 2), Duration::from_millis(20), Box::new(work)).unwrap();
        pool.hand_over(0);
        pool.hand_over(0);
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!([finished.recv().unwrap(), finished.recv().unwrap()], [0, 0]);
        let left = || pool.shared.threads.lock().iter().filter(|t| t.is_finished()).count();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while left() == 0 {
            assert!(std::time::Instant::now() < deadline, "the extra thread never left");
            thread::yield_now();
        }
        // One stuck on the base thread; the next must get a thread of its own, at once.
        pool.hand_over(0);
        pool.hand_over(7);
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)), Ok(7));
        drop(release);
        pool.stop();
    }

    #[test]
    fn work_handed_over_after_the_stop_runs_on_the_callers_thread() {
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ran_on);
        let work = move |_: u32| seen.lock().push(thread::current().name().map(str::to_owned));
        let pool = Pool::start("test-pool", 1, Box::new(work)).unwrap();
        pool.stop();
        pool.hand_over(1);
        assert_eq!(*ran_on.lock(), [thread::current().name().map(str::to_owned)]);
        assert!(pool.shared.threads.lock().is_empty(), "no thread left unjoined");
    }
}
