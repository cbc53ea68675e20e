//! Consistent copies of a live source: the temporary point-in-time clone of `"consistency":
//! "clone"` (DESIGN 11).
//!
//! A snapshot-mode copy reads the live source across many Lambda invocations, and no PostgreSQL
//! snapshot spans them. With a clone, the state machine restores a copy of the source at one
//! instant (RDS point-in-time restore, or an Aurora copy-on-write clone), every later step reads
//! the clone instead of the source, and the clone is deleted at the end and on every failure path.
//! The three actions here are hosted by the preflight function (it already holds the RDS client):
//!
//! - [`create`] starts the restore and returns a [`CloneRecord`] carrying the point in time and
//!   the job rewritten to read from the clone; idempotent (a retry finds the clone started);
//! - [`describe`] looks once (the ASL's Wait/DescribeClone/Choice loop does the waiting: no Lambda
//!   sleeps) and fails when the clone failed or the wait is over;
//! - [`delete`] removes the run's clone without a final snapshot and with its automated backups;
//!   already gone is success.
//!
//! The clone's identifier is derived from the run id ([`clone_identifier`]), so the failure path
//! can delete it even when the step that created it died before returning. Every identifier
//! starts with [`CLONE_PREFIX`], the only resources the template lets the functions restore or
//! delete. Once the clone is available, the job's source keeps its name but is dialled at the
//! clone's endpoint: the clone has the source's roles and passwords as of its point in time (and no
//! managed secret of its own), so the source's secret is the one to read, and a later `refresh`
//! recognises the target as a copy of the source, not of a clone that no longer exists.

use std::time::SystemTime;

use aws_sdk_rds::primitives::{DateTime, DateTimeFormat};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::aws::rds::{
    self, CLONE_PREFIX, CloneSpec, DbFacts, ResourceKind, TAG_EXECUTION, TAG_POINT_IN_TIME, TAG_SOURCE,
};
use crate::context::StepContext;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::step::{CloneDeleted, CloneInput, CloneRecord, PreflightOutput, StepInput, keys};

/// Statuses from which a clone being created never becomes available.
const FAILED: &[&str] = &[
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "restore-error",
    "storage-full",
    "deleting",
    "deleted",
];

/// `pgferry-<run id, shortened>-<8 hex of its SHA-256>`: a valid RDS identifier (letters, digits,
/// single hyphens, at most 63 characters), the same for every attempt of one run.
pub fn clone_identifier(run_id: &str) -> String {
    let mut short = String::new();
    for c in run_id.chars().map(|c| c.to_ascii_lowercase()) {
        if short.len() >= 20 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            short.push(c);
        } else if !short.is_empty() && !short.ends_with('-') {
            short.push('-');
        }
    }
    let short = short.trim_end_matches('-');
    let digest = Sha256::digest(run_id.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    if short.is_empty() { format!("{CLONE_PREFIX}{hash}") } else { format!("{CLONE_PREFIX}{short}-{hash}") }
}

/// The writer instance of an Aurora clone.
pub fn writer_identifier(clone: &str) -> String {
    format!("{clone}-w")
}

fn now() -> DateTime {
    DateTime::from(SystemTime::now())
}

fn format(t: &DateTime) -> String {
    t.fmt(DateTimeFormat::DateTime).unwrap_or_else(|_| t.secs().to_string())
}

fn parse(text: &str) -> Option<DateTime> {
    DateTime::from_str(text, DateTimeFormat::DateTime).ok()
}

/// The job's source as an RDS resource, or an invalid-job error.
fn source_resource(job: &Job) -> Result<(ResourceKind, &str)> {
    job.source.rds_resource().ok_or_else(|| {
        Error::job("source: `\"consistency\": \"clone\"` needs the source named as `rdsInstance` or `rdsCluster`")
    })
}

/// `clone.host` redirects connections: accepted from the local CLI and tests only.
fn refuse_local_override_in_lambda(ctx: &StepContext, job: &Job) -> Result<()> {
    let options = job.source.clone.as_ref();
    if ctx.in_lambda && options.is_some_and(|o| o.host.is_some() || o.port.is_some()) {
        return Err(Error::job(
            "source.clone.host/port are for local runs (a tunnel or a test stand-in); in AWS the clone is reached at \
             its own endpoint: remove them",
        ));
    }
    Ok(())
}

