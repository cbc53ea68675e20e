//! What every step does with a chunk's rows, in SQL: the predicate of a slice, the `COPY`
//! statements that stream it, and the row hash both servers compute to compare it.

use std::collections::HashMap;

use futures_util::{SinkExt, TryStreamExt, pin_mut};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::{QualifiedName, quote_ident, quote_literal};
use crate::step::{Chunk, CopyFormat, KeyColumn, Slice};

/// The SQL condition selecting a slice's rows (`None` for a whole table). Bounds are literals,
/// quoted by the one helper and cast to the key's type: `COPY (SELECT …)` takes no parameters.
pub fn slice_predicate(key: &[KeyColumn], slice: &Slice) -> Option<String> {
    match slice {
        Slice::Whole => None,
        Slice::KeyRange { lower, upper } => {
            let cols = format!("({})", key.iter().map(|k| quote_ident(&k.name)).collect::<Vec<_>>().join(", "));
            let typed = |values: &[String]| {
                let parts: Vec<String> =
                    key.iter().zip(values).map(|(k, v)| format!("{}::{}", quote_literal(v), k.type_name)).collect();
                format!("({})", parts.join(", "))
            };
            let mut conds = Vec::new();
            if let Some(l) = lower {
                conds.push(format!("{cols} >= {}", typed(l)));
            }
            if let Some(u) = upper {
                conds.push(format!("{cols} < {}", typed(u)));
            }
            Some(if conds.is_empty() { "true".to_string() } else { conds.join(" AND ") })
        }
        Slice::Pages { first_page, end_page } => {
            let mut cond = format!("ctid >= '({first_page},0)'::tid");
            if let Some(end) = end_page {
                cond.push_str(&format!(" AND ctid < '({end},0)'::tid"));
            }
            Some(cond)
        }
    }
}

/// The condition selecting all rows of a chunk: its slices are consecutive, so the chunk is the
/// range from its first slice's lower bound to its last slice's upper bound.
pub fn chunk_predicate(chunk: &Chunk) -> Option<String> {
    let merged = match (chunk.slices.first(), chunk.slices.last()) {
        (Some(Slice::KeyRange { lower, .. }), Some(Slice::KeyRange { upper, .. })) => {
            Slice::KeyRange { lower: lower.clone(), upper: upper.clone() }
        }
        (Some(Slice::Pages { first_page, .. }), Some(Slice::Pages { end_page, .. })) => {
            Slice::Pages { first_page: *first_page, end_page: *end_page }
        }
        _ => Slice::Whole,
    };
    slice_predicate(&chunk.key, &merged)
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

/// Types whose own extended hash function tells apart exactly the values whose text forms differ
/// (by OID): integers, `bool`, `bytea`, `"char"`, `name`, `oid`, `uuid`, dates and times (hashed
/// by their exact internal value, so the client's time zone plays no part). Text types join them
/// only under a deterministic collation, `char(n)` only with its length (its values are padded);
/// floats (`-0` = `0`), `numeric` (`1.0` = `1.00`), `interval`, json and every other type are
/// hashed by their text form.
const NATIVE_HASH_TYPES: &[u32] = &[16, 17, 18, 19, 20, 21, 23, 25, 26, 1043, 1082, 1083, 1114, 1184, 2950];

const BPCHAR: u32 = 1042;

const COLLATABLE: &[u32] = &[25, 1043, BPCHAR];

/// The expression hashing one row to 64 bits. Columns of [`NATIVE_HASH_TYPES`] go through their
/// type's hash function and the others through their text form under the pinned session settings
/// (`ROW(…)::text` writes NULL as nothing and `''` as `""`, so they differ), one element of the
/// record: `hash_record_extended` is 2–3× cheaper than formatting a whole row as text. Its result
/// combines the columns' hashes linearly, so it is mixed once more: summed over rows, a linear
/// combination would not see two rows swapping a column's values.
pub(crate) fn row_hash_expr(columns: &[(String, bool)]) -> String {
    if columns.is_empty() {
        return "0::bigint".to_string();
    }
    let names = |native: bool| columns.iter().filter(|c| c.1 == native).map(|c| quote_ident(&c.0)).collect::<Vec<_>>();
    let (mut native, other) = (names(true), names(false));
    if native.is_empty() {
        return format!("hashtextextended(ROW({})::text, 0)", other.join(", "));
    }
    if !other.is_empty() {
        native.push(format!("ROW({})::text", other.join(", ")));
    }
    format!("hashint8extended(hash_record_extended(ROW({}), 0), 0)", native.join(", "))
}

/// The row hash expression of a chunk's columns, from the table's column types on `client`
/// (the source: both sides must run the same expression).
pub(crate) async fn row_hash(client: &tokio_postgres::Client, chunk: &Chunk) -> Result<String> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::oid, a.atttypmod, coalesce(co.collisdeterministic, true) \
             FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&chunk.table.to_string()],
        )
        .await
        .map_err(|e| Error::db(format!("read column types of {}", chunk.table), e))?;
    let native: HashMap<String, bool> = rows
        .iter()
        .map(|r| {
            let (oid, typmod, deterministic): (u32, i32, bool) = (r.get(1), r.get(2), r.get(3));
            let ok = (NATIVE_HASH_TYPES.contains(&oid) || (oid == BPCHAR && typmod >= 0))
                && (deterministic || !COLLATABLE.contains(&oid));
            (r.get(0), ok)
        })
        .collect();
    let columns: Vec<(String, bool)> =
        chunk.columns.iter().map(|c| (c.clone(), native.get(c).copied().unwrap_or(false))).collect();
    Ok(row_hash_expr(&columns))
}

/// SQL computing `(count, hash sum)` of the rows matching `filter`, `row_hash` being the row
/// hash expression. A sum, not a xor: two equal rows must not cancel out.
pub(crate) fn hash_sql(chunk: &Chunk, row_hash: &str, filter: Option<String>) -> String {
    let filter = filter.map_or(String::new(), |p| format!(" WHERE {p}"));
    format!("SELECT count(*)::bigint, coalesce(sum({row_hash}), 0)::text FROM ONLY {}{filter}", chunk.table)
}

/// SQL computing `(count, hash sum)` of a chunk's rows.
pub(crate) fn chunk_hash_sql(chunk: &Chunk, row_hash: &str) -> String {
    hash_sql(chunk, row_hash, crate::chunk::chunk_predicate(chunk))
}

/// How much of a chunk a refresh's verification hashed now, and how much it proved unchanged
/// since an earlier verified run (stored at `runs/<run>/verify-scope/<chunk>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyScope {
    pub chunk_id: String,
    pub table: QualifiedName,
    /// Rows hashed on both sides by this verification.
    pub rows_hashed: u64,
    /// Rows written on neither side since the marks of run `unchanged_since`, which found them
    /// equal; their keys are compared now (count and key hash).
    pub rows_unchanged: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<String>,
    /// The keys were compared and the copied rows hashed by the refresh itself, in each slice's
    /// transaction (`refresh.verify: changed`), not by a second pass.
    #[serde(default)]
    pub by_refresh: bool,
}

pub(crate) fn scope_prefix(run: &str) -> String {
    format!("runs/{run}/verify-scope/")
}

pub(crate) fn scope_key(run: &str, chunk: &str) -> String {
    format!("{}{chunk}.json", scope_prefix(run))
}
