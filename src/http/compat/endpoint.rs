//! tiny_http's internal endpoint: a Unix socket in a directory that only this user can enter
//! (mode 0700), removed when the server stops. Only the relay (and our own probes) reach
//! tiny_http, so no local process can send it a request line it deadlocks on, or skip the
//! relay's checks; a TCP port on 127.0.0.1 was open to every local user.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::net::{self as net, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// Pending connections: a burst of new clients must not find the backlog full (a non-blocking
/// connect to a full Unix socket fails at once).
const BACKLOG: i32 = 4096;

/// The socket's directory; removed with everything in it on drop.
pub(crate) struct Endpoint {
    dir: PathBuf,
    path: PathBuf,
}

impl Endpoint {
    /// Creates the directory and the listening socket in it: in `$TMPDIR` (or `/tmp`), else in
    /// the first of `fallbacks` where it works.
    pub(crate) fn bind(fallbacks: &[PathBuf]) -> io::Result<(Endpoint, UnixListener)> {
        let mut tried = Vec::new();
        for parent in std::iter::once(std::env::temp_dir()).chain(fallbacks.iter().cloned()) {
            match Endpoint::bind_in(&parent) {
                Ok(bound) => return Ok(bound),
                Err(error) => tried.push(format!("{}: {error}", parent.display())),
            }
        }
        Err(io::Error::other(format!(
            "no directory for tiny_http's private socket ({}); set TMPDIR to a writable directory",
            tried.join("; ")
        )))
    }

    fn bind_in(parent: &Path) -> io::Result<(Endpoint, UnixListener)> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let dir = parent.join(format!("ingestd-{}-{}", std::process::id(), &name[..12]));
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
        net::listen(&socket, BACKLOG)?;
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
