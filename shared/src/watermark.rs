//! Change detection by transaction-id watermarks: what a refresh re-copies and what its
//! verification hashes, without hashing every row.
//!
//! Every row version carries the id of the transaction that wrote it (`xmin`). When a run's
//! verification starts, the large-object step records each side's snapshot `xmin` (the oldest
//! transaction still running: everything below it has ended) in `pgferry.runs`, and the report
//! marks the run verified when the target equalled the source. From then on, for every key
//! present on both sides whose source row was written below the source mark and whose target
//! row below the target mark, the two rows are equal: both were there, unchanged, when the
//! verification compared them. A later refresh therefore needs to look only at
//! - rows written since on either side (`age(xmin)` at most the mark's age: one cheap pass over
//!   the slice, no row is formatted or hashed), and
//! - keys present on one side only (source deletes, target deletes): integer and uuid keys are
//!   listed in key order by both servers and merged (module `keystream`); other keys are found
//!   by a per-bucket count and hash of the *keys* with the changed keys taken out, then a key
//!   listing of the few buckets that still differ,
//!
//! and its verification hashes the changed rows on both sides plus every slice's key count and
//! key hash. Why it is sound: `xmin` is the raw transaction id even on frozen tuples (PG 9.4+);
//! an update (even one that changes nothing), a delete + insert and a row rewrite all write a
//! new `xmin`; aborted transactions leave no visible row; a subtransaction's id is above its
//! parent's. Marks are compared as 32-bit ages, valid while fewer than 2^30 transactions passed
//! since the mark; older rows can only alias to *new* (re-copied, never missed).
//! The marks are not used — rows are compared by content — when no verified run recorded them
//! (first refresh after an older pgferry), the source's schema changed since (an enum label or a
//! type's output can change rows' text without writing them), either server's transaction
//! counter is behind its mark (another cluster, a restore) or too far ahead.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::pg::quote_ident;
use crate::step::Chunk;

/// Transactions that may pass between a mark and its use (the ages compared are 32-bit).
const MAX_XID_DISTANCE: u64 = 1 << 30;

/// Key hash buckets a slice's keys are compared in (a power of two): with a few dozen keys per
/// bucket in a slice of narrow rows, spread deletes dirty few buckets.
const KEY_BUCKETS: i64 = 4096;

/// Memory for grouping a slice's rows by key bucket in one hash table: the planner cannot know
/// that a bucket expression has few values, estimates one group per row, and without room for
/// that many would sort the slice on disk first (3–4× slower).
pub(crate) const GROUPING_MEMORY: &str = "SET work_mem = '64MB'";

/// The marks of a verified run: rows written below them were compared equal by that run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watermarks {
    /// The verified run the marks are from.
    pub run_id: String,
    /// Full (64-bit) transaction ids: snapshot `xmin` of each side when that run's verification
    /// began.
    pub source_xmin: u64,
    pub target_xmin: u64,
}

