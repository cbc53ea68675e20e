//! Preflight: find what would make the run fail, before anything is written.
//!
//! Every problem becomes a [`Check`] with advice instead of an exception, so the user reads all of
//! them at once; a `fail` stops the execution at the state machine's Choice, a `warn` lets it
//! continue. Preflight only reads: `Describe*` and `GetSecretValue` calls against AWS, and
//! catalog queries against the databases. It never creates the target database or anything in it.
//!
//! The checks come in three groups:
//! - [`cloud`]: the RDS resources the job names (state, pending reboots, parameter groups,
//!   credentials, certificate authority) and the network path from where the functions run;
//! - [`db`]: inside the databases (versions, privileges, RLS, extensions, locales, keys, large
//!   objects, activity, connection headroom, replication prerequisites);
//! - across both (same server under two names, extensions against the target's preloaded
//!   libraries, storage against the source's size).
//!
//! What preflight learns about how each side is reached is kept in the report
//! ([`EndpointFacts`]) so that a connection failure in any later step can be explained with it
//! ([`explain`]).

pub mod cloud;
pub mod db;

use std::time::Instant;

use crate::aws::rds::{DbFacts, Parameters};
use crate::context::{CredentialSource, StepContext};
use crate::error::Result;
use crate::job::{Job, Mode, Side};
use crate::pg::ConnSpec;
pub use crate::step::explain;
use crate::step::{CheckStatus, EndpointFacts, PreflightOutput, StepInput, keys};
pub(crate) use crate::step::{fail, fail_from, pass, warn};

/// Oldest source server pgferry supports (generated columns, `hashtextextended`).
pub const MIN_SERVER_VERSION_NUM: i32 = 120000;

/// What the run needs beyond a one-off snapshot copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Logical replication from the source (continuous mode): `rds.logical_replication`,
    /// `wal_level`, free slots and WAL senders, the replication role, replica identity.
    pub logical_replication: bool,
}

impl Requirements {
    /// What the job's mode needs.
    pub fn of(job: &Job) -> Self {
        match job.mode {
            Mode::Snapshot | Mode::Refresh => Self { logical_replication: false },
            Mode::Continuous => Self { logical_replication: true },
        }
    }
}

/// One side while preflight runs.
#[derive(Debug)]
pub(crate) struct SideState {
    pub side: Side,
    /// Connection spec with its password, when the side could be resolved.
    pub spec: Option<ConnSpec>,
    pub rds: Option<DbFacts>,
    pub params: Option<Parameters>,
    pub credential: Option<CredentialSource>,
    pub facts: EndpointFacts,
}

impl SideState {
    fn new(side: Side) -> Self {
        Self {
            side,
            spec: None,
            rds: None,
            params: None,
            credential: None,
            facts: EndpointFacts {
                side,
                endpoint: String::new(),
                resource: None,
                status: None,
                network: None,
                network_open: None,
                publicly_accessible: None,
                force_ssl: None,
                ca_certificate: None,
                credentials: None,
            },
        }
    }
}

/// Runs all checks the job's mode needs and stores the preflight report.
pub async fn run(ctx: &StepContext, input: &StepInput) -> Result<PreflightOutput> {
    run_with(ctx, input, Requirements::of(&input.job)).await
}

/// Runs all checks for the given requirements and stores the preflight report.
pub async fn run_with(ctx: &StepContext, input: &StepInput, req: Requirements) -> Result<PreflightOutput> {
    let started = Instant::now();
    let job = &input.job;
    job.validate()?;
    let mut checks = Vec::new();

    let mut sides = Vec::with_capacity(2);
    for side in [Side::Source, Side::Target] {
        sides.push(cloud::prepare_side(ctx, job, side, &req, &mut checks).await);
    }
    cloud::network_checks(ctx, job, &mut sides, &mut checks).await;
    cloud::clone_checks(ctx, job, &sides, &mut checks);
    match cloud::same_resource_check(&sides) {
        Some(same) => checks.push(same),
        None => db::run(ctx, input, &req, &mut sides, &mut checks).await?,
    }

    let failures: Vec<String> =
        checks.iter().filter(|c| c.status == CheckStatus::Fail).map(|c| format!("{}: {}", c.name, c.detail)).collect();
    let output = PreflightOutput {
        ok: failures.is_empty(),
        summary: failures.join("; "),
        checks,
        report_key: keys::preflight(&input.run_id),
        facts: sides.into_iter().map(|s| s.facts).collect(),
    };
    ctx.store.put_json(&output.report_key, &output).await?;
    tracing::info!(ok = output.ok, elapsed_ms = started.elapsed().as_millis() as u64, "preflight done");
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn facts() -> EndpointFacts {
        EndpointFacts {
            side: Side::Source,
            endpoint: "prod-db.x.us-east-1.rds.amazonaws.com:5432".into(),
            resource: Some("RDS instance prod-db".into()),
            status: Some("available".into()),
            network: Some("same VPC vpc-1: sg-0abc allow only sg-0def (sg-0abc) on tcp 5432 — fix: aws ec2 …".into()),
            network_open: Some(false),
            publicly_accessible: Some(false),
            force_ssl: Some(true),
            ca_certificate: Some("rds-ca-rsa2048-g1".into()),
            credentials: Some("RDS-managed secret arn:s".into()),
        }
    }

    #[test]
    fn t54_connection_failures_are_explained_with_preflight_facts() {
        let f = facts();
        assert!(explain(&f, ErrorKind::ConnectTimeout).unwrap().contains("sg-0abc allow only sg-0def"));
        assert!(explain(&f, ErrorKind::EncryptionRequired).unwrap().contains("rds.force_ssl=1"));
        assert!(explain(&f, ErrorKind::AuthFailed).unwrap().contains("RDS-managed secret arn:s"));
        assert!(explain(&f, ErrorKind::ConnectionRefused).unwrap().contains("`available`"));
        assert_eq!(explain(&f, ErrorKind::Transient), None);
    }
}
