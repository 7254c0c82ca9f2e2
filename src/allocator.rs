//! The allocator's one setting, made by `main` before any thread starts.
//!
//! glibc serves a block of 128 KiB or more with a mapping of its own, returned to the system
//! when freed, but raises that threshold to the size of each such block freed (up to 32 MiB).
//! After a few large answers (a `GET /status` of 100,000 ids is about 8 MB) they come from the
//! heap arenas of the threads that built them instead, and stay there once freed: 64 clients
//! reading such answers left the process at 1 GB, idle. A fixed threshold keeps giving them
//! back. The `mallopt` call is `unsafe`, so this module allows it.
#![allow(unsafe_code)]

/// The threshold glibc starts with.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Keeps large blocks in mappings of their own, returned to the system when freed.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` sets an allocator parameter and touches no memory of ours; glibc
    // serialises it against allocations in other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
