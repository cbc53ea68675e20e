//! Catalog queries shared by the steps: which relations and sequences belong to the user.
//!
//! One definition of "user object" for every step, so that plan, copy, verify and the emptiness
//! check agree: system schemas, pgferry's own bookkeeping schema and objects that belong to an
//! extension are never the user's data.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::QualifiedName;

/// Schema where pgferry keeps its bookkeeping on the target (the chunk ledger).
pub const PGFERRY_SCHEMA: &str = "pgferry";

/// SQL condition on `n` (pg_namespace) and `c` (pg_class) that keeps only user relations.
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                     AND d.objid = c.oid AND d.deptype = 'e')";

/// Privileges that appeared in a PostgreSQL release: `(aclitem letter, name, first
/// server_version_num)`. Before it no ACL holds them and no `GRANT` names them (RDS-CASES T63).
pub const VERSIONED_PRIVILEGES: &[(char, &str, i32)] = &[('m', "MAINTAIN", 170000)];

/// A relation as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    pub oid: u32,
    pub name: QualifiedName,
    /// `r` table, `p` partitioned table, `m` materialized view, `f` foreign table.
    pub kind: String,
    /// `p` permanent, `u` unlogged.
    pub persistence: String,
    /// Non-generated columns in attribute order.
    pub columns: Vec<String>,
    /// Heap + indexes + TOAST.
    pub total_bytes: u64,
    /// Heap + TOAST: what a copy moves.
    pub table_bytes: u64,
    /// Current heap size in pages.
    pub pages: u64,
    /// True when every copied column's binary COPY form is free of cluster-specific type OIDs:
    /// the column's type, its element type, its domain base type and the base's element type are
    /// all built in (RDS-CASES T32).
    pub binary_safe: bool,
    /// A materialized view created (or last refreshed) `WITH NO DATA` (RDS-CASES T66).
    #[serde(default)]
    pub unpopulated: bool,
}

/// First OID of objects created after initdb: types below it are built in and have the same OID
/// on every cluster.
pub const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// Prefix of the replication objects pgferry creates for a continuous run (publication and slot on
/// the source, subscription on the target): not part of the user's schema.
pub const REPLICATION_OBJECT_PREFIX: &str = "pgferry_";

/// SQL: whether the binary form of values of the `pg_type` row `alias` means the same on another
/// cluster. A few built-in types have no binary form (`aclitem`), and the object identifier types
/// (`regclass`, `regrole`, … whose send functions are `reg…send`) send the OID, which names
/// another object or none on the target, where their text form names the object: copied as text.
fn binary_io(alias: &str) -> String {
    format!(
        "({alias}.typsend::oid <> 0 AND {alias}.typreceive::oid <> 0 \
          AND {alias}.typsend::regproc::text NOT LIKE 'reg%')"
    )
}

/// Tables, partitioned tables, materialized views and foreign tables of the current database.
pub async fn relations(client: &Client) -> Result<Vec<Relation>> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
                pg_total_relation_size(c.oid)::bigint, pg_table_size(c.oid)::bigint, \
                (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint, \
                (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{{}}') FROM pg_attribute a \
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
                (SELECT coalesce(bool_and(t.oid < {FIRST_NORMAL_OBJECT_ID} \
                                          AND coalesce(e.oid, 0) < {FIRST_NORMAL_OBJECT_ID} \
                                          AND coalesce(b.oid, 0) < {FIRST_NORMAL_OBJECT_ID} \
                                          AND coalesce(be.oid, 0) < {FIRST_NORMAL_OBJECT_ID} \
                                          AND {t_io} AND coalesce({e_io}, true) \
                                          AND coalesce({b_io}, true) AND coalesce({be_io}, true)), true) \
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                   LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typelem <> 0 \
                   LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typbasetype <> 0 \
                   LEFT JOIN pg_type be ON be.oid = b.typelem AND b.typelem <> 0 \
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
                c.relkind = 'm' AND NOT c.relispopulated \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm', 'f') AND {USER_RELATION} \
         ORDER BY c.oid",
        t_io = binary_io("t"),
        e_io = binary_io("e"),
        b_io = binary_io("b"),
        be_io = binary_io("be"),
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("list relations", e))?;
    let size = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| Relation {
            oid: r.get(0),
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            kind: r.get(3),
            persistence: r.get(4),
            total_bytes: size(r.get(5)),
            table_bytes: size(r.get(6)),
            pages: size(r.get(7)),
            columns: r.get(8),
            binary_safe: r.get(9),
            unpopulated: r.get(10),
        })
        .collect())
}

/// The columns (name, SQL type) of a table's primary key or, without one, of a valid, non-partial
/// unique index on plain NOT NULL columns; empty when the table has no usable key.
pub async fn key_columns(client: &Client, oid: u32) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "WITH candidates AS ( \
                SELECT i.indexrelid, i.indisprimary, i.indkey::int2[] AS cols, i.indnkeyatts AS nkeys FROM pg_index i \
                 WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL \
                   AND i.indexprs IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey::int2[]) k(attnum) \
                                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                                   WHERE NOT a.attnotnull) \
                 ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid LIMIT 1) \
             SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
               FROM candidates c, unnest(c.cols) WITH ORDINALITY k(attnum, ord) \
               JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum WHERE k.ord <= c.nkeys ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db("read table key", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sequences of the current database (including those owned by serial and identity columns).
pub async fn sequences(client: &Client) -> Result<Vec<QualifiedName>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1, 2"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("list sequences", e))?;
    Ok(rows.iter().map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect())
}

/// Every user sequence with its `(last_value, is_called)`.
pub async fn sequence_values(client: &Client) -> Result<std::collections::BTreeMap<QualifiedName, (i64, bool)>> {
    let mut out = std::collections::BTreeMap::new();
    for name in sequences(client).await? {
        let row = client
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .map_err(|e| Error::db(format!("read sequence {name}"), e))?;
        out.insert(name, (row.get(0), row.get(1)));
    }
    Ok(out)
}

/// Up to `limit` user relations of any kind (tables, views, sequences…), for emptiness checks.
pub async fn some_user_relations(client: &Client, limit: i64) -> Result<(i64, Vec<String>)> {
    let sql = format!(
        "SELECT count(*) OVER ()::bigint, format('%I.%I', n.nspname, c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_RELATION} \
         ORDER BY 2 LIMIT $1"
    );
    let rows = client.query(&sql, &[&limit]).await.map_err(|e| Error::db("list target relations", e))?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>(0));
    Ok((total, rows.iter().map(|r| r.get::<_, String>(1)).collect()))
}

/// `server_version_num` of the connected server.
pub async fn server_version_num(client: &Client) -> Result<i32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| Error::db("read server version", e))?;
    Ok(row.get(0))
}
