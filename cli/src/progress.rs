//! Progress of the Map states (copy, index builds, validations, verification): on a terminal a
//! bar redrawn in place with items, bytes, rate and time left; otherwise a plain line every
//! [`PLAIN_EVERY`], so that logs of long runs show progress without filling up.
//!
//! `pgferry run` feeds it from the local runner's events (each item's output carries its bytes);
//! `pgferry watch` from the Map Runs' item counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::summary::{human_bytes, human_duration};

/// How often a plain (non-terminal) progress line is printed.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often a terminal bar is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 24;

/// One Map state's progress.
#[derive(Debug)]
pub struct MapProgress {
    name: String,
    started: Instant,
    total_items: Option<u64>,
    /// The plan's estimate of the bytes the Map moves (copy only).
    total_bytes: Option<u64>,
    items_done: u64,
    /// Bytes committed per item so far (an item's output counts all its invocations).
    bytes: HashMap<String, u64>,
    last_shown: Option<Instant>,
}

impl MapProgress {
    pub fn new(name: &str, total_items: Option<u64>, total_bytes: Option<u64>) -> Self {
        Self {
            name: name.to_string(),
            started: Instant::now(),
            total_items,
            total_bytes: total_bytes.filter(|b| *b > 0),
            items_done: 0,
            bytes: HashMap::new(),
            last_shown: None,
        }
    }

    /// An invocation of an item ended: its bytes so far (if it moves bytes) and whether the item
    /// is done (an item out of time is invoked again).
    pub fn item(&mut self, id: Option<&str>, bytes: Option<u64>, done: bool) {
        if let (Some(id), Some(bytes)) = (id, bytes) {
            self.bytes.insert(id.to_string(), bytes);
        }
        if done {
            self.items_done += 1;
        }
    }

    /// Counts as a Map Run reports them (`pgferry watch`).
    pub fn set_counts(&mut self, done: u64, total: u64) {
        self.items_done = done;
        self.total_items = Some(total);
    }

    /// Whether a line is due now: on a terminal at most every 100 ms, else every [`PLAIN_EVERY`]
    /// (the first after [`PLAIN_EVERY`] too: short Maps print none).
    pub fn due(&mut self, terminal: bool) -> bool {
        let now = Instant::now();
        let every = if terminal { REDRAW_EVERY } else { PLAIN_EVERY };
        let since = self.last_shown.unwrap_or(self.started);
        let due = if terminal && self.last_shown.is_none() { true } else { now.duration_since(since) >= every };
        if due {
            self.last_shown = Some(now);
        }
        due
    }

    /// Shows the line when one is due: redrawn in place on a terminal, a plain line otherwise.
    pub fn show(&mut self, terminal: bool) {
        if !self.due(terminal) {
            return;
        }
        if terminal {
            eprint!("\r\x1b[2K  ⋯ {}", self.line());
        } else {
            eprintln!("  ⋯ {}", self.line());
        }
    }

    pub fn line(&self) -> String {
        render(&Snapshot {
            name: &self.name,
            elapsed: self.started.elapsed(),
            items_done: self.items_done,
            total_items: self.total_items,
            bytes_done: (!self.bytes.is_empty()).then(|| self.bytes.values().sum()),
            total_bytes: self.total_bytes,
        })
    }
}

/// What a progress line shows.
#[derive(Debug)]
struct Snapshot<'a> {
    name: &'a str,
    elapsed: Duration,
    items_done: u64,
    total_items: Option<u64>,
    bytes_done: Option<u64>,
    total_bytes: Option<u64>,
}

/// `CopyChunks [##########..............] 41/64 · 120.5 MiB of ~300.0 MiB · 45.2 MiB/s · 4 s left`
fn render(s: &Snapshot<'_>) -> String {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    let mut parts = Vec::new();
    let fraction = match (s.bytes_done, s.total_bytes, s.total_items) {
        (Some(done), Some(total), _) => Some(done as f64 / total as f64),
        (_, _, Some(total)) if total > 0 => Some(s.items_done as f64 / total as f64),
        _ => None,
    }
    .map(|f| f.clamp(0.0, 1.0));
    let bar = fraction.map(|f| {
        let filled = (f * BAR_WIDTH as f64).round() as usize;
        format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
    });
    parts.push(match s.total_items {
        Some(total) => format!("{}/{total}", s.items_done),
        None => format!("{} done", s.items_done),
    });
    let left = match (s.bytes_done, s.total_bytes) {
        (Some(done), Some(total)) => {
            parts.push(format!("{} of ~{}", human_bytes(done), human_bytes(total)));
            let rate = done as f64 / secs;
            parts.push(format!("{}/s", human_bytes(rate as u64)));
            (rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate)
        }
        (Some(done), None) => {
            parts.push(human_bytes(done));
            parts.push(format!("{}/s", human_bytes((done as f64 / secs) as u64)));
            None
        }
        _ => {
            let rate = s.items_done as f64 / secs;
            parts.push(format!("{rate:.1}/s"));
            match s.total_items {
                Some(total) if rate > 0.0 => Some(total.saturating_sub(s.items_done) as f64 / rate),
                _ => None,
            }
        }
    };
    if let Some(left) = left {
        parts.push(format!("{} left", human_duration(Duration::from_secs_f64(left.min(1e7)))));
    }
    match bar {
        Some(bar) => format!("{} {bar} {}", s.name, parts.join(" · ")),
        None => format!("{} {}", s.name, parts.join(" · ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(items_done: u64, bytes_done: Option<u64>) -> Snapshot<'static> {
        Snapshot {
            name: "CopyChunks",
            elapsed: Duration::from_secs(10),
            items_done,
            total_items: Some(64),
            bytes_done,
            total_bytes: Some(400 << 20),
        }
    }

    #[test]
    fn a_copy_shows_items_bytes_rate_and_time_left() {
        let line = render(&snapshot(16, Some(100 << 20)));
        assert!(line.starts_with("CopyChunks [######..................] 16/64 · 100.0 MiB of ~400.0 MiB"), "{line}");
        assert!(line.contains("10.0 MiB/s") && line.ends_with("30.0s left"), "{line}");
    }

    #[test]
    fn without_bytes_the_rate_and_time_left_follow_the_items() {
        let mut s = snapshot(16, None);
        s.name = "VerifyChunks";
        s.total_bytes = None;
        let line = render(&s);
        assert!(line.starts_with("VerifyChunks [######..................] 16/64 · 1.6/s"), "{line}");
        assert!(line.ends_with("30.0s left"), "{line}");
        // Nothing done yet: no rate to extrapolate from.
        let line = render(&Snapshot { items_done: 0, ..s });
        assert!(!line.contains("left"), "{line}");
    }

    #[test]
    fn an_item_invoked_twice_counts_its_bytes_once_and_is_done_once() {
        let mut p = MapProgress::new("CopyChunks", Some(2), Some(1000));
        p.item(Some("chunk-0001"), Some(300), false);
        p.item(Some("chunk-0001"), Some(600), true);
        p.item(Some("chunk-0002"), Some(400), true);
        assert_eq!((p.items_done, p.bytes.values().sum::<u64>()), (2, 1000));
        assert!(p.line().contains("2/2 · 1000 B of ~1000 B"), "{}", p.line());
    }

    #[test]
    fn plain_lines_wait_for_their_interval_and_the_terminal_bar_shows_at_once() {
        let mut p = MapProgress::new("CopyChunks", Some(2), None);
        assert!(!p.due(false), "a plain line only after 10 s");
        assert!(p.due(true));
        assert!(!p.due(true), "redrawn at most every 100 ms");
    }
}
