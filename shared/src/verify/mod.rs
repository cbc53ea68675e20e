//! Verification, the run report and failure diagnosis.
//!
//! Each chunk is compared by row count and an order-independent hash computed inside both
//! servers under the same pinned session settings: the sum (not xor, so duplicate rows cannot
//! cancel out) of a 64-bit hash of each row's text form, in which NULL and `''` differ. No row
//! leaves either server.

pub mod inventory;

pub mod refresh;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::chunk::{VerifyScope, chunk_hash_sql, hash_sql, row_hash, scope_key};
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::{QualifiedName, quote_ident};
use crate::step::Plan;
use crate::step::{
    Chunk, ChunkInput, CopyChunkOutput, DiagnoseInput, DiagnoseOutput, Differences, ReportOutput, Slice, StepInput,
    VerifyChunkOutput, keys,
};
use crate::verify::inventory::InventoryReport;

/// Compares one chunk on both sides; a differing chunk with a key is drilled down to its keys.
#[tracing::instrument(skip_all, fields(chunk = %input.chunk.id, table = %input.chunk.table))]
pub async fn verify_chunk(ctx: &StepContext, input: &ChunkInput) -> Result<VerifyChunkOutput> {
    let chunk = &input.chunk;
    let target = ctx.connect(&input.job, Side::Target, "verify", &input.run_id).await?;
    // After a refresh with transaction-id marks, a keyed chunk is proven by its keys and the
    // rows written since the marks' verified run; anything else, or any difference, takes the
    // full comparison below.
    let marks = match input.job.mode {
        crate::job::Mode::Refresh
            if !chunk.key.is_empty() && !chunk.columns.is_empty() && !input.job.full_verify_after_refresh() =>
        {
            crate::refresh::watermarks(ctx, &input.run_id).await
        }
        _ => None,
    };
    // The refresh's own proof when every slice of the chunk gave one (`refresh.verify: changed`):
    // nothing to read on the source. A keyed slice proves itself only with the marks.
    let proof = match input.job.mode {
        crate::job::Mode::Refresh
            if !chunk.columns.is_empty()
                && (chunk.key.is_empty() || marks.is_some())
                && input.job.refresh_verify() == crate::job::RefreshVerify::Changed =>
        {
            refresh_proof(ctx, &target, input).await?
        }
        _ => None,
    };
    let keyed_scope =
        |v: &crate::watermark::ChangedVerify, marks: &crate::watermark::Watermarks, by_refresh| VerifyScope {
            chunk_id: chunk.id.clone(),
            table: chunk.table.clone(),
            rows_hashed: v.rows_hashed,
            rows_unchanged: v.source_rows.saturating_sub(v.rows_hashed),
            unchanged_since: Some(marks.run_id.clone()),
            by_refresh,
        };
    match (&proof, &marks) {
        (Some(v), _) if chunk.key.is_empty() => {
            // A table without a key the refresh found equal by its count and row hash sum on
            // both sides, or repaired as a multiset of rows and proven (every row hashed).
            let scope = VerifyScope {
                chunk_id: chunk.id.clone(),
                table: chunk.table.clone(),
                rows_hashed: v.rows_hashed,
                rows_unchanged: 0,
                unchanged_since: None,
                by_refresh: true,
            };
            let proof = format!("{} rows hashed equal by the refresh", v.rows_hashed);
            return record_proven(ctx, input, &scope, v, proof).await;
        }
        (Some(v), Some(marks)) => {
            let proof = format!("keys merged equal and {} copied rows hashed equal by the refresh", v.rows_hashed);
            return record_proven(ctx, input, &keyed_scope(v, marks, true), v, proof).await;
        }
        _ => {}
    }
    let source = ctx.connect(&input.job, Side::Source, "verify", &input.run_id).await?;
    let hash = row_hash(&source, chunk).await?;
    if let Some(marks) = &marks {
        let filter = crate::chunk::chunk_predicate(chunk);
        let v = crate::watermark::verify_changed(&source, &target, chunk, &hash, &filter, marks).await?;
        if v.equal {
            let proof = format!("keys equal; {} changed rows hashed equal", v.rows_hashed);
            return record_proven(ctx, input, &keyed_scope(&v, marks, false), &v, proof).await;
        }
    }
    let sql = chunk_hash_sql(chunk, &hash);
    let (s, t) = tokio::try_join!(source.query_one(&sql, &[]), target.query_one(&sql, &[]))
        .map_err(|e| Error::db(format!("hash {}", chunk.table), e))?;
    let (source_rows, target_rows) =
        (u64::try_from(s.get::<_, i64>(0)).unwrap_or(0), u64::try_from(t.get::<_, i64>(0)).unwrap_or(0));
    let (source_hash, target_hash): (String, String) = (s.get(1), t.get(1));
    let equal = source_rows == target_rows && source_hash == target_hash;
    let differences = if equal || chunk.key.is_empty() {
        None
    } else {
        let mut found = Differences::default();
        let range = chunk_range(chunk);
        drill_down(&source, &target, chunk, &hash, range, 0, &mut found).await?;
        Some(found)
    };
    if input.job.mode == crate::job::Mode::Refresh {
        let scope = VerifyScope {
            chunk_id: chunk.id.clone(),
            table: chunk.table.clone(),
            rows_hashed: source_rows,
            rows_unchanged: 0,
            unchanged_since: None,
            by_refresh: false,
        };
        ctx.store.put_json(&scope_key(&input.run_id, &chunk.id), &scope).await?;
    }
    let output = VerifyChunkOutput {
        chunk_id: chunk.id.clone(),
        table: chunk.table.clone(),
        equal,
        source_rows,
        target_rows,
        source_hash,
        target_hash,
        differences,
    };
    ctx.store.put_json(&keys::verify(&input.run_id, &chunk.id), &output).await?;
    Ok(output)
}

