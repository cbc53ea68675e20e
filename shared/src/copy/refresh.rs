//! Mode `refresh`, in the copy step: each slice compared and only what differs re-copied, row
//! by row or reloaded whole (see [`crate::refresh`] for the mode).

use std::collections::HashMap;

use crate::chunk::hash_sql;
use crate::chunk::slice_predicate;
use crate::chunk::{column_list, copy_in_sql, copy_options, copy_out_sql, copy_out_where, stream};
use crate::error::{Error, Result};
use crate::ledger::{LedgerRow, record_slice};
use crate::pg::{QualifiedName, quote_ident, quote_literal};
use crate::refresh::*;
use crate::step::{ChunkInput, RefreshCounts, Slice};
use tokio_postgres::Client;

// ---------------------------------------------------------------------------------------------
// Rows

/// Compares one slice and re-copies what differs, in one transaction with its ledger row:
/// `(rows written, bytes written, counts)`. With `marks` (a verified earlier run's transaction-id
/// marks) a keyed slice is compared by what was written since and by its keys, not by content.
pub(crate) async fn refresh_slice(
    source: &Client,
    target: &mut Client,
    input: &ChunkInput,
    index: usize,
    slice: &Slice,
    marks: Option<&crate::watermark::Watermarks>,
) -> Result<(u64, u64, RefreshCounts)> {
    let chunk = &input.chunk;
    let keyless = chunk.key.is_empty();
    // A table without a key is compared and repaired whole, by the slice holding its first page;
    // its other page slices have nothing left to do.
    if keyless && matches!(slice, Slice::Pages { first_page, .. } if *first_page > 0) {
        record_slice(&*target, input, &LedgerRow { slice: index, ..LedgerRow::default() }).await?;
        return Ok((0, 0, RefreshCounts::default()));
    }
    let filter = if keyless { None } else { slice_predicate(&chunk.key, slice) };
    let by_rows = !keyless && !chunk.columns.is_empty();
    // Compared key by key with the marks: the slice can prove itself equal (see `prove_repair`).
    let by_marks = marks.is_some() && by_rows;
    // `None`: equal; `Some(None)`: reload the range; `Some(Some(diff))`: these keys.
    let mut found: Option<Option<RowDiff>> = None;
    let (source_rows, target_rows);
    match marks {
        Some(marks) if by_rows => {
            // Integer and uuid keys: both sides' ordered key lists merged; other keys: key hash buckets.
            let c = if crate::keystream::supported(chunk) {
                crate::keystream::slice_changes(source, target, chunk, &filter, marks).await?
            } else {
                crate::watermark::bucket_slice_changes(source, target, chunk, &filter, marks).await?
            };
            (source_rows, target_rows) = (c.source_rows, c.target_rows);
            tracing::debug!(slice = index, written = c.written, one_sided = c.one_sided, "changes since the marks");
            if !c.is_empty() {
                found = Some(Some(RowDiff { to_delete: c.to_delete, to_copy: c.to_copy }));
            }
        }
        _ => {
            // The range's count and hash first (the query verification runs): an equal range
            // costs nothing more. A differing keyed range is then compared by key buckets and
            // only the rows of differing buckets one by one; a keyless table is repaired as a
            // multiset of rows (below) or reloaded whole, as is a table without columns. (With
            // the marks too: for a keyless table, "nothing written since" would still need the
            // hash, a delete on each side cancelling out in the counts.)
            let hash = crate::chunk::row_hash(source, chunk).await?;
            let sql = hash_sql(chunk, &hash, filter.clone());
            let (s, t) = tokio::try_join!(source.query_one(&sql, &[]), target.query_one(&sql, &[]))
                .map_err(|e| Error::db(format!("hash {}", chunk.table), e))?;
            (source_rows, target_rows) =
                (u64::try_from(s.get::<_, i64>(0)).unwrap_or(0), u64::try_from(t.get::<_, i64>(0)).unwrap_or(0));
            if source_rows != target_rows || s.get::<_, String>(1) != t.get::<_, String>(1) {
                found = Some(None);
                if by_rows {
                    let b = compare_buckets(source, target, chunk, &hash, &filter).await?;
                    found = if b.dirty.is_empty() {
                        None
                    } else {
                        Some(Some(row_diff(source, target, chunk, &hash, &filter, &b.dirty).await?))
                    };
                } else if keyless
                    && !chunk.columns.is_empty()
                    && source_rows.max(target_rows) <= input.job.keyless_match_rows()
                    && let Some(done) =
                        repair_rows(source, target, input, index, &hash, (source_rows, target_rows)).await?
                {
                    return Ok(done);
                }
            }
        }
    }
    let Some(diff) = found else {
        let row = LedgerRow {
            slice: index,
            compared: Some(source_rows),
            deleted: Some(0),
            equal: Some(true),
            // Keyed with the marks: keys merged, nothing written. Keyless: count and row hash sum
            // compared on both sides just now (above).
            proven: (by_marks || keyless).then_some(true),
            ..LedgerRow::default()
        };
        record_slice(&*target, input, &row).await?;
        return Ok((0, 0, row.refresh_counts()));
    };
    let tx = repair_transaction(target).await?;
    let table = &chunk.table;
    let small = diff
        .as_ref()
        .filter(|d| (d.to_copy.len() + d.to_delete.len()) as u64 * ROW_REPAIR_RATIO <= source_rows.max(target_rows));
    let (deleted, rows, bytes, proven) = match small {
        Some(d) => {
            let mut deleted = 0;
            for batch in d.to_delete.chunks(KEY_BATCH) {
                deleted += delete_keys(&tx, chunk, &filter, batch).await?;
            }
            let (mut rows, mut bytes) = (0, 0);
            // The slice's range bounds the scan: the keys are looked up within it only.
            let in_range = filter.as_ref().map_or(String::new(), |p| format!("{p} AND "));
            for batch in d.to_copy.chunks(KEY_BATCH) {
                let out_sql = copy_out_where(chunk, &format!("{in_range}{}", keys_in_literal(chunk, batch)));
                let (r, b) = stream(source, &tx, &out_sql, &copy_in(chunk), table).await?;
                rows += r;
                bytes += b;
            }
            let proven = if by_marks {
                prove_repair(source, &tx, chunk, &filter, d, (source_rows, target_rows), (deleted, rows)).await?
            } else {
                false
            };
            (deleted, rows, bytes, proven)
        }
        None => {
            let where_clause = filter.as_ref().map_or(String::new(), |p| format!(" WHERE {p}"));
            // A whole table no foreign key references is emptied by TRUNCATE and loaded with
            // COPY FREEZE, as a snapshot loads it: deleting every row one by one and loading
            // unfrozen rows costs several times more.
            let referenced: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass($1))",
                    &[&table.to_string()],
                )
                .await
                .map_err(|e| Error::db(format!("look for foreign keys referencing {table}"), e))?
                .get(0);
            let truncate = keyless && !referenced && !chunk.columns.is_empty();
            let mut set_aside = Vec::new();
            let deleted = if truncate {
                tx.batch_execute(&format!("TRUNCATE ONLY {table}"))
                    .await
                    .map_err(|e| Error::db(format!("truncate {table}"), e))?;
                set_aside = set_aside_indexes(&tx, table).await?;
                target_rows
            } else {
                tx.execute(&format!("DELETE FROM ONLY {table}{where_clause}"), &[])
                    .await
                    .map_err(|e| Error::db(format!("delete a range of {table}"), e))?
            };
            let (rows, bytes) = if chunk.columns.is_empty() {
                // COPY needs a column; a table without columns can still hold rows.
                let n = i64::try_from(source_rows).unwrap_or(i64::MAX);
                tx.execute(&format!("INSERT INTO {table} SELECT FROM generate_series(1, $1::bigint)"), &[&n])
                    .await
                    .map_err(|e| Error::db(format!("fill {table}"), e))?;
                (source_rows, 0)
            } else {
                let whole = if keyless { &Slice::Whole } else { slice };
                let in_sql = if truncate { copy_in_sql(chunk, &Slice::Whole) } else { copy_in(chunk) };
                stream(source, &tx, &copy_out_sql(chunk, whole), &in_sql, table).await?
            };
            rebuild_indexes(&tx, table, &set_aside).await?;
            (deleted, rows, bytes, false)
        }
    };
    let row = LedgerRow {
        slice: index,
        rows,
        bytes,
        compared: Some(source_rows),
        deleted: Some(deleted),
        equal: Some(false),
        proven: by_marks.then_some(proven),
    };
    record_slice(&tx, input, &row).await?;
    tx.commit().await.map_err(|e| Error::db(format!("commit slice {index} of chunk {}", chunk.id), e))?;
    tracing::debug!(slice = index, rows, deleted, "slice refreshed");
    Ok((rows, bytes, row.refresh_counts()))
}

