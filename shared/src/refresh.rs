//! Mode `refresh`: bring an earlier pgferry copy of the same source up to date, re-copying only
//! what differs.
//!
//! The same state machine runs; the steps behave per mode:
//! - **Which targets** — only a database into which pgferry completed a copy of this same source
//!   database ([`earlier_copy`], from `pgferry.runs`), checked by preflight and again by every
//!   step that writes: globals, pre-data and each chunk (RDS-CASES T57).
//! - **One refresh at a time** — a refresh holds the target from its pre-data step ([`claim`]) to
//!   its release step ([`end_run`]); another refresh is refused meanwhile (`Pgferry.TargetBusy`),
//!   unless the job names the holder in `refresh.takeOverFrom` (a run stopped without its
//!   release step). A run taken over from stops at its next chunk.
//! - **Schema** ([`pre_data`]) — the tables' shapes (columns, types, nullability, generated
//!   columns, primary key) are compared between source and target. New source tables are
//!   created with their indexes, constraints, triggers and grants from the run's sanitized dump.
//!   Changed tables, and target tables the source no longer has, stop the refresh with an error
//!   naming each table and change — unless the job consents (`refresh.rebuildChangedTables`):
//!   then they are dropped (with the foreign keys referencing them) and recreated, all in one
//!   transaction. Foreign keys added to tables that hold rows are added `NOT VALID` and validated
//!   after the data ([`validate_foreign_keys`]).
//! - **Rows** ([`refresh_slice`]) — when an earlier run from this source verified the rows equal
//!   and recorded transaction-id marks ([`crate::watermark`]), a keyed slice is compared by what
//!   was written on either side since and by its keys (no row is formatted or hashed), and only
//!   the keys written since or present on one side are deleted and copied. Without usable marks
//!   (first refresh after an older pgferry, the source's schema changed since, another cluster,
//!   2^30 transactions later) each slice is hashed on both sides with verification's hash; an
//!   equal slice is left alone and a differing one is compared key by key. When many rows differ
//!   the whole range is reloaded. Tables without a key are compared by count and row hash sum
//!   (the marks cannot help: a delete on each side cancels out in the counts); a differing one
//!   is repaired as a multiset of rows ([`crate::rowset`], proven in its transaction) or, above
//!   `refresh.matchKeylessRowsUpTo` rows or when the source changed under the repair, reloaded
//!   whole. Found equal or repaired so, they need no second pass. Every write happens with
//!   `session_replication_role = replica` (no foreign key checks or user triggers on reloaded
//!   rows) in one transaction with the slice's ledger row, so a retry skips committed slices.
//! - **Verification** — a keyed slice compared with the marks proves itself in its own
//!   transaction ([`prove_repair`]): its keys were merged on both sides, and after the repair
//!   the rows it copied hash the same on both sides and the counts add up (ledger `proven`);
//!   rows written on neither side are equal since the marks' verified run. A chunk whose slices
//!   all did so needs no second pass; any other keyed chunk is proven after the refresh by its
//!   key count and key hash on both sides and the row hashes of the rows written since the
//!   marks (`refresh.verify: rescan` does that for every chunk: it also catches writes during
//!   the refresh). The report says per table how many rows were hashed and how many were proven
//!   unchanged since which run (`refresh.verify: full` hashes every row, as `pgferry verify`).
//! - **Sequences** are set as in a snapshot; **large objects** are compared by size and md5.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::chunk::hash_sql;
use crate::chunk::slice_predicate;
use crate::chunk::{column_list, copy_in_sql, copy_options, copy_out_sql, copy_out_where, stream};
use crate::context::StepContext;
use crate::dump::apply;
use crate::dump::facts::{Facts, TargetFacts};
use crate::dump::lex::{self, Item, ItemKind};
use crate::dump::parse::Statement;
use crate::dump::report::SchemaReport;
use crate::dump::sanitize::{self, Plan, TocEntry};
use crate::dump::tool as dump;
use crate::dump::{PRE_DATA, plan_sections, section_hash};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Mode, Side};
use crate::ledger::{LedgerRow, marker, record_slice};
use crate::pg::{ConnSpec, QualifiedName, quote_ident, quote_literal};
use crate::roles::MembershipLog;
use crate::step::{ChunkInput, CopyChunkOutput, RefreshCounts, SchemaOutput, Slice, StepInput, keys};

/// pgferry's record of runs into a target database: which source each copied, and when the copy
/// finished (set by the large-object step, the last step that writes data). A refresh accepts
/// only a target with a finished run from the same source. `source_xmin`/`target_xmin` are the
/// sides' transaction-id marks taken as the run's verification began, `verified_at` when that
/// verification found the sides equal ([`crate::watermark`]), `pre_data_hash` the source's
/// pre-data section a refresh found (a snapshot's is in `pgferry.applied_sections`), `active`
/// whether a refresh holds the target ([`claim`]).
pub const RUNS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgferry; \
     CREATE TABLE IF NOT EXISTS pgferry.runs (run_id text PRIMARY KEY, mode text NOT NULL, \
        source_endpoint text NOT NULL, source_database text NOT NULL, source_system_id text, \
        refresh_of text, started_at timestamptz NOT NULL DEFAULT now(), copied_at timestamptz); \
     ALTER TABLE pgferry.runs ADD COLUMN IF NOT EXISTS source_xmin text, \
        ADD COLUMN IF NOT EXISTS target_xmin text, ADD COLUMN IF NOT EXISTS verified_at timestamptz, \
        ADD COLUMN IF NOT EXISTS pre_data_hash text, ADD COLUMN IF NOT EXISTS active boolean";

/// Keys deleted or copied per statement when a slice is repaired row by row.
const KEY_BATCH: usize = 5000;

/// A differing slice is repaired row by row while at most one row in this many differs; beyond
/// that its whole range is reloaded (one scan and one COPY beat thousands of key lookups).
const ROW_REPAIR_RATIO: u64 = 4;

/// Same condition as the catalog's user relations: not system, not pgferry's, not an extension's.
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                     AND d.objid = c.oid AND d.deptype = 'e')";

// ---------------------------------------------------------------------------------------------
// Which targets may be refreshed (T57)

/// What identifies the source database across runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceIdentity {
    pub database: String,
    /// `pg_control_system()`'s system identifier, where the connecting user may read it.
    pub system_id: Option<String>,
    /// How the job names the source server: `rds instance prod-db` or `host:port`.
    pub endpoint: String,
}

impl SourceIdentity {
    /// Whether a recorded run copied from this source: the same database, on the same server
    /// (system identifier when both are known, else the job's name for the server).
    pub(crate) fn matches(&self, database: &str, system_id: Option<&str>, endpoint: &str) -> bool {
        self.database == database
            && match (self.system_id.as_deref(), system_id) {
                (Some(a), Some(b)) => a == b,
                _ => self.endpoint == endpoint,
            }
    }

    fn describe(&self) -> String {
        format!("database {} at {}", quote_ident(&self.database), self.endpoint)
    }
}

/// How the job names the source server (no user, no password).
fn endpoint_name(job: &Job) -> String {
    let ep = &job.source;
    if let Some((kind, id)) = ep.rds_resource() {
        return format!("rds {} {id}", format!("{kind:?}").to_lowercase());
    }
    ep.url
        .as_deref()
        .and_then(|u| ConnSpec::parse(u).ok())
        .map_or_else(String::new, |s| format!("{}:{}", s.host, s.port))
}

