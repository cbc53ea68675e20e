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
//! ([`self::refresh::refresh_slice`]), under the same ledger.

pub mod refresh;

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::chunk::{copy_in_sql, copy_out_sql, stream};
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::{Mode, Side};
use crate::ledger::{LedgerRow, ledger, record_slice};
use crate::step::{Chunk, ChunkInput, CopyChunkOutput, PostDataItem, RefreshCounts, Slice, keys};

/// Time kept in reserve at the end of an invocation: committing, writing the result, returning.
const DEADLINE_RESERVE: Duration = Duration::from_secs(20);
/// Throughput assumed for the first slice of an invocation, before one has been measured.
const ASSUMED_BYTES_PER_SEC: f64 = 10.0 * 1024.0 * 1024.0;

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
                self::refresh::refresh_slice(source_client, &mut target, input, index, slice, marks.as_ref()).await?;
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
