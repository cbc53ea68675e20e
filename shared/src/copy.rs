//! Copying a chunk: source `COPY … TO STDOUT` streamed into target `COPY … FROM STDIN`.
//!
//! Rows are never decoded: COPY buffers go from one socket to the other, so memory stays flat
//! whatever the table's size. Exactly once: each slice of a chunk is loaded in its own target
//! transaction together with its ledger row; an invocation first reads the ledger and skips
//! committed slices, and a half-loaded slice disappears with its rolled-back transaction
//! (RDS-CASES T40). A whole-table slice truncates first, which also makes `COPY FREEZE` legal.
//! The step takes a deadline: rather than be killed by Lambda's 15-minute limit mid-slice, it
//! stops between slices and returns `done: false`, and the state machine invokes it again (T35).
//! The chunk that completes its table builds the table's indexes right away, overlapping with
//! the copy of other tables.
//! In mode `refresh` each slice is compared first and only what differs is re-copied
//! ([`crate::refresh::refresh_slice`]), under the same ledger.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, TryStreamExt, pin_mut};
use tokio_postgres::Client;

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::{Mode, Side};
use crate::pg::quote_ident;
use crate::plan::slice_predicate;
use crate::schema::to_value;
use crate::step::{
    Chunk, ChunkInput, CopyChunkOutput, CopyFormat, CopyRequest, PostDataItem, RefreshCounts, Slice, keys,
};

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

/// Time kept in reserve at the end of an invocation: committing, writing the result, returning.
const DEADLINE_RESERVE: Duration = Duration::from_secs(20);
/// Throughput assumed for the first slice of an invocation, before one has been measured.
const ASSUMED_BYTES_PER_SEC: f64 = 10.0 * 1024.0 * 1024.0;

/// Entry point of the copy function. `deadline` is when the invocation is killed (Lambda's
/// remaining time); `None` means no limit.
pub async fn handle(ctx: &StepContext, request: CopyRequest, deadline: Option<Instant>) -> Result<serde_json::Value> {
    Ok(match request {
        CopyRequest::Plan(input) => to_value(crate::plan::run(ctx, &input).await?),
        CopyRequest::CopyChunk(input) => {
            ctx.store.check_item(&input.run_id, &input.chunk).await?;
            to_value(copy_chunk(ctx, &input, deadline).await?)
        }
        CopyRequest::LargeObjects(input) => to_value(crate::lobs::copy_all(ctx, &input).await?),
    })
}

/// `"a", "b"`: the explicit column list used on both ends (generated columns excluded, T30).
pub fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
}

fn format_option(format: CopyFormat) -> &'static str {
    match format {
        CopyFormat::Binary => "FORMAT binary",
        CopyFormat::Text => "FORMAT text",
    }
}

/// The source side of a slice.
pub fn copy_out_sql(chunk: &Chunk, slice: &Slice) -> String {
    match slice_predicate(&chunk.key, slice) {
        None => format!(
            "COPY {} ({}) TO STDOUT ({})",
            chunk.table,
            column_list(&chunk.columns),
            format_option(chunk.format)
        ),
        Some(pred) => copy_out_where(chunk, &pred),
    }
}

/// The source side of the chunk's rows that `predicate` selects.
pub(crate) fn copy_out_where(chunk: &Chunk, predicate: &str) -> String {
    let (table, cols, fmt) = (&chunk.table, column_list(&chunk.columns), format_option(chunk.format));
    format!("COPY (SELECT {cols} FROM ONLY {table} WHERE {predicate}) TO STDOUT ({fmt})")
}

/// The target side of a slice; a whole table is truncated in the same transaction, so FREEZE.
pub fn copy_in_sql(chunk: &Chunk, slice: &Slice) -> String {
    let (table, cols, fmt) = (&chunk.table, column_list(&chunk.columns), format_option(chunk.format));
    let freeze = if matches!(slice, Slice::Whole) { ", FREEZE" } else { "" };
    format!("COPY {table} ({cols}) FROM STDIN ({fmt}{freeze})")
}