/// Repairs a keyless table as a multiset of rows ([`crate::rowset`]), in one transaction that
/// proves its result. `None` when the proof did not come out (the source changed between the
/// listing and the copy): nothing was changed and the caller reloads the table.
pub(crate) async fn repair_rows(
    source: &Client,
    target: &mut Client,
    input: &ChunkInput,
    index: usize,
    row_hash: &str,
    (source_rows, target_rows): (u64, u64),
) -> Result<Option<(u64, u64, RefreshCounts)>> {
    use crate::rowset;
    let chunk = &input.chunk;
    let table = &chunk.table;
    let tx = repair_transaction(target).await?;
    let listing = rowset::listing_sql(table, row_hash);
    let start = |e| Error::db(format!("list the rows of {table}"), e);
    let (s, t) = tokio::try_join!(source.copy_out(&listing), tx.copy_out(&listing)).map_err(start)?;
    let (s, t) = tokio::try_join!(rowset::read(s, table, source_rows), rowset::read(t, table, target_rows))?;
    let source_rows = s.len() as u64;
    let (surplus, missing) = rowset::differences(s, t);
    let deleted = rowset::delete(&tx, table, row_hash, &surplus).await?;
    let (mut rows, mut bytes) = (0, 0);
    for batch in missing.chunks(KEY_BATCH) {
        let out_sql = copy_out_where(chunk, &rowset::at_addresses(batch));
        let (r, b) = stream(source, &tx, &out_sql, &copy_in(chunk), table).await?;
        (rows, bytes) = (rows + r, bytes + b);
    }
    let inserted = rowset::inserted(&tx, table, row_hash).await?;
    tracing::debug!(slice = index, surplus = surplus.len(), missing = missing.len(), "rows matched as multisets");
    let deleted_rows = deleted.len() as u64;
    if !rowset::proven(&surplus, deleted, &missing, inserted) {
        tx.rollback().await.map_err(|e| Error::db(format!("roll back the repair of {table}"), e))?;
        tracing::info!(%table, "the source changed while its rows were matched: reloading the table");
        return Ok(None);
    }
    let row = LedgerRow {
        slice: index,
        rows,
        bytes,
        compared: Some(source_rows),
        deleted: Some(deleted_rows),
        equal: Some(surplus.is_empty() && missing.is_empty()),
        proven: Some(true),
    };
    record_slice(&tx, input, &row).await?;
    tx.commit().await.map_err(|e| Error::db(format!("commit slice {index} of chunk {}", chunk.id), e))?;
    Ok(Some((rows, bytes, row.refresh_counts())))
}

