//! The plan: which relations are copied, in which chunks and slices, and what is skipped and why.
//!
//! Tables are cut by size (heap + TOAST, so a table of large `text`/`bytea` values is not mistaken
//! for a small one) into *slices* of about [`PlanOptions::slice_bytes`], each loaded in its own
//! transaction, and consecutive slices are grouped into *chunks*, the unit of a Map iteration.
//! Key-range slices are cut at quantiles of the table's key (from `pg_stats` histogram bounds, or
//! a sample of the key when there are no statistics), never uniformly between min and max, which
//! would give one huge slice for a skewed key. Tables without a usable key are cut into heap page
//! ranges read with TID range scans (PostgreSQL 14 and newer; older sources copy such a table in
//! one slice, and the plan says so). Partitioned parents hold no rows and are skipped for their
//! leaves (RDS-CASES T36); materialized views are refreshed after post-data and foreign tables
//! skipped, both recorded (T37). Costliest chunks are listed first so the long poles start early
//! (in a refresh, the first page chunk of a keyless table stands for the whole table: it does it
//! all).

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::catalog::{self, Relation};
use crate::context::StepContext;
use crate::dump::report::SchemaReport;
use crate::dump::sanitize::Verdict;
use crate::error::{Error, Result};
use crate::job::{Mode, Side};
use crate::pg::{QualifiedName, quote_ident};
pub use crate::step::Plan;
use crate::step::{Chunk, CopyFormat, KeyColumn, PlanOutput, Slice, StepInput, keys};

/// Target size of one slice (one transaction on the target): small enough that a slice commits
/// within a minute even on a slow link, large enough that per-transaction costs vanish.
pub const DEFAULT_SLICE_BYTES: u64 = 32 * 1024 * 1024;
/// Slices per chunk: one Map iteration copies this many slices, a few minutes of work at most.
pub const DEFAULT_SLICES_PER_CHUNK: usize = 2;
/// Copy throughput assumed per chunk in flight when estimating a run's duration: measured with
/// `bench/copy.sh` on the 2-vCPU test bed (pgbench scale 50, 4 chunks in flight: ~23 MiB/s each),
/// rounded down.
pub const ESTIMATE_BYTES_PER_SEC_PER_CHUNK: u64 = 20 * 1024 * 1024;
/// Key values sampled to cut a table without usable statistics.
const SAMPLE_ROWS: u64 = 20_000;
/// First server version with TID range scans (`ctid >= … AND ctid < …` without a full scan).
const TID_RANGE_SCAN_VERSION_NUM: i32 = 140000;

/// Sizing knobs of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    pub slice_bytes: u64,
    pub slices_per_chunk: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self { slice_bytes: DEFAULT_SLICE_BYTES, slices_per_chunk: DEFAULT_SLICES_PER_CHUNK }
    }
}

/// What a chunk is expected to cost, for ordering the Map's items. A refresh compares and
/// reloads a table without a key whole, in the chunk holding its first page (its other page
/// chunks do nothing), and a reload writes every row where a keyed slice mostly reads: that chunk
/// weighs the whole table twice.
fn order_weight(chunk: &Chunk, refresh: bool, table_bytes: u64) -> u64 {
    if !refresh || !chunk.key.is_empty() {
        return chunk.estimated_bytes;
    }
    match chunk.slices.first() {
        Some(Slice::Pages { first_page: 0, .. }) => table_bytes.saturating_mul(2),
        Some(Slice::Pages { .. }) => 0,
        _ => chunk.estimated_bytes,
    }
}

/// The copy-time estimate for `chunks` at `concurrency` chunks in flight.
pub fn estimate_seconds(chunks: &[Chunk], concurrency: u32) -> u64 {
    let rate = ESTIMATE_BYTES_PER_SEC_PER_CHUNK;
    let total: u64 = chunks.iter().map(|c| c.estimated_bytes).sum();
    let lanes = u64::from(concurrency.max(1)).min(chunks.len().max(1) as u64);
    let largest = chunks.iter().map(|c| c.estimated_bytes).max().unwrap_or(0);
    (total / (rate * lanes)).max(largest / rate).max(u64::from(!chunks.is_empty()))
}