/// Reads the source's identity.
pub async fn source_identity(source: &Client, job: &Job) -> Result<SourceIdentity> {
    let row = source
        .query_one(
            "SELECT current_database()::text, CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') \
                    THEN (SELECT system_identifier::text FROM pg_control_system()) END",
            &[],
        )
        .await
        .map_err(|e| Error::db("read source identity", e))?;
    Ok(SourceIdentity { database: row.get(0), system_id: row.get(1), endpoint: endpoint_name(job) })
}

/// A finished earlier pgferry run from the same source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EarlierCopy {
    pub run_id: String,
    pub copied_at: String,
}

/// Whether the target has pgferry's run records (a query naming a missing table fails).
async fn runs_table(target: &Client) -> Result<bool> {
    Ok(target
        .query_one("SELECT to_regclass('pgferry.runs') IS NOT NULL", &[])
        .await
        .map_err(|e| Error::db("look for pgferry bookkeeping", e))?
        .get(0))
}

/// The name of the database a client is connected to.
async fn current_database(client: &Client) -> Result<String> {
    Ok(client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| Error::db("read target database", e))?
        .get(0))
}

/// The latest finished pgferry run from `source` into the target, or why there is none.
pub async fn earlier_copy(
    target: &Client,
    source: &SourceIdentity,
) -> Result<std::result::Result<EarlierCopy, String>> {
    if !runs_table(target).await? {
        return Ok(Err("it holds no pgferry bookkeeping (table pgferry.runs)".to_string()));
    }
    let rows = target
        .query(
            "SELECT run_id, source_database, source_system_id, source_endpoint, copied_at::text FROM pgferry.runs \
             WHERE copied_at IS NOT NULL ORDER BY copied_at DESC",
            &[],
        )
        .await
        .map_err(|e| Error::db("read pgferry runs", e))?;
    if rows.is_empty() {
        return Ok(Err("no pgferry copy into it ever finished".to_string()));
    }
    let found = rows.iter().find(|r| {
        source.matches(&r.get::<_, String>(1), r.get::<_, Option<String>>(2).as_deref(), &r.get::<_, String>(3))
    });
    Ok(match found {
        Some(r) => Ok(EarlierCopy { run_id: r.get(0), copied_at: r.get(4) }),
        None => {
            let others: BTreeSet<String> = rows
                .iter()
                .map(|r| format!("database {} at {}", quote_ident(&r.get::<_, String>(1)), r.get::<_, String>(3)))
                .collect();
            Err(format!(
                "its pgferry copies are of another source ({})",
                others.into_iter().collect::<Vec<_>>().join(", ")
            ))
        }
    })
}

/// The error refusing a target that is not an earlier copy of the source.
async fn refusal(target: &Client, database: &str, source: &SourceIdentity, reason: &str) -> Error {
    let what = format!("mode refresh updates only a database pgferry copied from {}, and {reason}", source.describe());
    match crate::catalog::some_user_relations(target, 5).await {
        Ok((count, names)) if count > 0 => Error::TargetNotEmpty {
            database: database.to_string(),
            objects: vec![format!("{count} relations ({}…) that a refresh would overwrite: {what}", names.join(", "))],
        },
        _ => Error::job(format!("target database {}: {what}; copy it with mode snapshot first", quote_ident(database))),
    }
}

/// Connects to both sides and checks that the target holds a finished pgferry copy of the source
/// (globals, before anything is written).
pub async fn ensure_earlier_copy(ctx: &StepContext, input: &StepInput) -> Result<EarlierCopy> {
    let job = &input.job;
    let source = ctx.connect(job, Side::Source, "refresh", &input.run_id).await?;
    let identity = source_identity(&source, job).await?;
    let target = match ctx.connect(job, Side::Target, "refresh", &input.run_id).await {
        Ok(client) => client,
        Err(e) if e.kind() == ErrorKind::DatabaseMissing => {
            let database = ctx.conn_spec(job, Side::Target).await?.dbname;
            return Err(Error::job(format!(
                "mode refresh needs an earlier pgferry copy of {} in target database {}, which does not exist: \
                 copy it with mode snapshot first",
                identity.describe(),
                quote_ident(&database)
            )));
        }
        Err(e) => return Err(e),
    };
    let database = current_database(&target).await?;
    let earlier = match earlier_copy(&target, &identity).await? {
        Ok(earlier) => earlier,
        Err(reason) => return Err(refusal(&target, &database, &identity, &reason).await),
    };
    free_or_taken_over(&target, &database, job, &input.run_id).await?.map(|_| earlier)
}

// ---------------------------------------------------------------------------------------------
// One refresh at a time

