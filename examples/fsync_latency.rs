//! Measures this disk's fsync latency the way the journal pays it: append a journal-sized
//! record, then `sync_data`. Usage: `cargo run --release --example fsync_latency -- DIR [COUNT]`.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| std::env::temp_dir().display().to_string()));
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(500);
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut file = OpenOptions::new().create(true).append(true).open(&path).expect("create the probe file");
    let record = [b'x'; 200];
    let mut samples: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            file.write_all(&record).and_then(|()| file.sync_data()).expect("write and sync");
            start.elapsed()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("{{\"fsync_ms_p50\": {:.3}, \"fsync_ms_p99\": {:.3}, \"samples\": {count}}}", at(0.5), at(0.99));
}
