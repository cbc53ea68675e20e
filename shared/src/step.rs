//! The contracts between states: every state's input and output as a named serde type.
//!
//! These are versioned interfaces between the state machine definition, the Lambda functions and
//! the local runner. JSON is camelCase throughout; tests pin each type against a fixture in
//! `shared/tests/fixtures/steps/` so that a renamed field fails a test rather than an execution.

use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::pg::QualifiedName;

/// What every step receives: the job and the execution's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepInput {
    pub job: Job,
    pub run_id: String,
}

/// Requests to the schema function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum SchemaRequest {
    /// Create the target database if missing; carry roles.
    Globals(StepInput),
    /// Dump the schema; apply its pre-data section.
    PreData(StepInput),
    /// Split post-data into work items run in parallel (index builds, constraint validations),
    /// written to the artifact store for the Map states.
    PostDataPlan(StepInput),
    /// Build one index or validate one table's foreign keys.
    PostDataItem(PostDataItemInput),
    /// Apply the rest of post-data in one transaction (keys attached to their prebuilt indexes,
    /// foreign keys added `NOT VALID`, triggers, rules…); refresh materialized views.
    PostData(StepInput),
    /// Set every sequence on the target from the source.
    Sequences(StepInput),
    /// Revoke the memberships the master was given for the run (after the last step that reads
    /// or writes the target, and on the failure path).
    Release(StepInput),
    /// Mode `continuous`: record the run's replication objects on the target, then create the
    /// replication user, the publication and the slot on the source.
    PrepareReplication(StepInput),
    /// Mode `continuous`: create the subscription on the target (its initial sync copies the data).
    Subscribe(StepInput),
    /// Mode `continuous`: report lag, sync progress, apply errors and slot health.
    CheckLag(StepInput),
    /// Cutover: wait (within one invocation's time) until the target confirmed all WAL the source
    /// had written when the cutover began.
    CutoverCatchUp(StepInput),
    /// Cutover: drop the subscription, slots, publication and replication user.
    FinishCutover(StepInput),
    /// Failure path: drop what this run created for replication (nothing in other modes).
    CleanupReplication(StepInput),
    /// Action `abandon`: drop the running continuous replication recorded on the target without
    /// cutting over (e.g. after an execution was stopped from the console, which runs no Catch).
    AbandonReplication(StepInput),
}

/// Requests to the copy function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum CopyRequest {
    /// Plan the chunks and write them to the artifact store.
    Plan(StepInput),
    /// Copy one chunk.
    CopyChunk(ChunkInput),
    /// Copy every large object (RDS-CASES T34).
    LargeObjects(StepInput),
}

/// Requests to the verify function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum VerifyRequest {
    /// Compare one chunk on both sides.
    VerifyChunk(ChunkInput),
    /// Gather copy and verify results into the run report.
    Report(StepInput),
    /// Record a failure with advice.
    Diagnose(DiagnoseInput),
}

/// Requests to the preflight function's clone actions (`"consistency": "clone"`); a request
/// without `action` is the preflight itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum CloneRequest {
    /// Start restoring the source's temporary clone (idempotent: a retry finds it started).
    CreateClone(StepInput),
    /// Look at the clone once: still creating, available (with the job rewritten to read from
    /// it), or failed.
    DescribeClone(Box<CloneInput>),
    /// Delete the run's clone, if any (already gone is fine).
    DeleteClone(StepInput),
}

/// Input of the DescribeClone state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneInput {
    pub job: Job,
    pub run_id: String,
    pub clone: CloneRecord,
}

/// The run's temporary clone of the source (also stored at `runs/<run>/clone.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneRecord {
    /// `DBInstanceIdentifier`, or `DBClusterIdentifier` for Aurora (`pgferry-…`).
    pub identifier: String,
    pub kind: crate::aws::rds::ResourceKind,
    /// Aurora: the clone's writer instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_identifier: Option<String>,
    /// What was cloned (`RDS instance prod-db`).
    pub source: String,
    /// The instant the clone reproduces, RFC 3339 UTC: the target equals the source as of then.
    pub point_in_time: String,
    /// How that instant was chosen.
    pub point_in_time_basis: String,
    /// The clone's status at the last look (`creating`, `available`…).
    pub status: String,
    /// True once the clone (and an Aurora clone's writer) is available.
    pub available: bool,
    /// Seconds the Wait state waits between two looks.
    pub poll_seconds: u32,
    /// RFC 3339 UTC: the run fails (and deletes the clone) if it is not available by then.
    pub wait_until: String,
    /// Preflight's estimate of the clone's extra time and cost (`source-clone-estimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
    /// Once available: the job whose source, still named as the source, is dialled at the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