/// The snapshot `xmin` of a server now, as a full transaction id.
pub(crate) async fn snapshot_xmin(client: &Client) -> Result<u64> {
    xid8(client, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").await
}

async fn xid8(client: &Client, sql: &str) -> Result<u64> {
    let text: String =
        client.query_one(sql, &[]).await.map_err(|e| Error::db("read the transaction counter", e))?.get(0);
    text.parse().map_err(|_| Error::job(format!("unexpected transaction id {text}")))
}

/// Why marks recorded at `mark` cannot be used on this server now, if they cannot.
pub(crate) async fn unusable(client: &Client, mark: u64, side: &str) -> Result<Option<String>> {
    let next = xid8(client, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").await?;
    Ok(if next < mark {
        Some(format!("the {side}'s transaction counter is behind the recorded mark (another cluster or a restore)"))
    } else if next - mark >= MAX_XID_DISTANCE {
        Some(format!("more than 2^30 transactions ran on the {side} since the mark"))
    } else {
        None
    })
}

/// True for row versions written at or after `mark` (and, rarely, for rows frozen ~2^32
/// transactions earlier whose raw id aliases to a recent one: re-examined, never missed).
/// `age()` counts from the same transaction id for both operands (its reference is fixed for the
/// transaction), so the comparison is exact; the mark's age is an init plan, computed once.
pub(crate) fn written_since(mark: u64) -> String {
    format!("age(xmin) <= (SELECT age('{}'::xid))", mark & 0xFFFF_FFFF)
}

/// A 64-bit hash of a row's key: the type's own hash for single integer and uuid keys, else of
/// the key's text form.
pub(crate) fn key_hash(chunk: &Chunk, seed: u32) -> String {
    if let [k] = chunk.key.as_slice() {
        let name = quote_ident(&k.name);
        let function = match k.type_name.as_str() {
            "smallint" => Some("hashint2extended"),
            "integer" => Some("hashint4extended"),
            "bigint" => Some("hashint8extended"),
            "uuid" => Some("uuid_hash_extended"),
            _ => None,
        };
        if let Some(f) = function {
            return format!("{f}({name}, {seed})");
        }
        return format!("hashtextextended({name}::text, {seed})");
    }
    let cols: Vec<String> = chunk.key.iter().map(|k| quote_ident(&k.name)).collect();
    format!("hashtextextended(ROW({})::text, {seed})", cols.join(", "))
}

fn bucket(chunk: &Chunk) -> String {
    format!("({} & {})", key_hash(chunk, 7), KEY_BUCKETS - 1)
}

fn key_texts(chunk: &Chunk) -> Vec<String> {
    chunk.key.iter().map(|k| format!("{}::text", quote_ident(&k.name))).collect()
}

/// `(k1, k2) IN (SELECT … FROM unnest($n::text[], …))`: keys bound as one text array per key
/// column, from parameter `$first` on, cast to the key's types.
pub(crate) fn keys_in(chunk: &Chunk, first: usize) -> String {
    let arrays: Vec<String> = (0..chunk.key.len()).map(|i| format!("${}::text[]", first + i)).collect();
    keys_in_arrays(chunk, &arrays)
}

/// `(k1, k2) IN (SELECT … FROM unnest(a1, a2) …)`: the key columns among the rows of the given
/// text arrays (parameters or literals, one per key column), cast to the key's types.
pub(crate) fn keys_in_arrays(chunk: &Chunk, arrays: &[String]) -> String {
    let cols: Vec<String> = chunk.key.iter().map(|k| quote_ident(&k.name)).collect();
    let typed: Vec<String> = chunk.key.iter().enumerate().map(|(i, k)| format!("u.c{i}::{}", k.type_name)).collect();
    let aliases: Vec<String> = (0..chunk.key.len()).map(|i| format!("c{i}")).collect();
    format!(
        "({}) IN (SELECT {} FROM unnest({}) AS u({}))",
        cols.join(", "),
        typed.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
}

/// Keys as one text array per key column (parameters of [`keys_in`]).
pub(crate) fn key_columns(chunk: &Chunk, keys: &[Vec<String>]) -> Vec<Vec<String>> {
    (0..chunk.key.len()).map(|i| keys.iter().map(|k| k[i].clone()).collect()).collect()
}

pub(crate) fn params(columns: &[Vec<String>]) -> Vec<&(dyn ToSql + Sync)> {
    columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

fn and(filter: &Option<String>, more: &str) -> String {
    match filter {
        Some(p) => format!(" WHERE {p} AND {more}"),
        None => format!(" WHERE {more}"),
    }
}

fn sum_of(text: &str) -> i128 {
    text.parse().unwrap_or(0)
}

/// Keys from per-column text arrays (`NULL` arrays: none).
fn zip_keys(row: &tokio_postgres::Row, first: usize, n: usize) -> Vec<Vec<String>> {
    let columns: Vec<Vec<String>> =
        (0..n).map(|i| row.get::<_, Option<Vec<String>>>(first + i).unwrap_or_default()).collect();
    let len = columns.first().map_or(0, Vec::len);
    (0..len).map(|r| columns.iter().map(|c| c[r].clone()).collect()).collect()
}

/// What a refresh must do to a keyed slice, found with the marks.
#[derive(Debug, Default)]
pub(crate) struct SliceChanges {
    pub source_rows: u64,
    pub target_rows: u64,
    /// Keys written since the marks on either side (re-copied whatever their content).
    pub written: usize,
    /// Keys on one side only among rows older than the marks (deletes on either side).
    pub one_sided: usize,
    pub to_delete: Vec<Vec<String>>,
    pub to_copy: Vec<Vec<String>>,
}

impl SliceChanges {
    /// The repair of a slice: keys `written` since the marks on either side are deleted and
    /// copied again, keys only on the source (`missing`) copied, keys only on the target
    /// (`extra`) deleted.
    pub(crate) fn new(
        (source_rows, target_rows): (u64, u64),
        written: Vec<Vec<String>>,
        missing: Vec<Vec<String>>,
        extra: Vec<Vec<String>>,
    ) -> Self {
        SliceChanges {
            source_rows,
            target_rows,
            written: written.len(),
            one_sided: missing.len() + extra.len(),
            to_delete: written.iter().cloned().chain(extra).collect(),
            to_copy: written.into_iter().chain(missing).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.to_delete.is_empty() && self.to_copy.is_empty()
    }
}

type BucketSums = HashMap<i64, (i64, i128)>;

/// Per key bucket `(count, key hash sum)` of a slice, and the keys written since `mark`.
async fn buckets_and_written(
    client: &Client,
    chunk: &Chunk,
    filter: &Option<String>,
    mark: u64,
) -> std::result::Result<(BucketSums, Vec<Vec<String>>), tokio_postgres::Error> {
    let new = written_since(mark);
    let arrays: Vec<String> = key_texts(chunk).iter().map(|k| format!("array_agg({k}) FILTER (WHERE {new})")).collect();
    let where_clause = filter.as_ref().map_or(String::new(), |p| format!(" WHERE {p}"));
    let sql = format!(
        "SELECT {}, count(*), sum({})::text, {} FROM ONLY {}{where_clause} GROUP BY 1",
        bucket(chunk),
        key_hash(chunk, 0),
        arrays.join(", "),
        chunk.table
    );
    client.batch_execute(GROUPING_MEMORY).await?;
    let rows = client.query(&sql, &[]).await?;
    let mut sums = HashMap::new();
    let mut written = Vec::new();
    for r in &rows {
        sums.insert(r.get::<_, i64>(0), (r.get::<_, i64>(1), sum_of(&r.get::<_, String>(2))));
        written.extend(zip_keys(r, 3, chunk.key.len()));
    }
    Ok((sums, written))
}

/// Per bucket `(count, key hash sum)` of the given keys present in a slice.
async fn bucket_sums_of(
    client: &Client,
    chunk: &Chunk,
    filter: &Option<String>,
    keys: &[Vec<String>],
) -> std::result::Result<BucketSums, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {}, count(*), sum({})::text FROM ONLY {}{} GROUP BY 1",
        bucket(chunk),
        key_hash(chunk, 0),
        chunk.table,
        and(filter, &keys_in(chunk, 1))
    );
    let columns = key_columns(chunk, keys);
    let rows = client.query(&sql, &params(&columns)).await?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0), (r.get::<_, i64>(1), sum_of(&r.get::<_, String>(2))))).collect())
}