/// Starts the clone of the job's source; returns its record (not yet available).
pub async fn create(ctx: &StepContext, input: &StepInput) -> Result<CloneRecord> {
    let job = &input.job;
    job.validate()?;
    if !job.source.uses_clone() {
        return Err(Error::job("createClone: the job's source does not ask for `\"consistency\": \"clone\"`"));
    }
    refuse_local_override_in_lambda(ctx, job)?;
    let (kind, id) = source_resource(job)?;
    let clients = ctx.aws.clients().await?;
    let source = match kind {
        ResourceKind::Instance => Box::pin(rds::describe_instance(clients, id)).await?,
        ResourceKind::Cluster => Box::pin(rds::describe_cluster(clients, id)).await?,
    };
    if source.backup_retention_days == Some(0) {
        return Err(Error::job(format!(
            "{} keeps no automated backups (BackupRetentionPeriod 0), so it cannot be restored to a point in time: {}",
            source.label(),
            source.backups_advice()
        )));
    }
    let identifier = clone_identifier(&input.run_id);
    let writer = (kind == ResourceKind::Cluster).then(|| writer_identifier(&identifier));
    let options = job.source.clone.clone().unwrap_or_default();

    // A retried step finds its clone started: report the point in time it was tagged with.
    let existing = describe_clone_resource(clients, kind, &identifier).await?;
    let (point_in_time, basis) = match &existing {
        Some(found) => {
            if let Some(other) = found.tags.get(TAG_EXECUTION).filter(|run| *run != &input.run_id) {
                return Err(Error::Internal(format!(
                    "{} exists already and belongs to execution {other}, not {}: pgferry leaves it alone",
                    found.label(),
                    input.run_id
                )));
            }
            let at = found.tags.get(TAG_POINT_IN_TIME).cloned().unwrap_or_else(|| format(&now()));
            (at, basis_of(&source))
        }
        None => {
            let at = match kind {
                // An explicit RestoreTime (rather than UseLatestRestorableTime) makes the recorded
                // instant exactly the one restored.
                ResourceKind::Instance => source.latest_restorable_time.clone().ok_or_else(|| {
                    Error::job(format!(
                        "{} reports no LatestRestorableTime: its automated backups are not ready yet (a new instance \
                         needs its first backup) — {}",
                        source.label(),
                        source.backups_advice()
                    ))
                })?,
                // A copy-on-write clone shares the cluster volume as it is when the clone is made.
                ResourceKind::Cluster => format(&now()),
            };
            let tags = vec![
                (TAG_EXECUTION.to_string(), input.run_id.clone()),
                (TAG_SOURCE.to_string(), source.identifier.clone()),
                (TAG_POINT_IN_TIME.to_string(), at.clone()),
                ("pgferry:temporary".to_string(), "true".to_string()),
            ];
            let spec = CloneSpec {
                identifier: &identifier,
                instance_identifier: writer.as_deref(),
                source: &source,
                instance_class: options.instance_class.as_deref(),
                tags,
            };
            match kind {
                ResourceKind::Instance => Box::pin(rds::restore_instance_clone(clients, &spec, &at)).await?,
                ResourceKind::Cluster => Box::pin(rds::restore_cluster_clone(clients, &spec)).await?,
            }
            tracing::info!(clone = %identifier, source = %source.identifier, point_in_time = %at, "clone requested");
            (at, basis_of(&source))
        }
    };
    if let (ResourceKind::Cluster, Some(_)) = (kind, &existing) {
        // The cluster exists; make sure its writer does too (the step may have died in between).
        let spec = CloneSpec {
            identifier: &identifier,
            instance_identifier: writer.as_deref(),
            source: &source,
            instance_class: options.instance_class.as_deref(),
            tags: vec![(TAG_EXECUTION.to_string(), input.run_id.clone())],
        };
        Box::pin(rds::restore_cluster_clone(clients, &spec)).await?;
    }
    // The clone's own preflight will write the preflight report: keep the live source's, with
    // its clone checks and estimate.
    let first: Option<PreflightOutput> = ctx.store.get_json(&keys::preflight(&input.run_id)).await.ok();
    if let Some(first) = &first {
        ctx.store.put_json(&keys::preflight_source(&input.run_id), first).await?;
    }
    let estimate = first
        .and_then(|p| p.checks.into_iter().find(|c| c.name == crate::step::CLONE_ESTIMATE_CHECK))
        .map(|c| c.detail);
    let wait_until = DateTime::from_secs(now().secs() + i64::from(options.effective_max_wait_minutes()) * 60);
    let record = CloneRecord {
        identifier: identifier.clone(),
        kind,
        instance_identifier: writer,
        source: source.label(),
        point_in_time,
        point_in_time_basis: basis,
        status: existing.map_or_else(|| "creating".to_string(), |e| e.status),
        available: false,
        poll_seconds: options.effective_poll_seconds(),
        wait_until: format(&wait_until),
        estimate,
        job: None,
    };
    ctx.store.put_json(&keys::clone(&input.run_id), &record).await?;
    Ok(record)
}