/// A transaction repairing a slice. Its rows are the source's rows: no foreign key checks or
/// user triggers fire on them.
pub(crate) async fn repair_transaction(target: &mut Client) -> Result<tokio_postgres::Transaction<'_>> {
    let tx = target.transaction().await.map_err(|e| Error::db("begin refresh transaction", e))?;
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(|e| Error::db("set session_replication_role = replica (needs rds_superuser)", e))?;
    Ok(tx)
}

/// Whether a slice repaired key by key after its comparison with the marks now equals the
/// source, checked in the repair's transaction: the counts add up (target rows − deleted +
/// copied = source rows) and every copied row hashes the same on both sides. The comparison
/// merged every key of both sides; keys written on neither side since the marks' verified run
/// hold rows that run found equal; the others were deleted and copied, and are the rows hashed
/// here. `false`, not an error, when the source changed meanwhile: the verification then takes
/// its second pass over the slice's chunk.
pub(crate) async fn prove_repair(
    source: &Client,
    tx: &tokio_postgres::Transaction<'_>,
    chunk: &crate::step::Chunk,
    filter: &Option<String>,
    diff: &RowDiff,
    (source_rows, target_rows): (u64, u64),
    (deleted, copied): (u64, u64),
) -> Result<bool> {
    if target_rows + copied != source_rows + deleted {
        return Ok(false);
    }
    let hash = crate::chunk::row_hash(source, chunk).await?;
    let (on_source, on_target) = tokio::try_join!(
        crate::watermark::hashes_by_key(source, chunk, filter, &hash, &diff.to_copy),
        crate::watermark::hashes_by_key(tx, chunk, filter, &hash, &diff.to_copy)
    )?;
    Ok(on_source.len() as u64 == copied && on_source == on_target)
}