/// The keys of a slice in the given buckets.
async fn keys_in_buckets(
    client: &Client,
    chunk: &Chunk,
    filter: &Option<String>,
    buckets: &[i64],
) -> std::result::Result<HashSet<Vec<String>>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM ONLY {}{}",
        key_texts(chunk).join(", "),
        chunk.table,
        and(filter, &format!("{} = ANY($1::bigint[])", bucket(chunk)))
    );
    let buckets = buckets.to_vec();
    let rows = client.query(&sql, &[&buckets]).await?;
    let n = chunk.key.len();
    Ok(rows.iter().map(|r| (0..n).map(|i| r.get::<_, String>(i)).collect()).collect())
}

fn subtract(total: &BucketSums, part: &BucketSums) -> BucketSums {
    let mut out = total.clone();
    for (b, (c, s)) in part {
        let e = out.entry(*b).or_default();
        e.0 -= c;
        e.1 -= s;
    }
    out.retain(|_, v| *v != (0, 0));
    out
}

/// What differs in a keyed slice since the marks, by key hash buckets: rows written on either
/// side, and keys that one side lost. Reads keys and transaction ids only, never formats a row.
/// (Integer and uuid keys are merged as ordered key lists instead, by `keystream`.)
pub(crate) async fn bucket_slice_changes(
    source: &Client,
    target: &Client,
    chunk: &Chunk,
    filter: &Option<String>,
    marks: &Watermarks,
) -> Result<SliceChanges> {
    let table = &chunk.table;
    let err = |what: &str| {
        let what = format!("{what} of {table}");
        move |e| Error::db(what, e)
    };
    let ((s_sums, s_new), (t_sums, t_new)) = tokio::try_join!(
        buckets_and_written(source, chunk, filter, marks.source_xmin),
        buckets_and_written(target, chunk, filter, marks.target_xmin)
    )
    .map_err(err("find rows written since the last verified run"))?;
    let count = |s: &BucketSums| u64::try_from(s.values().map(|v| v.0).sum::<i64>()).unwrap_or(0);
    let rows = (count(&s_sums), count(&t_sums));
    let mut seen = HashSet::new();
    let written: Vec<Vec<String>> = s_new.into_iter().chain(t_new).filter(|k| seen.insert(k.clone())).collect();
    let (s_rest, t_rest) = if written.is_empty() {
        (s_sums, t_sums)
    } else {
        let (s_part, t_part) = tokio::try_join!(
            bucket_sums_of(source, chunk, filter, &written),
            bucket_sums_of(target, chunk, filter, &written)
        )
        .map_err(err("hash the keys of changed rows"))?;
        (subtract(&s_sums, &s_part), subtract(&t_sums, &t_part))
    };
    // Buckets whose unchanged keys differ: a side lost keys (a delete) there.
    let mut dirty: Vec<i64> = s_rest.iter().filter(|(b, v)| t_rest.get(*b) != Some(*v)).map(|(b, _)| *b).collect();
    dirty.extend(t_rest.keys().filter(|b| !s_rest.contains_key(*b)));
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    if !dirty.is_empty() {
        let (s_keys, t_keys) = tokio::try_join!(
            keys_in_buckets(source, chunk, filter, &dirty),
            keys_in_buckets(target, chunk, filter, &dirty)
        )
        .map_err(err("list the keys of differing buckets"))?;
        missing = s_keys.iter().filter(|k| !t_keys.contains(*k) && !seen.contains(*k)).cloned().collect();
        extra = t_keys.iter().filter(|k| !s_keys.contains(*k) && !seen.contains(*k)).cloned().collect();
    }
    Ok(SliceChanges::new(rows, written, missing, extra))
}

