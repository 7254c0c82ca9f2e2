//! A journal that cannot write, over real HTTP: releases are held (never sent before they are on
//! disk), `/health` and `GET /queue` say so, and everything recovers once the disk takes writes
//! again; and the journal never takes a small filesystem below its free-space margin.
//!
//! A full disk is made two ways: the server's file-size limit (`prlimit`, EFBIG, exact to the
//! byte and reversible), and a real full tmpfs (ENOSPC; mounting one needs root, as CI runs
//! `make test`: without it these tests fail and say so, they do not pass silently).

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{batch_statuses, wait_for, Server, TempDir};
use rustix::process::{prlimit, Pid, Resource, Rlimit};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(10);

fn durable(dir: &str, interval: &str) -> Server {
    Server::start(&["--interval", interval, "--batch-size", "1", "--fetch-delay", "0s", "--data-dir", dir])
}

/// Makes every write of `server` past `bytes` into any file fail with EFBIG (`None`: no limit),
/// the way a full disk looks to its journal.
fn limit_file_size(server: &Server, bytes: Option<u64>) {
    let pid = Pid::from_raw(server.pid() as i32).expect("a pid");
    prlimit(Some(pid), Resource::Fsize, Rlimit { current: bytes, maximum: None }).expect("prlimit");
}

/// Where the journal's records end: after them come only zeros reserved for later ones.
fn records_end(dir: &TempDir) -> u64 {
    let bytes = std::fs::read(dir.0.join(ingestd::journal::FILE_NAME)).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1)
}

/// Batch `index` of an ingestion: `(status, attempts, triggered_at in Unix ms)`.
fn batch(server: &Server, id: &str, index: usize) -> (String, u64, Option<u64>) {
    let status = server.status(id);
    let b = &status["batches"][index];
    let at = b["triggered_at"].as_str().map(unix_ms);
    (b["status"].as_str().unwrap().to_owned(), b["attempts"].as_u64().unwrap(), at)
}

