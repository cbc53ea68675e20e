//! Repair of a table without a key as a multiset of rows. Both servers list every row's address
//! (`ctid`) and row hash (verification's hash) in one pass, 24 bytes per row on the wire; pgferry
//! sorts both lists by hash and matches them as two bags. Target rows left without a partner are
//! deleted by address, source rows left without one are copied by address, in one target
//! transaction that then proves its result: the deleted rows hashed to what the match left over,
//! the rows it inserted hash (read back in the transaction) to what was missing, so the target
//! now holds the source's bag of rows.
//!
//! A reload copies every row out of the source and into the target and rebuilds the indexes;
//! for 1 M narrow rows with 0.5 % changed this costs about a third of that (measured on the
//! benchmark's `log_lines`, see the closing note of issue 6), and far less WAL on a real target.
//!
//! Rows are fetched by address, not content: a source row updated or deleted between the listing
//! and the copy is no longer at its address, the inserted rows' hashes do not come out right and
//! the proof fails — the caller then rolls back and reloads the table. Memory: 16 bytes per row
//! and side; tables above `refresh.matchKeylessRowsUpTo` rows on either side
//! ([`crate::job::KEYLESS_MATCH_ROWS`] by default) are reloaded instead.

use bytes::Buf;
use futures_util::{TryStreamExt, pin_mut};
use tokio_postgres::CopyOutStream;

use crate::error::{Error, Result};
use crate::pg::{QualifiedName, quote_literal};

/// Rows deleted or fetched per statement.
const BATCH: usize = 10_000;

/// A row's hash and address. Ordered by hash first: sorting groups equal rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Row {
    pub hash: i64,
    pub block: u32,
    pub offset: u16,
}

impl Row {
    fn ctid(&self) -> String {
        format!("({},{})", self.block, self.offset)
    }
}

/// `COPY` listing every row's address and hash, in binary.
pub(crate) fn listing_sql(table: &QualifiedName, row_hash: &str) -> String {
    format!("COPY (SELECT ctid, {row_hash} FROM ONLY {table}) TO STDOUT (FORMAT binary)")
}

/// Size of the binary COPY header: signature, flags and header extension length.
const HEADER: usize = 11 + 4 + 4;
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// One tuple: field count, then `tid` (length, block, offset) and `bigint` (length, value).
const TUPLE: usize = 2 + 4 + 6 + 4 + 8;

/// Reads a binary `COPY` of `(ctid, bigint)` tuples, about `expected` of them (counted just
/// before: the list is allocated once).
pub(crate) async fn read(out: CopyOutStream, table: &QualifiedName, expected: u64) -> Result<Vec<Row>> {
    let bad = |what: &str| Error::job(format!("unexpected listing of the rows of {table}: {what}"));
    pin_mut!(out);
    let mut pending: Vec<u8> = Vec::new();
    let mut rows = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).saturating_add(1024));
    let mut header = false;
    let mut ended = false;
    while let Some(buf) = out.try_next().await.map_err(|e| Error::db(format!("list the rows of {table}"), e))? {
        pending.extend_from_slice(&buf);
        let mut at: &[u8] = &pending;
        if !header {
            if at.len() < HEADER {
                continue;
            }
            if &at[..11] != SIGNATURE {
                return Err(bad("not a binary COPY"));
            }
            let extension = u32::from_be_bytes([at[15], at[16], at[17], at[18]]) as usize;
            if at.len() < HEADER + extension {
                continue;
            }
            at.advance(HEADER + extension);
            header = true;
        }
        while at.len() >= 2 && !ended {
            let fields = i16::from_be_bytes([at[0], at[1]]);
            if fields == -1 {
                at.advance(2);
                ended = true;
                break;
            }
            if at.len() < TUPLE {
                break;
            }
            let (mut t, rest) = at.split_at(TUPLE);
            at = rest;
            if t.get_i16() != 2 || t.get_i32() != 6 {
                return Err(bad("a tuple other than (tid, bigint)"));
            }
            let (block, offset) = (t.get_u32(), t.get_u16());
            if t.get_i32() != 8 {
                return Err(bad("a row hash that is NULL or not a bigint"));
            }
            rows.push(Row { hash: t.get_i64(), block, offset });
        }
        let consumed = pending.len() - at.len();
        pending.drain(..consumed);
    }
    if !ended || !pending.is_empty() {
        return Err(bad("truncated"));
    }
    Ok(rows)
}