/// Result of the DeleteClone state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneDeleted {
    pub identifier: String,
    /// False when there was nothing to delete (never created, or deleted by an earlier attempt).
    pub deleted: bool,
    /// The clone's point in time, when the run got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<String>,
    /// `the target equals RDS instance prod-db as of 2026-11-26T16:00:00Z (clone pgferry-… deleted)`.
    pub summary: String,
}

/// Result of the preflight step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreflightOutput {
    /// True when no check failed.
    pub ok: bool,
    /// One line naming the failed checks (empty when ok).
    pub summary: String,
    pub checks: Vec<Check>,
    pub report_key: String,
    /// What preflight learned about how each side is reached, read back by later steps to explain
    /// a connection failure (network path, `rds.force_ssl`, where the credentials come from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<EndpointFacts>,
}

/// How one side of the job is reached, as preflight found it. No secrets: the credential source
/// is described by its kind and secret ARN only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointFacts {
    pub side: crate::job::Side,
    /// `host:port` dialled.
    pub endpoint: String,
    /// `RDS instance prod-db`, when the side is an RDS resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The resource's status at preflight (`available`, `stopped`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The network-path verdict in one sentence (with the fix when blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Whether the network path was found open (`None`: not analysed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publicly_accessible: Option<bool>,
    /// Effective `rds.force_ssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_ssl: Option<bool>,
    /// `CACertificateIdentifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
    /// Where the password comes from, e.g. `RDS-managed secret arn:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// One preflight finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

/// Result of the globals step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalsOutput {
    pub database_created: bool,
    pub roles_created: Vec<String>,
    /// The globals report (roles and database): every statement with its verdict and rule.
    pub report_key: String,
    /// Statements sent to the target.
    pub applied: usize,
    /// Statements changed by a rule before they were applied.
    pub rewritten: usize,
    /// Statements left out by a rule (each listed in the report).
    pub skipped: usize,
}

/// Result of a schema section step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaOutput {
    pub section: String,
    /// Statements applied.
    pub statements: usize,
    pub dump_key: String,
    /// The section's report: every statement with its verdict and rule.
    pub report_key: String,
    pub rewritten: usize,
    pub skipped: usize,
    /// Set when an earlier run of the same job applied this same section into the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already_applied_by: Option<String>,
}

/// Result of the post-data planning step; the items themselves are in the artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostDataPlanOutput {
    /// Index builds (including the unique indexes behind primary keys and unique constraints).
    pub indexes_key: String,
    pub indexes: usize,
    /// Foreign key validations, one item per table.
    pub validations_key: String,
    pub validations: usize,
}

/// One independent piece of post-data work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostDataItem {
    /// Stable id within the run (`index-0001`, `validate-0001`).
    pub id: String,
    pub kind: PostDataItemKind,
    pub table: QualifiedName,
    /// The index built, or the constraints validated.
    pub names: Vec<String>,
    /// The one statement run.
    pub sql: String,
    /// Sealed when the list is stored; checked before the statement runs (see [`crate::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

impl crate::seal::SealedItem for PostDataItem {
    const KIND: &'static str = "post-data-item";
    fn id(&self) -> &str {
        &self.id
    }
    fn seal_slot(&mut self) -> &mut Option<String> {
        &mut self.seal
    }
}

/// What a post-data item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PostDataItemKind {
    BuildIndex,
    ValidateConstraints,
}

/// Input of the per-item states (built by the Map's ItemSelector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostDataItemInput {
    pub job: Job,
    pub run_id: String,
    pub item: PostDataItem,
}

/// Result of one post-data item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostDataItemOutput {
    pub id: String,
    /// False while the statement still runs on the server (started by this or an earlier
    /// invocation that ran out of time): invoke again to wait for it.
    pub done: bool,
    /// `built`, `validated`, `already done`, `still running`.
    pub outcome: String,
    pub millis: u64,
}