/// A plain index of a table a reload empties: dropped before the rows are loaded and built again
/// after, as a restore builds indexes (one sort instead of a million inserts into the tree, about
/// half the time). Only indexes nothing else refers to or configures are set aside: not unique,
/// not a constraint's, not the replica identity, not the clustering index, not a partitioned
/// index's part, nothing depending on it, in the default tablespace (`pg_get_indexdef` does not
/// name one), without a comment, security label or column statistics target; the others stay and
/// are maintained row by row. All of it happens in the reload's transaction, under the lock its
/// `TRUNCATE` holds: no session ever sees the table without them.
#[derive(Debug)]
pub(crate) struct SetAsideIndex {
    pub(crate) name: QualifiedName,
    pub(crate) definition: String,
}

pub(crate) async fn set_aside_indexes(
    tx: &tokio_postgres::Transaction<'_>,
    table: &QualifiedName,
) -> Result<Vec<SetAsideIndex>> {
    let rows = tx
        .query(
            "SELECT n.nspname::text, c.relname::text, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indrelid = to_regclass($1) AND NOT i.indisunique AND NOT i.indisprimary \
               AND NOT i.indisexclusion AND NOT i.indisclustered AND NOT i.indisreplident \
               AND i.indisvalid AND i.indisready AND i.indislive \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass \
                               AND d.refobjid = i.indexrelid) \
               AND c.reltablespace = 0 \
               AND NOT EXISTS (SELECT 1 FROM pg_seclabel l WHERE l.classoid = 'pg_class'::regclass \
                               AND l.objoid = i.indexrelid) \
               AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) \
               AND NOT EXISTS (SELECT 1 FROM pg_description d WHERE d.classoid = 'pg_class'::regclass \
                               AND d.objoid = i.indexrelid) \
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid \
                               AND a.attstattarget > 0) \
             ORDER BY 1, 2",
            &[&table.to_string()],
        )
        .await
        .map_err(|e| Error::db(format!("list the indexes of {table}"), e))?;
    let indexes: Vec<SetAsideIndex> = rows
        .iter()
        .map(|r| SetAsideIndex {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            definition: r.get(2),
        })
        .collect();
    for index in &indexes {
        tx.batch_execute(&format!("DROP INDEX {}", index.name))
            .await
            .map_err(|e| Error::db(format!("set aside index {} of {table} for the reload", index.name), e))?;
    }
    Ok(indexes)
}