/// A keyed range verified with the marks.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ChangedVerify {
    pub equal: bool,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Rows hashed on both sides now (written since the marks on either side).
    pub rows_hashed: u64,
}

/// Verifies a keyed range by its key count and key hash on both sides, and the row hashes of the
/// rows written since the marks on either side (the others are equal since the marks' run).
/// Not `equal` also when inconclusive: the caller then compares the whole range by content.
pub(crate) async fn verify_changed(
    source: &Client,
    target: &Client,
    chunk: &Chunk,
    row_hash: &str,
    filter: &Option<String>,
    marks: &Watermarks,
) -> Result<ChangedVerify> {
    let table = &chunk.table;
    let n = chunk.key.len();
    let where_clause = filter.as_ref().map_or(String::new(), |p| format!(" WHERE {p}"));
    let sql = |mark: u64| {
        let new = written_since(mark);
        let mut arrays: Vec<String> =
            key_texts(chunk).iter().map(|k| format!("array_agg({k}) FILTER (WHERE {new})")).collect();
        arrays.push(format!("array_agg({row_hash}) FILTER (WHERE {new})"));
        format!(
            "SELECT count(*), coalesce(sum({}), 0)::text, {} FROM ONLY {table}{where_clause}",
            key_hash(chunk, 0),
            arrays.join(", ")
        )
    };
    let (s_sql, t_sql) = (sql(marks.source_xmin), sql(marks.target_xmin));
    let (s, t) = tokio::try_join!(source.query_one(&s_sql, &[]), target.query_one(&t_sql, &[]))
        .map_err(|e| Error::db(format!("hash rows of {table} written since the last verified run"), e))?;
    let rows = |r: &tokio_postgres::Row| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0);
    let mut out = ChangedVerify { source_rows: rows(&s), target_rows: rows(&t), ..ChangedVerify::default() };
    if out.source_rows != out.target_rows || s.get::<_, String>(1) != t.get::<_, String>(1) {
        return Ok(out);
    }
    let hashed = |r: &tokio_postgres::Row| -> HashMap<Vec<String>, i64> {
        let keys = zip_keys(r, 2, n);
        let hashes: Vec<i64> = r.get::<_, Option<Vec<i64>>>(2 + n).unwrap_or_default();
        keys.into_iter().zip(hashes).collect()
    };
    let (mut on_source, mut on_target) = (hashed(&s), hashed(&t));
    // A key written on one side only: its row on the other side, by key.
    let source_only: Vec<Vec<String>> = on_source.keys().filter(|k| !on_target.contains_key(*k)).cloned().collect();
    let target_only: Vec<Vec<String>> = on_target.keys().filter(|k| !on_source.contains_key(*k)).cloned().collect();
    // Most of the range written on one side only (a table created or reloaded whole): hashing
    // the range is cheaper than looking its rows up by key; the caller does.
    if (source_only.len() + target_only.len()) as u64 * 4 > out.source_rows {
        return Ok(out);
    }
    let (s_rows, t_rows) = tokio::try_join!(
        hashes_by_key(source, chunk, filter, row_hash, &target_only),
        hashes_by_key(target, chunk, filter, row_hash, &source_only)
    )?;
    on_source.extend(s_rows);
    on_target.extend(t_rows);
    out.rows_hashed = on_source.len() as u64;
    out.equal = on_source == on_target;
    Ok(out)
}

