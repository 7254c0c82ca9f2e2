//! Whether the journal can write now, and what room it may take ahead of its records.
//!
//! [`StorageHealth`] is set by the `journal` thread after every append and probe, and read by
//! HTTP handler threads (`GET /health`, `GET /queue`) and `App`. Its lock is a leaf, held only to
//! copy or replace a few fields. [`spare_bytes`] asks the filesystem how much it can spare.

use std::fs::File;

use parking_lot::Mutex;

/// The journal's last word on the disk: fine, or failing since some moment.
#[derive(Debug, Default)]
pub(crate) struct StorageHealth {
    outage: Mutex<Option<Outage>>,
}

/// Writes to the journal are failing. Cleared by the next write that succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// What the last failed write got from the OS, e.g. "No space left on device (os error 28)".
    pub error: String,
    /// When the first write of this outage failed, in Unix milliseconds.
    pub since_ms: u64,
    /// Writes (appends and probes) that failed since then.
    pub failures: u64,
    /// How many bytes the first failed append needed: a probe checks that they fit now.
    pub(crate) needed: u64,
}

impl StorageHealth {
    /// The outage under way, if writes are failing.
    pub(crate) fn outage(&self) -> Option<Outage> {
        self.outage.lock().clone()
    }

    /// Records a failed write of `needed` bytes; returns whether this starts an outage.
    pub(crate) fn failed(&self, error: &std::io::Error, needed: u64, now_ms: u64) -> bool {
        let mut outage = self.outage.lock();
        match outage.as_mut() {
            Some(outage) => {
                outage.error = error.to_string();
                outage.failures += 1;
                false
            }
            None => {
                *outage = Some(Outage { error: error.to_string(), since_ms: now_ms, failures: 1, needed });
                true
            }
        }
    }

    /// Records a write that succeeded; returns the outage it ends, if any.
    pub(crate) fn succeeded(&self) -> Option<Outage> {
        self.outage.lock().take()
    }

    /// How many bytes a probe must be able to add to tell that writing works again.
    pub(crate) fn probe_size(&self) -> Option<u64> {
        self.outage.lock().as_ref().map(|o| o.needed.max(1))
    }
}

/// Space a filesystem keeps for everyone else: the journal reserves room ahead of its records
/// only while at least this much (and a twentieth of the filesystem) would stay free after it.
pub(crate) const KEEP_FREE: u64 = 64 << 20;

/// Bytes the filesystem holding `file` can spare for reserved zeros: what an unprivileged
/// writer may still use, less [`KEEP_FREE`] or a twentieth of the filesystem, whichever is
/// more. Zero if the filesystem cannot be asked. `fstatvfs` goes through `rustix`, a safe
/// wrapper, because the crate keeps `unsafe` to a few named calls.
pub(crate) fn spare_bytes(file: &File) -> u64 {
    let Ok(stat) = rustix::fs::fstatvfs(file) else { return 0 };
    let unit = if stat.f_frsize > 0 { stat.f_frsize } else { stat.f_bsize };
    let available = stat.f_bavail.saturating_mul(unit);
    let keep = KEEP_FREE.max(stat.f_blocks.saturating_mul(unit) / 20);
    available.saturating_sub(keep)
}