/// Result of the release step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseOutput {
    /// Roles the master stopped being a member of.
    pub revoked: Vec<String>,
    /// What else was undone: read access obtained on the source with the job's consent, row-level
    /// security forced again on the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
}

/// Result of the plan step; the chunks themselves are in the artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanOutput {
    /// The full plan (tables, skipped relations, materialized views).
    pub plan_key: String,
    /// A JSON array of [`Chunk`], read by the copy Map's ItemReader.
    pub chunks_key: String,
    /// A JSON array of [`Chunk`], read by the verify Map's ItemReader.
    pub verify_key: String,
    pub tables: usize,
    pub chunks: usize,
    /// Items of the verify Map (a table copied by page ranges is verified as one item).
    #[serde(default)]
    pub verify_items: usize,
    pub estimated_bytes: u64,
    /// Rough copy time in seconds at `max_concurrency` (see `plan::estimate_seconds`).
    pub estimated_seconds: u64,
    /// Chunks in flight in the Map states (`MaxConcurrencyPath`): the job's `maxConcurrency` or a
    /// default.
    pub max_concurrency: u32,
}

/// The full plan, stored at `runs/<run>/plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub chunks: Vec<Chunk>,
    /// What the verify Map iterates over: the key-range and whole-table chunks, and one
    /// whole-table item per table cut into page ranges (pages differ between clusters).
    pub verify_items: Vec<Chunk>,
    /// Unlogged tables: copied, but their contents are not crash-safe on the target either.
    pub unlogged: Vec<QualifiedName>,
    /// Refreshed in post-data instead of copied (only those populated on the source: T66).
    pub materialized_views: Vec<QualifiedName>,
    /// Relations with no data of their own, with the reason.
    pub skipped: Vec<(QualifiedName, String)>,
    /// Planning decisions a user should know about (fallbacks, keyless tables).
    pub notes: Vec<String>,
    pub estimated_bytes: u64,
    /// Rough copy time at `concurrency` chunks in flight: the larger of the total over all lanes
    /// and the largest chunk alone.
    pub estimated_seconds: u64,
}

/// A unit of copy and verify work: one table's rows in one or more consecutive slices.
///
/// Each slice is loaded in its own transaction together with its ledger row, so a chunk that
/// runs out of time commits the slices it finished and is re-invoked for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chunk {
    /// Stable id within the run, safe as a file name and S3 key part.
    pub id: String,
    pub table: QualifiedName,
    /// Columns copied, in order (generated columns excluded).
    pub columns: Vec<String>,
    /// COPY format: binary unless a column's binary form embeds cluster-specific type OIDs.
    pub format: CopyFormat,
    /// The key the slices are cut on (empty for whole-table and page-range slices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<KeyColumn>,
    pub slices: Vec<Slice>,
    pub estimated_bytes: u64,
    /// Sealed when the plan is stored; checked before the chunk is copied or verified (see
    /// [`crate::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

impl crate::seal::SealedItem for Chunk {
    const KIND: &'static str = "chunk";
    fn id(&self) -> &str {
        &self.id
    }
    fn seal_slot(&mut self) -> &mut Option<String> {
        &mut self.seal
    }
}

/// COPY data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CopyFormat {
    Binary,
    Text,
}

/// A column of a chunking key, with its SQL type (`format_type`) for typed bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyColumn {
    pub name: String,
    pub type_name: String,
}

/// The rows of one transaction of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Slice {
    /// The whole table: loaded with `TRUNCATE` + `COPY FREEZE`.
    Whole,
    /// Key range `[lower, upper)`; `None` is unbounded. Bounds are the key columns' text forms.
    #[serde(rename_all = "camelCase")]
    KeyRange { lower: Option<Vec<String>>, upper: Option<Vec<String>> },
    /// Heap pages `[first_page, end_page)` (TID range scan); `None` is unbounded.
    #[serde(rename_all = "camelCase")]
    Pages { first_page: u64, end_page: Option<u64> },
}

/// Input of the per-chunk states (built by the Map's ItemSelector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkInput {
    pub job: Job,
    pub run_id: String,
    pub chunk: Chunk,
}