/// Relations whose creation the run's pre-data schema step skipped (by a rule, or refused by the
/// target: RDS-CASES T17, T21), with the rule and reason: their rows have nowhere to go, and the
/// schema report explains them. A plan outside a run that applied pre-data (a standalone verify)
/// asks the target which run applied its pre-data, best effort; none found, nothing is left out.
async fn relations_not_created(ctx: &StepContext, input: &StepInput) -> HashMap<QualifiedName, String> {
    let load =
        |run: String| async move { ctx.store.get_json::<SchemaReport>(&keys::schema_report(&run, "pre-data")).await };
    let report = match load(input.run_id.clone()).await {
        Ok(report) => report,
        Err(_) => {
            let Ok(target) = ctx.connect(&input.job, Side::Target, "plan", &input.run_id).await else {
                return HashMap::new();
            };
            let Some(applied_by) = crate::ledger::pre_data_applied_by(&target).await else { return HashMap::new() };
            match load(applied_by).await {
                Ok(report) => report,
                Err(_) => return HashMap::new(),
            }
        }
    };
    let mut out = HashMap::new();
    for st in report.plans.iter().flat_map(|p| &p.statements) {
        let created = st.before.trim_start().get(..6).is_some_and(|w| w.eq_ignore_ascii_case("CREATE"));
        if st.verdict != Verdict::Skip || st.statement_only || !created {
            continue;
        }
        let (Some(label), Some(schema)) = (&st.entry, &st.entry_schema) else { continue };
        let name = ["TABLE ", "MATERIALIZED VIEW "].iter().find_map(|kind| label.strip_prefix(kind));
        if let Some(name) = name {
            let why = format!("{} ({})", st.rule.as_deref().unwrap_or(""), st.reason.as_deref().unwrap_or(""));
            out.entry(QualifiedName::new(schema.clone(), name.to_string())).or_insert(why);
        }
    }
    out
}

/// Reads the source catalog and plans the copy. Reads only the source.
pub async fn build(ctx: &StepContext, input: &StepInput, options: PlanOptions) -> Result<Plan> {
    let source = ctx.connect(&input.job, Side::Source, "plan", &input.run_id).await?;
    let version = catalog::server_version_num(&source).await?;
    let relations = catalog::relations(&source).await?;
    let mut plan = Plan {
        chunks: vec![],
        verify_items: vec![],
        unlogged: vec![],
        materialized_views: vec![],
        skipped: vec![],
        notes: vec![],
        estimated_bytes: 0,
        estimated_seconds: 0,
    };
    let not_created = relations_not_created(ctx, input).await;
    let mut tables = Vec::new();
    for rel in relations {
        if let Some(why) = not_created.get(&rel.name) {
            plan.skipped.push((rel.name, format!("not created on the target by the schema step: {why}")));
            continue;
        }
        match rel.kind.as_str() {
            "r" => {
                if rel.persistence == "u" {
                    plan.unlogged.push(rel.name.clone());
                }
                tables.push(rel);
            }
            "p" => plan.skipped.push((rel.name, "partitioned table: rows are copied per partition".to_string())),
            "m" if rel.unpopulated => plan.skipped.push((
                rel.name,
                "materialized view WITH NO DATA on the source: left unpopulated, as there (T66)".to_string(),
            )),
            "m" => plan.materialized_views.push(rel.name),
            "f" => plan.skipped.push((rel.name, "foreign table: its data lives on another server".to_string())),
            _ => {}
        }
    }
    let mut chunks = Vec::new();
    let mut verify_items = Vec::new();
    for rel in &tables {
        plan.estimated_bytes += rel.table_bytes;
        let (key, slices) = cut(&source, rel, version, options, &mut plan.notes).await?;
        let format = if rel.binary_safe { CopyFormat::Binary } else { CopyFormat::Text };
        let per_chunk = options.slices_per_chunk.max(1);
        let slice_bytes = rel.table_bytes / slices.len().max(1) as u64;
        let table_chunks: Vec<Chunk> = slices
            .chunks(per_chunk)
            .map(|group| Chunk {
                id: String::new(),
                table: rel.name.clone(),
                columns: rel.columns.clone(),
                format,
                key: key.clone(),
                slices: group.to_vec(),
                estimated_bytes: slice_bytes * group.len() as u64,
                seal: None,
            })
            .collect();
        if table_chunks.iter().any(|c| matches!(c.slices[0], Slice::Pages { .. })) {
            verify_items.push(Chunk {
                id: String::new(),
                table: rel.name.clone(),
                columns: rel.columns.clone(),
                format,
                key: vec![],
                slices: vec![Slice::Whole],
                estimated_bytes: rel.table_bytes,
                seal: None,
            });
        } else {
            verify_items.extend(table_chunks.iter().cloned());
        }
        chunks.extend(table_chunks);
    }
    // Costliest first (so that no large chunk starts last while the other lanes idle); ids follow
    // that order and stay stable for the run.
    let refresh = input.job.mode == Mode::Refresh;
    let table_bytes: HashMap<&QualifiedName, u64> = tables.iter().map(|r| (&r.name, r.table_bytes)).collect();
    let weight = |c: &Chunk| order_weight(c, refresh, table_bytes.get(&c.table).copied().unwrap_or(0));
    chunks.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.table.cmp(&b.table)));
    for (i, c) in chunks.iter_mut().enumerate() {
        c.id = format!("c{i:06}");
    }
    verify_items.sort_by(|a, b| b.estimated_bytes.cmp(&a.estimated_bytes).then_with(|| a.table.cmp(&b.table)));
    for (i, c) in verify_items.iter_mut().enumerate() {
        c.id = format!("v{i:06}");
    }
    plan.estimated_seconds = estimate_seconds(&chunks, input.job.effective_max_concurrency());
    plan.chunks = chunks;
    plan.verify_items = verify_items;
    Ok(plan)
}