/// Copies a chunk's remaining slices, exactly once each, until done or out of time.
#[tracing::instrument(skip_all, fields(chunk = %input.chunk.id, table = %input.chunk.table))]
pub async fn copy_chunk(ctx: &StepContext, input: &ChunkInput, deadline: Option<Instant>) -> Result<CopyChunkOutput> {
    let started = Instant::now();
    let chunk = &input.chunk;
    let mut target = ctx.connect(&input.job, Side::Target, "copy", &input.run_id).await?;
    let refresh = input.job.mode == Mode::Refresh;
    if refresh {
        // Never trust that preflight ran: this run's schema step recorded the target as an
        // earlier pgferry copy of this source, or nothing is deleted (RDS-CASES T57).
        crate::refresh::ensure_refresh_run(&target, &input.run_id).await?;
    }
    let committed = ledger(&target, &input.run_id, &chunk.id).await?;
    let (mut rows, mut bytes) = committed.iter().fold((0, 0), |(r, b), c| (r + c.rows, b + c.bytes));
    let mut counts = RefreshCounts::default();
    for c in &committed {
        counts.add(&c.refresh_counts());
    }
    let mut done_slices: Vec<usize> = committed.iter().map(|c| c.slice).collect();
    let already_committed = done_slices.len() == chunk.slices.len();
    let mut source: Option<Client> = None;
    let marks = if refresh { crate::refresh::watermarks(ctx, &input.run_id).await } else { None };
    let mut rate = ASSUMED_BYTES_PER_SEC;
    let slice_estimate = chunk.estimated_bytes as f64 / chunk.slices.len().max(1) as f64;

    for (index, slice) in chunk.slices.iter().enumerate() {
        if done_slices.contains(&index) {
            continue;
        }
        // Every invocation copies at least one slice, so a re-invoked chunk always progresses.
        let copied_now = done_slices.len() > committed.len();
        if let (Some(deadline), true) = (deadline, copied_now) {
            let needed = Duration::from_secs_f64(1.5 * slice_estimate / rate) + DEADLINE_RESERVE;
            if deadline.saturating_duration_since(Instant::now()) < needed {
                tracing::info!(slice = index, "not enough time left for the next slice; returning to be re-invoked");
                break;
            }
        }
        if source.is_none() {
            source = Some(ctx.connect(&input.job, Side::Source, "copy", &input.run_id).await?);
        }
        let Some(source_client) = source.as_ref() else { continue };
        let slice_started = Instant::now();
        let (slice_rows, slice_bytes) = if refresh {
            let (r, b, c) =
                crate::refresh::refresh_slice(source_client, &mut target, input, index, slice, marks.as_ref()).await?;
            counts.add(&c);
            (r, b)
        } else {
            match copy_slice(source_client, &mut target, input, index, slice).await {
                Ok(counts) => counts,
                // Another invocation of this chunk (a retry racing a Lambda that did not die)
                // committed the slice first: its transaction holds the rows, this one rolled back.
                Err(e) if e.sqlstate() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    let row = ledger(&target, &input.run_id, &chunk.id).await?.into_iter().find(|c| c.slice == index);
                    let Some(row) = row else { return Err(e) };
                    tracing::info!(slice = index, "slice committed meanwhile by another invocation of the chunk");
                    (row.rows, row.bytes)
                }
                Err(e) => return Err(e),
            }
        };
        let secs = slice_started.elapsed().as_secs_f64();
        if secs > 0.05 && slice_bytes > 0 {
            rate = slice_bytes as f64 / secs;
        }
        rows += slice_rows;
        bytes += slice_bytes;
        done_slices.push(index);
    }

    let mut done = done_slices.len() == chunk.slices.len();
    if done && !refresh {
        done = build_indexes_of_completed_table(ctx, input, &target, deadline).await?;
    }
    let output = CopyChunkOutput {
        chunk_id: chunk.id.clone(),
        table: chunk.table.clone(),
        done,
        slices: chunk.slices.len(),
        slices_done: done_slices.len(),
        rows,
        bytes,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        already_committed,
        refresh: refresh.then_some(counts),
    };
    ctx.store.put_json(&keys::copy(&input.run_id, &chunk.id), &output).await?;
    tracing::info!(rows, bytes, done = output.done, elapsed_ms = output.elapsed_ms, "chunk copied");
    Ok(output)
}