/// Records a chunk of a refresh proven equal without hashing all of it: how it was proven
/// (`runs/<run>/verify-scope/`) and its result, `proof` standing for both sides' hashes.
async fn record_proven(
    ctx: &StepContext,
    input: &ChunkInput,
    scope: &VerifyScope,
    v: &crate::watermark::ChangedVerify,
    proof: String,
) -> Result<VerifyChunkOutput> {
    let chunk = &input.chunk;
    ctx.store.put_json(&scope_key(&input.run_id, &chunk.id), scope).await?;
    let output = VerifyChunkOutput {
        chunk_id: chunk.id.clone(),
        table: chunk.table.clone(),
        equal: true,
        source_rows: v.source_rows,
        target_rows: v.target_rows,
        source_hash: proof.clone(),
        target_hash: proof,
        differences: None,
    };
    ctx.store.put_json(&keys::verify(&input.run_id, &chunk.id), &output).await?;
    Ok(output)
}

/// The refresh's own verification of a chunk, from the ledger's `proven` ([`crate::refresh`]):
/// - keyed: the copy chunk with the same slices had every slice committed in this run and proven
///   equal in its transaction (rows hashed: those the repairs copied);
/// - keyless: the table, compared whole by the slice holding its first page, was found equal by
///   its count and row hash sum on both sides or repaired as a multiset of rows and proven in
///   the repair's transaction (rows hashed: all of them), its other slices covered by that one.
///
/// `None` when any slice was not.
async fn refresh_proof(
    ctx: &StepContext,
    target: &tokio_postgres::Client,
    input: &ChunkInput,
) -> Result<Option<crate::watermark::ChangedVerify>> {
    // Stored by the plan step; a caller outside the state machine may have none: second pass.
    let Ok(chunks) = ctx.store.get_json::<Vec<Chunk>>(&keys::chunks(&input.run_id)).await else {
        return Ok(None);
    };
    let keyless = input.chunk.key.is_empty();
    let covering: Vec<&Chunk> =
        chunks.iter().filter(|c| c.table == input.chunk.table && (keyless || c.slices == input.chunk.slices)).collect();
    let ids: Vec<String> = covering.iter().map(|c| c.id.clone()).collect();
    let slices: usize = covering.iter().map(|c| c.slices.len()).sum();
    if ids.is_empty() {
        return Ok(None);
    }
    let row = target
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE proven), count(*) FILTER (WHERE compared IS NULL), \
             coalesce(sum(compared), 0)::bigint, coalesce(sum(rows), 0)::bigint \
             FROM pgferry.copied_chunks WHERE run_id = $1 AND chunk_id = ANY($2)",
            &[&input.run_id, &ids],
        )
        .await
        .map_err(|e| Error::db("read the refresh's proof from the chunk ledger", e))?;
    let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    let (committed, proven, covered, compared, copied) = (n(0), n(1), n(2), n(3), n(4));
    let whole = committed == slices as u64
        && if keyless { proven == 1 && covered + 1 == committed } else { proven == committed };
    Ok(whole.then_some(crate::watermark::ChangedVerify {
        equal: true,
        source_rows: compared,
        target_rows: compared,
        rows_hashed: if keyless { compared } else { copied },
    }))
}

