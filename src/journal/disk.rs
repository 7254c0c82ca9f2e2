//! The journal's file I/O, behind a seam: [`Disk`] and [`DiskFile`] name the few operations
//! the journal uses, [`RealDisk`] does them on `std::fs`. Tests record them instead
//! (`tests/crash_states.rs`) and build the states a power loss can leave. Called from whichever
//! thread opens the journal, then from the `journal`, `journal-compact` and `journal-reap`
//! threads.
//!
//! Also the data directory's lock: an exclusive `flock` on the directory itself, which no one
//! can delete while it holds the journal (a lock on a file goes with the file's name: delete
//! it, and a second instance locks a new one). `DIR/ingestd.lock` holds the holder's PID, for
//! the message. The kernel lets go when the process dies, so `kill -9` never leaves it stale.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The data directory's lock file, next to the journal.
pub(crate) const LOCK_FILE: &str = "ingestd.lock";

/// A file opened for reading and writing. The methods are `std::fs::File`'s.
pub trait DiskFile: Send + Debug {
    /// Writes all of `bytes` at `offset`; not durable until a sync.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` with the bytes at `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable, and the size if it is needed to read them (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes every write and the size durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file; not durable until a sync.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size now.
    fn size(&self) -> io::Result<u64>;
    /// Whether the file still has a name: someone may have removed it, or its directory.
    fn is_linked(&self) -> io::Result<bool>;
    /// Bytes its file system can spare for zeros reserved ahead of the records, keeping a margin
    /// free for everyone else.
    fn spare_bytes(&self) -> u64;
    /// Starts writing `len` bytes at `offset` out to the disk, and promises nothing (it is not a
    /// sync): a writer of a large file calls it as it goes, so its dirty pages stay few and do
    /// not queue, all at once, ahead of a commit's sync.
    fn start_write_back(&self, _offset: u64, _len: u64) {}
    /// Waits until `len` (> 0) bytes at `offset` are written out; promises nothing either.
    fn finish_write_back(&self, _offset: u64, _len: u64) {}
}

/// Why the data directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its PID, if it wrote one.
    Held {
        pid: Option<u32>,
    },
    Io(io::Error),
}

/// Held while the data directory is ours; dropping it lets go.
pub type DirLock = Box<dyn Send + Sync>;

/// The file system operations of the journal. Renames and new names in a directory are durable
/// only after [`Disk::sync_dir`].
pub trait Disk: Send + Sync + Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Locks `dir` for this process (see the module header).
    fn lock(&self, dir: &Path) -> Result<DirLock, LockError>;
    /// Which directory `dir` names now (device and inode): a new one, if it was removed and
    /// made again.
    fn identity(&self, dir: &Path) -> io::Result<(u64, u64)>;
    /// The whole file; `NotFound` if there is none.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Creates a file, or empties an existing one, for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (new files, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// [`Disk`] on the real file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RealDisk;

impl DiskFile for File {
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, bytes, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn is_linked(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.metadata()?.nlink() > 0)
    }

    fn spare_bytes(&self) -> u64 {
        super::health::spare_bytes(self)
    }

    fn start_write_back(&self, offset: u64, len: u64) {
        sync_file_range(self, offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }

    fn finish_write_back(&self, offset: u64, len: u64) {
        use libc::{SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE};
        sync_file_range(
            self,
            offset,
            len,
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}

/// Only a hint, so a failure is ignored: the sync that follows reports any real one.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sync_file_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: `sync_file_range` takes an open descriptor (borrowed from `file` for the call)
    // and plain integers; it reads and writes no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
}

#[cfg(not(target_os = "linux"))]
fn sync_file_range(_: &File, _: u64, _: u64, _: u32) {}

impl Disk for RealDisk {
    fn identity(&self, dir: &Path) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let metadata = fs::metadata(dir)?;
        Ok((metadata.dev(), metadata.ino()))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn lock(&self, dir: &Path) -> Result<DirLock, LockError> {
        let directory = File::open(dir).map_err(LockError::Io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(LockError::Io)?;
        match directory.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held { pid: holder(&mut file) }),
            Err(TryLockError::Error(error)) => return Err(LockError::Io(error)),
        }
        // Only for the message a second instance prints: no sync needed.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(LockError::Io)?;
        Ok(Box::new(directory))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(OpenOptions::new().read(true).write(true).open(path)?))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(OpenOptions::new().create(true).read(true).write(true).truncate(true).open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The PID the lock's holder wrote, if it has yet.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