/// Result of copying one chunk (also stored at `runs/<run>/copy/<chunk>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyChunkOutput {
    pub chunk_id: String,
    pub table: QualifiedName,
    /// False when the invocation ran out of time: invoke again, committed slices are skipped.
    pub done: bool,
    pub slices: usize,
    pub slices_done: usize,
    /// Rows and bytes of all committed slices of the chunk (this and earlier invocations).
    pub rows: u64,
    pub bytes: u64,
    /// Time spent by this invocation.
    pub elapsed_ms: u64,
    /// True when every slice had been committed by earlier invocations.
    pub already_committed: bool,
    /// Mode `refresh`: what comparing the chunk found and what was re-copied; `rows` and `bytes`
    /// are then what was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshCounts>,
}

/// What a refresh did with a chunk (all committed slices, this and earlier invocations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshCounts {
    /// Source rows hashed and compared with the target.
    pub rows_compared: u64,
    /// Compared rows found equal and left alone.
    pub rows_skipped: u64,
    /// Rows copied from the source (missing or different on the target).
    pub rows_reloaded: u64,
    /// Target rows deleted (extra, different, or a whole range reloaded).
    pub rows_deleted: u64,
    /// Slices whose hashes matched.
    pub slices_equal: usize,
    /// Slices that were re-copied in part or whole.
    pub slices_reloaded: usize,
}

impl RefreshCounts {
    /// Adds another chunk's or slice's counts.
    pub fn add(&mut self, other: &RefreshCounts) {
        self.rows_compared += other.rows_compared;
        self.rows_skipped += other.rows_skipped;
        self.rows_reloaded += other.rows_reloaded;
        self.rows_deleted += other.rows_deleted;
        self.slices_equal += other.slices_equal;
        self.slices_reloaded += other.slices_reloaded;
    }
}

/// Result of the large-object step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LargeObjectsOutput {
    pub objects: u64,
    pub bytes: u64,
    /// Objects already present and equal on the target (a retried step).
    pub already_present: u64,
    /// Mode `refresh`: objects found equal on the target and left alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
    /// Mode `refresh`: objects the source no longer has, removed from the target.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub removed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Result of the sequences step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SequencesOutput {
    pub sequences: usize,
}

/// The replication objects of one continuous run (names only: the password is never stored by
/// pgferry; PostgreSQL keeps it in the target's `pg_subscription`, RDS-CASES T47).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationOutput {
    /// The run that created them (a cutover finds them from another execution).
    pub run_id: String,
    pub publication: String,
    pub slot: String,
    pub subscription: String,
    pub replication_user: String,
    /// Tables published.
    pub tables: usize,
    /// Tables left out with the job's consent (`keylessTables: exclude`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// Seconds the state machine waits between lag checks.
    pub wait_seconds: u64,
}

/// One lag check of a continuous run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LagOutput {
    /// Every table synced and the lag under the job's thresholds.
    pub caught_up: bool,
    /// The job's deadline passed before the lag dropped under its thresholds.
    pub deadline_passed: bool,
    pub tables: u64,
    /// Tables whose initial copy or catch-up is not finished.
    pub tables_syncing: u64,
    /// Source WAL not yet confirmed by the target (`pg_current_wal_lsn() - confirmed_flush_lsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// The walsender's `replay_lag`, in milliseconds (none when idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lag_ms: Option<u64>,
    /// `pg_replication_slots.wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_status: Option<String>,
    /// `pg_replication_slots.safe_wal_size` (none when `max_slot_wal_keep_size = -1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_wal_size: Option<i64>,
    pub apply_errors: u64,
    pub sync_errors: u64,
    pub wait_seconds: u64,
    /// One line for humans.
    pub summary: String,
}

/// Result of one cutover catch-up invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatchUpOutput {
    pub caught_up: bool,
    /// The source WAL position the target must confirm (taken when the cutover began).
    pub cutover_lsn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_lsn: Option<String>,
    pub run_id: String,
}

/// What a cutover or a failure cleanup dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DropOutput {
    /// `subscription x`, `slot y`, `publication z`, `role r`…
    pub dropped: Vec<String>,
}