/// When this chunk completed its table (every slice of every chunk of the table is in the
/// ledger), builds the table's post-data indexes now, overlapping with the copy of other tables,
/// as pg_restore and pgcopydb do. Returns false while a build still runs at the deadline: the
/// chunk is invoked again and waits for it (see [`crate::dump::postdata`]). Indexes are never
/// built before the table's last slice has committed, so no slice loads into an indexed table.
async fn build_indexes_of_completed_table(
    ctx: &StepContext,
    input: &ChunkInput,
    target: &Client,
    deadline: Option<Instant>,
) -> Result<bool> {
    let run = &input.run_id;
    let table = &input.chunk.table;
    // Planned by PlanPostData before the copy; absent for callers outside the state machine.
    let Ok(items) = ctx.store.get_json::<Vec<PostDataItem>>(&keys::post_data_items(run, "indexes")).await else {
        return Ok(true);
    };
    let mine: Vec<PostDataItem> = items.into_iter().filter(|i| i.table == *table).collect();
    if mine.is_empty() {
        return Ok(true);
    }
    let chunks: Vec<Chunk> = ctx.store.get_json(&keys::chunks(run)).await?;
    let planned: usize = chunks.iter().filter(|c| c.table == *table).map(|c| c.slices.len()).sum();
    let committed: i64 = target
        .query_one(
            "SELECT count(*) FROM pgferry.copied_chunks WHERE run_id = $1 AND table_schema = $2 AND table_name = $3",
            &[run, &table.schema, &table.name],
        )
        .await
        .map_err(|e| Error::db("count the table's committed slices", e))?
        .get(0);
    if usize::try_from(committed).unwrap_or(0) < planned {
        return Ok(true);
    }
    for item in &mine {
        let out = crate::dump::postdata::run_item(target, run, item, deadline).await?;
        tracing::info!(item = %out.id, table = %table, outcome = %out.outcome, millis = out.millis, "index of a completed table");
        if !out.done {
            return Ok(false);
        }
    }
    Ok(true)
}

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
async fn ledger(target: &Client, run_id: &str, chunk_id: &str) -> Result<Vec<LedgerRow>> {
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

/// Streams `out_sql` on the source into `in_sql` on the target transaction, undecoded:
/// `(rows, bytes)`.
pub(crate) async fn stream(
    source: &Client,
    tx: &tokio_postgres::Transaction<'_>,
    out_sql: &str,
    in_sql: &str,
    table: &crate::pg::QualifiedName,
) -> Result<(u64, u64)> {
    let out = source.copy_out(out_sql).await.map_err(|e| Error::db(format!("start reading {table}"), e))?;
    let sink =
        tx.copy_in::<_, bytes::Bytes>(in_sql).await.map_err(|e| Error::db(format!("start writing {table}"), e))?;
    pin_mut!(out);
    pin_mut!(sink);
    let mut bytes = 0u64;
    while let Some(buf) = out.try_next().await.map_err(|e| Error::db(format!("read {table}"), e))? {
        bytes += buf.len() as u64;
        sink.feed(buf).await.map_err(|e| Error::db(format!("write {table}"), e))?;
    }
    let rows = sink.as_mut().finish().await.map_err(|e| Error::db(format!("finish writing {table}"), e))?;
    Ok((rows, bytes))
}

/// The `WITH (…)` options of a COPY of this chunk, without FREEZE.
pub(crate) fn copy_options(chunk: &Chunk) -> &'static str {
    format_option(chunk.format)
}

/// Loads one slice in one target transaction, ledger row included.
async fn copy_slice(
    source: &Client,
    target: &mut Client,
    input: &ChunkInput,
    index: usize,
    slice: &Slice,
) -> Result<(u64, u64)> {
    let chunk = &input.chunk;
    let table = &chunk.table;
    let tx = target.transaction().await.map_err(|e| Error::db("begin copy transaction", e))?;
    if matches!(slice, Slice::Whole) {
        tx.batch_execute(&format!("TRUNCATE ONLY {table}"))
            .await
            .map_err(|e| Error::db(format!("truncate {table}"), e))?;
    }
    let (rows, bytes) = if chunk.columns.is_empty() {
        // COPY needs a column; a table without columns can still hold rows.
        let n: i64 = source
            .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
            .await
            .map_err(|e| Error::db(format!("count {table}"), e))?
            .get(0);
        tx.execute(&format!("INSERT INTO {table} SELECT FROM generate_series(1, $1::bigint)"), &[&n])
            .await
            .map_err(|e| Error::db(format!("fill {table}"), e))?;
        (u64::try_from(n).unwrap_or(0), 0)
    } else {
        stream(source, &tx, &copy_out_sql(chunk, slice), &copy_in_sql(chunk, slice), table).await?
    };
    record_slice(&tx, input, &LedgerRow { slice: index, rows, bytes, ..LedgerRow::default() }).await?;
    tx.commit().await.map_err(|e| Error::db(format!("commit slice {index} of chunk {}", chunk.id), e))?;
    Ok((rows, bytes))
}