/// A key range `[lower, upper)`; `None` is unbounded.
type Range = (Option<Vec<String>>, Option<Vec<String>>);

/// Rows at or below which a differing range is compared row by row (key and hash only).
const LEAF_ROWS: i64 = 2000;
/// Splits before giving up on narrowing a range (a key of ~2^24 distinct values per level).
const MAX_DEPTH: usize = 40;

fn chunk_range(chunk: &Chunk) -> Range {
    match (chunk.slices.first(), chunk.slices.last()) {
        (Some(Slice::KeyRange { lower, .. }), Some(Slice::KeyRange { upper, .. })) => (lower.clone(), upper.clone()),
        _ => (None, None),
    }
}

fn range_filter(chunk: &Chunk, range: &Range) -> Option<String> {
    crate::chunk::slice_predicate(&chunk.key, &Slice::KeyRange { lower: range.0.clone(), upper: range.1.clone() })
}

/// Splits a differing range at its median key until ranges are small, then compares keys and row
/// hashes; stops once every class has its samples.
fn drill_down<'a>(
    source: &'a tokio_postgres::Client,
    target: &'a tokio_postgres::Client,
    chunk: &'a Chunk,
    hash: &'a str,
    range: Range,
    depth: usize,
    found: &'a mut Differences,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let full = |v: &Vec<String>| v.len() >= Differences::SAMPLES;
        if full(&found.missing_on_target) && full(&found.extra_on_target) && full(&found.different) {
            found.more = true;
            return Ok(());
        }
        let sql = hash_sql(chunk, hash, range_filter(chunk, &range));
        let (s, t) = tokio::try_join!(source.query_one(&sql, &[]), target.query_one(&sql, &[]))
            .map_err(|e| Error::db(format!("hash part of {}", chunk.table), e))?;
        let (sc, tc): (i64, i64) = (s.get(0), t.get(0));
        if sc == tc && s.get::<_, String>(1) == t.get::<_, String>(1) {
            return Ok(());
        }
        if sc.max(tc) <= LEAF_ROWS || depth >= MAX_DEPTH {
            return compare_rows(source, target, chunk, hash, &range, found).await;
        }
        // The median key of the side with more rows splits the range in two non-empty halves.
        let (side, count) = if sc >= tc { (source, sc) } else { (target, tc) };
        let keys: Vec<String> = chunk.key.iter().map(|k| quote_ident(&k.name)).collect();
        let texts: Vec<String> = keys.iter().map(|k| format!("{k}::text")).collect();
        let filter = range_filter(chunk, &range).map_or(String::new(), |p| format!(" WHERE {p}"));
        let median_sql = format!(
            "SELECT {} FROM ONLY {}{filter} ORDER BY {} OFFSET $1 LIMIT 1",
            texts.join(", "),
            chunk.table,
            keys.join(", ")
        );
        let row = side
            .query_opt(&median_sql, &[&(count / 2)])
            .await
            .map_err(|e| Error::db(format!("split a range of {}", chunk.table), e))?;
        let Some(row) = row else { return compare_rows(source, target, chunk, hash, &range, found).await };
        let mid: Vec<String> = (0..chunk.key.len()).map(|i| row.get::<_, String>(i)).collect();
        if range.0.as_ref() == Some(&mid) {
            return compare_rows(source, target, chunk, hash, &range, found).await;
        }
        drill_down(source, target, chunk, hash, (range.0.clone(), Some(mid.clone())), depth + 1, found).await?;
        drill_down(source, target, chunk, hash, (Some(mid), range.1.clone()), depth + 1, found).await
    })
}

