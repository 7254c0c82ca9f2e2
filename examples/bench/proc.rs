//! Processes the bench starts: ingestd and the ceiling, each on a loopback port, and wrk.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process on `127.0.0.1:0`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// Starts `bin` with `args` and waits for its `listening on http://…` line. Its stderr goes
    /// to `stderr` (a file, for the pacer's release records) or nowhere.
    pub fn start(bin: &Path, args: &[&str], stderr: Option<&Path>) -> Server {
        Server::start_under(&[], bin, args, stderr)
    }

    /// Like [`Server::start`], with `bin` run by a wrapper command (`wrapper` then `bin`), such
    /// as `setpriv` dropping a capability; an empty `wrapper` runs `bin` itself.
    pub fn start_under(wrapper: &[&str], bin: &Path, args: &[&str], stderr: Option<&Path>) -> Server {
        let stderr = match stderr {
            Some(path) => Stdio::from(File::create(path).expect("create the stderr file")),
            None => Stdio::null(),
        };
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read stdout");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { addr: addr.to_owned(), child }
    }

    pub fn ingestd(bin: &Path, args: &[&str]) -> Server {
        Server::start(bin, &[&["--addr", "127.0.0.1:0"], args].concat(), None)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in bytes, from `/proc/PID/status`.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        kib * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
