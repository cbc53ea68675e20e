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

/// A relation as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    pub name: QualifiedName,
    /// `r` table, `p` partitioned table, `m` materialized view, `f` foreign table.
    pub kind: String,
    /// `p` permanent, `u` unlogged.
    pub persistence: String,
    /// Non-generated columns in attribute order.
    pub columns: Vec<String>,
    /// Heap + indexes + TOAST.
    pub total_bytes: u64,
}

/// Tables, partitioned tables, materialized views and foreign tables of the current database.
pub async fn relations(client: &Client) -> Result<Vec<Relation>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
                pg_total_relation_size(c.oid)::bigint, \
                (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{{}}') FROM pg_attribute a \
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm', 'f') AND {USER_RELATION} \
         ORDER BY c.oid"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("list relations", e))?;
    Ok(rows
        .iter()
        .map(|r| Relation {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            kind: r.get(2),
            persistence: r.get(3),
            total_bytes: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            columns: r.get(5),
        })
        .collect())
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