fn sample(list: &mut Vec<String>, key: String, more: &mut bool) {
    if list.len() < Differences::SAMPLES {
        list.push(key);
    } else {
        *more = true;
    }
}

/// Compares a small range key by key: `(key text, row hash)` pairs leave the servers, rows don't.
async fn compare_rows(
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    chunk: &Chunk,
    hash: &str,
    range: &Range,
    found: &mut Differences,
) -> Result<()> {
    let keys: Vec<String> = chunk.key.iter().map(|k| format!("{}::text", quote_ident(&k.name))).collect();
    let filter = range_filter(chunk, range).map_or(String::new(), |p| format!(" WHERE {p}"));
    let sql = format!("SELECT concat_ws(', ', {}), {} FROM ONLY {}{filter}", keys.join(", "), hash, chunk.table);
    let (s, t) = tokio::try_join!(source.query(&sql, &[]), target.query(&sql, &[]))
        .map_err(|e| Error::db(format!("compare rows of {}", chunk.table), e))?;
    let target_rows: HashMap<String, i64> = t.iter().map(|r| (r.get(0), r.get(1))).collect();
    let source_keys: HashSet<String> = s.iter().map(|r| r.get(0)).collect();
    let mut more = false;
    for row in &s {
        let key: String = row.get(0);
        match target_rows.get(&key) {
            None => sample(&mut found.missing_on_target, key, &mut more),
            Some(h) if *h != row.get::<_, i64>(1) => sample(&mut found.different, key, &mut more),
            Some(_) => {}
        }
    }
    for row in &t {
        let key: String = row.get(0);
        if !source_keys.contains(&key) {
            sample(&mut found.extra_on_target, key, &mut more);
        }
    }
    found.more |= more;
    Ok(())
}

/// One table's line in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableReport {
    pub table: QualifiedName,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    pub source_rows: u64,
    pub target_rows: u64,
    pub equal: bool,
    /// Chunks of the plan with no verify result.
    pub unverified_chunks: Vec<String>,
    /// Sample keys that differ, from the drill-down of the table's differing chunks.
    #[serde(default, skip_serializing_if = "Differences::is_empty")]
    pub differences: Differences,
}

/// The run report, stored at `runs/<run>/report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub run_id: String,
    pub equal: bool,
    pub tables: Vec<TableReport>,
    /// Sequences whose value differs (RDS-CASES T33, T56); empty when all agree.
    #[serde(default)]
    pub sequences_differing: Vec<SequenceReport>,
    pub sequences_compared: usize,
    pub large_objects: LargeObjectsReport,
    pub materialized_views: Vec<QualifiedName>,
    pub unlogged: Vec<QualifiedName>,
    pub skipped: Vec<(QualifiedName, String)>,
    /// Schema and globals inventory (RDS-CASES T56): differences the schema report explains, and
    /// the ones it does not (which make the report unequal).
    #[serde(default)]
    pub inventory: InventoryReport,
    /// Mode refresh: rows compared, left alone and re-copied, tables created or rebuilt
    /// (`refresh copied no rows` when nothing differed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<self::refresh::RefreshSummary>,
}

impl Report {
    /// True when rows, sequences, large objects and the inventory agree (unexplained
    /// inventory differences make it false).
    pub fn equal(&self) -> bool {
        self.equal
    }
}

/// A sequence whose `(last_value, is_called)` differs between the sides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SequenceReport {
    pub sequence: QualifiedName,
    pub source: Option<(i64, bool)>,
    pub target: Option<(i64, bool)>,
}

/// Large objects by OID on both sides (RDS-CASES T34, T56): the sets must be equal.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LargeObjectsReport {
    pub source: u64,
    pub target: u64,
    /// Up to ten OIDs present on one side only.
    pub missing_on_target: Vec<u32>,
    pub extra_on_target: Vec<u32>,
}

impl LargeObjectsReport {
    pub fn equal(&self) -> bool {
        self.source == self.target && self.missing_on_target.is_empty() && self.extra_on_target.is_empty()
    }
}

