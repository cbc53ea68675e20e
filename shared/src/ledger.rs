//! pgferry's bookkeeping on the target: the schema `pgferry`, the sections applied (with the run
//! and a hash of what was dumped) and the chunk ledger — one row per committed slice, written in
//! the slice's own transaction, which makes a copy exactly-once (RDS-CASES T40, T60).

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::step::{ChunkInput, RefreshCounts};

/// DDL of pgferry's bookkeeping on the target: applied sections, with the hash of what was applied.
pub(crate) const BOOKKEEPING_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgferry; \
     CREATE TABLE IF NOT EXISTS pgferry.applied_sections (run_id text NOT NULL, section text NOT NULL, \
        statements integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, section)); \
     ALTER TABLE pgferry.applied_sections ADD COLUMN IF NOT EXISTS dump_hash text";

/// The run that last applied pre-data to the target, as pgferry's bookkeeping records it; `None`
/// without bookkeeping (a target pgferry's schema step did not make) or when it cannot be read.
pub(crate) async fn pre_data_applied_by(target: &Client) -> Option<String> {
    target
        .query_opt(
            "SELECT run_id FROM pgferry.applied_sections WHERE to_regclass('pgferry.applied_sections') IS NOT NULL \
             AND section = 'pre-data' ORDER BY applied_at DESC LIMIT 1",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

/// The latest applied-section marker: `(run id, dump hash)`, for one run or any.
pub(crate) async fn marker(
    target: &Client,
    run: Option<&String>,
    section: &str,
) -> Result<Option<(String, Option<String>)>> {
    let exists: bool = target
        .query_one(
            "SELECT to_regclass('pgferry.applied_sections') IS NOT NULL \
                AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pgferry.applied_sections') \
                            AND attname = 'dump_hash')",
            &[],
        )
        .await
        .map_err(|e| Error::db("look for pgferry bookkeeping", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = target
        .query_opt(
            "SELECT run_id, dump_hash FROM pgferry.applied_sections WHERE section = $1 \
             AND ($2::text IS NULL OR run_id = $2) ORDER BY applied_at DESC LIMIT 1",
            &[&section, &run],
        )
        .await
        .map_err(|e| Error::db("read applied sections", e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The chunk ledger on the target: one row per committed slice, written in the slice's
/// transaction. Created with pgferry's other bookkeeping before any data is loaded. A refresh
/// also records per slice the source rows compared, the target rows deleted, whether the slice
/// was equal, and whether the refresh proved the slice equal itself (all `NULL` for a snapshot's
/// slices; see [`crate::refresh::refresh_slice`]).
pub const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS pgferry.copied_chunks (run_id text NOT NULL, \
     chunk_id text NOT NULL, slice integer NOT NULL, table_schema text NOT NULL, table_name text NOT NULL, \
     rows bigint NOT NULL, bytes bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), \
     PRIMARY KEY (run_id, chunk_id, slice)); \
     ALTER TABLE pgferry.copied_chunks ADD COLUMN IF NOT EXISTS compared bigint, \
     ADD COLUMN IF NOT EXISTS deleted bigint, ADD COLUMN IF NOT EXISTS equal boolean, \
     ADD COLUMN IF NOT EXISTS proven boolean";

/// One committed slice in the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LedgerRow {
    pub slice: usize,
    /// Rows and bytes written.
    pub rows: u64,
    pub bytes: u64,
    /// Refresh only: source rows compared, target rows deleted, whether the slice was equal
    /// (`None`: covered by another slice of the chunk).
    pub compared: Option<u64>,
    pub deleted: Option<u64>,
    pub equal: Option<bool>,
    /// Refresh only: the slice was compared key by key with the transaction-id marks, and after
    /// its repair the copied rows hashed equal on both sides and the counts agreed, in the
    /// slice's transaction: its verification needs no second pass.
    pub proven: Option<bool>,
}

impl LedgerRow {
    /// The refresh counts this slice contributes.
    pub fn refresh_counts(&self) -> RefreshCounts {
        let compared = self.compared.unwrap_or(0);
        RefreshCounts {
            rows_compared: compared,
            rows_skipped: compared.saturating_sub(self.rows),
            rows_reloaded: self.rows,
            rows_deleted: self.deleted.unwrap_or(0),
            slices_equal: usize::from(self.equal == Some(true)),
            slices_reloaded: usize::from(self.equal == Some(false)),
        }
    }
}

/// Committed slices of a chunk.
pub(crate) async fn ledger(target: &Client, run_id: &str, chunk_id: &str) -> Result<Vec<LedgerRow>> {
    let rows = target
        .query(
            "SELECT slice, rows, bytes, compared, deleted, equal, proven FROM pgferry.copied_chunks \
             WHERE run_id = $1 AND chunk_id = $2",
            &[&run_id, &chunk_id],
        )
        .await
        .map_err(|e| Error::db("read chunk ledger", e))?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| LedgerRow {
            slice: usize::try_from(r.get::<_, i32>(0)).unwrap_or(usize::MAX),
            rows: n(r.get(1)),
            bytes: n(r.get(2)),
            compared: r.get::<_, Option<i64>>(3).map(n),
            deleted: r.get::<_, Option<i64>>(4).map(n),
            equal: r.get(5),
            proven: r.get(6),
        })
        .collect())
}

/// Records a committed slice, in the transaction that wrote its rows.
pub(crate) async fn record_slice<C: tokio_postgres::GenericClient>(
    client: &C,
    input: &ChunkInput,
    row: &LedgerRow,
) -> Result<()> {
    let i64_of = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let chunk = &input.chunk;
    client
        .execute(
            "INSERT INTO pgferry.copied_chunks \
             (run_id, chunk_id, slice, table_schema, table_name, rows, bytes, compared, deleted, equal, proven) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &input.run_id,
                &chunk.id,
                &i32::try_from(row.slice).unwrap_or(i32::MAX),
                &chunk.table.schema,
                &chunk.table.name,
                &i64_of(row.rows),
                &i64_of(row.bytes),
                &row.compared.map(i64_of),
                &row.deleted.map(i64_of),
                &row.equal,
                &row.proven,
            ],
        )
        .await
        .map_err(|e| Error::db("record slice in ledger", e))?;
    Ok(())
}
