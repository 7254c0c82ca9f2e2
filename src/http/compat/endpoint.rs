//! tiny_http's internal endpoint: a Unix socket in a directory that only this user can enter
//! (mode 0700), removed when the server stops; a killed process leaves its directory behind, and
//! the next start removes those of its user whose process is gone. Only the relay (and our own
//! probes) reach tiny_http, so no local process can send it a request line it deadlocks on, or
//! skip the relay's checks; a TCP port on 127.0.0.1 was open to every local user.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::net::{self as net, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::BACKLOG;

/// The start of each directory's name; the owner's PID and 12 hex digits follow.
const PREFIX: &str = "ingestd-";

/// Removes the directories in `parent` that a process of this user left when it was killed:
/// named like ours, owned by this user, and whose PID no longer runs. A PID that runs again
/// keeps its directory (it may be ours), and nothing but a real directory is touched.
fn remove_stale(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(parent) else { return };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(owner_pid) else { continue };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
        if meta.is_dir() && meta.uid() == uid && !runs(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The PID in a directory name like ours (`ingestd-PID-` and 12 hex digits).
fn owner_pid(name: &str) -> Option<i32> {
    let (pid, tag) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let hex = tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| pid.parse().ok()).flatten()
}

fn runs(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else { return true };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

/// The socket's directory; removed with everything in it on drop.
pub(crate) struct Endpoint {
    dir: PathBuf,
    path: PathBuf,
}

impl Endpoint {
    /// Creates the directory and the listening socket in it: in `$TMPDIR` (or `/tmp`), else in
    /// the first of `fallbacks` where it works.
    pub(crate) fn bind(fallbacks: &[PathBuf]) -> io::Result<(Endpoint, UnixListener)> {
        let (mut tried, mut forbidden) = (Vec::new(), false);
        for parent in std::iter::once(std::env::temp_dir()).chain(fallbacks.iter().cloned()) {
            match Endpoint::bind_in(&parent) {
                Ok(bound) => return Ok(bound),
                Err(error) => {
                    forbidden |= error.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error());
                    tried.push(format!("{}: {error}", parent.display()));
                }
            }
        }
        // A sandbox's list of address families (systemd's RestrictAddressFamilies=) without Unix
        // sockets fails every directory alike.
        let hint = match forbidden {
            true => "allow Unix sockets (AF_UNIX) where the service runs",
            false => "set TMPDIR to a writable directory",
        };
        Err(io::Error::other(format!("no directory for tiny_http's private socket ({}); {hint}", tried.join("; "))))
    }

    fn bind_in(parent: &Path) -> io::Result<(Endpoint, UnixListener)> {
        remove_stale(parent);
        let name = uuid::Uuid::new_v4().simple().to_string();
        let dir = parent.join(format!("{PREFIX}{}-{}", std::process::id(), &name[..12]));
        DirBuilder::new().mode(0o700).create(&dir)?;
        let endpoint = Endpoint { path: dir.join("tiny_http"), dir };
        // On failure the directory goes with `endpoint`.
        let listener = endpoint.listen()?;
        Ok((endpoint, listener))
    }

    /// Where to connect.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn listen(&self) -> io::Result<UnixListener> {
        let socket = net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        // Bound under one name and reached under another: a tiny_http `Server` removes its
        // listener's path when dropped, and the supervisor drops old `Server`s while the
        // listener they shared lives on.
        let bound = self.dir.join("bound");
        net::bind(&socket, &SocketAddrUnix::new(&bound)?)?;
        // Test seam: a small backlog, so that a small burst fills it.
        let backlog = std::env::var("INGESTD_WORKER_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(BACKLOG);
        net::listen(&socket, backlog)?;
        fs::rename(&bound, &self.path)?;
        Ok(UnixListener::from(socket))
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_sits_in_a_private_directory_that_goes_with_it() {
        let (endpoint, _listener) = Endpoint::bind(&[]).unwrap();
        let dir = endpoint.path().parent().unwrap().to_owned();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(std::os::unix::net::UnixStream::connect(endpoint.path()).is_ok());
        drop(endpoint);
        assert!(!dir.exists());
    }

    #[test]
    fn a_start_removes_the_directories_killed_processes_left_and_no_other() {
        let parent = std::env::temp_dir().join(format!("ingestd-stale-test-{}", std::process::id()));
        fs::create_dir_all(&parent).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let stale = parent.join(format!("{PREFIX}{dead}-0123456789ab"));
        let running = parent.join(format!("{PREFIX}{}-0123456789ab", std::process::id()));
        let other = parent.join(format!("{PREFIX}{dead}-not-ours"));
        for dir in [&stale, &running, &other] {
            DirBuilder::new().mode(0o700).create(dir).unwrap();
        }
        fs::write(stale.join("tiny_http"), b"").unwrap();
        let (endpoint, _listener) = Endpoint::bind_in(&parent).unwrap();
        assert!(!stale.exists(), "a dead process's directory stays");
        assert!(running.exists() && other.exists());
        drop(endpoint);
        fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn without_a_usable_temp_dir_it_goes_to_the_first_fallback_that_works() {
        let fallback = std::env::temp_dir().join(format!("ingestd-fallback-{}", std::process::id()));
        fs::create_dir_all(&fallback).unwrap();
        let missing = PathBuf::from("/nonexistent/ingestd");
        // `bind_in` is what `bind` tries for each place in turn.
        assert!(Endpoint::bind_in(&missing).is_err());
        let (endpoint, _listener) = Endpoint::bind_in(&fallback).unwrap();
        assert!(endpoint.path().starts_with(&fallback));
        drop(endpoint);
        fs::remove_dir_all(&fallback).unwrap();
    }
}
