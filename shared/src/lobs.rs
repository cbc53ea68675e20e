//! Large objects: copied with their OIDs, owners, ACLs and comments (RDS-CASES T34).
//!
//! Large objects live outside tables (`pg_largeobject`), so neither COPY nor logical replication
//! carries them, and tables refer to them by OID: the OID must survive the move. Each object is
//! created on the target with `lo_create(oid)`, filled in pieces of [`PIECE_BYTES`] (never a whole
//! object in memory), and given its owner, grants and comment, all in one transaction per object.
//! A retry finds a half-written object rolled back, and a finished one recorded in a ledger
//! written in the same transaction, whose bytes it leaves alone.
//!
//! In mode `refresh` an object already on the target is compared by size and md5 (both computed
//! by the servers) and rewritten only when it differs; objects the source no longer has are
//! removed. This step is the last one that writes data, so it also validates the foreign keys a
//! refresh added `NOT VALID`, and records the run's copy as finished in `pgferry.runs` — what makes
//! the target refreshable later (RDS-CASES T57).

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::Client;

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::{Mode, Side};
use crate::pg::{quote_ident, quote_literal};
use crate::roles::MembershipLog;
pub use crate::step::LARGE_OBJECTS;
use crate::step::{LargeObjectsOutput, StepInput};

/// Bytes read and written per round trip.
pub const PIECE_BYTES: i32 = 1024 * 1024;

/// One large object's metadata on the source.
#[derive(Debug)]
struct Meta {
    oid: u32,
    owner: String,
    /// `(grantee, privilege)` as `aclexplode` gives them; an empty grantee is PUBLIC. Read
    /// structurally, so a role named `a=b` or `x/y` is no parsing problem.
    acl: Vec<(String, String)>,
    comment: Option<String>,
}

/// Copies every large object of the source database.
pub async fn copy_all(ctx: &StepContext, input: &StepInput) -> Result<LargeObjectsOutput> {
    let source = ctx.connect(&input.job, Side::Source, "lobs", &input.run_id).await?;
    let mut target = ctx.connect(&input.job, Side::Target, "lobs", &input.run_id).await?;
    let rows = source
        .query(
            "SELECT m.oid, pg_get_userbyid(m.lomowner)::text, \
                    coalesce((SELECT array_agg(CASE WHEN e.grantee = 0 THEN '' ELSE pg_get_userbyid(e.grantee)::text END \
                                               ORDER BY e.grantee, e.privilege_type) FROM aclexplode(m.lomacl) e), '{}'), \
                    coalesce((SELECT array_agg(e.privilege_type::text ORDER BY e.grantee, e.privilege_type) \
                              FROM aclexplode(m.lomacl) e), '{}'), \
                    obj_description(m.oid, 'pg_largeobject') \
             FROM pg_largeobject_metadata m ORDER BY m.oid",
            &[],
        )
        .await
        .map_err(|e| Error::db("list large objects", e))?;
    let objects: Vec<Meta> = rows
        .iter()
        .map(|r| {
            let (grantees, privileges): (Vec<String>, Vec<String>) = (r.get(2), r.get(3));
            Meta {
                oid: r.get(0),
                owner: r.get(1),
                acl: grantees.into_iter().zip(privileges).collect(),
                comment: r.get(4),
            }
        })
        .collect();
    target.batch_execute(LEDGER_DDL).await.map_err(|e| Error::db("create the large object ledger", e))?;
    let source_master: String =
        source.query_one("SELECT current_user::text", &[]).await.map_err(|e| Error::db("read source user", e))?.get(0);
    let mut out =
        LargeObjectsOutput { objects: objects.len() as u64, bytes: 0, already_present: 0, unchanged: 0, removed: 0 };
    let mut log = MembershipLog::open(&ctx.store, &input.run_id, LARGE_OBJECTS).await?;
    if input.job.mode == Mode::Refresh {
        crate::refresh::ensure_refresh_run(&target, &input.run_id).await?;
        let validated = crate::refresh::validate_foreign_keys(ctx, input, &target).await?;
        if validated > 0 {
            tracing::info!(validated, "foreign keys added by the refresh validated");
        }
        // Reading and removing objects of other owners needs their rights: the master holds
        // membership in those owners for the rest of the run (released by its release step).
        let on_target = owners(&target).await?;
        let me: String = target
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| Error::db("read target user", e))?
            .get(0);
        for role in on_target.values().filter(|o| **o != me).collect::<BTreeSet<_>>() {
            log.ensure(&target, role).await?;
        }
        let objects = (&objects[..], &on_target);
        refresh_all(&source, &mut target, objects, &source_master, input, &mut log, &mut out).await?;
    } else {
        for meta in &objects {
            let (size, present) = copy_one(&source, &mut target, meta, &source_master, &input.run_id, &mut log).await?;
            out.bytes += size;
            out.already_present += u64::from(present);
        }
    }
    crate::refresh::record_copied(&source, &target, input).await?;
    Ok(out)
}