/// Result of verifying one chunk (also stored at `runs/<run>/verify/<chunk>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyChunkOutput {
    pub chunk_id: String,
    pub table: QualifiedName,
    pub equal: bool,
    pub source_rows: u64,
    pub target_rows: u64,
    pub source_hash: String,
    pub target_hash: String,
    /// For a differing chunk with a key: which keys differ, found by splitting the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differences: Option<Differences>,
}

/// Sample keys of the rows that differ in a chunk, by class. Keys are the key columns' text
/// forms, comma-separated; at most [`Differences::SAMPLES`] of each class are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Differences {
    pub missing_on_target: Vec<String>,
    pub extra_on_target: Vec<String>,
    pub different: Vec<String>,
    /// True when more keys differ than were sampled.
    pub more: bool,
}

impl Differences {
    /// Sample keys kept per class.
    pub const SAMPLES: usize = 10;

    pub fn is_empty(&self) -> bool {
        self.missing_on_target.is_empty() && self.extra_on_target.is_empty() && self.different.is_empty()
    }
}

/// Result of the report step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportOutput {
    pub equal: bool,
    pub summary: String,
    pub report_key: String,
    pub tables: usize,
    /// Rows and bytes this run copied (a refresh: re-copied; a cutover: none).
    pub rows: u64,
    pub bytes: u64,
    /// Rows the target holds in the verified tables.
    #[serde(default)]
    pub target_rows: u64,
}

/// The `{"Error", "Cause"}` object Step Functions puts at a Catch's ResultPath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// Input of the Diagnose state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnoseInput {
    pub job: Job,
    pub run_id: String,
    pub error: StepError,
}

/// Result of the Diagnose state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnoseOutput {
    pub report_key: String,
    pub error: String,
    pub cause: String,
}

pub(crate) fn to_value<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("step outputs serialize")
}

/// The artifact key part of the memberships this step holds ([`MembershipLog`]).
pub const LARGE_OBJECTS: &str = "large-objects";

// ---------------------------------------------------------------------------------- checks

/// The name of the check holding a clone's estimate (kept in the clone record and the report).
pub const CLONE_ESTIMATE_CHECK: &str = "source-clone-estimate";

/// One sentence explaining a connection failure of `kind` from what preflight learned about the
/// side, or `None` when it learned nothing that helps.
pub fn explain(facts: &EndpointFacts, kind: crate::error::ErrorKind) -> Option<String> {
    let what = facts.resource.clone().unwrap_or_else(|| facts.endpoint.clone());
    match kind {
        crate::error::ErrorKind::ConnectTimeout | crate::error::ErrorKind::ConnectionLost => {
            match (facts.network_open, &facts.network) {
                (Some(false), Some(path)) => Some(path.clone()),
                (Some(true), Some(path)) => Some(format!(
                    "the security groups of {what} were open at preflight ({path}); look at network ACLs, route tables, \
                 and whether the rules changed since"
                )),
                (None, Some(path)) => Some(path.clone()),
                _ => facts.publicly_accessible.filter(|p| !p).map(|_| {
                    format!("{what} is not publicly accessible: only clients inside its VPC (or peered) reach it")
                }),
            }
        }
        crate::error::ErrorKind::ConnectionRefused
        | crate::error::ErrorKind::HostNotFound
        | crate::error::ErrorKind::StartingUp => facts
            .status
            .as_ref()
            .map(|status| format!("{what} was `{status}` at preflight, endpoint {}", facts.endpoint)),
        crate::error::ErrorKind::EncryptionRequired => facts
            .force_ssl
            .map(|on| format!("rds.force_ssl={} on {what}: connect with sslMode verify-full", u8::from(on))),
        crate::error::ErrorKind::AuthFailed => {
            facts.credentials.as_ref().map(|c| format!("the password came from {c}"))
        }
        crate::error::ErrorKind::CertificateUntrusted
        | crate::error::ErrorKind::CertificateInvalid
        | crate::error::ErrorKind::HostnameMismatch => facts
            .ca_certificate
            .as_ref()
            .map(|ca| format!("{what} presents a certificate from CA {ca}; pgferry dialled {}", facts.endpoint)),
        _ => None,
    }
}

pub(crate) fn pass(name: &str, detail: String) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Pass, detail, advice: None }
}