pub(crate) async fn rebuild_indexes(
    tx: &tokio_postgres::Transaction<'_>,
    table: &QualifiedName,
    indexes: &[SetAsideIndex],
) -> Result<()> {
    if indexes.is_empty() {
        return Ok(());
    }
    let memory = crate::dump::postdata::MAINTENANCE_WORK_MEM;
    tx.batch_execute(&format!("SET LOCAL maintenance_work_mem = '{memory}'"))
        .await
        .map_err(|e| Error::db("set maintenance_work_mem", e))?;
    for index in indexes {
        tx.batch_execute(&index.definition)
            .await
            .map_err(|e| Error::db(format!("rebuild index {} of {table} after the reload", index.name), e))?;
    }
    Ok(())
}

/// `COPY t (cols) FROM STDIN` without FREEZE (the table is not emptied in the transaction).
pub(crate) fn copy_in(chunk: &crate::step::Chunk) -> String {
    format!("COPY {} ({}) FROM STDIN ({})", chunk.table, column_list(&chunk.columns), copy_options(chunk))
}

/// The keys to delete on the target and to copy from the source.
#[derive(Debug, Default)]
pub(crate) struct RowDiff {
    pub(crate) to_delete: Vec<Vec<String>>,
    pub(crate) to_copy: Vec<Vec<String>>,
}

/// Hash buckets a keyed range is compared in: a few rows each in a 32 MiB slice of narrow rows,
/// so that spread changes leave most buckets equal.
pub(crate) const BUCKETS: i64 = 16384;

/// A keyed range compared bucket by bucket on both servers: rows are assigned to buckets by a
/// hash of their key, and each side returns `count` and hash sum per bucket (no rows).
pub(crate) struct Buckets {
    /// Buckets whose count or hash differs.
    pub(crate) dirty: Vec<i64>,
}

pub(crate) fn bucket_expr(chunk: &crate::step::Chunk) -> String {
    let key_row = chunk.key.iter().map(|k| quote_ident(&k.name)).collect::<Vec<_>>().join(", ");
    format!("(hashtextextended(ROW({key_row})::text, 7) & {})", BUCKETS - 1)
}

pub(crate) async fn compare_buckets(
    source: &Client,
    target: &Client,
    chunk: &crate::step::Chunk,
    row_hash: &str,
    filter: &Option<String>,
) -> Result<Buckets> {
    let where_clause = filter.as_ref().map_or(String::new(), |p| format!(" WHERE {p}"));
    let table = &chunk.table;
    // 31 bits of each row's hash summed as int4 (an int8 accumulator, several times cheaper than
    // the numeric sum of 64-bit hashes): a bucket only narrows the search, the range's 64-bit
    // hash above and verification after the refresh stay the proof.
    let sql = format!(
        "SELECT {}, count(*), sum(({} & 2147483647)::int4)::text FROM ONLY {table}{where_clause} GROUP BY 1",
        bucket_expr(chunk),
        row_hash
    );
    for client in [source, target] {
        client.batch_execute(crate::watermark::GROUPING_MEMORY).await.map_err(|e| Error::db("set work_mem", e))?;
    }
    let (s, t) = tokio::try_join!(source.query(&sql, &[]), target.query(&sql, &[]))
        .map_err(|e| Error::db(format!("hash {table} by key buckets"), e))?;
    let bucket_of = |r: &tokio_postgres::Row| (r.get::<_, i64>(0), (r.get::<_, i64>(1), r.get::<_, String>(2)));
    let on_source: HashMap<i64, (i64, String)> = s.iter().map(bucket_of).collect();
    let on_target: HashMap<i64, (i64, String)> = t.iter().map(bucket_of).collect();
    let mut dirty: Vec<i64> =
        on_source.iter().filter(|(b, v)| on_target.get(*b) != Some(*v)).map(|(b, _)| *b).collect();
    dirty.extend(on_target.keys().filter(|b| !on_source.contains_key(*b)));
    Ok(Buckets { dirty })
}