/// Refresh runs other than `run_id` that hold the target: `(run id, started)`, oldest first.
/// Read through `to_jsonb`: an older pgferry's table has no `active` column.
async fn holders<C: tokio_postgres::GenericClient>(client: &C, run_id: &str) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT run_id, started_at::text FROM pgferry.runs, to_jsonb(runs) r \
             WHERE (r ->> 'active')::boolean AND run_id <> $1 ORDER BY started_at",
            &[&run_id],
        )
        .await
        .map_err(|e| Error::db("read which refresh holds the target", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The runs this run takes the target over from (`refresh.takeOverFrom`, when that run is the
/// one holding it), or the error refusing the target because another run holds it.
async fn free_or_taken_over<C: tokio_postgres::GenericClient>(
    client: &C,
    database: &str,
    job: &Job,
    run_id: &str,
) -> Result<std::result::Result<Vec<String>, Error>> {
    let held = holders(client, run_id).await?;
    let take_over = job.refresh_take_over_from();
    match held.iter().find(|(holder, _)| Some(holder.as_str()) != take_over) {
        Some((holder, since)) => Ok(Err(Error::TargetBusy {
            database: database.to_string(),
            holder: holder.clone(),
            since: since.clone(),
            note: take_over
                .map(|t| format!(" (refresh.takeOverFrom names {t}, which does not hold it)"))
                .unwrap_or_default(),
        })),
        None => Ok(Ok(held.into_iter().map(|(holder, _)| holder).collect())),
    }
}

/// Makes this run the one refresh holding the target, in the refresh schema step's transaction:
/// refuses while another run holds it, unless the job takes over from that run. `RUNS_DDL`'s
/// `ALTER TABLE` locks `pgferry.runs` until the transaction ends, so two refreshes starting
/// together pass here one after the other and the second finds the first. Returns the runs
/// taken over from. The release step (on success and on the failure path) lets go.
async fn claim(tx: &tokio_postgres::Transaction<'_>, database: &str, job: &Job, run_id: &str) -> Result<Vec<String>> {
    tx.batch_execute(RUNS_DDL).await.map_err(|e| Error::db("create pgferry.runs", e))?;
    let taken = free_or_taken_over(tx, database, job, run_id).await??;
    for holder in &taken {
        tx.execute("UPDATE pgferry.runs SET active = false WHERE run_id = $1", &[holder])
            .await
            .map_err(|e| Error::db("take the target over", e))?;
        tracing::warn!(from = %holder, "refresh: took the target over from a run that had not ended");
    }
    Ok(taken)
}

/// Lets go of the target at the end of a refresh run (its release step); true if it held it.
pub async fn end_run(target: &Client, run_id: &str) -> Result<bool> {
    if !runs_table(target).await? {
        return Ok(false);
    }
    // Only a run that claimed the target (and so created the column) holds it.
    let holds = target
        .query_opt("SELECT (to_jsonb(runs) ->> 'active')::boolean FROM pgferry.runs WHERE run_id = $1", &[&run_id])
        .await
        .map_err(|e| Error::db("read pgferry runs", e))?
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false);
    if holds {
        target
            .execute("UPDATE pgferry.runs SET active = false WHERE run_id = $1", &[&run_id])
            .await
            .map_err(|e| Error::db("record the end of the refresh in pgferry.runs", e))?;
    }
    Ok(holds)
}

/// The preflight finding for a refresh target (`refresh-target`).
pub async fn target_check(source: &Client, target: &Client, job: &Job) -> Result<crate::step::Check> {
    use crate::step::{Check, CheckStatus};
    let identity = source_identity(source, job).await?;
    let database = current_database(target).await?;
    Ok(match earlier_copy(target, &identity).await? {
        Ok(earlier) => {
            let copy = format!(
                "database {} holds pgferry run {}'s copy of {} (finished {})",
                database,
                earlier.run_id,
                identity.describe(),
                earlier.copied_at
            );
            // Preflight has no run id of its own yet: every holder is another run.
            match free_or_taken_over(target, &database, job, "").await? {
                Ok(taken) if taken.is_empty() => {
                    Check { name: "refresh-target".to_string(), status: CheckStatus::Pass, detail: copy, advice: None }
                }
                Ok(taken) => Check {
                    name: "refresh-target".to_string(),
                    status: CheckStatus::Warn,
                    detail: format!("{copy}; refresh run {} still holds it and will be taken over", taken.join(", ")),
                    advice: Some(
                        "refresh.takeOverFrom names that run: make sure it stopped (a run still alive stops at its \
                         next step, but a slice it is writing at that moment may be written twice)"
                            .to_string(),
                    ),
                },
                Err(busy) => Check {
                    name: "refresh-target".to_string(),
                    status: CheckStatus::Fail,
                    detail: format!("{copy}; {busy}"),
                    advice: ErrorKind::TargetBusy.advice().map(str::to_string),
                },
            }
        }
        Err(reason) => Check {
            name: "refresh-target".to_string(),
            status: CheckStatus::Fail,
            detail: refusal(target, &database, &identity, &reason).await.to_string(),
            advice: Some(
                "a refresh overwrites only a database pgferry copied from this same source: point the job at that \
                 database, or copy into an empty or missing database with mode snapshot (pgferry never drops data \
                 without consent, RDS-CASES T57)"
                    .to_string(),
            ),
        },
    })
}

/// What a step records about its run in `pgferry.runs` (`None`: left as recorded).
#[derive(Debug, Clone, Copy, Default)]
struct RunFacts<'a> {
    /// The earlier run a refresh updates.
    refresh_of: Option<&'a str>,
    /// The copy finished.
    copied: bool,
    /// Source and target transaction-id marks.
    marks: Option<(u64, u64)>,
    pre_data_hash: Option<&'a str>,
}

/// Records this run in `pgferry.runs` (in the caller's transaction).
async fn record_run<C: tokio_postgres::GenericClient>(
    client: &C,
    run_id: &str,
    mode: Mode,
    source: &SourceIdentity,
    facts: RunFacts<'_>,
) -> Result<()> {
    let RunFacts { refresh_of, copied, marks, pre_data_hash } = facts;
    client.batch_execute(RUNS_DDL).await.map_err(|e| Error::db("create pgferry.runs", e))?;
    let mode = match mode {
        Mode::Snapshot => "snapshot",
        Mode::Refresh => "refresh",
        Mode::Continuous => "continuous",
    };
    client
        .execute(
            "INSERT INTO pgferry.runs (run_id, mode, source_endpoint, source_database, source_system_id, refresh_of, \
                                       copied_at, source_xmin, target_xmin, pre_data_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END, $8, $9, $10) \
             ON CONFLICT (run_id) DO UPDATE SET copied_at = coalesce(EXCLUDED.copied_at, pgferry.runs.copied_at), \
                source_xmin = coalesce(EXCLUDED.source_xmin, pgferry.runs.source_xmin), \
                target_xmin = coalesce(EXCLUDED.target_xmin, pgferry.runs.target_xmin), \
                pre_data_hash = coalesce(EXCLUDED.pre_data_hash, pgferry.runs.pre_data_hash)",
            &[
                &run_id,
                &mode,
                &source.endpoint,
                &source.database,
                &source.system_id,
                &refresh_of,
                &copied,
                &marks.map(|m| m.0.to_string()),
                &marks.map(|m| m.1.to_string()),
                &pre_data_hash,
            ],
        )
        .await
        .map_err(|e| Error::db("record the run in pgferry.runs", e))?;
    Ok(())
}

/// Marks the run's copy finished (the large-object step, after every row, sequence and large
/// object is in): from now on the target is a pgferry copy of this source. Also records both
/// sides' transaction-id marks now, before the verification reads anything: if it finds the
/// sides equal, rows written below them need no hashing by a later refresh.
pub async fn record_copied(source: &Client, target: &Client, input: &StepInput) -> Result<()> {
    let identity = source_identity(source, &input.job).await?;
    let marks = tokio::try_join!(crate::watermark::snapshot_xmin(source), crate::watermark::snapshot_xmin(target))?;
    let facts = RunFacts { copied: true, marks: Some(marks), ..RunFacts::default() };
    record_run(target, &input.run_id, input.job.mode, &identity, facts).await
}

/// Records that the run's verification found the sides equal (the report step): its marks become
/// evidence for later refreshes. A verification outside a run (no `pgferry.runs` row) records
/// nothing.
pub async fn record_verified(target: &Client, run_id: &str) -> Result<()> {
    if !runs_table(target).await? {
        return Ok(());
    }
    target
        .execute(
            "UPDATE pgferry.runs SET verified_at = now() WHERE run_id = $1 \
             AND (to_jsonb(runs) ->> 'source_xmin') IS NOT NULL",
            &[&run_id],
        )
        .await
        .map_err(|e| Error::db("record the verification in pgferry.runs", e))?;
    Ok(())
}

/// The marks of the latest verified run from this source, or why there are none usable.
/// With the marks, the source's pre-data section hash as of that run (if known).
async fn evidence(
    source: &Client,
    target: &Client,
    identity: &SourceIdentity,
) -> Result<std::result::Result<(crate::watermark::Watermarks, Option<String>), String>> {
    // Read through to_jsonb: an older pgferry's table has no mark columns.
    let rows = target
        .query(
            "SELECT run_id, r ->> 'source_xmin', r ->> 'target_xmin', source_database, source_system_id, \
                    source_endpoint, r ->> 'pre_data_hash' \
             FROM pgferry.runs, to_jsonb(runs) r WHERE (r ->> 'verified_at') IS NOT NULL \
             ORDER BY (r ->> 'verified_at')::timestamptz DESC",
            &[],
        )
        .await
        .map_err(|e| Error::db("read pgferry runs", e))?;
    let Some(r) = rows.iter().find(|r| {
        identity.matches(&r.get::<_, String>(3), r.get::<_, Option<String>>(4).as_deref(), &r.get::<_, String>(5))
    }) else {
        return Ok(Err("no earlier run from this source recorded transaction-id marks and verified equal".to_string()));
    };
    let parse = |i: usize| r.get::<_, Option<String>>(i).and_then(|t| t.parse::<u64>().ok());
    let (Some(source_xmin), Some(target_xmin)) = (parse(1), parse(2)) else {
        return Ok(Err("the verified run's marks are unreadable".to_string()));
    };
    let marks = crate::watermark::Watermarks { run_id: r.get(0), source_xmin, target_xmin };
    let pre_data_hash: Option<String> = r.get(6);
    let (s, t) = tokio::try_join!(
        crate::watermark::unusable(source, source_xmin, "source"),
        crate::watermark::unusable(target, target_xmin, "target")
    )?;
    Ok(match s.or(t) {
        Some(reason) => Err(reason),
        None => Ok((marks, pre_data_hash)),
    })
}

/// The copy step's check: this run's schema step found an earlier copy and recorded the run as
/// its refresh. Nothing is deleted otherwise.
pub async fn ensure_refresh_run(target: &Client, run_id: &str) -> Result<()> {
    let holds: Option<bool> = if runs_table(target).await? {
        target
            .query_opt(
                "SELECT coalesce((to_jsonb(runs) ->> 'active')::boolean, false) FROM pgferry.runs \
                 WHERE run_id = $1 AND mode = 'refresh' AND refresh_of IS NOT NULL",
                &[&run_id],
            )
            .await
            .map_err(|e| Error::db("read pgferry runs", e))?
            .map(|r| r.get(0))
    } else {
        None
    };
    if holds == Some(true) {
        return Ok(());
    }
    let database = current_database(target).await?;
    if holds == Some(false) {
        // Taken over by another run (this one was presumed stopped), or this run already ended.
        return Err(match holders(target, run_id).await?.into_iter().next() {
            Some((holder, since)) => Error::TargetBusy {
                database,
                holder,
                since,
                note: format!(", which took it over from this run ({run_id}): this run stops and writes nothing more"),
            },
            None => Error::job(format!(
                "refresh run {run_id} no longer holds target database {}: its release step ran or another run took \
                 it over; start a new run",
                quote_ident(&database)
            )),
        });
    }
    Err(Error::TargetNotEmpty {
        database,
        objects: vec![format!(
            "run {run_id}'s schema step did not record this database as an earlier pgferry copy of the source, so a \
             refresh may not delete rows in it (RDS-CASES T57)"
        )],
    })
}

// ---------------------------------------------------------------------------------------------
// Table shapes

/// A column as far as copying and comparing rows are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    type_name: String,
    not_null: bool,
    /// `stored` with its expression, for a generated column.
    generated: Option<String>,
}

