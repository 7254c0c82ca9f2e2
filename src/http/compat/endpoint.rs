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
    /// Creates the directory and the listening socket in it.
    pub(crate) fn bind() -> io::Result<(Endpoint, UnixListener)> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("ingestd-{}-{}", std::process::id(), &name[..12]));
        DirBuilder::new().mode(0o700).create(&dir)?;
        let endpoint = Endpoint { path: dir.join("tiny_http"), dir };
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
        let (endpoint, _listener) = Endpoint::bind().unwrap();
        let dir = endpoint.path().parent().unwrap().to_owned();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(std::os::unix::net::UnixStream::connect(endpoint.path()).is_ok());
        drop(endpoint);
        assert!(!dir.exists());
    }
}
