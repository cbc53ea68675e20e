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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::context::StepContext;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Mode, Side};
use crate::pg::{ConnSpec, QualifiedName, quote_ident};
use crate::step::{StepInput, keys};

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
pub(crate) const KEY_BATCH: usize = 5000;

/// A differing slice is repaired row by row while at most one row in this many differs; beyond
/// that its whole range is reloaded (one scan and one COPY beat thousands of key lookups).
pub(crate) const ROW_REPAIR_RATIO: u64 = 4;

/// Same condition as the catalog's user relations: not system, not pgferry's, not an extension's.
pub(crate) const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
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

    pub(crate) fn describe(&self) -> String {
        format!("database {} at {}", quote_ident(&self.database), self.endpoint)
    }
}

/// How the job names the source server (no user, no password).
pub(crate) fn endpoint_name(job: &Job) -> String {
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
pub(crate) async fn runs_table(target: &Client) -> Result<bool> {
    Ok(target
        .query_one("SELECT to_regclass('pgferry.runs') IS NOT NULL", &[])
        .await
        .map_err(|e| Error::db("look for pgferry bookkeeping", e))?
        .get(0))
}

/// The name of the database a client is connected to.
pub(crate) async fn current_database(client: &Client) -> Result<String> {
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
pub(crate) async fn refusal(target: &Client, database: &str, source: &SourceIdentity, reason: &str) -> Error {
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
pub(crate) async fn holders<C: tokio_postgres::GenericClient>(
    client: &C,
    run_id: &str,
) -> Result<Vec<(String, String)>> {
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
pub(crate) async fn free_or_taken_over<C: tokio_postgres::GenericClient>(
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
pub(crate) async fn claim(
    tx: &tokio_postgres::Transaction<'_>,
    database: &str,
    job: &Job,
    run_id: &str,
) -> Result<Vec<String>> {
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
pub(crate) struct RunFacts<'a> {
    /// The earlier run a refresh updates.
    pub(crate) refresh_of: Option<&'a str>,
    /// The copy finished.
    pub(crate) copied: bool,
    /// Source and target transaction-id marks.
    pub(crate) marks: Option<(u64, u64)>,
    pub(crate) pre_data_hash: Option<&'a str>,
}

/// Records this run in `pgferry.runs` (in the caller's transaction).
pub(crate) async fn record_run<C: tokio_postgres::GenericClient>(
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
pub(crate) async fn evidence(
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
// Shared by the steps of a refresh

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
    pub(crate) fn describe(&self) -> String {
        format!("table {}: {}", self.table, self.changes.join(", "))
    }
}

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