/// Cuts one table into slices.
async fn cut(
    source: &Client,
    rel: &Relation,
    version: i32,
    options: PlanOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<KeyColumn>, Vec<Slice>)> {
    let wanted = rel.table_bytes.div_ceil(options.slice_bytes.max(1));
    if rel.columns.is_empty() {
        return Ok((vec![], vec![Slice::Whole]));
    }
    // The key is kept even for a whole-table chunk: verification drills down along it.
    let key: Vec<KeyColumn> = catalog::key_columns(source, rel.oid)
        .await?
        .into_iter()
        .map(|(name, type_name)| KeyColumn { name, type_name })
        .collect();
    if wanted <= 1 {
        return Ok((key, vec![Slice::Whole]));
    }
    if key.is_empty() {
        if version < TID_RANGE_SCAN_VERSION_NUM {
            notes.push(format!(
                "{} has no primary key or unique NOT NULL key and the source is older than PostgreSQL 14: \
                 copied in one slice",
                rel.name
            ));
            return Ok((vec![], vec![Slice::Whole]));
        }
        notes.push(format!("{} has no usable key: copied in heap page ranges, verified as a whole", rel.name));
        let step = rel.pages.div_ceil(wanted).max(1);
        let mut slices = Vec::new();
        let mut first = 0;
        while first < rel.pages {
            let end = first + step;
            // The last slice is open-ended: pages added since planning are not lost.
            slices.push(Slice::Pages { first_page: first, end_page: (end < rel.pages).then_some(end) });
            first = end;
        }
        return Ok((vec![], slices));
    }
    let bounds = quantile_bounds(source, rel, &key, wanted).await?;
    if bounds.is_empty() {
        return Ok((key, vec![Slice::Whole]));
    }
    let mut slices = Vec::with_capacity(bounds.len() + 1);
    let mut lower = None;
    for b in bounds {
        slices.push(Slice::KeyRange { lower: lower.clone(), upper: Some(b.clone()) });
        lower = Some(b);
    }
    slices.push(Slice::KeyRange { lower, upper: None });
    Ok((key, slices))
}