/// Large objects on the target with their owners.
async fn owners(client: &Client) -> Result<HashMap<u32, String>> {
    let rows = client
        .query("SELECT oid, pg_get_userbyid(lomowner)::text FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| Error::db("list target large objects", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The refresh of large objects: remove those gone from the source, leave equal ones alone
/// (their owner, grants and comment converged), rewrite the rest.
async fn refresh_all(
    source: &Client,
    target: &mut Client,
    (objects, on_target): (&[Meta], &HashMap<u32, String>),
    source_master: &str,
    input: &StepInput,
    log: &mut MembershipLog,
    out: &mut LargeObjectsOutput,
) -> Result<()> {
    let on_source: BTreeSet<u32> = objects.iter().map(|m| m.oid).collect();
    for oid in on_target.keys().filter(|o| !on_source.contains(o)) {
        target
            .execute("SELECT lo_unlink($1)", &[oid])
            .await
            .map_err(|e| Error::db(format!("remove large object {oid}"), e))?;
        out.removed += 1;
    }
    for meta in objects {
        if on_target.contains_key(&meta.oid) {
            let (s, t) = tokio::try_join!(fingerprint(source, meta.oid), fingerprint(target, meta.oid))?;
            if s.is_some() && s == t {
                apply_metadata(target, meta, source_master, log).await?;
                out.unchanged += 1;
                continue;
            }
        }
        let (size, present) = copy_one(source, target, meta, source_master, &input.run_id, log).await?;
        out.bytes += size;
        out.already_present += u64::from(present);
    }
    Ok(())
}

/// `(size, md5)` of a large object, or `None` when it does not exist.
async fn fingerprint(client: &Client, oid: u32) -> Result<Option<(i64, String)>> {
    let exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = $1)", &[&oid])
        .await
        .map_err(|e| Error::db("look up large object", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    // Computed by the server (pg_largeobject itself is readable by superusers only).
    let row = client
        .query_one("SELECT length(lo_get($1))::bigint, md5(lo_get($1))", &[&oid])
        .await
        .map_err(|e| Error::db(format!("read large object {oid}"), e))?;
    Ok(Some((row.get(0), row.get(1))))
}

/// Bookkeeping of copied objects, written in each object's transaction: a retried step skips
/// the bytes of objects already copied by this run (reading them back would need the owner's
/// rights once the owner has changed).
const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS pgferry.copied_large_objects (run_id text NOT NULL, \
     loid oid NOT NULL, bytes bigint NOT NULL, md5 text NOT NULL, PRIMARY KEY (run_id, loid))";

async fn copy_one(
    source: &Client,
    target: &mut Client,
    meta: &Meta,
    source_master: &str,
    run_id: &str,
    log: &mut MembershipLog,
) -> Result<(u64, bool)> {
    let oid = meta.oid;
    let done = target
        .query_opt("SELECT bytes FROM pgferry.copied_large_objects WHERE run_id = $1 AND loid = $2", &[&run_id, &oid])
        .await
        .map_err(|e| Error::db("read the large object ledger", e))?;
    if let Some(row) = done {
        apply_metadata(target, meta, source_master, log).await?;
        return Ok((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), true));
    }
    let (size, md5) =
        fingerprint(source, oid).await?.ok_or_else(|| Error::Internal(format!("large object {oid} vanished")))?;
    let tx = target.transaction().await.map_err(|e| Error::db("begin large object transaction", e))?;
    tx.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = $1", &[&oid])
        .await
        .map_err(|e| Error::db(format!("replace large object {oid}"), e))?;
    tx.execute("SELECT lo_create($1)", &[&oid])
        .await
        .map_err(|e| Error::db(format!("create large object {oid}"), e))?;
    let mut offset: i64 = 0;
    loop {
        let piece: Vec<u8> = source
            .query_one("SELECT lo_get($1, $2, $3)", &[&oid, &offset, &PIECE_BYTES])
            .await
            .map_err(|e| Error::db(format!("read large object {oid}"), e))?
            .get(0);
        if piece.is_empty() {
            break;
        }
        tx.execute("SELECT lo_put($1, $2, $3)", &[&oid, &offset, &piece])
            .await
            .map_err(|e| Error::db(format!("write large object {oid}"), e))?;
        offset += piece.len() as i64;
        if piece.len() < PIECE_BYTES as usize {
            break;
        }
    }
    if offset != size {
        return Err(Error::Internal(format!("large object {oid} changed size while copied ({size} → {offset} bytes)")));
    }
    tx.execute(
        "INSERT INTO pgferry.copied_large_objects (run_id, loid, bytes, md5) VALUES ($1, $2, $3, $4)",
        &[&run_id, &oid, &size, &md5],
    )
    .await
    .map_err(|e| Error::db("record large object in ledger", e))?;
    tx.commit().await.map_err(|e| Error::db(format!("commit large object {oid}"), e))?;
    apply_metadata(target, meta, source_master, log).await?;
    Ok((u64::try_from(size).unwrap_or(0), false))
}

/// Owner, grants and comment; each is idempotent. Objects of the source's master user stay with
/// the target's connecting user, which created them (RDS-CASES T8). Changing an owner, and
/// granting or commenting on an object of another owner, needs membership in that owner: an RDS
/// master user (CREATEROLE) holds it for the rest of the run (see [`MembershipLog`]).
async fn apply_metadata(target: &Client, meta: &Meta, source_master: &str, log: &mut MembershipLog) -> Result<()> {
    let foreign_owner = meta.owner != source_master;
    if foreign_owner {
        log.ensure(target, &meta.owner).await?;
    }
    metadata_statements(target, meta, source_master, foreign_owner).await
}

async fn metadata_statements(target: &Client, meta: &Meta, source_master: &str, foreign_owner: bool) -> Result<()> {
    let oid = meta.oid;
    let mut statements = Vec::new();
    if foreign_owner {
        statements.push(format!("ALTER LARGE OBJECT {oid} OWNER TO {}", quote_ident(&meta.owner)));
    }
    let mut grants: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (grantee, privilege) in &meta.acl {
        if grantee == &meta.owner || grantee == source_master {
            continue;
        }
        if matches!(privilege.as_str(), "SELECT" | "UPDATE") {
            grants.entry(grantee).or_default().push(privilege);
        }
    }
    for (grantee, list) in grants {
        let grantee = if grantee.is_empty() { "PUBLIC".to_string() } else { quote_ident(grantee) };
        statements.push(format!("GRANT {} ON LARGE OBJECT {oid} TO {grantee}", list.join(", ")));
    }
    if let Some(comment) = &meta.comment {
        statements.push(format!("COMMENT ON LARGE OBJECT {oid} IS {}", quote_literal(comment)));
    }
    for sql in statements {
        target.batch_execute(&sql).await.map_err(|e| Error::db(sql.clone(), e))?;
    }
    Ok(())
}