fn basis_of(source: &DbFacts) -> String {
    match source.kind {
        ResourceKind::Instance => {
            format!("LatestRestorableTime of {} when the restore was requested", source.label())
        }
        ResourceKind::Cluster => format!("creation of the copy-on-write clone of {}", source.label()),
    }
}

/// The job as later steps see it: the source keeps its name (its credentials, and the identity a
/// later refresh recognises, are the source's) but is dialled at the clone's endpoint, or at
/// `clone.host`/`port` in a local run.
fn clone_job(job: &Job, clone: &DbFacts) -> Result<Job> {
    let mut job = job.clone();
    let ep = &mut job.source;
    let options = ep.clone.take().unwrap_or_default();
    ep.consistency = None;
    (ep.host, ep.port) = match options.host {
        Some(host) => (Some(host), options.port),
        None => {
            let address = clone
                .address
                .clone()
                .ok_or_else(|| Error::Internal(format!("{} is available but reports no endpoint", clone.label())))?;
            (Some(address), clone.port)
        }
    };
    Ok(job)
}

/// The clone (or an Aurora clone's cluster) as RDS describes it; `None` when it does not exist.
async fn describe_clone_resource(
    clients: &crate::aws::Clients,
    kind: ResourceKind,
    identifier: &str,
) -> Result<Option<DbFacts>> {
    let found = match kind {
        ResourceKind::Instance => Box::pin(rds::describe_instance(clients, identifier)).await,
        ResourceKind::Cluster => Box::pin(rds::describe_cluster(clients, identifier)).await,
    };
    match found {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::AwsNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks at the clone once: returns the record with its status, `available` once it (and an
/// Aurora clone's writer) serves connections; fails when it never will or the wait is over.
pub async fn describe(ctx: &StepContext, input: &CloneInput) -> Result<CloneRecord> {
    refuse_local_override_in_lambda(ctx, &input.job)?;
    let mut record = input.clone.clone();
    let clients = ctx.aws.clients().await?;
    let found = describe_clone_resource(clients, record.kind, &record.identifier).await?;
    let Some(clone) = found else {
        return Err(clone_failed(&record, "is gone (deleted by someone else?)"));
    };
    let mut status = clone.status.clone();
    if record.kind == ResourceKind::Cluster && status == "available" {
        // A cluster serves nothing until its writer is available too.
        let writer = record.instance_identifier.clone().unwrap_or_else(|| writer_identifier(&record.identifier));
        status = match describe_clone_resource(clients, ResourceKind::Instance, &writer).await? {
            Some(w) => w.status,
            None => return Err(clone_failed(&record, &format!("has no writer instance {writer}"))),
        };
    }
    if FAILED.contains(&status.as_str()) {
        return Err(clone_failed(&record, &format!("ended in status `{status}`")));
    }
    record.available = status == "available";
    record.status = status;
    if record.available {
        record.job = Some(clone_job(&input.job, &clone)?);
    }
    if !record.available && parse(&record.wait_until).is_some_and(|until| now().secs() > until.secs()) {
        return Err(Error::Aws {
            operation: "rds:Describe".to_string(),
            resource: record.identifier.clone(),
            failure: crate::aws::AwsFailure::Other,
            code: Some("CloneNotAvailable".to_string()),
            message: format!(
                "the clone of {} is still `{}` after the wait allowed (until {}): raise `source.clone.maxWaitMinutes` \
                 (restores of large or busy instances replay a lot of WAL); the clone is deleted",
                record.source, record.status, record.wait_until
            ),
        });
    }
    tracing::info!(clone = %record.identifier, status = %record.status, "clone looked at");
    if record.available {
        ctx.store.put_json(&keys::clone(&input.run_id), &record).await?;
    }
    Ok(record)
}

fn clone_failed(record: &CloneRecord, what: &str) -> Error {
    Error::Aws {
        operation: "rds:Describe".to_string(),
        resource: record.identifier.clone(),
        failure: crate::aws::AwsFailure::Other,
        code: Some("CloneFailed".to_string()),
        message: format!(
            "the clone of {} {what}; see its events (aws rds describe-events --source-identifier {}); the clone is \
             deleted",
            record.source, record.identifier
        ),
    }
}

/// Deletes the run's clone (if any), records the point in time in the run report, and says what
/// the target equals.
pub async fn delete(ctx: &StepContext, input: &StepInput) -> Result<CloneDeleted> {
    // The job is the original one (failure before the clone was ready) or the rewritten one: both
    // name a resource of the clone's kind.
    let (kind, _) = source_resource(&input.job)?;
    let identifier = clone_identifier(&input.run_id);
    let writer = (kind == ResourceKind::Cluster).then(|| writer_identifier(&identifier));
    let clients = ctx.aws.clients().await?;
    if let Some(found) = describe_clone_resource(clients, kind, &identifier).await? {
        if let Some(other) = found.tags.get(TAG_EXECUTION).filter(|run| *run != &input.run_id) {
            return Err(Error::Internal(format!(
                "{} belongs to execution {other}, not {}: pgferry does not delete it",
                found.label(),
                input.run_id
            )));
        }
    }
    let deleted = Box::pin(rds::delete_clone(clients, kind, &identifier, writer.as_deref())).await?;
    let record: Option<CloneRecord> = ctx.store.get_json(&keys::clone(&input.run_id)).await.ok();
    let point_in_time = record.as_ref().filter(|r| r.available).map(|r| r.point_in_time.clone());
    let what = if deleted { "deleted" } else { "already gone" };
    let summary = match (&record, &point_in_time) {
        (Some(r), Some(at)) => format!("the target equals {} as of {at} (clone {identifier} {what})", r.source),
        _ => format!("clone {identifier} {what}"),
    };
    tracing::info!(clone = %identifier, deleted, "clone deleted");
    if let Some(mut record) = record {
        record.status = if deleted { "deleting".to_string() } else { "deleted".to_string() };
        record.job = None;
        ctx.store.put_json(&keys::clone(&input.run_id), &record).await?;
        note_in_report(ctx, &input.run_id, &record, &summary).await?;
    }
    Ok(CloneDeleted { identifier, deleted, point_in_time, summary })
}

/// Adds the clone to the run report (written before by the Report step) so the report says as
/// of when the target equals the source.
async fn note_in_report(ctx: &StepContext, run_id: &str, record: &CloneRecord, summary: &str) -> Result<()> {
    let key = keys::report(run_id);
    let Ok(mut report) = ctx.store.get_json::<Value>(&key).await else { return Ok(()) };
    let Some(fields) = report.as_object_mut() else { return Ok(()) };
    fields.insert(
        "consistency".to_string(),
        serde_json::json!({
            "mode": "clone",
            "clone": record.identifier,
            "source": record.source,
            "pointInTime": record.available.then(|| record.point_in_time.clone()),
            "pointInTimeBasis": record.point_in_time_basis,
            "estimate": record.estimate,
            "summary": summary,
        }),
    );
    ctx.store.put_json(&key, &report).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_identifiers_are_valid_rds_identifiers_stable_per_run() {
        for run in ["run-1", "Nightly_Refresh--2026-11-26T00:00:00Z", "---", "a".repeat(80).as_str(), "été"] {
            let id = clone_identifier(run);
            assert!(id.starts_with(CLONE_PREFIX), "{id}");
            assert!(id.len() <= 63 - 2, "{id} leaves room for the writer suffix");
            assert!(id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{id}");
            assert!(!id.contains("--") && !id.ends_with('-'), "{id}");
            assert_eq!(id, clone_identifier(run));
        }
        assert_ne!(clone_identifier("run-1"), clone_identifier("run-2"));
        assert!(clone_identifier("Nightly_Refresh").starts_with("pgferry-nightly-refresh-"));
    }

    fn clone_facts() -> DbFacts {
        serde_json::from_value(serde_json::json!({
            "kind": "instance", "identifier": "pgferry-run-1-00000000", "arn": null, "region": "eu-west-1",
            "status": "available", "engine": "postgres", "engineVersion": "15.4",
            "address": "pgferry-run-1-00000000.abc.eu-west-1.rds.amazonaws.com", "port": 5432,
            "masterUsername": "postgres", "masterSecretArn": null, "masterSecretStatus": null,
            "securityGroupIds": [], "vpcId": null, "subnetIds": [], "publiclyAccessible": false, "caCertificate": null,
            "iamAuthEnabled": false, "storageType": null, "allocatedStorageGib": 100, "maxAllocatedStorageGib": null,
            "parameterGroup": null, "parameterApplyStatus": null, "pendingModifications": [], "resourceId": null
        }))
        .unwrap()
    }

    #[test]
    fn the_rewritten_job_names_the_source_and_dials_the_clone() {
        let job = Job::from_json(
            r#"{"source":{"rdsInstance":"prod-db","database":"shop","host":"tunnel","port":6000,"consistency":"clone"},
                "target":{"rdsInstance":"stage","database":"shop"},"mode":"refresh"}"#,
        )
        .unwrap();
        let cloned = clone_job(&job, &clone_facts()).unwrap();
        assert_eq!(cloned.source.rds_instance.as_deref(), Some("prod-db"), "credentials and identity of the source");
        assert_eq!(cloned.source.host.as_deref(), Some("pgferry-run-1-00000000.abc.eu-west-1.rds.amazonaws.com"));
        assert_eq!(cloned.source.port, Some(5432));
        assert_eq!((cloned.source.consistency, cloned.source.clone.as_ref()), (None, None));
        assert_eq!((&cloned.target, cloned.mode), (&job.target, job.mode));
        cloned.validate().unwrap();

        let mut local = job.clone();
        local.source.clone =
            Some(crate::job::CloneOptions { host: Some("127.0.0.1".into()), port: Some(5999), ..Default::default() });
        let cloned = clone_job(&local, &clone_facts()).unwrap();
        assert_eq!((cloned.source.host.as_deref(), cloned.source.port), (Some("127.0.0.1"), Some(5999)));
    }

    #[test]
    fn the_local_clone_host_is_refused_in_lambda() {
        let job = Job::from_json(
            r#"{"source":{"rdsInstance":"prod-db","database":"shop","consistency":"clone","clone":{"host":"127.0.0.1"}},
                "target":{"rdsInstance":"stage","database":"shop"}}"#,
        )
        .unwrap();
        let mut ctx = StepContext::new(crate::store::ArtifactStore::local("/nonexistent"), Default::default());
        refuse_local_override_in_lambda(&ctx, &job).expect("local runs may dial a stand-in");
        ctx.in_lambda = true;
        let err = refuse_local_override_in_lambda(&ctx, &job).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("source.clone.host"), "{err}");
    }

    #[tokio::test]
    async fn the_preflight_function_routes_clone_actions_by_their_action() {
        let ctx = StepContext::new(crate::store::ArtifactStore::local("/nonexistent"), Default::default());
        let job = serde_json::json!({"source": {"url": "postgresql://u@a/d"}, "target": {"url": "postgresql://u@b/d"}});
        let create = serde_json::json!({"action": "createClone", "job": job, "runId": "r"});
        let err = crate::runner::invoke(&ctx, crate::runner::Function::Preflight, create, None).await.unwrap_err();
        assert!(err.to_string().contains("consistency"), "{err}");
        let unknown = serde_json::json!({"action": "cloneEverything", "job": job, "runId": "r"});
        let err = crate::runner::invoke(&ctx, crate::runner::Function::Preflight, unknown, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("pgferry-preflight request"), "{err}");
    }
}