async fn large_object_oids(client: &tokio_postgres::Client) -> Result<Vec<u32>> {
    let rows = client
        .query("SELECT oid FROM pg_largeobject_metadata ORDER BY oid", &[])
        .await
        .map_err(|e| Error::db("list large objects", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Compares sequences and large objects, which no chunk covers.
async fn compare_outside_tables(
    ctx: &StepContext,
    input: &StepInput,
) -> Result<(Vec<SequenceReport>, usize, LargeObjectsReport)> {
    let (source, target) = tokio::try_join!(
        ctx.connect(&input.job, Side::Source, "verify", &input.run_id),
        ctx.connect(&input.job, Side::Target, "verify", &input.run_id)
    )?;
    let (s, t) = tokio::try_join!(crate::catalog::sequence_values(&source), crate::catalog::sequence_values(&target))?;
    let names: std::collections::BTreeSet<&QualifiedName> = s.keys().chain(t.keys()).collect();
    let differing: Vec<SequenceReport> = names
        .iter()
        .filter(|n| s.get(n) != t.get(n))
        .map(|n| SequenceReport { sequence: (*n).clone(), source: s.get(n).copied(), target: t.get(n).copied() })
        .collect();
    let (so, to) = tokio::try_join!(large_object_oids(&source), large_object_oids(&target))?;
    let (sset, tset): (HashSet<u32>, HashSet<u32>) = (so.iter().copied().collect(), to.iter().copied().collect());
    let lobs = LargeObjectsReport {
        source: so.len() as u64,
        target: to.len() as u64,
        missing_on_target: so.iter().filter(|o| !tset.contains(o)).take(Differences::SAMPLES).copied().collect(),
        extra_on_target: to.iter().filter(|o| !sset.contains(o)).take(Differences::SAMPLES).copied().collect(),
    };
    Ok((differing, names.len(), lobs))
}

/// Gathers the plan, copy results and verify results into the report.
pub async fn report(ctx: &StepContext, input: &StepInput) -> Result<ReportOutput> {
    let run = &input.run_id;
    let plan: Plan = ctx.store.get_json(&keys::plan(run)).await?;
    let mut copied: BTreeMap<String, CopyChunkOutput> = BTreeMap::new();
    for key in ctx.store.list(&keys::copy_prefix(run)).await? {
        let c: CopyChunkOutput = ctx.store.get_json(&key).await?;
        copied.insert(c.chunk_id.clone(), c);
    }
    let mut verified: BTreeMap<String, VerifyChunkOutput> = BTreeMap::new();
    for key in ctx.store.list(&keys::verify_prefix(run)).await? {
        let v: VerifyChunkOutput = ctx.store.get_json(&key).await?;
        verified.insert(v.chunk_id.clone(), v);
    }
    let mut tables: BTreeMap<QualifiedName, TableReport> = BTreeMap::new();
    let entry = |tables: &mut BTreeMap<QualifiedName, TableReport>, name: &QualifiedName| {
        tables.entry(name.clone()).or_insert_with(|| TableReport {
            table: name.clone(),
            rows_copied: 0,
            bytes_copied: 0,
            source_rows: 0,
            target_rows: 0,
            equal: true,
            unverified_chunks: vec![],
            differences: Differences::default(),
        });
    };
    for chunk in &plan.chunks {
        entry(&mut tables, &chunk.table);
        if let (Some(c), Some(t)) = (copied.get(&chunk.id), tables.get_mut(&chunk.table)) {
            t.rows_copied += c.rows;
            t.bytes_copied += c.bytes;
        }
    }
    for item in &plan.verify_items {
        entry(&mut tables, &item.table);
        let Some(t) = tables.get_mut(&item.table) else { continue };
        match verified.get(&item.id) {
            Some(v) => {
                t.source_rows += v.source_rows;
                t.target_rows += v.target_rows;
                t.equal &= v.equal;
                if let Some(d) = &v.differences {
                    let merge = |into: &mut Vec<String>, from: &[String], more: &mut bool| {
                        for key in from {
                            sample(into, key.clone(), more);
                        }
                    };
                    let mut more = d.more;
                    merge(&mut t.differences.missing_on_target, &d.missing_on_target, &mut more);
                    merge(&mut t.differences.extra_on_target, &d.extra_on_target, &mut more);
                    merge(&mut t.differences.different, &d.different, &mut more);
                    t.differences.more |= more;
                }
            }
            None => {
                t.equal = false;
                t.unverified_chunks.push(item.id.clone());
            }
        }
    }
    let tables: Vec<TableReport> = tables.into_values().collect();
    let mut differing: Vec<String> = tables.iter().filter(|t| !t.equal).map(|t| t.table.to_string()).collect();
    let (sequences_differing, sequences_compared, large_objects) = compare_outside_tables(ctx, input).await?;
    differing.extend(sequences_differing.iter().map(|s| format!("sequence {}", s.sequence)));
    if !large_objects.equal() {
        differing.push("large objects".to_string());
    }
    let inventory = crate::verify::inventory::inventory(ctx, input).await?;
    if !inventory.equal() {
        differing.push(format!("schema inventory ({} unexplained differences)", inventory.unexplained.len()));
    }
    let refresh = match input.job.mode {
        crate::job::Mode::Refresh => self::refresh::summarize(ctx, run).await?,
        crate::job::Mode::Snapshot | crate::job::Mode::Continuous => None,
    };
    let report = Report {
        refresh,
        run_id: run.clone(),
        equal: differing.is_empty(),
        sequences_differing,
        sequences_compared,
        large_objects,
        materialized_views: plan.materialized_views.clone(),
        unlogged: plan.unlogged.clone(),
        skipped: plan.skipped.clone(),
        tables,
        inventory,
    };
    if report.tables.iter().all(|t| t.equal) {
        // Every row verified equal: the run's transaction-id marks become evidence for later
        // refreshes (they speak of rows only; schema differences are reported each time).
        let target = ctx.connect(&input.job, Side::Target, "verify", &input.run_id).await?;
        crate::refresh::record_verified(&target, run).await?;
    }
    let report_key = keys::report(run);
    ctx.store.put_json(&report_key, &report).await?;
    let summary = if report.equal {
        format!(
            "{} tables, {} sequences and {} large objects equal; schema inventory equal ({} differences explained by the schema report)",
            report.tables.len(),
            report.sequences_compared,
            report.large_objects.source,
            report.inventory.explained.len()
        )
    } else {
        Error::VerifyMismatch { tables: differing }.to_string()
    };
    let summary = match &report.refresh {
        Some(r) => format!("{}; {summary}", r.summary),
        None => summary,
    };
    Ok(ReportOutput {
        equal: report.equal,
        summary,
        report_key,
        tables: report.tables.len(),
        rows: report.tables.iter().map(|t| t.rows_copied).sum(),
        bytes: report.tables.iter().map(|t| t.bytes_copied).sum(),
        target_rows: report.tables.iter().map(|t| t.target_rows).sum(),
    })
}

/// Records a failure caught by the state machine.
pub async fn diagnose(ctx: &StepContext, input: &DiagnoseInput) -> Result<DiagnoseOutput> {
    let (mut error, mut cause) = (input.error.error.clone(), input.error.cause.clone());
    // A Distributed Map fails with a generic name whatever its item's error was: the item's own
    // (`Pgferry.*`, which the advice and the alert are about) is in the Map's export.
    if error == crate::asl::STATES_EXCEED_TOLERATED_FAILURE_THRESHOLD {
        match failed_item(ctx, &input.run_id).await {
            Ok(Some((item_error, item_cause))) => (error, cause) = (item_error, item_cause),
            Ok(None) => tracing::warn!("no failed item found in the run's map results"),
            Err(e) => tracing::warn!(error = %e, "the run's map results could not be read"),
        }
    }
    let output = DiagnoseOutput { report_key: keys::failure(&input.run_id), error, cause };
    ctx.store.put_json(&output.report_key, &output).await?;
    tracing::error!(error = %output.error, cause = %output.cause, "run failed");
    Ok(output)
}

/// The error and cause of the first failed child execution in the run's Map exports
/// (`FAILED_*.json` under [`keys::map_results`]).
async fn failed_item(ctx: &StepContext, run: &str) -> Result<Option<(String, String)>> {
    for key in ctx.store.list(&keys::map_results(run)).await? {
        let Some(name) = key.rsplit('/').next() else { continue };
        if !(name.starts_with("FAILED_") && name.ends_with(".json")) {
            continue;
        }
        let records: Vec<serde_json::Value> = serde_json::from_slice(&ctx.store.get_bytes_unsealed(&key).await?)
            .map_err(|e| crate::Error::Store { key: key.clone(), reason: e.to_string() })?;
        if let Some(record) = records.iter().find(|r| r["Error"].is_string()) {
            let text = |field: &str| record[field].as_str().unwrap_or_default().to_string();
            return Ok(Some((text("Error"), text("Cause"))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::row_hash_expr;

    /// Issue 24: the run's failure names the failed item's error, read back from the export the
    /// failed Distributed Map left (its own error is generic); other errors pass through.
    #[tokio::test]
    async fn diagnose_recovers_a_failed_map_items_error_from_the_maps_export() {
        let dir = std::env::temp_dir().join(format!("pgferry-diagnose-{}", rand::random::<u64>()));
        let ctx = StepContext::new(crate::store::ArtifactStore::local(&dir), Default::default());
        let job = crate::job::Job::from_json(
            r#"{"source": {"url": "postgresql://a@h/db"}, "target": {"url": "postgresql://b@h/db"}}"#,
        )
        .unwrap();
        let failed =
            serde_json::json!([{"Status": "FAILED", "Error": "Pgferry.TlsFailed", "Cause": "certificate expired"}]);
        ctx.store.put_json("runs/r1/map-results/copy/0b1c/FAILED_0.json", &failed).await.unwrap();
        ctx.store.put_json("runs/r1/map-results/copy/0b1c/SUCCEEDED_0.json", &serde_json::json!([])).await.unwrap();
        let input = |error: &str| DiagnoseInput {
            job: job.clone(),
            run_id: "r1".into(),
            error: crate::step::StepError { error: error.into(), cause: "Map Run failed".into() },
        };
        let out = diagnose(&ctx, &input(crate::asl::STATES_EXCEED_TOLERATED_FAILURE_THRESHOLD)).await.unwrap();
        assert_eq!((out.error.as_str(), out.cause.as_str()), ("Pgferry.TlsFailed", "certificate expired"));
        let out = diagnose(&ctx, &input("Pgferry.AuthFailed")).await.unwrap();
        assert_eq!((out.error.as_str(), out.cause.as_str()), ("Pgferry.AuthFailed", "Map Run failed"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_hash_query_quotes_every_name_and_sums_row_hashes_of_the_chunk_range() {
        let chunk = Chunk {
            seal: None,
            id: "v0".into(),
            table: QualifiedName::new("Tenant A", "Order.Items"),
            columns: vec!["select".to_string(), "a\"b".to_string()],
            format: crate::step::CopyFormat::Text,
            key: vec![crate::step::KeyColumn { name: "select".into(), type_name: "integer".into() }],
            slices: vec![crate::step::Slice::KeyRange { lower: None, upper: Some(vec!["7".into()]) }],
            estimated_bytes: 0,
        };
        let hash = row_hash_expr(&[("select".to_string(), false), ("a\"b".to_string(), false)]);
        assert_eq!(
            chunk_hash_sql(&chunk, &hash),
            "SELECT count(*)::bigint, coalesce(sum(hashtextextended(ROW(\"select\", \"a\"\"b\")::text, 0)), 0)::text \
             FROM ONLY \"Tenant A\".\"Order.Items\" WHERE (\"select\") < ('7'::integer)"
        );
    }

    #[test]
    fn typed_columns_hash_natively_and_the_rest_as_one_text_element_mixed_once_more() {
        let cols = |c: &[(&str, bool)]| c.iter().map(|(n, b)| (n.to_string(), *b)).collect::<Vec<_>>();
        assert_eq!(
            row_hash_expr(&cols(&[("id", true), ("price", false), ("note", true), ("f", false)])),
            "hashint8extended(hash_record_extended(ROW(\"id\", \"note\", ROW(\"price\", \"f\")::text), 0), 0)"
        );
        assert_eq!(row_hash_expr(&cols(&[("id", true)])), "hashint8extended(hash_record_extended(ROW(\"id\"), 0), 0)");
        assert_eq!(row_hash_expr(&[]), "0::bigint");
    }
}