/// A table's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shape {
    kind: String,
    columns: BTreeMap<String, Column>,
    primary_key: Vec<String>,
}

async fn shapes(client: &Client) -> Result<BTreeMap<QualifiedName, Shape>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, a.attname::text, \
                format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                (SELECT coalesce(array_agg(pa.attname::text ORDER BY k.ord), '{{}}') FROM pg_constraint co \
                   CROSS JOIN LATERAL unnest(co.conkey) WITH ORDINALITY k(attnum, ord) \
                   JOIN pg_attribute pa ON pa.attrelid = co.conrelid AND pa.attnum = k.attnum \
                  WHERE co.conrelid = c.oid AND co.contype = 'p') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
         WHERE c.relkind IN ('r', 'p') AND {USER_RELATION} ORDER BY 1, 2, a.attnum"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("read table shapes", e))?;
    let mut out: BTreeMap<QualifiedName, Shape> = BTreeMap::new();
    for r in &rows {
        let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let shape = out.entry(name).or_insert_with(|| Shape {
            kind: r.get(2),
            columns: BTreeMap::new(),
            primary_key: r.get(7),
        });
        if let Some(column) = r.get::<_, Option<String>>(3) {
            shape.columns.insert(column, Column { type_name: r.get(4), not_null: r.get(5), generated: r.get(6) });
        }
    }
    Ok(out)
}

/// What a refresh does with a table whose definition is not the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TableAction {
    /// New on the source: created with its indexes, constraints, triggers and grants.
    Created,
    /// Shape changed: dropped and recreated (consent given), then reloaded.
    Rebuilt,
    /// Gone from the source: dropped from the target (consent given).
    Dropped,
    /// Shape changed or gone from the source, without consent: the refresh stopped.
    Refused,
}

/// A table whose definition differs, with each change in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableChange {
    pub table: QualifiedName,
    pub action: TableAction,
    pub changes: Vec<String>,
}

impl TableChange {
    fn describe(&self) -> String {
        format!("table {}: {}", self.table, self.changes.join(", "))
    }
}

fn describe_column(c: &Column) -> String {
    let mut out = c.type_name.clone();
    if c.not_null {
        out.push_str(" NOT NULL");
    }
    if let Some(expr) = &c.generated {
        out.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    }
    out
}