/// An RFC 3339 UTC time as the API writes it (`2025-01-02T03:04:05.678Z`), in Unix ms.
fn unix_ms(text: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let millis = text.get(20..23).and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(0);
    u64::try_from(secs * 1000 + millis).unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[track_caller]
fn wait_health(server: &Server, status: u16) -> Value {
    wait_for(&format!("/health to answer {status}"), PATIENCE, || {
        let answer = server.get("/health");
        (answer.status == status).then_some(answer.json)
    })
}

/// The first batch completes at once (an idle queue); the next two wait for the interval.
/// Then the journal stops taking writes: returns `(first, later)`.
fn hold_a_release(server: &Server, dir: &TempDir) -> (String, String) {
    let first = server.ingest(&[1], "HIGH");
    wait_for("the first batch to complete", PATIENCE, || {
        (batch_statuses(&server.status(&first)) == ["completed"]).then_some(())
    });
    let later = server.ingest(&[2, 3], "HIGH");
    limit_file_size(server, Some(records_end(dir)));
    assert_eq!(
        batch_statuses(&server.status(&later)),
        ["yet_to_start", "yet_to_start"],
        "the machine was too slow: the next release came before the disk was made full"
    );
    (first, later)
}

#[test]
fn a_release_that_cannot_be_journaled_is_held_and_health_says_so_until_the_disk_takes_it() {
    let dir = TempDir::new("held");
    let server = durable(dir.path(), "2s");
    let (_, later) = hold_a_release(&server, &dir);

    let health = wait_health(&server, 503);
    assert_eq!(health["error"], "storage_unavailable", "{health}");
    let detail = health["detail"].as_str().unwrap();
    assert!(detail.contains("File too large") && detail.contains("no batch is released"), "{detail}");
    let queue = server.get("/queue").json;
    assert_eq!(
        (queue["storage"]["durable"].as_bool(), queue["storage"]["available"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(queue["storage"]["error"].as_str().unwrap().contains("File too large"), "{queue}");
    assert!(queue["storage"]["unavailable_since"].is_string(), "{queue}");
    // Released by the pacer, but never started: not triggered, the external API not called.
    assert_eq!(batch(&server, &later, 0), ("yet_to_start".into(), 0, None));
    let refused = server.post("/ingest", r#"{"ids": [9], "priority": "LOW"}"#);
    assert_eq!((refused.status, refused.json["error"].as_str()), (503, Some("storage_unavailable")), "{refused:?}");
    assert_eq!(batch(&server, &later, 0), ("yet_to_start".into(), 0, None));

    let freed = now_ms();
    limit_file_size(&server, None);
    wait_health(&server, 200);
    let queue = server.get("/queue").json;
    assert_eq!(queue["storage"], json!({"durable": true, "available": true, "error": null, "unavailable_since": null}));
    let second = wait_for("the last batch to start", PATIENCE, || {
        let last = batch(&server, &later, 1);
        (last.0 != "yet_to_start").then_some(last)
    });
    let (status, attempts, started) = batch(&server, &later, 0);
    assert_eq!((status.as_str(), attempts), ("completed", 1));
    // It started once the disk took its record: journaled as then, not as its release.
    let started = started.unwrap();
    assert!(started + 100 >= freed, "triggered at {started}, the disk was freed at {freed}");
    // And the interval counts from that start.
    assert!(
        second.2.unwrap() >= started + 2000,
        "released {} ms after the held batch started",
        second.2.unwrap() - started
    );
}

#[test]
fn a_crash_while_a_release_is_held_leaves_it_to_run_once_and_the_interval_holds() {
    let dir = TempDir::new("held-crash");
    let server = durable(dir.path(), "2s");
    let (first, later) = hold_a_release(&server, &dir);
    wait_health(&server, 503);
    assert_eq!(batch(&server, &later, 0), ("yet_to_start".into(), 0, None));
    let last_release = batch(&server, &first, 0).2.unwrap();
    server.crash();

    let server = durable(dir.path(), "2s");
    let (status, attempts, started) = wait_for("the held batch to run", PATIENCE, || {
        let b = batch(&server, &later, 0);
        (b.0 == "completed").then_some(b)
    });
    // Its first run: it never started before the crash.
    assert_eq!((status.as_str(), attempts), ("completed", 1));
    assert!(started.unwrap() >= last_release + 2000, "released {} ms after the last", started.unwrap() - last_release);
}

#[test]
fn health_recovers_by_itself_once_the_disk_takes_writes_again() {
    let dir = TempDir::new("probe");
    let server = durable(dir.path(), "1h");
    server.ingest(&[1], "HIGH");
    limit_file_size(&server, Some(records_end(&dir)));
    let refused = server.post("/ingest", r#"{"ids": [2], "priority": "LOW"}"#);
    assert_eq!((refused.status, refused.json["error"].as_str()), (503, Some("storage_unavailable")), "{refused:?}");
    assert!(refused.json["detail"].as_str().unwrap().contains("cannot save new work"), "{refused:?}");
    assert_eq!(server.get("/health").status, 503);
    // Nothing writes from here on: the journal's own probe notices.
    limit_file_size(&server, None);
    wait_health(&server, 200);
    assert_eq!(server.get("/queue").json["storage"]["available"], true);
}

/// A tmpfs of `size` on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    #[track_caller]
    fn mount(label: &str, size: &str) -> Tmpfs {
        let dir = TempDir::new(label);
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.path()]).output();
        match out {
            Ok(out) if out.status.success() => Tmpfs { dir },
            other => panic!(
                "THIS TEST NEEDS A TMPFS: could not mount one on {} ({other:?}); run it as root, as CI runs `make test`",
                dir.path()
            ),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.dir.0).unwrap();
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a file of zeros until at most `leave` bytes are free (0: until the disk is full).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path(name);
        let mut file = File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while self.free() > leave {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
    }
}

#[test]
fn a_full_disk_turns_health_to_503_and_freeing_space_turns_it_back() {
    let fs = Tmpfs::mount("enospc", "4m");
    let data = fs.path("data");
    let server = durable(data.to_str().unwrap(), "1h");
    server.ingest(&[1], "HIGH");
    let filler = fs.fill("filler", 0);
    let big = json!({"ids": (1..=2000).collect::<Vec<u32>>(), "priority": "LOW"}).to_string();
    let refused = server.post("/ingest", &big);
    assert_eq!((refused.status, refused.json["error"].as_str()), (503, Some("storage_unavailable")), "{refused:?}");
    let health = server.get("/health");
    assert_eq!((health.status, health.json["error"].as_str()), (503, Some("storage_unavailable")), "{health:?}");
    assert!(health.json["detail"].as_str().unwrap().contains("No space left on device"), "{health:?}");
    assert_eq!(server.get("/queue").json["storage"]["available"], false);

    std::fs::remove_file(filler).unwrap();
    wait_health(&server, 200);
    assert_eq!(server.post("/ingest", &big).status, 200);
}

/// A neighbour on the same filesystem appends 512 B at a time (and starts over at 256 KiB, so
/// it never fills the disk itself); returns its count of writes and of failed writes.
fn neighbour(path: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let (writes, failures) = (AtomicU64::new(0), AtomicU64::new(0));
        let chunk = [7u8; 512];
        while !stop.load(Ordering::Relaxed) {
            match file.write_all(&chunk) {
                Ok(()) => writes.fetch_add(1, Ordering::Relaxed),
                Err(_) => failures.fetch_add(1, Ordering::Relaxed),
            };
            if file.metadata().unwrap().len() >= 256 << 10 {
                file.set_len(0).unwrap();
            }
        }
        (writes.into_inner(), failures.into_inner())
    })
}

#[test]
fn the_journal_never_takes_a_small_filesystem_below_its_margin() {
    let fs = Tmpfs::mount("margin", "4m");
    fs.fill("filler", 1100 << 10);
    let data = fs.path("data");
    let server = Server::start(&["--interval", "1h", "--batch-size", "10", "--data-dir", data.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = neighbour(&fs.path("neighbour"), Arc::clone(&stop));
    let mut lowest = u64::MAX;
    for n in 0..200u32 {
        let ids: Vec<u32> = (n * 10 + 1..=n * 10 + 10).collect();
        server.ingest(&ids, "LOW");
        lowest = lowest.min(fs.free());
    }
    stop.store(true, Ordering::Relaxed);
    let (writes, failures) = writer.join().unwrap();
    assert!(writes > 1000, "the neighbour wrote only {writes} times");
    assert_eq!(
        failures,
        0,
        "the neighbour's writes failed {failures} of {} times; free space seen as low as {lowest} B",
        writes + failures
    );
}