/// The row hashes of the rows with these keys within `filter`, by key (keys in their text form;
/// a key without a row is absent). On a client or inside a transaction.
pub(crate) async fn hashes_by_key<C: tokio_postgres::GenericClient>(
    client: &C,
    chunk: &Chunk,
    filter: &Option<String>,
    row_hash: &str,
    keys: &[Vec<String>],
) -> Result<HashMap<Vec<String>, i64>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let n = chunk.key.len();
    let sql = format!(
        "SELECT {}, {row_hash} FROM ONLY {}{}",
        key_texts(chunk).join(", "),
        chunk.table,
        and(filter, &keys_in(chunk, 1))
    );
    let columns = key_columns(chunk, keys);
    let rows = client
        .query(&sql, &params(&columns))
        .await
        .map_err(|e| Error::db(format!("hash changed rows of {} by key", chunk.table), e))?;
    Ok(rows.iter().map(|r| ((0..n).map(|i| r.get::<_, String>(i)).collect(), r.get::<_, i64>(n))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::QualifiedName;
    use crate::step::{CopyFormat, KeyColumn, Slice};

    fn chunk(key: &[(&str, &str)]) -> Chunk {
        Chunk {
            seal: None,
            id: "c0".into(),
            table: QualifiedName::new("public", "t"),
            columns: vec!["a".into()],
            format: CopyFormat::Binary,
            key: key.iter().map(|(n, t)| KeyColumn { name: n.to_string(), type_name: t.to_string() }).collect(),
            slices: vec![Slice::Whole],
            estimated_bytes: 0,
        }
    }

    #[test]
    fn marks_compare_as_ages_of_their_low_32_bits() {
        assert_eq!(written_since((5 << 32) + 1234), "age(xmin) <= (SELECT age('1234'::xid))");
    }

    #[test]
    fn integer_keys_hash_natively_and_others_by_text() {
        assert_eq!(key_hash(&chunk(&[("id", "integer")]), 0), "hashint4extended(\"id\", 0)");
        assert_eq!(key_hash(&chunk(&[("k", "text")]), 7), "hashtextextended(\"k\"::text, 7)");
        assert_eq!(
            key_hash(&chunk(&[("a", "integer"), ("b b", "date")]), 0),
            "hashtextextended(ROW(\"a\", \"b b\")::text, 0)"
        );
        assert_eq!(
            keys_in(&chunk(&[("a", "integer"), ("b", "text")]), 2),
            "(\"a\", \"b\") IN (SELECT u.c0::integer, u.c1::text FROM unnest($2::text[], $3::text[]) AS u(c0, c1))"
        );
    }
}