/// `wanted - 1` cut points of the key, each a vector of the key columns' text forms, strictly
/// increasing. From the histogram of a single-column key when the statistics have one, else from
/// a sample of the key.
async fn quantile_bounds(source: &Client, rel: &Relation, key: &[KeyColumn], wanted: u64) -> Result<Vec<Vec<String>>> {
    let mut points: Vec<Vec<String>> = Vec::new();
    if let [single] = key {
        let row = source
            .query_opt(
                "SELECT histogram_bounds::text::text[] FROM pg_stats \
                 WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND NOT inherited",
                &[&rel.name.schema, &rel.name.name, &single.name],
            )
            .await
            .map_err(|e| Error::db(format!("read statistics of {}", rel.name), e))?;
        if let Some(Some(bounds)) = row.map(|r| r.get::<_, Option<Vec<String>>>(0)) {
            points = bounds.into_iter().map(|b| vec![b]).collect();
        }
    }
    if points.len() < 2 {
        let percent = (100.0 * SAMPLE_ROWS as f64 / (rel.pages.max(1) as f64 * 50.0)).clamp(0.01, 100.0);
        let cols: Vec<String> = key.iter().map(|k| quote_ident(&k.name)).collect();
        // Aliased: `ORDER BY "k"` would otherwise name the text output column `"k"::text` and sort
        // the sample as text ('10' < '9'), giving cut points out of order — overlapping and empty
        // slices.
        let texts: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c}::text AS k{i}")).collect();
        let sql = format!(
            "SELECT {} FROM ONLY {} TABLESAMPLE SYSTEM ({percent}) REPEATABLE (7) ORDER BY {}",
            texts.join(", "),
            rel.name,
            cols.join(", ")
        );
        let rows =
            source.query(&sql, &[]).await.map_err(|e| Error::db(format!("sample the key of {}", rel.name), e))?;
        points = rows.iter().map(|r| (0..key.len()).map(|i| r.get::<_, String>(i)).collect()).collect();
    }
    // Interior quantiles; the first and last points are the extremes, not cuts.
    let mut bounds: Vec<Vec<String>> = Vec::new();
    let n = points.len();
    if n < 2 {
        return Ok(bounds);
    }
    for i in 1..wanted {
        let idx = usize::try_from(i * n as u64 / wanted).unwrap_or(n - 1).min(n - 1);
        let candidate = &points[idx];
        if bounds.last() != Some(candidate) && idx > 0 {
            bounds.push(candidate.clone());
        }
    }
    Ok(bounds)
}

