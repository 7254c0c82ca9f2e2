//! ingestd: an HTTP service that feeds ingestion requests to a rate-limited external API.
//!
//! Threads, and what they touch:
//! - `http-relay-N` ([`http`]'s `compat/`) own the public listener and relay each connection to
//!   tiny_http over a private Unix socket, finding where its requests start: a request line
//!   tiny_http would deadlock on (HTTP/2.0, 3.0) never reaches it; they also own the timeouts,
//!   and free the connections tiny_http's pool leaves unread.
//! - `http-G-N` pump threads ([`http`]) take tiny_http's requests in turn, check their framing
//!   in arrival order, then answer them; `http-body-N` threads answer those whose body is still
//!   on the socket. In memory mode they insert into the `store::Store` and submit to the
//!   queue; in durable mode they hand the ingestion to the journal and wait for it (one fsync per
//!   group), then answer.
//! - `journal` ([`journal`], only with `--data-dir`) writes records in groups with one fsync each,
//!   then inserts and submits what it saved, in journal order; it also sweeps, and starts and
//!   hands over compactions, which `journal-compact` writes off the commit path. In memory mode
//!   `store-sweep` forgets expired ingestions instead.
//! - `pacer` (`pacer.rs`, real-time where allowed: [`realtime`]) waits on the queue's Condvar
//!   until the next batch may go, and is the only thread that releases one: at most one per
//!   interval, deciding with the pure `scheduler::Scheduler`; it sends releases over a channel
//!   and never does I/O under the lock.
//! - `worker` (`worker.rs`, real-time where allowed) journals the release (holding it until it is
//!   on disk), calls the external API for each id of the batch (simulated, or [`upstream`]),
//!   journals how it ended, then reports it to the queue (the queue lock, briefly), which
//!   notifies the pacer.
//! - `log-writer` ([`log`]) writes every log record, so no other thread ever blocks on a file or
//!   pipe; `journal-reap` frees the files a compaction replaced.
//! - `http-accept` keeps tiny_http's accept loop running, and `http-reject` answers requests
//!   that did not come through a relay; tiny_http runs its own accept and
//!   connection threads. Every HTTP thread, ours and tiny_http's, descends from `http-start`, which
//!   lowered its own priority ([`realtime::start_lowered`]), so all of them run below the core
//!   threads.
//!
//! Locks: the queue lock in `pacer.rs` (a parking_lot `Mutex` over the scheduler's heap, with
//! the `Condvar` the pacer waits on) orders work; the store's locks in `store.rs` hold what was
//! accepted (its keys' lock may take its ingestions' read lock); no thread holds a queue lock and
//! a store lock at once. [`metrics`] has a leaf lock for its rings, never taken under the queue
//! lock. See ARCHITECTURE.md for the invariants.

#![deny(unsafe_code)]

pub mod allocator;
pub(crate) mod app;
pub mod clock;
pub mod config;
pub mod http;
pub mod journal;
pub mod log;
pub mod metrics;
pub mod model;
pub(crate) mod pacer;
pub mod realtime;
pub mod rfc3339;
pub(crate) mod scheduler;
mod store;
pub mod upstream;
pub(crate) mod worker;

pub use app::{App, IngestError, Pacing, StartError, Storage};
pub use clock::{Clock, ManualClock, SystemClock};
pub use model::{BatchStatus, Id, Ingestion, Priority};
pub use pacer::{Pacer, Parked, Queue, Release};
pub use worker::{ApiResponse, ExternalApi, FetchError, SimulatedApi};