/// The keys to delete and to copy in the dirty buckets of a range: `(key text, row hash)` pairs
/// of those buckets leave the servers, rows don't.
pub(crate) async fn row_diff(
    source: &Client,
    target: &Client,
    chunk: &crate::step::Chunk,
    row_hash: &str,
    filter: &Option<String>,
    dirty: &[i64],
) -> Result<RowDiff> {
    let keys: Vec<String> = chunk.key.iter().map(|k| format!("{}::text", quote_ident(&k.name))).collect();
    let table = &chunk.table;
    let in_buckets = format!("{} = ANY($1::bigint[])", bucket_expr(chunk));
    let where_clause = match filter {
        Some(p) => format!(" WHERE {p} AND {in_buckets}"),
        None => format!(" WHERE {in_buckets}"),
    };
    let sql = format!("SELECT {}, {row_hash} FROM ONLY {table}{where_clause}", keys.join(", "));
    let dirty = dirty.to_vec();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&dirty];
    let (s, t) = tokio::try_join!(source.query(&sql, &params), target.query(&sql, &params))
        .map_err(|e| Error::db(format!("compare rows of {table}"), e))?;
    let n = chunk.key.len();
    let key_of = |r: &tokio_postgres::Row| (0..n).map(|i| r.get::<_, String>(i)).collect::<Vec<String>>();
    let mut on_target: HashMap<Vec<String>, i64> = t.iter().map(|r| (key_of(r), r.get(n))).collect();
    let mut diff = RowDiff::default();
    for r in &s {
        let key = key_of(r);
        match on_target.remove(&key) {
            None => diff.to_copy.push(key),
            Some(h) if h != r.get::<_, i64>(n) => {
                diff.to_delete.push(key.clone());
                diff.to_copy.push(key);
            }
            Some(_) => {}
        }
    }
    diff.to_delete.extend(on_target.into_keys());
    Ok(diff)
}

/// Deletes rows by key (keys as bound text arrays, cast to the key's types).
pub(crate) async fn delete_keys(
    tx: &tokio_postgres::Transaction<'_>,
    chunk: &crate::step::Chunk,
    filter: &Option<String>,
    keys: &[Vec<String>],
) -> Result<u64> {
    let sql = format!(
        "DELETE FROM ONLY {} WHERE {}{}",
        chunk.table,
        filter.as_ref().map_or(String::new(), |p| format!("{p} AND ")),
        crate::watermark::keys_in(chunk, 1)
    );
    let columns = crate::watermark::key_columns(chunk, keys);
    tx.execute(&sql, &crate::watermark::params(&columns))
        .await
        .map_err(|e| Error::db(format!("delete changed rows of {}", chunk.table), e))
}

/// `(k1, k2) IN (SELECT …)` selecting `keys`, as literals: `COPY (SELECT …)` takes no parameters.
pub(crate) fn keys_in_literal(chunk: &crate::step::Chunk, keys: &[Vec<String>]) -> String {
    let arrays: Vec<String> = (0..chunk.key.len())
        .map(|i| format!("ARRAY[{}]::text[]", keys.iter().map(|k| quote_literal(&k[i])).collect::<Vec<_>>().join(",")))
        .collect();
    crate::watermark::keys_in_arrays(chunk, &arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::Slice;

    #[test]
    fn keys_are_selected_by_typed_literals() {
        let chunk = crate::step::Chunk {
            seal: None,
            id: "c0".into(),
            table: QualifiedName::new("public", "t"),
            columns: vec!["a".into(), "b".into()],
            format: crate::step::CopyFormat::Binary,
            key: vec![
                crate::step::KeyColumn { name: "a".into(), type_name: "integer".into() },
                crate::step::KeyColumn { name: "b b".into(), type_name: "text".into() },
            ],
            slices: vec![Slice::Whole],
            estimated_bytes: 0,
        };
        assert_eq!(
            keys_in_literal(&chunk, &[vec!["1".into(), "it's".into()]]),
            "(\"a\", \"b b\") IN (SELECT u.c0::integer, u.c1::text FROM unnest(ARRAY['1']::text[], \
             ARRAY['it''s']::text[]) AS u(c0, c1))"
        );
    }
}