pub(crate) fn warn(name: &str, detail: String, advice: &str) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Warn, detail, advice: Some(advice.to_string()) }
}

pub(crate) fn fail(name: &str, detail: String, advice: &str) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Fail, detail, advice: Some(advice.to_string()) }
}

pub(crate) fn fail_from(name: &str, err: &crate::error::Error) -> Check {
    Check {
        name: name.to_string(),
        status: CheckStatus::Fail,
        detail: err.to_string(),
        advice: err.kind().advice().map(str::to_string),
    }
}

/// Artifact keys of one run, in one place.
pub mod keys {
    pub fn preflight(run: &str) -> String {
        format!("runs/{run}/preflight.json")
    }
    pub fn globals(run: &str) -> String {
        format!("runs/{run}/globals.json")
    }
    pub fn dump(run: &str, section: &str) -> String {
        format!("runs/{run}/schema/{section}.sql")
    }
    /// Written after the dump artifacts: a complete dump exists.
    pub fn schema_manifest(run: &str) -> String {
        format!("runs/{run}/schema/dump.json")
    }
    /// The report of a schema step (`globals`, `pre-data`, `post-data`).
    pub fn schema_report(run: &str, step: &str) -> String {
        format!("runs/{run}/schema/{step}-report.json")
    }
    /// Roles the master was made a member of by a step, logged before each grant.
    pub fn schema_memberships(run: &str, step: &str) -> String {
        format!("runs/{run}/schema/memberships-{step}.json")
    }
    /// Facts the schema plans were computed from.
    pub fn schema_facts(run: &str) -> String {
        format!("runs/{run}/schema/facts.json")
    }
    /// A section step's output, returned again by a retry that finds the section applied.
    pub fn schema_output(run: &str, section: &str) -> String {
        format!("runs/{run}/schema/{section}-output.json")
    }
    pub fn plan(run: &str) -> String {
        format!("runs/{run}/plan.json")
    }
    /// What the run changed on the source to read it (with the job's consent).
    pub fn source_access(run: &str) -> String {
        format!("runs/{run}/source-access.json")
    }
    /// Target tables whose `FORCE ROW LEVEL SECURITY` is off until the release step.
    pub fn target_access(run: &str) -> String {
        format!("runs/{run}/target-access.json")
    }
    /// Post-data items: `indexes` or `validations`.
    pub fn post_data_items(run: &str, kind: &str) -> String {
        format!("runs/{run}/schema/post-data-{kind}.json")
    }
    pub fn chunks(run: &str) -> String {
        format!("runs/{run}/chunks.json")
    }
    pub fn verify_items(run: &str) -> String {
        format!("runs/{run}/verify-items.json")
    }
    pub fn copy_prefix(run: &str) -> String {
        format!("runs/{run}/copy/")
    }
    pub fn copy(run: &str, chunk: &str) -> String {
        format!("runs/{run}/copy/{chunk}.json")
    }
    pub fn verify_prefix(run: &str) -> String {
        format!("runs/{run}/verify/")
    }
    pub fn verify(run: &str, chunk: &str) -> String {
        format!("runs/{run}/verify/{chunk}.json")
    }
    /// What a refresh's schema step found and did (table actions, foreign keys to validate).
    pub fn refresh_schema(run: &str) -> String {
        format!("runs/{run}/refresh/schema.json")
    }
    pub fn report(run: &str) -> String {
        format!("runs/{run}/report.json")
    }
    /// The run's temporary clone of the source (`"consistency": "clone"`).
    pub fn clone(run: &str) -> String {
        format!("runs/{run}/clone.json")
    }
    /// Clone mode: the preflight report of the live source, kept before the clone's preflight
    /// writes [`preflight`].
    pub fn preflight_source(run: &str) -> String {
        format!("runs/{run}/preflight-source.json")
    }
    pub fn failure(run: &str) -> String {
        format!("runs/{run}/failure.json")
    }
    /// Where the Distributed Maps' `ResultWriter`s export the run's child executions (written
    /// by Step Functions, not by a function: unsealed).
    pub fn map_results(run: &str) -> String {
        format!("runs/{run}/map-results/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Parses a fixture, re-serializes it and checks nothing was lost or renamed.
    fn pinned<T: Serialize + DeserializeOwned + std::fmt::Debug>(fixture: &str) -> T {
        let original: serde_json::Value = serde_json::from_str(fixture).unwrap();
        let typed: T = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), original, "fixture changed shape: {typed:?}");
        typed
    }

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/steps/", $name, ".json"))
        };
    }

    #[test]
    fn step_contracts_match_their_fixtures() {
        let input: StepInput = pinned(fixture!("step-input"));
        assert_eq!(input.run_id, "run-1");
        pinned::<PreflightOutput>(fixture!("preflight-output"));
        pinned::<GlobalsOutput>(fixture!("globals-output"));
        pinned::<SchemaOutput>(fixture!("schema-output"));
        pinned::<ReleaseOutput>(fixture!("release-output"));
        pinned::<PlanOutput>(fixture!("plan-output"));
        pinned::<ChunkInput>(fixture!("chunk-input"));
        pinned::<CopyChunkOutput>(fixture!("copy-chunk-output"));
        let refreshed: CopyChunkOutput = pinned(fixture!("copy-chunk-output-refresh"));
        assert_eq!(refreshed.refresh.map(|r| r.rows_reloaded), Some(3));
        pinned::<LargeObjectsOutput>(fixture!("large-objects-output-refresh"));
        let refresh: StepInput = pinned(fixture!("step-input-refresh"));
        assert!(refresh.job.rebuild_changed_tables());
        pinned::<SequencesOutput>(fixture!("sequences-output"));
        pinned::<LargeObjectsOutput>(fixture!("large-objects-output"));
        pinned::<VerifyChunkOutput>(fixture!("verify-chunk-output"));
        pinned::<ReportOutput>(fixture!("report-output"));
        pinned::<DiagnoseInput>(fixture!("diagnose-input"));
        pinned::<DiagnoseOutput>(fixture!("diagnose-output"));
        pinned::<PostDataPlanOutput>(fixture!("post-data-plan-output"));
        pinned::<PostDataItemOutput>(fixture!("post-data-item-output"));
        let describe: CloneRequest = pinned(fixture!("clone-request"));
        assert!(matches!(describe, CloneRequest::DescribeClone(ref input) if !input.clone.available));
        let ready: CloneRecord = pinned(fixture!("clone-record"));
        let source = ready.job.map(|j| j.source).unwrap();
        assert_eq!(source.rds_cluster.as_deref(), Some("prod"), "the source keeps its name");
        assert!(source.host.unwrap().starts_with("pgferry-run-1-0a1b2c3d.cluster-"), "and is dialled at the clone");
        pinned::<CloneDeleted>(fixture!("clone-deleted"));
        pinned::<ReplicationOutput>(fixture!("replication-output"));
        pinned::<LagOutput>(fixture!("lag-output"));
        pinned::<CatchUpOutput>(fixture!("catch-up-output"));
        pinned::<DropOutput>(fixture!("drop-output"));
        let req: SchemaRequest = pinned(fixture!("post-data-item-input"));
        assert!(
            matches!(req, SchemaRequest::PostDataItem(PostDataItemInput { ref item, .. }) if item.kind == PostDataItemKind::BuildIndex)
        );
    }

    #[test]
    fn function_requests_are_tagged_by_action() {
        let req: SchemaRequest = pinned(fixture!("schema-request"));
        assert!(matches!(req, SchemaRequest::PreData(_)));
        let req: SchemaRequest = pinned(fixture!("check-lag-request"));
        assert!(matches!(req, SchemaRequest::CheckLag(ref input) if input.job.mode == crate::job::Mode::Continuous));
        let req: CopyRequest = pinned(fixture!("copy-request"));
        assert!(matches!(req, CopyRequest::CopyChunk(_)));
        let req: VerifyRequest = pinned(fixture!("verify-request"));
        assert!(matches!(req, VerifyRequest::Report(_)));
    }

    #[test]
    fn a_misspelled_field_in_a_request_is_refused() {
        let text = fixture!("step-input").replace("runId", "runID");
        let err = serde_json::from_str::<StepInput>(&text).unwrap_err();
        assert!(err.to_string().contains("runID"), "{err}");
    }
}
