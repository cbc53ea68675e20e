//! Copying a chunk: source `COPY … TO STDOUT` streamed into target `COPY … FROM STDIN`.
//!
//! Rows are never decoded: COPY buffers go from one socket to the other with constant memory.
//! Exactly once: the chunk's ledger row is written in the same transaction as its rows, a retry
//! reads the ledger first, and a half-done chunk disappears with its rolled-back transaction
//! (RDS-CASES T40). A whole-table chunk truncates first, which also makes `COPY FREEZE` legal.

use std::time::Instant;

use futures_util::{SinkExt, TryStreamExt, pin_mut};

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::quote_ident;
use crate::schema::to_value;
use crate::step::{ChunkInput, CopyChunkOutput, CopyRequest, keys};

/// Entry point of the copy function.
pub async fn handle(ctx: &StepContext, request: CopyRequest) -> Result<serde_json::Value> {
    Ok(match request {
        CopyRequest::Plan(input) => to_value(crate::plan::run(ctx, &input).await?),
        CopyRequest::CopyChunk(input) => to_value(copy_chunk(ctx, &input).await?),
    })
}

/// `("a", "b")`: the explicit column list used on both ends (generated columns excluded, T30).
pub fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
}

/// Copies one chunk exactly once.
#[tracing::instrument(skip_all, fields(chunk = %input.chunk.id, table = %input.chunk.table))]
pub async fn copy_chunk(ctx: &StepContext, input: &ChunkInput) -> Result<CopyChunkOutput> {
    let started = Instant::now();
    let chunk = &input.chunk;
    let mut target = ctx.connect(&input.job, Side::Target, "copy", &input.run_id).await?;
    let tx = target.transaction().await.map_err(|e| Error::db("begin copy transaction", e))?;
    let done = tx
        .query_opt(
            "SELECT rows, bytes FROM pgferry.copied_chunks WHERE run_id = $1 AND chunk_id = $2",
            &[&input.run_id, &chunk.id],
        )
        .await
        .map_err(|e| Error::db("read chunk ledger", e))?;
    if let Some(row) = done {
        let output = CopyChunkOutput {
            chunk_id: chunk.id.clone(),
            table: chunk.table.clone(),
            rows: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            bytes: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            elapsed_ms: 0,
            already_committed: true,
        };
        ctx.store.put_json(&keys::copy(&input.run_id, &chunk.id), &output).await?;
        return Ok(output);
    }

    let table = &chunk.table;
    let columns = column_list(&chunk.columns);
    tx.batch_execute(&format!("TRUNCATE ONLY {table}")).await.map_err(|e| Error::db(format!("truncate {table}"), e))?;
    let source = ctx.connect(&input.job, Side::Source, "copy", &input.run_id).await?;
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
        let out = source
            .copy_out(&format!("COPY {table} ({columns}) TO STDOUT"))
            .await
            .map_err(|e| Error::db(format!("start reading {table}"), e))?;
        let sink = tx
            .copy_in::<_, bytes::Bytes>(&format!("COPY {table} ({columns}) FROM STDIN WITH (FREEZE)"))
            .await
            .map_err(|e| Error::db(format!("start writing {table}"), e))?;
        pin_mut!(out);
        pin_mut!(sink);
        let mut bytes = 0u64;
        while let Some(buf) = out.try_next().await.map_err(|e| Error::db(format!("read {table}"), e))? {
            bytes += buf.len() as u64;
            sink.feed(buf).await.map_err(|e| Error::db(format!("write {table}"), e))?;
        }
        let rows = sink.as_mut().finish().await.map_err(|e| Error::db(format!("finish writing {table}"), e))?;
        (rows, bytes)
    };
    let (rows_i, bytes_i) = (i64::try_from(rows).unwrap_or(i64::MAX), i64::try_from(bytes).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO pgferry.copied_chunks (run_id, chunk_id, table_schema, table_name, rows, bytes) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&input.run_id, &chunk.id, &table.schema, &table.name, &rows_i, &bytes_i],
    )
    .await
    .map_err(|e| Error::db("record chunk in ledger", e))?;
    tx.commit().await.map_err(|e| Error::db(format!("commit chunk {}", chunk.id), e))?;
    let output = CopyChunkOutput {
        chunk_id: chunk.id.clone(),
        table: table.clone(),
        rows,
        bytes,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        already_committed: false,
    };
    ctx.store.put_json(&keys::copy(&input.run_id, &chunk.id), &output).await?;
    tracing::info!(rows, bytes, elapsed_ms = output.elapsed_ms, "chunk copied");
    Ok(output)
}
