//! The table and its JSON: one row per figure, with its goal and whether it was met.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::Setup;

/// A figure's goal: at least or at most a bound.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    None,
    AtLeast(f64),
    AtMost(f64),
}

struct Row {
    item: String,
    value: f64,
    unit: &'static str,
    goal: Goal,
}

impl Row {
    fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::None => None,
            Goal::AtLeast(bound) => Some(self.value >= bound),
            Goal::AtMost(bound) => Some(self.value <= bound),
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::None => String::new(),
            Goal::AtLeast(bound) => format!(">= {}", number(bound)),
            Goal::AtMost(bound) => format!("<= {}", number(bound)),
        }
    }
}

pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    header: Value,
}

impl Report {
    pub fn new(setup: &Setup) -> Report {
        let header = json!({
            "date": ingestd::rfc3339::format(std::time::SystemTime::now()),
            "machine": machine(),
            "load_average_at_start": loadavg(),
            "seconds_per_wrk_run": setup.seconds.as_secs(),
            "rounds": setup.rounds,
            "threads": setup.threads,
        });
        eprintln!("bench: {header}");
        Report { rows: Vec::new(), notes: Vec::new(), header }
    }

    /// Adds a figure (and prints it at once, so a long run shows progress).
    pub fn row(&mut self, item: impl Into<String>, value: f64, unit: &'static str, goal: Goal) {
        let row = Row { item: item.into(), value, unit, goal };
        eprintln!("bench: {} = {} {} {}", row.item, number(row.value), row.unit, row.goal_text());
        self.rows.push(row);
    }

    /// A line of text printed under the table (e.g. the hardening bench's own output).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn finish(self, json_path: &Path) {
        println!("{}", self.table());
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| json!({"item": r.item, "value": r.value, "unit": r.unit, "goal": r.goal_text(), "met": r.met()}))
            .collect();
        let mut document = self.header;
        document["load_average_at_end"] = json!(loadavg());
        document["rows"] = json!(rows);
        document["notes"] = json!(self.notes);
        let text = serde_json::to_string_pretty(&document).expect("JSON");
        std::fs::write(json_path, text).expect("write the JSON report");
        println!("written to {}", json_path.display());
    }

    fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.item.len()).max().unwrap_or(10);
        let mut out = format!("{:width$} | {:>12} | {:<6} | {:<10} | met\n", "figure", "value", "unit", "goal");
        let _ = writeln!(out, "{}", "-".repeat(width + 44));
        for r in &self.rows {
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            let _ = writeln!(
                out,
                "{:width$} | {:>12} | {:<6} | {:<10} | {met}",
                r.item,
                number(r.value),
                r.unit,
                r.goal_text()
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        let _ = write!(
            out,
            "machine: {}; load average {} at start, {} at end",
            self.header["machine"],
            self.header["load_average_at_start"],
            loadavg()
        );
        out
    }
}

/// Three significant digits or so; integers stay integers.
fn number(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 || v == v.trunc() => format!("{value:.0}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": model.unwrap_or("unknown"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
