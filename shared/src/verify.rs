//! Verification, the run report and failure diagnosis.
//!
//! Each chunk is compared by row count and an order-independent hash computed inside both
//! servers under the same pinned session settings: the sum (not xor, so duplicate rows cannot
//! cancel out) of a 64-bit hash of each row's text form, in which NULL and `''` differ. No row
//! leaves either server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::context::StepContext;
use crate::copy::column_list;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::QualifiedName;
use crate::plan::Plan;
use crate::schema::to_value;
use crate::step::{
    Chunk, ChunkInput, CopyChunkOutput, DiagnoseInput, DiagnoseOutput, ReportOutput, StepInput, VerifyChunkOutput,
    VerifyRequest, keys,
};

/// Entry point of the verify function.
pub async fn handle(ctx: &StepContext, request: VerifyRequest) -> Result<serde_json::Value> {
    Ok(match request {
        VerifyRequest::VerifyChunk(input) => to_value(verify_chunk(ctx, &input).await?),
        VerifyRequest::Report(input) => to_value(report(ctx, &input).await?),
        VerifyRequest::Diagnose(input) => to_value(diagnose(ctx, &input).await?),
    })
}

/// SQL computing `(count, hash sum)` of a chunk's rows.
fn chunk_hash_sql(chunk: &Chunk) -> String {
    let row =
        if chunk.columns.is_empty() { "''".to_string() } else { format!("ROW({})::text", column_list(&chunk.columns)) };
    let filter = crate::plan::chunk_predicate(chunk).map_or(String::new(), |p| format!(" WHERE {p}"));
    format!(
        "SELECT count(*)::bigint, coalesce(sum(hashtextextended({row}, 0)), 0)::text FROM ONLY {}{filter}",
        chunk.table
    )
}

/// Compares one chunk on both sides.
#[tracing::instrument(skip_all, fields(chunk = %input.chunk.id, table = %input.chunk.table))]
pub async fn verify_chunk(ctx: &StepContext, input: &ChunkInput) -> Result<VerifyChunkOutput> {
    let chunk = &input.chunk;
    let (source, target) = tokio::try_join!(
        ctx.connect(&input.job, Side::Source, "verify", &input.run_id),
        ctx.connect(&input.job, Side::Target, "verify", &input.run_id)
    )?;
    let sql = chunk_hash_sql(chunk);
    let (s, t) = tokio::try_join!(source.query_one(&sql, &[]), target.query_one(&sql, &[]))
        .map_err(|e| Error::db(format!("hash {}", chunk.table), e))?;
    let output = VerifyChunkOutput {
        chunk_id: chunk.id.clone(),
        table: chunk.table.clone(),
        source_rows: u64::try_from(s.get::<_, i64>(0)).unwrap_or(0),
        target_rows: u64::try_from(t.get::<_, i64>(0)).unwrap_or(0),
        source_hash: s.get(1),
        target_hash: t.get(1),
        equal: false,
    };
    let output = VerifyChunkOutput {
        equal: output.source_rows == output.target_rows && output.source_hash == output.target_hash,
        ..output
    };
    ctx.store.put_json(&keys::verify(&input.run_id, &chunk.id), &output).await?;
    Ok(output)
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
}

/// The run report, stored at `runs/<run>/report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub run_id: String,
    pub equal: bool,
    pub tables: Vec<TableReport>,
    pub materialized_views: Vec<QualifiedName>,
    pub unlogged: Vec<QualifiedName>,
    pub skipped: Vec<(QualifiedName, String)>,
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
            }
            None => {
                t.equal = false;
                t.unverified_chunks.push(item.id.clone());
            }
        }
    }
    let tables: Vec<TableReport> = tables.into_values().collect();
    let differing: Vec<String> = tables.iter().filter(|t| !t.equal).map(|t| t.table.to_string()).collect();
    let report = Report {
        run_id: run.clone(),
        equal: differing.is_empty(),
        materialized_views: plan.materialized_views.clone(),
        unlogged: plan.unlogged.clone(),
        skipped: plan.skipped.clone(),
        tables,
    };
    let report_key = keys::report(run);
    ctx.store.put_json(&report_key, &report).await?;
    let summary = if report.equal {
        format!("{} tables equal", report.tables.len())
    } else {
        Error::VerifyMismatch { tables: differing }.to_string()
    };
    Ok(ReportOutput {
        equal: report.equal,
        summary,
        report_key,
        tables: report.tables.len(),
        rows: report.tables.iter().map(|t| t.rows_copied).sum(),
        bytes: report.tables.iter().map(|t| t.bytes_copied).sum(),
    })
}

/// Records a failure caught by the state machine.
pub async fn diagnose(ctx: &StepContext, input: &DiagnoseInput) -> Result<DiagnoseOutput> {
    let output = DiagnoseOutput {
        report_key: keys::failure(&input.run_id),
        error: input.error.error.clone(),
        cause: input.error.cause.clone(),
    };
    ctx.store.put_json(&output.report_key, &output).await?;
    tracing::error!(error = %output.error, cause = %output.cause, "run failed");
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_query_quotes_every_name_and_sums_row_hashes_of_the_chunk_range() {
        let chunk = Chunk {
            id: "v0".into(),
            table: QualifiedName::new("Tenant A", "Order.Items"),
            columns: vec!["select".to_string(), "a\"b".to_string()],
            format: crate::step::CopyFormat::Text,
            key: vec![crate::step::KeyColumn { name: "select".into(), type_name: "integer".into() }],
            slices: vec![crate::step::Slice::KeyRange { lower: None, upper: Some(vec!["7".into()]) }],
            estimated_bytes: 0,
        };
        assert_eq!(
            chunk_hash_sql(&chunk),
            "SELECT count(*)::bigint, coalesce(sum(hashtextextended(ROW(\"select\", \"a\"\"b\")::text, 0)), 0)::text \
             FROM ONLY \"Tenant A\".\"Order.Items\" WHERE (\"select\") < ('7'::integer)"
        );
    }
}
