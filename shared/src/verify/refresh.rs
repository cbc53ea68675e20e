//! Mode `refresh`, in the verify step: what the refresh compared, left alone, re-copied and
//! deleted, and how it was verified (see [`crate::refresh`] for the mode).

use crate::context::StepContext;
use crate::error::Result;
use crate::pg::QualifiedName;
use crate::refresh::*;
use crate::step::{CopyChunkOutput, RefreshCounts, keys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// The report

/// What a refresh did, in the run report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshSummary {
    /// The earlier run whose copy was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_of: Option<String>,
    pub counts: RefreshCounts,
    /// Tables with rows re-copied or deleted: `(table, rows copied, rows deleted)`.
    pub tables_changed: Vec<(QualifiedName, u64, u64)>,
    /// Tables created, rebuilt or dropped by the schema step.
    pub schema: Vec<TableChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The verified run whose transaction-id marks told which rows changed (`None`: rows were
    /// compared by content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_since: Option<String>,
    /// Per table, what the verification after the refresh hashed now and what it proved
    /// unchanged since an earlier verified run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<TableVerification>,
    /// One line: `copied no rows: …` for an unchanged database.
    pub summary: String,
}

/// A table's verification after a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableVerification {
    pub table: QualifiedName,
    /// Rows hashed on both sides now.
    pub rows_hashed: u64,
    /// Rows written on neither side since the verified run `unchanged_since` (keys compared in
    /// this run).
    pub rows_unchanged: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<String>,
    /// Of `rows_unchanged`, those whose keys the refresh's own comparison merged (no second
    /// pass, `refresh.verify: changed`); the others' keys were compared after the refresh.
    #[serde(default)]
    pub rows_unchanged_by_refresh: u64,
}

/// `1 row`, `2 rows`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Gathers the chunks' refresh counts and the schema step's actions; `None` when the run's
/// schema step did not refresh (a verification on its own).
pub async fn summarize(ctx: &StepContext, run: &str) -> Result<Option<RefreshSummary>> {
    let Ok(schema) = ctx.store.get_json::<SchemaRefresh>(&keys::refresh_schema(run)).await else {
        return Ok(None);
    };
    let mut out = RefreshSummary::default();
    let mut per_table: BTreeMap<QualifiedName, (u64, u64)> = BTreeMap::new();
    for key in ctx.store.list(&keys::copy_prefix(run)).await? {
        let c: CopyChunkOutput = ctx.store.get_json(&key).await?;
        if let Some(r) = c.refresh {
            out.counts.add(&r);
            if r.rows_reloaded + r.rows_deleted > 0 {
                let t = per_table.entry(c.table.clone()).or_default();
                t.0 += r.rows_reloaded;
                t.1 += r.rows_deleted;
            }
        }
    }
    out.tables_changed = per_table.into_iter().map(|(t, (c, d))| (t, c, d)).collect();
    let mut verified: BTreeMap<QualifiedName, TableVerification> = BTreeMap::new();
    for key in ctx.store.list(&crate::chunk::scope_prefix(run)).await? {
        let v: crate::chunk::VerifyScope = ctx.store.get_json(&key).await?;
        let t = verified.entry(v.table.clone()).or_insert_with(|| TableVerification {
            table: v.table.clone(),
            rows_hashed: 0,
            rows_unchanged: 0,
            unchanged_since: None,
            rows_unchanged_by_refresh: 0,
        });
        t.rows_hashed += v.rows_hashed;
        t.rows_unchanged += v.rows_unchanged;
        if v.by_refresh {
            t.rows_unchanged_by_refresh += v.rows_unchanged;
        }
        t.unchanged_since = t.unchanged_since.take().or(v.unchanged_since);
    }
    out.verification = verified.into_values().collect();
    out.changes_since = schema.watermarks.as_ref().map(|w| w.run_id.clone());
    out.refresh_of = Some(schema.refresh_of);
    out.schema = schema.tables;
    out.notes = schema.notes;
    let c = &out.counts;
    let slices = (c.slices_equal + c.slices_reloaded) as u64;
    let compared = match &out.changes_since {
        Some(run) => format!(
            "{} in {} checked for changes since verified run {run} (transaction ids, keys)",
            count(c.rows_compared, "row"),
            count(slices, "slice")
        ),
        None => format!("{} in {} compared by content", count(c.rows_compared, "row"), count(slices, "slice")),
    };
    out.summary = if c.rows_reloaded == 0 && c.rows_deleted == 0 {
        format!("refresh copied no rows: {compared}, all equal")
    } else {
        format!(
            "refresh re-copied {} and deleted {} in {} of {} ({compared}, {} left alone)",
            count(c.rows_reloaded, "row"),
            c.rows_deleted,
            c.slices_reloaded,
            count(slices, "slice"),
            count(c.rows_skipped, "row")
        )
    };
    let (hashed, unchanged, by_refresh) = out
        .verification
        .iter()
        .fold((0, 0, 0), |(h, u, r), t| (h + t.rows_hashed, u + t.rows_unchanged, r + t.rows_unchanged_by_refresh));
    if hashed + unchanged > 0 {
        out.summary.push_str(&format!("; verified: {} hashed in this run", count(hashed, "row")));
        if let Some(run) = out.verification.iter().find_map(|t| t.unchanged_since.clone()) {
            let how = match (by_refresh, unchanged - by_refresh) {
                (0, _) => "keys compared after the refresh".to_string(),
                (_, 0) => "keys merged by the refresh, copied rows hashed after its repairs".to_string(),
                (r, a) => format!("keys of {r} merged by the refresh, of {a} compared after it"),
            };
            out.summary.push_str(&format!(
                ", {} unchanged on both sides since verified run {run} ({how})",
                count(unchanged, "row")
            ));
        }
    }
    for action in [TableAction::Created, TableAction::Rebuilt, TableAction::Dropped] {
        let names: Vec<String> =
            out.schema.iter().filter(|t| t.action == action).map(|t| t.table.to_string()).collect();
        if !names.is_empty() {
            out.summary.push_str(&format!("; tables {}: {}", format!("{action:?}").to_lowercase(), names.join(", ")));
        }
    }
    Ok(Some(out))
}