/// The two bags' differences: `(surplus on the target, missing on the target)`, each sorted by
/// hash. A row present `n` times on the source and `m` times on the target is surplus `m - n`
/// times or missing `n - m` times.
pub(crate) fn differences(mut source: Vec<Row>, mut target: Vec<Row>) -> (Vec<Row>, Vec<Row>) {
    source.sort_unstable();
    target.sort_unstable();
    let (mut surplus, mut missing) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < source.len() && j < target.len() {
        match source[i].hash.cmp(&target[j].hash) {
            std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
            std::cmp::Ordering::Less => {
                missing.push(source[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                surplus.push(target[j]);
                j += 1;
            }
        }
    }
    missing.extend_from_slice(&source[i..]);
    surplus.extend_from_slice(&target[j..]);
    (surplus, missing)
}

/// `DELETE` of the given rows by address, returning the deleted rows' hashes.
pub(crate) async fn delete(
    tx: &tokio_postgres::Transaction<'_>,
    table: &QualifiedName,
    row_hash: &str,
    rows: &[Row],
) -> Result<Vec<i64>> {
    let sql = format!("DELETE FROM ONLY {table} WHERE ctid = ANY($1::text[]::tid[]) RETURNING {row_hash}");
    let mut hashes = Vec::with_capacity(rows.len());
    for batch in rows.chunks(BATCH) {
        let ctids: Vec<String> = batch.iter().map(Row::ctid).collect();
        let deleted = tx.query(&sql, &[&ctids]).await.map_err(|e| Error::db(format!("delete rows of {table}"), e))?;
        hashes.extend(deleted.iter().map(|r| r.get::<_, i64>(0)));
    }
    Ok(hashes)
}

/// `ctid = ANY('{…}'::tid[])` selecting the given rows by address, as a literal (`COPY (SELECT
/// …)` takes no parameters).
pub(crate) fn at_addresses(rows: &[Row]) -> String {
    let list: Vec<String> = rows.iter().map(|r| format!("\"{}\"", r.ctid())).collect();
    format!("ctid = ANY({}::tid[])", quote_literal(&format!("{{{}}}", list.join(","))))
}

/// The hashes of the rows this transaction inserted into `table`.
pub(crate) async fn inserted(
    tx: &tokio_postgres::Transaction<'_>,
    table: &QualifiedName,
    row_hash: &str,
) -> Result<Vec<i64>> {
    let sql = format!("SELECT {row_hash} FROM ONLY {table} WHERE xmin = (txid_current() % 4294967296)::text::xid");
    let rows = tx.query(&sql, &[]).await.map_err(|e| Error::db(format!("hash the rows copied into {table}"), e))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
}

/// Whether the repair did what the match asked for: the deleted rows are the surplus and the
/// inserted rows the missing ones, as bags of hashes.
pub(crate) fn proven(surplus: &[Row], mut deleted: Vec<i64>, missing: &[Row], mut inserted: Vec<i64>) -> bool {
    let bag = |rows: &[Row]| {
        let mut h: Vec<i64> = rows.iter().map(|r| r.hash).collect();
        h.sort_unstable();
        h
    };
    deleted.sort_unstable();
    inserted.sort_unstable();
    deleted == bag(surplus) && inserted == bag(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(hashes: &[i64]) -> Vec<Row> {
        hashes
            .iter()
            .enumerate()
            .map(|(i, &hash)| Row { hash, block: i as u32 / 100, offset: 1 + i as u16 % 100 })
            .collect()
    }

    fn hashes(rows: &[Row]) -> Vec<i64> {
        rows.iter().map(|r| r.hash).collect()
    }

    #[test]
    fn bags_match_duplicates_by_count() {
        // The source holds row 7 three times and row 9 once; the target row 7 once, row 9 twice,
        // and row 5 the source lost.
        let (surplus, missing) = differences(rows(&[7, 9, 7, 7, 1]), rows(&[9, 5, 7, 9, 1]));
        assert_eq!(hashes(&surplus), [5, 9]);
        assert_eq!(hashes(&missing), [7, 7]);
        let (surplus, missing) = differences(rows(&[3, 3]), rows(&[3, 3]));
        assert!(surplus.is_empty() && missing.is_empty());
        let (surplus, missing) = differences(vec![], rows(&[i64::MIN, i64::MAX]));
        assert_eq!((hashes(&surplus), missing.len()), (vec![i64::MIN, i64::MAX], 0));
    }

    #[test]
    fn the_proof_compares_bags_not_lists() {
        let (surplus, missing) = (rows(&[4, 2]), rows(&[8, 8, 1]));
        assert!(proven(&surplus, vec![2, 4], &missing, vec![8, 1, 8]));
        assert!(!proven(&surplus, vec![2], &missing, vec![8, 1, 8]), "a row not deleted");
        assert!(!proven(&surplus, vec![2, 4], &missing, vec![8, 1]), "a row not found at its address");
        assert!(!proven(&surplus, vec![2, 4], &missing, vec![8, 1, 9]), "a row changed at its address");
    }

    #[test]
    fn addresses_are_quoted_as_one_tid_array_literal() {
        let r = [Row { hash: 0, block: 0, offset: 1 }, Row { hash: 0, block: 4294967295, offset: 65535 }];
        assert_eq!(at_addresses(&r), r#"ctid = ANY('{"(0,1)","(4294967295,65535)"}'::tid[])"#);
    }
}