/// The plan step: builds the plan and stores it, with the item lists the Map states read.
/// A run resumed (or a step retried) keeps the plan it made: chunk ids and slices must stay what
/// the target's ledger recorded them as.
pub async fn run(ctx: &StepContext, input: &StepInput) -> Result<PlanOutput> {
    let plan = match ctx.store.get_json_opt::<Plan>(&keys::plan(&input.run_id)).await? {
        Some(plan) => {
            tracing::info!(chunks = plan.chunks.len(), "the run's plan exists: kept as it is");
            plan
        }
        None => build(ctx, input, PlanOptions::default()).await?,
    };
    let mut plan = plan;
    // The Map states hand these items to the functions as they read them from the bucket.
    ctx.store.seal_items(&input.run_id, &mut plan.chunks).await?;
    ctx.store.seal_items(&input.run_id, &mut plan.verify_items).await?;
    let output = PlanOutput {
        plan_key: keys::plan(&input.run_id),
        chunks_key: keys::chunks(&input.run_id),
        verify_key: keys::verify_items(&input.run_id),
        tables: plan.chunks.iter().map(|c| &c.table).collect::<std::collections::BTreeSet<_>>().len(),
        chunks: plan.chunks.len(),
        verify_items: plan.verify_items.len(),
        estimated_bytes: plan.estimated_bytes,
        estimated_seconds: plan.estimated_seconds,
        max_concurrency: input.job.effective_max_concurrency(),
    };
    ctx.store.put_json(&output.plan_key, &plan).await?;
    ctx.store.put_json(&output.chunks_key, &plan.chunks).await?;
    ctx.store.put_json(&output.verify_key, &plan.verify_items).await?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{chunk_predicate, slice_predicate};

    fn key(cols: &[(&str, &str)]) -> Vec<KeyColumn> {
        cols.iter().map(|(n, t)| KeyColumn { name: n.to_string(), type_name: t.to_string() }).collect()
    }

    #[test]
    fn key_range_predicates_are_typed_quoted_and_half_open() {
        let k = key(&[("tenant", "text"), ("id", "bigint")]);
        let slice = Slice::KeyRange {
            lower: Some(vec!["it's".to_string(), "5".to_string()]),
            upper: Some(vec!["z".to_string(), "1".to_string()]),
        };
        assert_eq!(
            slice_predicate(&k, &slice).unwrap(),
            "(\"tenant\", \"id\") >= ('it''s'::text, '5'::bigint) AND (\"tenant\", \"id\") < ('z'::text, '1'::bigint)"
        );
        let open = Slice::KeyRange { lower: None, upper: None };
        assert_eq!(slice_predicate(&k, &open).unwrap(), "true");
        assert_eq!(slice_predicate(&k, &Slice::Whole), None);
    }

    #[test]
    fn a_refresh_orders_a_keyless_table_by_its_first_page_chunk_which_does_the_whole_table() {
        let chunk = |key: Vec<KeyColumn>, slice: Slice, bytes: u64| Chunk {
            seal: None,
            id: String::new(),
            table: QualifiedName::new("public", "t"),
            columns: vec!["a".to_string()],
            format: CopyFormat::Binary,
            key,
            slices: vec![slice],
            estimated_bytes: bytes,
        };
        let first = chunk(vec![], Slice::Pages { first_page: 0, end_page: Some(100) }, 50);
        let rest = chunk(vec![], Slice::Pages { first_page: 100, end_page: None }, 50);
        let keyed = chunk(key(&[("id", "bigint")]), Slice::KeyRange { lower: None, upper: None }, 70);
        // A snapshot copies every page chunk itself: their own sizes.
        assert_eq!([order_weight(&first, false, 100), order_weight(&rest, false, 100)], [50, 50]);
        // A refresh: the first page chunk compares and may reload all 100 bytes; the others idle.
        assert_eq!([order_weight(&first, true, 100), order_weight(&rest, true, 100)], [200, 0]);
        assert_eq!(order_weight(&keyed, true, 1000), 70);
    }

    #[test]
    fn page_ranges_use_tid_bounds_and_the_last_is_open() {
        let p = Slice::Pages { first_page: 10, end_page: Some(20) };
        assert_eq!(slice_predicate(&[], &p).unwrap(), "ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid");
        let last = Slice::Pages { first_page: 20, end_page: None };
        assert_eq!(slice_predicate(&[], &last).unwrap(), "ctid >= '(20,0)'::tid");
    }

    #[test]
    fn a_chunk_spans_its_first_lower_to_its_last_upper_bound() {
        let k = key(&[("id", "integer")]);
        let chunk = Chunk {
            seal: None,
            id: "c0".into(),
            table: QualifiedName::new("public", "t"),
            columns: vec!["id".into()],
            format: CopyFormat::Binary,
            key: k,
            slices: vec![
                Slice::KeyRange { lower: Some(vec!["10".into()]), upper: Some(vec!["20".into()]) },
                Slice::KeyRange { lower: Some(vec!["20".into()]), upper: None },
            ],
            estimated_bytes: 0,
        };
        assert_eq!(chunk_predicate(&chunk).unwrap(), "(\"id\") >= ('10'::integer)");
    }

    #[test]
    fn the_estimate_is_bounded_by_lanes_and_by_the_largest_chunk() {
        let chunk = |mb: u64| Chunk {
            seal: None,
            id: String::new(),
            table: QualifiedName::new("public", "t"),
            columns: vec![],
            format: CopyFormat::Binary,
            key: vec![],
            slices: vec![Slice::Whole],
            estimated_bytes: mb * 1024 * 1024,
        };
        // 4 × 200 MiB on 4 lanes: 10 s; on 1 lane: 40 s; one 400 MiB chunk can't go below 20 s.
        assert_eq!(estimate_seconds(&[chunk(200), chunk(200), chunk(200), chunk(200)], 4), 10);
        assert_eq!(estimate_seconds(&[chunk(200), chunk(200), chunk(200), chunk(200)], 1), 40);
        assert_eq!(estimate_seconds(&[chunk(400), chunk(10)], 8), 20);
        assert_eq!(estimate_seconds(&[], 4), 0);
    }

    #[test]
    fn slices_serialize_with_a_kind_tag() {
        let s = serde_json::to_value(Slice::Pages { first_page: 0, end_page: None }).unwrap();
        assert_eq!(s, serde_json::json!({"kind": "pages", "firstPage": 0, "endPage": null}));
        let w: Slice = serde_json::from_value(serde_json::json!({"kind": "whole"})).unwrap();
        assert_eq!(w, Slice::Whole);
    }
}
