//! The end-of-run summary: one line per phase (duration, rows, bytes) and the JSON run report.

use std::time::Duration;

use pgferry_core::asl::Outcome;
use pgferry_core::step::{DiagnoseOutput, PreflightOutput, keys};
use pgferry_core::store::ArtifactStore;
use pgferry_core::verify::Report;
use serde::Serialize;

/// One top-level state of the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub phase: String,
    pub duration_ms: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Phase {
    pub fn new(name: &str, elapsed: Duration, ok: bool) -> Self {
        Self {
            phase: name.to_string(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            ok,
            rows: None,
            bytes: None,
        }
    }
}

/// What `--report` writes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub run_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub phases: Vec<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<PreflightOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<DiagnoseOutput>,
}

impl RunReport {
    /// Collects the run's artifacts (each may be missing when the run stopped early).
    pub async fn gather(store: &ArtifactStore, run_id: &str, phases: Vec<Phase>, outcome: &Outcome) -> Self {
        let (status, error, cause) = match outcome {
            Outcome::Succeeded(_) => ("succeeded", None, None),
            Outcome::Failed { error, cause } => ("failed", Some(error.clone()), Some(cause.clone())),
        };
        Self {
            run_id: run_id.to_string(),
            status,
            error,
            cause,
            phases,
            preflight: store.get_json(&keys::preflight(run_id)).await.ok(),
            verification: store.get_json(&keys::report(run_id)).await.ok(),
            failure: store.get_json(&keys::failure(run_id)).await.ok(),
        }
    }

    /// Puts copied and verified rows and bytes on the phases that moved them.
    pub fn fill_phase_totals(&mut self) {
        let Some(v) = &self.verification else { return };
        let copied = (v.tables.iter().map(|t| t.rows_copied).sum(), v.tables.iter().map(|t| t.bytes_copied).sum());
        let verified: u64 = v.tables.iter().map(|t| t.source_rows).sum();
        for p in &mut self.phases {
            match p.phase.as_str() {
                "CopyChunks" => (p.rows, p.bytes) = (Some(copied.0), Some(copied.1)),
                "VerifyChunks" => p.rows = Some(verified),
                _ => {}
            }
        }
    }

    /// `target equals source: …`: the rows the target holds, and what this run copied when that
    /// is not all of them (a refresh re-copies some, a cutover none).
    pub fn equal_line(&self) -> String {
        let Some(v) = &self.verification else { return "target equals source".to_string() };
        let held: u64 = v.tables.iter().map(|t| t.target_rows).sum();
        let copied: u64 = v.tables.iter().map(|t| t.rows_copied).sum();
        equal_line(held, copied, v.tables.len())
    }

    /// The per-phase table printed at the end of `pgferry run`.
    pub fn table(&self) -> String {
        // As wide as the longest phase name (`ValidateForeignKeys`), so the columns stay aligned.
        let w = self.phases.iter().map(|p| p.phase.chars().count()).max().unwrap_or(0).max(16);
        let mut out = format!("\n{:<w$} {:>10} {:>12} {:>14}  result\n", "phase", "duration", "rows", "bytes");
        let total: u64 = self.phases.iter().map(|p| p.duration_ms).sum();
        for p in &self.phases {
            out += &format!(
                "{:<w$} {:>10} {:>12} {:>14}  {}\n",
                p.phase,
                human_duration(Duration::from_millis(p.duration_ms)),
                p.rows.map_or(String::new(), |r| r.to_string()),
                p.bytes.map_or(String::new(), human_bytes),
                if p.ok { "ok" } else { "failed" }
            );
        }
        out += &format!("{:<w$} {:>10}\n", "total", human_duration(Duration::from_millis(total)));
        out
    }
}

/// `target equals source: 6095640 rows in 6 tables (1095276 copied by this run)`.
pub fn equal_line(held: u64, copied: u64, tables: usize) -> String {
    let copied = if copied == held { String::new() } else { format!(" ({copied} copied by this run)") };
    format!("target equals source: {held} rows in {tables} tables{copied}")
}

pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn the_equal_line_counts_the_rows_the_target_holds_and_says_what_this_run_copied() {
        assert_eq!(equal_line(28000, 28000, 3), "target equals source: 28000 rows in 3 tables");
        assert_eq!(
            equal_line(6095640, 1095276, 6),
            "target equals source: 6095640 rows in 6 tables (1095276 copied by this run)"
        );
        assert_eq!(equal_line(1050, 0, 4), "target equals source: 1050 rows in 4 tables (0 copied by this run)");
    }
}
