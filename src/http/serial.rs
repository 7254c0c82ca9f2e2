//! One client connection's answers, one at a time, in the order its requests arrived. Touched
//! by the pumps (`http-G-N`, which enter each request under their turn lock) and whichever
//! thread answers: a pump, or an `http-body-N` thread.
//!
//! Why: tiny_http 0.12.0 writes a connection's answers in request order, and a thread that
//! answers a pipelined request blocks until the answer before it is out. A client that
//! pipelines requests and never reads would hold one handler thread per request, all of them
//! in the end. Here a connection holds at most one: its later requests wait in its queue,
//! not on a thread (`tests/hostile.rs`).

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Answering one request.
pub(crate) type Work = Box<dyn FnOnce() -> Done + Send>;

/// How a piece of [`Work`] ended.
pub(crate) enum Done {
    /// The answer is written: the next one may start.
    Here,
    /// Handed to another thread, which calls [`Serial::resume`] once it has answered.
    Later,
}

#[derive(Default)]
pub(crate) struct Serial {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// An answer is under way.
    busy: bool,
    queued: VecDeque<Work>,
}

impl Serial {
    /// Takes the connection's next request, in arrival order: the work back if it is to start
    /// now (run it with [`Serial::run`]), `None` if it waits behind the answer under way.
    pub(crate) fn enter(&self, work: Work) -> Option<Work> {
        let mut state = self.state.lock();
        if state.busy {
            state.queued.push_back(work);
            return None;
        }
        state.busy = true;
        Some(work)
    }

    /// Runs `first`, then what queued behind it, on this thread, until the queue is empty or
    /// a piece of work is handed on.
    pub(crate) fn run(&self, first: Work) {
        let mut work = first;
        loop {
            if let Done::Later = work() {
                return;
            }
            match self.next() {
                Some(next) => work = next,
                None => return,
            }
        }
    }

    /// Work handed on is done: goes on with what queued behind it.
    pub(crate) fn resume(&self) {
        if let Some(work) = self.next() {
            self.run(work);
        }
    }

    fn next(&self) -> Option<Work> {
        let mut state = self.state.lock();
        let next = state.queued.pop_front();
        state.busy = next.is_some();
        next
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn log(into: &Arc<Mutex<Vec<&'static str>>>, name: &'static str, done: fn() -> Done) -> Work {
        let into = Arc::clone(into);
        Box::new(move || {
            into.lock().push(name);
            done()
        })
    }

    #[test]
    fn answers_run_one_at_a_time_in_arrival_order() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let serial = Serial::default();
        let first = serial.enter(log(&ran, "a", || Done::Here)).expect("a starts at once");
        assert!(serial.enter(log(&ran, "b", || Done::Later)).is_none());
        assert!(serial.enter(log(&ran, "c", || Done::Here)).is_none());
        serial.run(first);
        // b was handed on: c waits for it.
        assert_eq!(*ran.lock(), ["a", "b"]);
        assert!(serial.enter(log(&ran, "d", || Done::Here)).is_none());
        serial.resume();
        assert_eq!(*ran.lock(), ["a", "b", "c", "d"]);
        // The queue is empty: the next request starts at once.
        let next = serial.enter(log(&ran, "e", || Done::Here)).expect("e starts at once");
        serial.run(next);
        assert_eq!(*ran.lock(), ["a", "b", "c", "d", "e"]);
    }
}
