//! One-line, timestamped log records on stderr. Never called under the queue lock.

use std::fmt::Arguments;
use std::io::Write;
use std::time::SystemTime;

pub fn info(message: Arguments<'_>) {
    let line = format!("{} {message}\n", crate::rfc3339::format(SystemTime::now()));
    // A closed stderr must not take the service down; the record is lost, nothing else.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