/// The differences between the source's and the target's tables; `rebuild` says whether changed
/// and dropped tables may be rebuilt and dropped.
fn shape_changes(
    source: &BTreeMap<QualifiedName, Shape>,
    target: &BTreeMap<QualifiedName, Shape>,
    rebuild: bool,
) -> Vec<TableChange> {
    let consent = |yes: TableAction| if rebuild { yes } else { TableAction::Refused };
    let mut out = Vec::new();
    for (name, s) in source {
        let Some(t) = target.get(name) else {
            out.push(TableChange {
                table: name.clone(),
                action: TableAction::Created,
                changes: vec!["new on the source".to_string()],
            });
            continue;
        };
        let mut changes = Vec::new();
        if s.kind != t.kind {
            let kind = |k: &str| if k == "p" { "partitioned table" } else { "table" };
            changes.push(format!("{} on the source, {} on the target", kind(&s.kind), kind(&t.kind)));
        }
        for (col, sc) in &s.columns {
            match t.columns.get(col) {
                None => changes.push(format!("column {} added ({})", quote_ident(col), describe_column(sc))),
                Some(tc) if tc != sc => {
                    let mut what = Vec::new();
                    if tc.type_name != sc.type_name {
                        what.push(format!("type {} → {}", tc.type_name, sc.type_name));
                    }
                    if tc.not_null != sc.not_null {
                        what.push(if sc.not_null { "now NOT NULL" } else { "now nullable" }.to_string());
                    }
                    if tc.generated != sc.generated {
                        what.push(match &sc.generated {
                            Some(expr) => format!("now generated as ({expr})"),
                            None => "no longer generated".to_string(),
                        });
                    }
                    changes.push(format!("column {}: {}", quote_ident(col), what.join(", ")));
                }
                Some(_) => {}
            }
        }
        for col in t.columns.keys().filter(|c| !s.columns.contains_key(*c)) {
            changes.push(format!("column {} dropped", quote_ident(col)));
        }
        if s.primary_key != t.primary_key {
            let key = |k: &[String]| {
                if k.is_empty() {
                    "none".to_string()
                } else {
                    format!("({})", k.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "))
                }
            };
            changes.push(format!("primary key {} → {}", key(&t.primary_key), key(&s.primary_key)));
        }
        if !changes.is_empty() {
            out.push(TableChange { table: name.clone(), action: consent(TableAction::Rebuilt), changes });
        }
    }
    for name in target.keys().filter(|n| !source.contains_key(*n)) {
        out.push(TableChange {
            table: name.clone(),
            action: consent(TableAction::Dropped),
            changes: vec!["gone from the source".to_string()],
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The dump, per table

/// A pg_dump TOC entry with the schema of its object.
#[derive(Debug, Clone)]
struct Entry {
    toc: TocEntry,
    schema: Option<String>,
}

/// Entry kinds that belong to a table: recreated with it.
const TABLE_BOUND: &[&str] = &[
    "TABLE",
    "TABLE ATTACH",
    "COMMENT",
    "ACL",
    "DEFAULT",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "STATISTICS",
    "SECURITY LABEL",
];

/// `Schema: …` of a TOC header (`-` for objects outside schemas).
fn header_schema(leading: &str) -> Option<String> {
    let line = leading.lines().map(str::trim).find(|l| l.starts_with("-- Name: "))?;
    let (at, sep) = line.rmatch_indices("; Schema: ").next()?;
    let rest = &line[at + sep.len()..];
    let schema = rest.rsplit_once("; Owner: ").map_or(rest, |(s, _)| s);
    (schema != "-").then(|| schema.to_string())
}

/// The entries of a section, and each statement's entry by the statement's line.
fn entries(items: &[Item<'_>], all: &mut BTreeMap<u32, Entry>) -> HashMap<usize, u32> {
    let mut by_line = HashMap::new();
    let mut current: Option<u32> = None;
    for item in items {
        if item.kind != ItemKind::Statement {
            current = None;
            continue;
        }
        if let Some(toc) = TocEntry::parse(item.leading()) {
            current = Some(toc.dump_id);
            all.insert(toc.dump_id, Entry { schema: header_schema(item.leading()), toc });
        } else if matches!(Statement::new(item.sql()).keywords(1).first().map(String::as_str), Some("SET" | "SELECT")) {
            current = None;
        }
        if let Some(id) = current {
            by_line.insert(item.line, id);
        }
    }
    by_line
}

/// Every entry bound to the `roots` tables: their own items, items of those, sequences they own,
/// child tables, and foreign keys of other tables referencing them.
fn closure(all: &BTreeMap<u32, Entry>, roots: &BTreeSet<u32>) -> BTreeSet<u32> {
    let mut set = roots.clone();
    loop {
        let mut added = false;
        for e in all.values() {
            if !set.contains(&e.toc.dump_id)
                && TABLE_BOUND.contains(&e.toc.desc.as_str())
                && e.toc.deps.iter().any(|d| set.contains(d))
            {
                set.insert(e.toc.dump_id);
                added = true;
            }
        }
        // A serial column's sequence goes with its table (`OWNED BY`) but depends on the schema.
        let owned: Vec<u32> = all
            .values()
            .filter(|e| e.toc.desc == "SEQUENCE OWNED BY" && set.contains(&e.toc.dump_id))
            .flat_map(|e| e.toc.deps.iter().copied())
            .filter(|d| all.get(d).is_some_and(|x| x.toc.desc == "SEQUENCE"))
            .collect();
        for id in owned {
            added |= set.insert(id);
        }
        if !added {
            return set;
        }
    }
}

/// The statements of `plan` that belong to `selected` entries, with the session settings
/// (`SET …`) that precede them in the dump.
fn subset(plan: &Plan, by_line: &HashMap<usize, u32>, selected: &BTreeSet<u32>) -> Plan {
    let statements = plan
        .statements
        .iter()
        .filter(|p| match by_line.get(&p.line) {
            Some(id) => selected.contains(id),
            None => p.entry.is_none() && p.before.to_ascii_uppercase().starts_with("SET "),
        })
        .cloned()
        .collect();
    Plan {
        phase: plan.phase,
        statements,
        login_roles_without_password: vec![],
        acting_roles: plan.acting_roles.clone(),
        older_target: plan.older_target,
    }
}

/// For `ALTER TABLE ONLY t ADD CONSTRAINT c FOREIGN KEY …` (a table that may hold rows): the
/// same statement `NOT VALID`, and the statement validating it after the data is in. The names
/// are the dump's own text, quoted as pg_dump quoted them.
fn deferred_foreign_key(sql: &str) -> Option<(String, String)> {
    let st = Statement::new(sql);
    let words = st.keywords(3);
    if words != ["ALTER", "TABLE", "ONLY"] || sql.trim_end().to_ascii_uppercase().ends_with("NOT VALID") {
        return None;
    }
    let only_end = st.tokens.get(2)?.end();
    let add = st.find_word("ADD", only_end)?;
    let constraint = st.find_word("CONSTRAINT", add.1)?;
    let name = st.tokens.iter().find(|t| t.offset >= constraint.1)?;
    st.find_word("FOREIGN", name.end())?;
    let table = sql[only_end..add.0].trim();
    Some((format!("{sql} NOT VALID"), format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", name.text)))
}

// ---------------------------------------------------------------------------------------------
// The schema step of a refresh

/// What a refresh's schema step found and did, stored at `runs/<run>/refresh/schema.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRefresh {
    pub run_id: String,
    /// The earlier run whose copy this refresh updates.
    pub refresh_of: String,
    /// The pre-data section dumped now is the one applied by the earlier copy.
    pub same_schema: bool,
    pub tables: Vec<TableChange>,
    /// Statements applied (created and rebuilt tables with their post-data items).
    pub statements: usize,
    /// Foreign keys added `NOT VALID`, validated once the data is in.
    pub validate_after_copy: Vec<String>,
    pub notes: Vec<String>,
    /// The marks of the latest verified run: rows are compared by what was written since
    /// (`None`: by content, the reason in `notes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermarks: Option<crate::watermark::Watermarks>,
}

/// The marks a refresh's chunks and verification use, from the run's schema step.
pub async fn watermarks(ctx: &StepContext, run: &str) -> Option<crate::watermark::Watermarks> {
    ctx.store.get_json::<SchemaRefresh>(&keys::refresh_schema(run)).await.ok().and_then(|s| s.watermarks)
}

/// The pre-data step in mode refresh: refuses a target that is not an earlier copy, compares
/// the tables' shapes, and creates, rebuilds or drops tables in one transaction.
pub async fn pre_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let started = Instant::now();
    let run = &input.run_id;
    let name = PRE_DATA;
    let report_key = keys::schema_report(run, name);
    let dump_key = keys::dump(run, name);
    let mut target = ctx.connect(&input.job, Side::Target, "schema", run).await?;
    // A retry after the transaction committed returns what it did.
    let recorded = runs_table(&target).await?
        && target
            .query_one("SELECT EXISTS (SELECT 1 FROM pgferry.runs WHERE run_id = $1)", &[run])
            .await
            .map_err(|e| Error::db("read pgferry runs", e))?
            .get::<_, bool>(0);
    if recorded && let Ok(done) = ctx.store.get_json::<SchemaOutput>(&keys::schema_output(run, name)).await {
        return Ok(done);
    }
    let source = ctx.connect(&input.job, Side::Source, "schema", run).await?;
    let identity = source_identity(&source, &input.job).await?;
    let earlier = match earlier_copy(&target, &identity).await? {
        Ok(earlier) => earlier,
        Err(reason) => {
            let database = current_database(&target).await?;
            return Err(refusal(&target, &database, &identity, &reason).await);
        }
    };
    let stored: Facts = ctx.store.get_json(&keys::schema_facts(run)).await?;
    let database = stored.target_database.clone();

    let facts = Facts {
        target: TargetFacts::read(&target, &database, true).await?,
        source: stored.source,
        target_database: database.clone(),
    };
    ctx.store.put_json(&keys::schema_facts(run), &facts).await?;
    let dump = dump::stored(ctx, run).await?;
    let pre_items = lex::split(&dump.pre_data);
    let (_, pre_items) = sanitize::database_items(&pre_items);
    let post_items = lex::split(&dump.post_data);
    let (pre_plan, post_plan) = plan_sections(&facts, &pre_items, &post_items);
    let hash = section_hash(&pre_items);
    let previous = marker(&target, None, name).await?;
    let same_schema = previous.as_ref().is_some_and(|(_, h)| h.as_deref() == Some(hash.as_str()));

    let (source_shapes, target_shapes) = tokio::try_join!(shapes(&source), shapes(&target))?;
    let tables = shape_changes(&source_shapes, &target_shapes, input.job.rebuild_changed_tables());
    let mut outcome = SchemaRefresh {
        run_id: run.clone(),
        refresh_of: earlier.run_id.clone(),
        same_schema,
        tables,
        ..SchemaRefresh::default()
    };
    if !same_schema && outcome.tables.is_empty() {
        outcome.notes.push(format!(
            "the pre-data section differs from the one applied by run {}, in objects other than table shapes \
             (functions, views, types, defaults, grants…): a refresh leaves them as they are",
            previous.as_ref().map_or("?", |p| p.0.as_str())
        ));
    }
    match evidence(&source, &target, &identity).await? {
        // The source's schema as of the marks' run: a refresh records it; a snapshot's is the
        // applied pre-data section's when that run applied it.
        Ok((marks, then))
            if then
                .clone()
                .or_else(|| previous.as_ref().filter(|p| p.0 == marks.run_id).and_then(|p| p.1.clone()))
                .as_deref()
                == Some(hash.as_str()) =>
        {
            outcome.watermarks = Some(marks)
        }
        Ok((marks, _)) => outcome.notes.push(format!(
            "rows compared by content, not by transaction ids: the source's schema changed since run {}",
            marks.run_id
        )),
        Err(reason) => outcome.notes.push(format!("rows compared by content, not by transaction ids: {reason}")),
    }
    let refused: Vec<&TableChange> = outcome.tables.iter().filter(|t| t.action == TableAction::Refused).collect();
    if !refused.is_empty() {
        let mut objects: Vec<String> = refused.iter().map(|t| t.describe()).collect();
        objects.push(
            "a refresh rebuilds (drops, recreates and reloads) changed tables and drops tables gone from the source \
             only with consent: set \"refresh\": {\"rebuildChangedTables\": true} in the job"
                .to_string(),
        );
        ctx.store.put_json(&keys::refresh_schema(run), &outcome).await?;
        return Err(Error::TargetNotEmpty { database, objects });
    }

    // Which dump entries to apply: the tables created or rebuilt, and what is bound to them.
    let mut all = BTreeMap::new();
    let pre_lines = entries(&pre_items, &mut all);
    let post_lines = entries(&post_items, &mut all);
    let wanted: BTreeSet<&QualifiedName> = outcome
        .tables
        .iter()
        .filter(|t| matches!(t.action, TableAction::Created | TableAction::Rebuilt))
        .map(|t| &t.table)
        .collect();
    let roots: BTreeSet<u32> = all
        .values()
        .filter(|e| {
            e.toc.desc == "TABLE"
                && e.schema
                    .as_ref()
                    .is_some_and(|s| wanted.contains(&QualifiedName::new(s.clone(), e.toc.name.clone())))
        })
        .map(|e| e.toc.dump_id)
        .collect();
    let mut selected = closure(&all, &roots);
    // A new table in a new schema brings the schema (with its grants and comment).
    let existing_schemas: HashSet<String> = target
        .query("SELECT nspname::text FROM pg_namespace", &[])
        .await
        .map_err(|e| Error::db("list target schemas", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new_schemas: BTreeSet<u32> = all
        .values()
        .filter(|e| e.toc.desc == "SCHEMA" && !existing_schemas.contains(&e.toc.name))
        .filter(|e| selected.iter().any(|id| all.get(id).is_some_and(|x| x.toc.deps.contains(&e.toc.dump_id))))
        .map(|e| e.toc.dump_id)
        .collect();
    for e in all.values() {
        if new_schemas.contains(&e.toc.dump_id)
            || (matches!(e.toc.desc.as_str(), "ACL" | "COMMENT") && e.toc.deps.iter().any(|d| new_schemas.contains(d)))
        {
            selected.insert(e.toc.dump_id);
        }
    }
    // Tables to drop: rebuilt ones, their child tables (in the closure), and those gone from the
    // source; children first (they follow their parents in the dump).
    let mut drop: Vec<QualifiedName> = Vec::new();
    for item in &pre_items {
        if let Some(e) = TocEntry::parse(item.leading()).and_then(|t| all.get(&t.dump_id))
            && e.toc.desc == "TABLE"
            && selected.contains(&e.toc.dump_id)
            && let Some(schema) = &e.schema
        {
            let table = QualifiedName::new(schema.clone(), e.toc.name.clone());
            if target_shapes.contains_key(&table) && !drop.contains(&table) {
                drop.push(table);
            }
        }
    }
    drop.reverse();
    drop.extend(outcome.tables.iter().filter(|t| t.action == TableAction::Dropped).map(|t| t.table.clone()));
    let children: Vec<&QualifiedName> =
        drop.iter().filter(|t| !outcome.tables.iter().any(|c| &c.table == *t)).collect();
    if !children.is_empty() {
        outcome.notes.push(format!(
            "rebuilt with their parent: {}",
            children.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }

    let mut pre_sub = subset(&pre_plan, &pre_lines, &selected);
    let mut post_sub = subset(&post_plan, &post_lines, &selected);
    for p in &mut post_sub.statements {
        let is_fk = post_lines.get(&p.line).and_then(|id| all.get(id)).is_some_and(|e| e.toc.desc == "FK CONSTRAINT");
        if let (true, Some(sql)) = (is_fk, p.sql.as_deref())
            && let Some((deferred, validate)) = deferred_foreign_key(sql)
        {
            p.sql = Some(deferred);
            outcome.validate_after_copy.push(validate);
        }
    }
    let changing = !drop.is_empty() || !roots.is_empty();

    let mut log = MembershipLog::open(&ctx.store, run, name).await?;
    let tx = target.transaction().await.map_err(|e| Error::db("begin refresh schema transaction", e))?;
    for holder in claim(&tx, &database, &input.job, run).await? {
        outcome.notes.push(format!("took the target over from refresh run {holder}, which had not ended"));
    }
    crate::dump::prepare_section(&tx, &mut log, &facts, &pre_plan).await?;
    for table in &drop {
        drop_table(&tx, table).await?;
    }
    let mut statements = 0;
    let mut applied = Ok(0);
    if changing {
        applied = apply::in_transaction(&tx, &mut pre_sub, &[]).await;
        if let Ok(n) = applied {
            statements += n;
            applied = apply::in_transaction(&tx, &mut post_sub, &[]).await;
        }
    }
    let mut report = if changing {
        SchemaReport::new(run, name, vec![pre_sub, post_sub])
    } else {
        let mut r = SchemaReport::new(run, name, vec![pre_plan]);
        r.already_applied_by = Some(previous.as_ref().map_or_else(|| earlier.run_id.clone(), |p| p.0.clone()));
        r.recount();
        r
    };
    report.temporary_memberships = log.roles.clone();
    ctx.store.put_json(&report_key, &report).await?;
    statements += applied?;
    outcome.statements = statements;
    let facts = RunFacts { refresh_of: Some(&earlier.run_id), pre_data_hash: Some(&hash), ..RunFacts::default() };
    record_run(&tx, run, Mode::Refresh, &identity, facts).await?;
    tx.execute("UPDATE pgferry.runs SET active = true WHERE run_id = $1", &[run])
        .await
        .map_err(|e| Error::db("record the refresh as holding the target", e))?;
    ctx.store.put_json(&keys::refresh_schema(run), &outcome).await?;
    let output = SchemaOutput {
        section: name.to_string(),
        statements,
        dump_key,
        report_key,
        rewritten: report.rewritten,
        skipped: report.skipped,
        already_applied_by: report.already_applied_by.clone(),
    };
    ctx.store.put_json(&keys::schema_output(run, name), &output).await?;
    tx.commit().await.map_err(|e| Error::db("commit refresh schema", e))?;
    for t in &outcome.tables {
        tracing::info!(table = %t.table, action = ?t.action, changes = %t.changes.join(", "), "refresh: table definition");
    }
    tracing::info!(
        statements,
        same_schema,
        refresh_of = %earlier.run_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "refresh schema checked"
    );
    Ok(output)
}

/// Drops a target table, after the foreign keys of other tables that reference it.
async fn drop_table(tx: &tokio_postgres::Transaction<'_>, table: &QualifiedName) -> Result<()> {
    let referencing = tx
        .query(
            "SELECT n.nspname::text, c.relname::text, co.conname::text FROM pg_constraint co \
             JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE co.contype = 'f' AND co.conparentid = 0 AND co.confrelid = to_regclass($1) \
               AND co.conrelid <> co.confrelid",
            &[&table.to_string()],
        )
        .await
        .map_err(|e| Error::db(format!("list foreign keys referencing {table}"), e))?;
    for r in &referencing {
        let from = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let sql = format!("ALTER TABLE {from} DROP CONSTRAINT IF EXISTS {}", quote_ident(&r.get::<_, String>(2)));
        tx.batch_execute(&sql).await.map_err(|e| Error::db(sql.clone(), e))?;
    }
    let sql = format!("DROP TABLE IF EXISTS {table}");
    tx.batch_execute(&sql).await.map_err(|e| {
        Error::db(
            format!("{sql} (objects outside the table, such as views, that depend on it must be dropped first)"),
            e,
        )
    })
}

/// Validates the foreign keys a refresh's schema step added `NOT VALID` (once the rows are in).
pub async fn validate_foreign_keys(ctx: &StepContext, input: &StepInput, target: &Client) -> Result<usize> {
    let Ok(outcome) = ctx.store.get_json::<SchemaRefresh>(&keys::refresh_schema(&input.run_id)).await else {
        return Ok(0);
    };
    for sql in &outcome.validate_after_copy {
        target.batch_execute(sql).await.map_err(|e| Error::db(sql.clone(), e))?;
    }
    Ok(outcome.validate_after_copy.len())
}

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
async fn repair_rows(
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
async fn repair_transaction(target: &mut Client) -> Result<tokio_postgres::Transaction<'_>> {
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
async fn prove_repair(
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
struct SetAsideIndex {
    name: QualifiedName,
    definition: String,
}

async fn set_aside_indexes(tx: &tokio_postgres::Transaction<'_>, table: &QualifiedName) -> Result<Vec<SetAsideIndex>> {
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

async fn rebuild_indexes(
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
fn copy_in(chunk: &crate::step::Chunk) -> String {
    format!("COPY {} ({}) FROM STDIN ({})", chunk.table, column_list(&chunk.columns), copy_options(chunk))
}

/// The keys to delete on the target and to copy from the source.
#[derive(Debug, Default)]
struct RowDiff {
    to_delete: Vec<Vec<String>>,
    to_copy: Vec<Vec<String>>,
}

/// Hash buckets a keyed range is compared in: a few rows each in a 32 MiB slice of narrow rows,
/// so that spread changes leave most buckets equal.
const BUCKETS: i64 = 16384;

/// A keyed range compared bucket by bucket on both servers: rows are assigned to buckets by a
/// hash of their key, and each side returns `count` and hash sum per bucket (no rows).
struct Buckets {
    /// Buckets whose count or hash differs.
    dirty: Vec<i64>,
}

fn bucket_expr(chunk: &crate::step::Chunk) -> String {
    let key_row = chunk.key.iter().map(|k| quote_ident(&k.name)).collect::<Vec<_>>().join(", ");
    format!("(hashtextextended(ROW({key_row})::text, 7) & {})", BUCKETS - 1)
}

async fn compare_buckets(
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
async fn row_diff(
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
async fn delete_keys(
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
fn keys_in_literal(chunk: &crate::step::Chunk, keys: &[Vec<String>]) -> String {
    let arrays: Vec<String> = (0..chunk.key.len())
        .map(|i| format!("ARRAY[{}]::text[]", keys.iter().map(|k| quote_literal(&k[i])).collect::<Vec<_>>().join(",")))
        .collect();
    crate::watermark::keys_in_arrays(chunk, &arrays)
}

// ---------------------------------------------------------------------------------------------
// The report

/// What a refresh did, in the run report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshSummary {
    /// The earlier run whose copy was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_of: Option<String>,
    pub counts: RefreshCounts,
    /// Tables with rows re-copied or deleted: `(table, rows copied, rows deleted)`.
    pub tables_changed: Vec<(QualifiedName, u64, u64)>,
    /// Tables created, rebuilt or dropped by the schema step.
    pub schema: Vec<TableChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The verified run whose transaction-id marks told which rows changed (`None`: rows were
    /// compared by content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_since: Option<String>,
    /// Per table, what the verification after the refresh hashed now and what it proved
    /// unchanged since an earlier verified run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<TableVerification>,
    /// One line: `copied no rows: …` for an unchanged database.
    pub summary: String,
}

/// A table's verification after a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableVerification {
    pub table: QualifiedName,
    /// Rows hashed on both sides now.
    pub rows_hashed: u64,
    /// Rows written on neither side since the verified run `unchanged_since` (keys compared in
    /// this run).
    pub rows_unchanged: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<String>,
    /// Of `rows_unchanged`, those whose keys the refresh's own comparison merged (no second
    /// pass, `refresh.verify: changed`); the others' keys were compared after the refresh.
    #[serde(default)]
    pub rows_unchanged_by_refresh: u64,
}

/// `1 row`, `2 rows`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Gathers the chunks' refresh counts and the schema step's actions; `None` when the run's
/// schema step did not refresh (a verification on its own).
pub async fn summarize(ctx: &StepContext, run: &str) -> Result<Option<RefreshSummary>> {
    let Ok(schema) = ctx.store.get_json::<SchemaRefresh>(&keys::refresh_schema(run)).await else {
        return Ok(None);
    };
    let mut out = RefreshSummary::default();
    let mut per_table: BTreeMap<QualifiedName, (u64, u64)> = BTreeMap::new();
    for key in ctx.store.list(&keys::copy_prefix(run)).await? {
        let c: CopyChunkOutput = ctx.store.get_json(&key).await?;
        if let Some(r) = c.refresh {
            out.counts.add(&r);
            if r.rows_reloaded + r.rows_deleted > 0 {
                let t = per_table.entry(c.table.clone()).or_default();
                t.0 += r.rows_reloaded;
                t.1 += r.rows_deleted;
            }
        }
    }
    out.tables_changed = per_table.into_iter().map(|(t, (c, d))| (t, c, d)).collect();
    let mut verified: BTreeMap<QualifiedName, TableVerification> = BTreeMap::new();
    for key in ctx.store.list(&crate::chunk::scope_prefix(run)).await? {
        let v: crate::chunk::VerifyScope = ctx.store.get_json(&key).await?;
        let t = verified.entry(v.table.clone()).or_insert_with(|| TableVerification {
            table: v.table.clone(),
            rows_hashed: 0,
            rows_unchanged: 0,
            unchanged_since: None,
            rows_unchanged_by_refresh: 0,
        });
        t.rows_hashed += v.rows_hashed;
        t.rows_unchanged += v.rows_unchanged;
        if v.by_refresh {
            t.rows_unchanged_by_refresh += v.rows_unchanged;
        }
        t.unchanged_since = t.unchanged_since.take().or(v.unchanged_since);
    }
    out.verification = verified.into_values().collect();
    out.changes_since = schema.watermarks.as_ref().map(|w| w.run_id.clone());
    out.refresh_of = Some(schema.refresh_of);
    out.schema = schema.tables;
    out.notes = schema.notes;
    let c = &out.counts;
    let slices = (c.slices_equal + c.slices_reloaded) as u64;
    let compared = match &out.changes_since {
        Some(run) => format!(
            "{} in {} checked for changes since verified run {run} (transaction ids, keys)",
            count(c.rows_compared, "row"),
            count(slices, "slice")
        ),
        None => format!("{} in {} compared by content", count(c.rows_compared, "row"), count(slices, "slice")),
    };
    out.summary = if c.rows_reloaded == 0 && c.rows_deleted == 0 {
        format!("refresh copied no rows: {compared}, all equal")
    } else {
        format!(
            "refresh re-copied {} and deleted {} in {} of {} ({compared}, {} left alone)",
            count(c.rows_reloaded, "row"),
            c.rows_deleted,
            c.slices_reloaded,
            count(slices, "slice"),
            count(c.rows_skipped, "row")
        )
    };
    let (hashed, unchanged, by_refresh) = out
        .verification
        .iter()
        .fold((0, 0, 0), |(h, u, r), t| (h + t.rows_hashed, u + t.rows_unchanged, r + t.rows_unchanged_by_refresh));
    if hashed + unchanged > 0 {
        out.summary.push_str(&format!("; verified: {} hashed in this run", count(hashed, "row")));
        if let Some(run) = out.verification.iter().find_map(|t| t.unchanged_since.clone()) {
            let how = match (by_refresh, unchanged - by_refresh) {
                (0, _) => "keys compared after the refresh".to_string(),
                (_, 0) => "keys merged by the refresh, copied rows hashed after its repairs".to_string(),
                (r, a) => format!("keys of {r} merged by the refresh, of {a} compared after it"),
            };
            out.summary.push_str(&format!(
                ", {} unchanged on both sides since verified run {run} ({how})",
                count(unchanged, "row")
            ));
        }
    }
    for action in [TableAction::Created, TableAction::Rebuilt, TableAction::Dropped] {
        let names: Vec<String> =
            out.schema.iter().filter(|t| t.action == action).map(|t| t.table.to_string()).collect();
        if !names.is_empty() {
            out.summary.push_str(&format!("; tables {}: {}", format!("{action:?}").to_lowercase(), names.join(", ")));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(cols: &[(&str, &str, bool)], key: &[&str]) -> Shape {
        Shape {
            kind: "r".to_string(),
            columns: cols
                .iter()
                .map(|(n, t, nn)| (n.to_string(), Column { type_name: t.to_string(), not_null: *nn, generated: None }))
                .collect(),
            primary_key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn shape_changes_name_each_table_and_change() {
        let t = |n: &str| QualifiedName::new("public", n);
        let source = BTreeMap::from([
            (t("same"), shape(&[("id", "integer", true)], &["id"])),
            (t("typed"), shape(&[("id", "bigint", true), ("v", "text", true)], &["id"])),
            (t("new"), shape(&[("id", "integer", true)], &["id"])),
        ]);
        let target = BTreeMap::from([
            (t("same"), shape(&[("id", "integer", true)], &["id"])),
            (t("typed"), shape(&[("id", "integer", true), ("v", "text", false), ("old", "text", false)], &[])),
            (t("gone"), shape(&[("id", "integer", true)], &["id"])),
        ]);
        let changes = shape_changes(&source, &target, false);
        let described: Vec<String> = changes.iter().map(TableChange::describe).collect();
        assert_eq!(
            described,
            vec![
                "table \"public\".\"new\": new on the source",
                "table \"public\".\"typed\": column \"id\": type integer → bigint, column \"v\": now NOT NULL, \
                 column \"old\" dropped, primary key none → (\"id\")",
                "table \"public\".\"gone\": gone from the source",
            ]
        );
        let actions: Vec<TableAction> = changes.iter().map(|c| c.action).collect();
        assert_eq!(actions, [TableAction::Created, TableAction::Refused, TableAction::Refused]);
        let actions: Vec<TableAction> = shape_changes(&source, &target, true).iter().map(|c| c.action).collect();
        assert_eq!(actions, [TableAction::Created, TableAction::Rebuilt, TableAction::Dropped]);
    }

    #[test]
    fn foreign_keys_on_tables_with_rows_are_deferred_and_validated_later() {
        let sql = "ALTER TABLE ONLY public.\"Order Lines\"\n    ADD CONSTRAINT \"fk x\" FOREIGN KEY (o) REFERENCES public.orders(id)";
        let (deferred, validate) = deferred_foreign_key(sql).unwrap();
        assert_eq!(deferred, format!("{sql} NOT VALID"));
        assert_eq!(validate, "ALTER TABLE public.\"Order Lines\" VALIDATE CONSTRAINT \"fk x\"");
        assert!(deferred_foreign_key(&format!("{sql} NOT VALID")).is_none(), "an invalid source key stays invalid");
        assert!(
            deferred_foreign_key("ALTER TABLE public.p ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES t(a)").is_none()
        );
        assert!(deferred_foreign_key("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id)").is_none());
    }

    #[test]
    fn toc_headers_give_the_schema() {
        assert_eq!(
            header_schema(
                "--\n-- TOC entry 5 (class 1259 OID 1)\n-- Name: t; Type: TABLE; Schema: sales; Owner: app\n--\n"
            ),
            Some("sales".to_string())
        );
        assert_eq!(header_schema("-- Name: x; Type: EXTENSION; Schema: -; Owner: -\n"), None);
    }

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
