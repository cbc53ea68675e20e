//! Preflight checks through the AWS APIs: the RDS resources the job names, their parameter
//! groups, credentials, certificate authority, and the network path from the functions.
//!
//! Every finding names the AWS resource (instance, parameter group, security group, subnet,
//! secret) and, when something must change, the exact AWS CLI command that changes it.

use crate::aws::ca::{self, CaVerdict};
use crate::aws::network::{self, Api, Verdict};
use crate::aws::rds::{DbFacts, Parameters, ResourceKind};
use crate::context::{CredentialSource, StepContext};
use crate::error::ErrorKind;
use crate::job::{Endpoint, Job, Side};
use crate::pg::SslMode;
use crate::step::{Check, CheckStatus};

use super::{Requirements, SideState, fail, fail_from, pass, warn};

/// Statuses in which an instance serves connections normally.
const SERVING: &[&str] = &[
    "available",
    "backing-up",
    "storage-optimization",
    "configuring-enhanced-monitoring",
    "configuring-iam-database-auth",
    "configuring-log-exports",
    "maintenance",
    "modifying",
];
/// Statuses that pass by themselves: wait, then run the job.
const TRANSITIONAL: &[&str] =
    &["starting", "rebooting", "creating", "renaming", "resetting-master-credentials", "upgrading", "stopping"];

/// Resolves one side through AWS (when it names an RDS resource or a secret) and checks what AWS
/// says about it.
pub(crate) async fn prepare_side(
    ctx: &StepContext,
    job: &Job,
    side: Side,
    req: &Requirements,
    checks: &mut Vec<Check>,
) -> SideState {
    let ep = job.endpoint(side);
    let name = side.as_str();
    let mut state = SideState::new(side);
    let mut credentials_failed = false;
    // Nothing about a database outside the deployment's allow-lists is looked up (issue 23).
    if let Err(e) = ctx.check_allowed(job, side) {
        let advice = e.kind().advice().unwrap_or_default().to_string();
        checks.push(fail(&format!("{name}-allowed"), e.to_string(), &advice));
        return state;
    }
    if let Some((kind, id)) = ep.rds_resource() {
        let db = match ctx.rds_facts(kind, id).await {
            Ok(db) => db,
            Err(e) => {
                let label = match kind {
                    ResourceKind::Instance => format!("RDS instance {id}"),
                    ResourceKind::Cluster => format!("Aurora cluster {id}"),
                };
                let advice = if e.kind() == ErrorKind::AwsNotFound {
                    format!(
                        "no {label} in this account and region: check `{}` in the job and AWS_REGION",
                        if kind == ResourceKind::Instance { "rdsInstance" } else { "rdsCluster" }
                    )
                } else {
                    e.kind().advice().unwrap_or_default().to_string()
                };
                checks.push(fail(&format!("{name}-rds"), format!("{label}: {e}"), &advice));
                return state;
            }
        };
        checks.push(instance_check(side, &db));
        checks.push(pending_check(side, &db));
        match ctx.aws.clients().await {
            Ok(clients) => match crate::aws::rds::modified_parameters(clients, &db).await {
                Ok(modified) => state.params = Some(Parameters::effective(&db, &modified)),
                Err(e) => checks.push(fail_from(&format!("{name}-parameters"), &e)),
            },
            Err(e) => checks.push(fail_from(&format!("{name}-parameters"), &e)),
        }
        if let Some(params) = &state.params {
            checks.push(force_ssl_check(side, &db, params, ep.ssl_mode));
            if req.logical_replication && side == Side::Source {
                checks.push(logical_replication_parameter_check(&db, params));
            }
        }
        if ep.iam_auth {
            checks.push(iam_auth_check(side, &db));
        }
        checks.push(ca_check(side, &db, ep));
        let secret = ep
            .secret_arn
            .as_deref()
            .map(|s| (s.to_string(), false))
            .or_else(|| (!ep.iam_auth).then(|| db.master_secret_arn.clone().map(|a| (a, true))).flatten());
        match secret {
            Some((id, managed)) => credentials_failed = !secret_check(ctx, side, &id, managed, Some(&db), checks).await,
            None if !ep.iam_auth => {
                checks.push(fail(
                    &format!("{name}-secret"),
                    format!("{} has no RDS-managed master secret and the job gives no `secretArn`", db.label()),
                    &format!(
                        "give `secretArn` (a secret with username and password), set `iamAuth: true`, or let RDS \
                         manage the master password: aws rds {} {} --manage-master-user-password --apply-immediately",
                        modify_command(&db),
                        db.cli_identifier()
                    ),
                ));
                credentials_failed = true;
            }
            None => {}
        }
        state.facts.resource = Some(db.label());
        state.facts.status = Some(db.status.clone());
        state.facts.publicly_accessible = db.publicly_accessible;
        state.facts.ca_certificate = db.ca_certificate.clone();
        state.facts.force_ssl = state.params.as_ref().map(|p| p.force_ssl);
        state.rds = Some(db);
    } else if let Some(id) = &ep.secret_arn {
        credentials_failed = !secret_check(ctx, side, id, false, None, checks).await;
    }
    if credentials_failed {
        return state;
    }
    match ctx.resolve(job, side).await {
        Ok(resolved) => {
            state.facts.endpoint = format!("{}:{}", resolved.spec.host, resolved.spec.port);
            state.facts.credentials = Some(resolved.credential.describe());
            state.credential = Some(resolved.credential);
            state.spec = Some(resolved.spec);
        }
        Err(e) => checks.push(fail_from(&format!("{name}-connect"), &e)),
    }
    state
}

fn modify_command(db: &DbFacts) -> &'static str {
    match db.kind {
        ResourceKind::Instance => "modify-db-instance",
        ResourceKind::Cluster => "modify-db-cluster",
    }
}

/// Exists, is a PostgreSQL engine, and serves connections.
fn instance_check(side: Side, db: &DbFacts) -> Check {
    let name = format!("{}-rds", side.as_str());
    let storage = match (db.storage_type.as_deref(), db.allocated_storage_gib) {
        (Some(t), Some(gib)) => format!(", {t} {gib} GiB"),
        (Some(t), None) => format!(", {t}"),
        _ => String::new(),
    };
    let endpoint = match (&db.address, db.port) {
        (Some(a), Some(p)) => format!(", endpoint {a}:{p}"),
        _ => String::new(),
    };
    let detail = format!("{}: {} {}, {}{storage}{endpoint}", db.label(), db.engine, db.engine_version, db.status);
    if db.engine != "postgres" && db.engine != "aurora-postgresql" {
        return fail(
            &name,
            detail,
            "pgferry copies PostgreSQL databases: name an RDS for PostgreSQL instance or an Aurora PostgreSQL cluster",
        );
    }
    let status = db.status.as_str();
    if SERVING.contains(&status) {
        return pass(&name, detail);
    }
    if status == "stopped" {
        let start = match db.kind {
            ResourceKind::Instance => format!("aws rds start-db-instance {}", db.cli_identifier()),
            ResourceKind::Cluster => format!("aws rds start-db-cluster {}", db.cli_identifier()),
        };
        return fail(&name, detail, &format!("start it and wait until it is available: {start}"));
    }
    if TRANSITIONAL.contains(&status) {
        return warn(&name, detail, "wait until the status is `available` before starting the job");
    }
    fail(&name, detail, "the instance cannot serve connections in this state; see its events in the RDS console")
}

/// Parameter changes or modifications waiting for a reboot (RDS-CASES T44).
fn pending_check(side: Side, db: &DbFacts) -> Check {
    let name = format!("{}-pending-reboot", side.as_str());
    let group = db.parameter_group.as_deref().unwrap_or("?");
    if db.parameter_apply_status.as_deref() == Some("pending-reboot") {
        let reboot = match db.kind {
            ResourceKind::Instance => format!("aws rds reboot-db-instance {}", db.cli_identifier()),
            ResourceKind::Cluster => {
                format!("aws rds reboot-db-instance --db-instance-identifier <writer of {}>", db.identifier)
            }
        };
        return warn(
            &name,
            format!("parameter group {group} of {} has changes that take effect only after a reboot", db.label()),
            &format!("reboot in a quiet moment (it drops every connection for a minute or two): {reboot}"),
        );
    }
    if !db.pending_modifications.is_empty() {
        return warn(
            &name,
            format!("{} has pending modifications: {}", db.label(), db.pending_modifications.join(", ")),
            "they are applied in the next maintenance window and may restart the instance during the copy; apply them \
             first (--apply-immediately) or keep the window clear of the job",
        );
    }
    pass(&name, format!("parameter group {group} in sync, no pending modifications"))
}

/// `rds.force_ssl` against the job's `sslMode` (RDS-CASES T50).
fn force_ssl_check(side: Side, db: &DbFacts, params: &Parameters, ssl_mode: Option<SslMode>) -> Check {
    let name = format!("{}-force-ssl", side.as_str());
    let group = db.parameter_group.as_deref().unwrap_or("default");
    let origin = if params.force_ssl_set { format!("set in {group}") } else { "engine default".to_string() };
    let mode = ssl_mode.unwrap_or(SslMode::VerifyFull);
    match (params.force_ssl, mode) {
        (true, SslMode::Disable) => fail(
            &name,
            format!("rds.force_ssl=1 ({origin}) on {} but the job says sslMode `disable`", db.label()),
            "the server refuses unencrypted connections: remove `sslMode` (verify-full is the default) or set it to \
             verify-full; pg_hba.conf cannot be edited on RDS",
        ),
        (false, SslMode::Disable | SslMode::Prefer) => warn(
            &name,
            format!(
                "rds.force_ssl=0 ({origin}) on {} and sslMode `{}`: the copy may travel unencrypted",
                db.label(),
                mode.as_str()
            ),
            "remove `sslMode` (verify-full is the default)",
        ),
        (force, _) => pass(
            &name,
            format!("rds.force_ssl={} ({origin}); pgferry connects with sslmode {}", u8::from(force), mode.as_str()),
        ),
    }
}

/// `rds.logical_replication` on the source, for continuous mode (RDS-CASES T44).
fn logical_replication_parameter_check(db: &DbFacts, params: &Parameters) -> Check {
    let name = "source-logical-replication";
    if params.logical_replication {
        if db.parameter_apply_status.as_deref() == Some("pending-reboot") {
            return fail(
                name,
                format!("rds.logical_replication=1 in {} but not in effect until {} reboots", group(db), db.identifier),
                &format!("reboot (drops connections): aws rds reboot-db-instance {}", db.cli_identifier()),
            );
        }
        return pass(name, format!("rds.logical_replication=1 in {}", group(db)));
    }
    fail(
        name,
        format!(
            "rds.logical_replication=0 on {} (parameter group {}): the source cannot publish changes",
            db.label(),
            group(db)
        ),
        &parameter_change_advice(db, "rds.logical_replication", "1"),
    )
}

fn group(db: &DbFacts) -> &str {
    db.parameter_group.as_deref().unwrap_or("default")
}

/// The commands that set a static parameter: in the DB's own parameter group, or — when it uses
/// an RDS default group, which cannot be modified — in a new group attached to it; then a reboot.
pub(crate) fn parameter_change_advice(db: &DbFacts, parameter: &str, value: &str) -> String {
    let (group_kind, family_hint) = match db.kind {
        ResourceKind::Instance => ("db-parameter-group", format!("{}{}", db.engine, db.major_version().unwrap_or(15))),
        ResourceKind::Cluster => {
            ("db-cluster-parameter-group", format!("{}{}", db.engine, db.major_version().unwrap_or(15)))
        }
    };
    let mut steps = Vec::new();
    let target_group = if db.uses_default_parameter_group() {
        let new = format!("{}-pgferry", db.identifier);
        steps.push(format!(
            "aws rds create-{group_kind} --{group_kind}-name {new} --{group_kind}-family {family_hint} --description pgferry"
        ));
        steps.push(format!("aws rds {} {} --{group_kind}-name {new}", modify_command(db), db.cli_identifier()));
        new
    } else {
        group(db).to_string()
    };
    steps.push(format!(
        "aws rds modify-{group_kind} --{group_kind}-name {target_group} --parameters \
         \"ParameterName={parameter},ParameterValue='{value}',ApplyMethod=pending-reboot\""
    ));
    let reboot_id = match db.kind {
        ResourceKind::Instance => db.cli_identifier(),
        ResourceKind::Cluster => format!("--db-instance-identifier <writer of {}>", db.identifier),
    };
    steps.push(format!("aws rds reboot-db-instance {reboot_id} (drops connections)"));
    steps.join("; then ")
}

/// IAM database authentication enabled when the job asks for it.
fn iam_auth_check(side: Side, db: &DbFacts) -> Check {
    let name = format!("{}-iam-auth", side.as_str());
    if db.iam_auth_enabled {
        return pass(&name, format!("IAM database authentication is enabled on {}", db.label()));
    }
    fail(
        &name,
        format!("the job asks for iamAuth but IAM database authentication is disabled on {}", db.label()),
        &format!(
            "enable it: aws rds {} {} --enable-iam-database-authentication --apply-immediately; the user needs \
             `GRANT rds_iam TO <user>` and the function role rds-db:connect",
            modify_command(db),
            db.cli_identifier()
        ),
    )
}

/// The instance's CA is in the embedded bundle, so verify-full works (RDS-CASES T49).
fn ca_check(side: Side, db: &DbFacts, ep: &Endpoint) -> Check {
    let name = format!("{}-ca-certificate", side.as_str());
    if let Some(file) = &ep.ssl_root_cert {
        return pass(&name, format!("sslRootCert {} replaces the embedded RDS bundle", file.display()));
    }
    let mode = ep.ssl_mode.unwrap_or(SslMode::VerifyFull);
    if !matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        return warn(
            &name,
            format!("sslMode {}: the server's certificate is not verified", mode.as_str()),
            "remove `sslMode` so that the certificate is verified against the embedded RDS bundle",
        );
    }
    let Some(identifier) = db.ca_certificate.as_deref() else {
        return warn(
            &name,
            format!("{} reports no CACertificateIdentifier", db.label()),
            "check the instance's certificate authority in the RDS console",
        );
    };
    match ca::check(identifier, &db.region) {
        CaVerdict::Trusted { root } => pass(&name, format!("{identifier}: root `{root}` is in the embedded bundle")),
        CaVerdict::NotInBundle { identifier } => fail(
            &name,
            format!(
                "{} uses CA {identifier}, which is not in the embedded Amazon RDS bundle: verify-full would fail",
                db.label()
            ),
            &format!(
                "rotate to a current CA (restarts the instance unless it supports rotation without restart): aws rds \
                 {} {} --ca-certificate-identifier rds-ca-rsa2048-g1 --apply-immediately; or give `sslRootCert` with \
                 the CA's certificate",
                modify_command(db),
                db.cli_identifier()
            ),
        ),
    }
}

/// Reads the secret; returns whether it is usable.
async fn secret_check(
    ctx: &StepContext,
    side: Side,
    id: &str,
    managed: bool,
    db: Option<&DbFacts>,
    checks: &mut Vec<Check>,
) -> bool {
    let name = format!("{}-secret", side.as_str());
    match ctx.secret(id).await {
        Ok(secret) => {
            let whose = if managed { "RDS-managed secret" } else { "secret" };
            let user = secret.username.as_deref().map(|u| format!(" (user {u})")).unwrap_or_default();
            let status = db.and_then(|d| d.master_secret_status.as_deref()).filter(|_| managed);
            match status {
                Some(s) if s != "active" => checks.push(warn(
                    &name,
                    format!("{whose} {id} is readable{user} but its status is `{s}`"),
                    "a rotation may be under way; pgferry re-reads the secret once when the password is rejected",
                )),
                _ => checks.push(pass(&name, format!("{whose} {id} is readable{user}"))),
            }
            true
        }
        Err(e) => {
            let advice = match e.kind() {
                ErrorKind::AwsAccessDenied => format!(
                    "allow secretsmanager:GetSecretValue on {id} to the functions' role (and kms:Decrypt on its KMS key)"
                ),
                ErrorKind::AwsNotFound => format!("no secret {id} in this account and region: check `secretArn`"),
                kind => kind.advice().unwrap_or("check the secret").to_string(),
            };
            checks.push(fail(&name, e.to_string(), &advice));
            false
        }
    }
}

/// Network-path checks for every side named by an RDS resource.
pub(crate) async fn network_checks(ctx: &StepContext, job: &Job, sides: &mut [SideState], checks: &mut Vec<Check>) {
    if sides.iter().all(|s| s.rds.is_none()) {
        return;
    }
    let Some(net) = ctx.network_of(job) else {
        for state in sides.iter_mut() {
            if let Some(db) = &state.rds {
                let check = unplaced_check(ctx, job.endpoint(state.side), state.side, db);
                state.facts.network = Some(check.detail.clone());
                state.facts.network_open = (check.status == CheckStatus::Fail).then_some(false);
                checks.push(check);
            }
        }
        return;
    };
    let clients = match ctx.aws.clients().await {
        Ok(c) => c,
        Err(e) => {
            checks.push(fail_from("functions-network", &e));
            return;
        }
    };
    let func = match network::load_function(clients, &net.security_group_ids, &net.subnet_ids).await {
        Ok(f) => f,
        Err(e) => {
            let advice = if e.kind() == ErrorKind::AwsNotFound {
                "a security group or subnet of `network` (or of the deployment's VpcConfig) does not exist".to_string()
            } else {
                e.kind().advice().unwrap_or_default().to_string()
            };
            checks.push(fail("functions-network", e.to_string(), &advice));
            return;
        }
    };
    let vpcs: std::collections::BTreeSet<&str> = func.subnets.iter().map(|s| s.vpc_id.as_str()).collect();
    if vpcs.len() > 1 {
        checks.push(fail(
            "functions-network",
            format!(
                "the functions' subnets are in {} VPCs ({})",
                vpcs.len(),
                vpcs.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "a Lambda function's subnets must all be in one VPC",
        ));
        return;
    }
    let mut apis = vec![Api::Rds];
    if sides.iter().any(|s| matches!(s.credential, Some(CredentialSource::Secret { .. }))) {
        apis.push(Api::SecretsManager);
    }
    let finding = network::analyse_api_access(&func, clients.region(), &apis);
    checks.push(finding_check("functions-aws-apis", &finding));
    for state in sides.iter_mut() {
        let Some(db) = &state.rds else { continue };
        let name = format!("{}-network", state.side.as_str());
        let port = db.port.unwrap_or(crate::pg::config::DEFAULT_PORT);
        let placement = match network::load_db(clients, db, port).await {
            Ok(p) => p,
            Err(e) => {
                checks.push(fail_from(&name, &e));
                continue;
            }
        };
        let mut finding = network::analyse_path(&func, &placement);
        if let Some(host) = &job.endpoint(state.side).host {
            finding.detail.push_str(&format!(
                " (the job dials {host}; the path analysed is to {}'s own endpoint)",
                db.identifier
            ));
        }
        state.facts.network = Some(match finding.fixes.first() {
            Some(fix) => format!("{} — fix: {fix}", finding.detail),
            None => finding.detail.clone(),
        });
        state.facts.network_open = match finding.verdict {
            Verdict::Open => Some(true),
            Verdict::Blocked => Some(false),
            Verdict::Unknown => None,
        };
        checks.push(finding_check(&name, &finding));
    }
}

fn finding_check(name: &str, finding: &network::Finding) -> Check {
    let advice = finding.fixes.join("; ");
    match finding.verdict {
        Verdict::Open => pass(name, finding.detail.clone()),
        Verdict::Unknown => {
            warn(name, finding.detail.clone(), if advice.is_empty() { "check the path by hand" } else { &advice })
        }
        Verdict::Blocked => fail(name, finding.detail.clone(), &advice),
    }
}

/// The path when it is not known where the functions run.
fn unplaced_check(ctx: &StepContext, ep: &Endpoint, side: Side, db: &DbFacts) -> Check {
    let name = format!("{}-network", side.as_str());
    let public = db.publicly_accessible == Some(true);
    if ctx.in_lambda {
        // Lambda does not tell a function its own VPC configuration; the deployment passes it in
        // PGFERRY_SECURITY_GROUP_IDS / PGFERRY_SUBNET_IDS. Without them the path is unknown.
        let vpc = db.vpc_id.as_deref().unwrap_or("the instance's VPC");
        let reach = if public {
            format!("{} is publicly accessible: outside a VPC the functions reach it over the internet", db.label())
        } else {
            format!("{} is not publicly accessible: the functions must run in {vpc} or a peered VPC", db.label())
        };
        return warn(
            &name,
            format!("the deployment does not say where the functions run (PGFERRY_SUBNET_IDS unset); {reach}"),
            &format!(
                "attach the functions to {vpc} (VpcConfig: subnets that reach the instance, a security group that                  {} admit on port {}) and pass the VpcConfig as PGFERRY_SECURITY_GROUP_IDS / PGFERRY_SUBNET_IDS",
                db.security_group_ids.join(", "),
                db.port.unwrap_or(5432)
            ),
        );
    }
    if let Some(host) = &ep.host {
        return pass(
            &name,
            format!("local run through {host}; give `network` in the job to analyse {}'s VPC path", db.label()),
        );
    }
    if public {
        return pass(
            &name,
            format!(
                "local run; {} is publicly accessible (its security groups must admit this machine's address)",
                db.label()
            ),
        );
    }
    fail(
        &name,
        format!(
            "local run, and {} is not publicly accessible: its private endpoint is not reachable from here",
            db.label()
        ),
        "connect through a tunnel or bastion and give its address as `host`/`port`, or run pgferry in AWS",
    )
}

pub use crate::step::CLONE_ESTIMATE_CHECK;

/// Typical time to create a clone, by kind: stated in the estimate, never measured.
const RESTORE_TIME_INSTANCE: &str =
    "an RDS point-in-time restore typically takes 10-30 minutes, more for large or write-heavy instances (WAL replay)";
const RESTORE_TIME_CLUSTER: &str = "an Aurora copy-on-write clone typically takes 5-15 minutes (cluster plus writer)";

/// Checks of `"consistency": "clone"` on the source (after the network checks, whose verdict on
/// the source applies to the clone: same subnet group and security groups).
///
/// Permissions: the `Describe*` calls made here prove read access; restoring, tagging and deleting
/// `pgferry-*` resources cannot be tried without creating something, and come from the template's
/// clone policy (docs/deploy.md).
pub(crate) fn clone_checks(ctx: &StepContext, job: &Job, sides: &[SideState], checks: &mut Vec<Check>) {
    let ep = &job.source;
    if !ep.uses_clone() {
        return;
    }
    let Some(state) = sides.iter().find(|s| s.side == Side::Source) else { return };
    let Some(db) = &state.rds else {
        // The source's own RDS check failed and says why.
        return;
    };
    checks.push(clone_backups_check(db));
    checks.push(clone_network_check(ctx, job, db, state));
    // An encrypted source's clone is encrypted with the same key: RDS creates a grant on it for
    // the clone, as the caller. An AWS-managed key (aws/rds) allows that to the account's RDS
    // users; a customer-managed key's policy (or the role, where it delegates to IAM) must.
    let kms = db.kms_key_id.as_deref().map_or(String::new(), |key| {
        format!(
            "; the source is encrypted: restoring needs kms:CreateGrant and kms:DescribeKey on {key} (the template's \
             CloneKmsKeyArns, when it is a customer-managed key whose policy delegates to IAM; nothing for aws/rds)"
        )
    });
    checks.push(pass(
        "source-clone-permissions",
        format!(
            "rds:Describe* on {} works; rds:{}, rds:AddTagsToResource and rds:Delete* on pgferry-* are granted by the \
             template's clone policy and cannot be tried without creating a clone{kms}",
            db.label(),
            match db.kind {
                ResourceKind::Instance => "RestoreDBInstanceToPointInTime",
                ResourceKind::Cluster => "RestoreDBClusterToPointInTime, rds:CreateDBInstance",
            }
        ),
    ));
    checks.push(clone_estimate(ep, db));
}

/// Point-in-time restore needs automated backups.
fn clone_backups_check(db: &DbFacts) -> Check {
    let name = "source-clone-backups";
    match db.backup_retention_days {
        Some(0) => fail(
            name,
            format!("{} keeps no automated backups (BackupRetentionPeriod 0): it cannot be cloned", db.label()),
            &db.backups_advice(),
        ),
        Some(days) => {
            let latest = db
                .latest_restorable_time
                .as_deref()
                .map(|t| format!("; latest restorable time {t}"))
                .unwrap_or_default();
            if db.kind == ResourceKind::Instance && db.latest_restorable_time.is_none() {
                return warn(
                    name,
                    format!("{} keeps backups {days} day(s) but reports no latest restorable time yet", db.label()),
                    "a new instance can be restored only after its first automated backup completes; wait for it",
                );
            }
            pass(name, format!("{} keeps automated backups {days} day(s){latest}", db.label()))
        }
        None => warn(
            name,
            format!("{} does not report its backup retention", db.label()),
            "check that automated backups are on (BackupRetentionPeriod > 0): the clone is restored from them",
        ),
    }
}

/// The clone gets the source's subnet group and security groups and is never publicly accessible.
fn clone_network_check(ctx: &StepContext, job: &Job, db: &DbFacts, state: &SideState) -> Check {
    let name = "source-clone-network";
    let placement = format!(
        "the clone is created in subnet group {} with security groups {}, not publicly accessible",
        db.subnet_group.as_deref().unwrap_or("(the source's)"),
        if db.security_group_ids.is_empty() { "(the source's)".to_string() } else { db.security_group_ids.join(", ") }
    );
    let local_host = job.source.clone.as_ref().and_then(|o| o.host.as_deref());
    if let Some(host) = local_host {
        return pass(name, format!("{placement}; this local run dials it through {host}"));
    }
    if !ctx.in_lambda && ctx.network_of(job).is_none() {
        return fail(
            name,
            format!("{placement}: its private endpoint is not reachable from this machine"),
            "run pgferry in AWS (the functions in the source's VPC), or give `source.clone.host`/`port` through a \
             tunnel",
        );
    }
    match (state.facts.network_open, &state.facts.network) {
        (Some(false), Some(path)) => fail(
            name,
            format!("{placement}; the path from the functions to the source is blocked, and so is the clone's"),
            path,
        ),
        (Some(true), _) => pass(name, format!("{placement}; the functions reach the source's security groups")),
        _ => warn(
            name,
            format!("{placement}; the path from the functions could not be established"),
            "see source-network: the clone is reached exactly as the source is",
        ),
    }
}

/// What the clone will cost in time and money, honestly labelled an estimate (prices are not
/// available offline).
fn clone_estimate(ep: &Endpoint, db: &DbFacts) -> Check {
    let class = ep
        .clone
        .as_ref()
        .and_then(|o| o.instance_class.clone())
        .or_else(|| db.instance_class.clone())
        .unwrap_or_else(|| "the source's instance class".to_string());
    let (storage, time) = match db.kind {
        ResourceKind::Instance => (
            match (db.storage_type.as_deref(), db.allocated_storage_gib) {
                (Some(t), Some(gib)) => format!("{gib} GiB {t} storage"),
                (None, Some(gib)) => format!("{gib} GiB storage"),
                _ => "the source's storage".to_string(),
            },
            RESTORE_TIME_INSTANCE,
        ),
        ResourceKind::Cluster => {
            ("shared copy-on-write storage (only pages changed later are billed)".to_string(), RESTORE_TIME_CLUSTER)
        }
    };
    pass(
        CLONE_ESTIMATE_CHECK,
        format!(
            "estimate: a temporary clone of class {class} with {storage} runs from before the schema step until the \
             report, billed per hour of instance and storage (see the RDS price list for {class}); {time}"
        ),
    )
}

/// Source and target must not be the same RDS resource (RDS-CASES T59), whatever the job calls
/// them. Returns a check only when both are RDS resources.
pub(crate) fn same_resource_check(sides: &[SideState]) -> Option<Check> {
    let (Some(s), Some(t)) = (sides.first().and_then(|s| s.rds.as_ref()), sides.get(1).and_then(|s| s.rds.as_ref()))
    else {
        return None;
    };
    // An identifier names one resource per account and region; a cluster and one of its
    // instances are caught by the server identity check once connected.
    let same = s.kind == t.kind && s.identifier == t.identifier && s.region == t.region;
    same.then(|| {
        fail(
            "distinct-servers",
            format!("source and target are both {}", s.label()),
            "name two different instances: roles are shared by every database of a server, so the globals step would \
             write to the source",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(patch: serde_json::Value) -> DbFacts {
        let mut base = serde_json::json!({
            "kind": "instance", "identifier": "prod-db", "arn": "arn:aws:rds:eu-west-1:1:db:prod-db",
            "region": "eu-west-1", "status": "available", "engine": "postgres", "engineVersion": "15.4",
            "address": "prod-db.x.eu-west-1.rds.amazonaws.com", "port": 5432, "masterUsername": "postgres",
            "masterSecretArn": "arn:s", "masterSecretStatus": "active", "securityGroupIds": ["sg-db"],
            "vpcId": "vpc-1", "subnetIds": ["subnet-1"], "publiclyAccessible": false,
            "caCertificate": "rds-ca-rsa2048-g1", "iamAuthEnabled": false, "storageType": "gp3",
            "allocatedStorageGib": 100, "maxAllocatedStorageGib": null, "parameterGroup": "default.postgres15",
            "parameterApplyStatus": "in-sync", "pendingModifications": [], "resourceId": "db-1"
        });
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn t44_a_parameter_group_waiting_for_a_reboot_is_a_warning_with_the_reboot_command() {
        let c = pending_check(Side::Source, &db(serde_json::json!({"parameterApplyStatus": "pending-reboot"})));
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.advice.unwrap().contains("aws rds reboot-db-instance --db-instance-identifier prod-db"));
        let c = pending_check(Side::Source, &db(serde_json::json!({"pendingModifications": ["EngineVersion"]})));
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.contains("EngineVersion"));
        assert_eq!(pending_check(Side::Source, &db(serde_json::json!({}))).status, CheckStatus::Pass);
    }

    #[test]
    fn instance_states_pass_wait_or_fail() {
        assert_eq!(instance_check(Side::Source, &db(serde_json::json!({}))).status, CheckStatus::Pass);
        assert_eq!(
            instance_check(Side::Source, &db(serde_json::json!({"status": "rebooting"}))).status,
            CheckStatus::Warn
        );
        assert_eq!(
            instance_check(Side::Source, &db(serde_json::json!({"status": "storage-full"}))).status,
            CheckStatus::Fail
        );
        let mysql = instance_check(Side::Source, &db(serde_json::json!({"engine": "mysql"})));
        assert_eq!(mysql.status, CheckStatus::Fail);
    }

    #[test]
    fn parameter_changes_on_a_default_group_start_with_a_new_group() {
        let advice = parameter_change_advice(&db(serde_json::json!({})), "rds.logical_replication", "1");
        assert!(advice.starts_with(
            "aws rds create-db-parameter-group --db-parameter-group-name prod-db-pgferry --db-parameter-group-family postgres15"
        ));
        assert!(
            advice.contains(
                "modify-db-instance --db-instance-identifier prod-db --db-parameter-group-name prod-db-pgferry"
            )
        );
        let custom = parameter_change_advice(&db(serde_json::json!({"parameterGroup": "shop"})), "rds.force_ssl", "1");
        assert!(custom.starts_with("aws rds modify-db-parameter-group --db-parameter-group-name shop"), "{custom}");
    }

    #[test]
    fn t50_force_ssl_off_with_an_unverified_mode_is_a_warning() {
        let params = Parameters {
            force_ssl: false,
            logical_replication: false,
            shared_preload_libraries: vec![],
            force_ssl_set: true,
            logical_replication_set: false,
            shared_preload_libraries_set: false,
        };
        let c = force_ssl_check(Side::Target, &db(serde_json::json!({})), &params, Some(SslMode::Prefer));
        assert_eq!(c.status, CheckStatus::Warn);
        let c = force_ssl_check(Side::Target, &db(serde_json::json!({})), &params, None);
        assert_eq!(c.status, CheckStatus::Pass);
    }

    #[test]
    fn t49_an_unverified_sslmode_is_a_warning_and_the_ca_is_looked_up_in_the_instance_region() {
        let ep = Endpoint { ssl_mode: Some(SslMode::Require), ..Endpoint::default() };
        assert_eq!(ca_check(Side::Source, &db(serde_json::json!({})), &ep).status, CheckStatus::Warn);
        let c =
            ca_check(Side::Source, &db(serde_json::json!({"caCertificate": "rds-ca-ecc384-g1"})), &Endpoint::default());
        assert!(c.detail.contains("Amazon RDS eu-west-1 Root CA ECC384 G1"), "{}", c.detail);
    }

    #[test]
    fn without_a_known_placement_a_private_instance_fails_from_a_laptop_and_warns_from_lambda() {
        let store = crate::store::ArtifactStore::local("/nonexistent");
        let mut ctx = StepContext::new(store, Default::default());
        let private = db(serde_json::json!({}));
        let c = unplaced_check(&ctx, &Endpoint::default(), Side::Source, &private);
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.advice.unwrap().contains("tunnel"));
        let tunnel = Endpoint { host: Some("localhost".into()), ..Endpoint::default() };
        assert_eq!(unplaced_check(&ctx, &tunnel, Side::Source, &private).status, CheckStatus::Pass);
        ctx.in_lambda = true;
        let c = unplaced_check(&ctx, &Endpoint::default(), Side::Source, &private);
        assert_eq!(c.status, CheckStatus::Warn, "the deployment may just not have said where it runs");
        assert!(c.advice.unwrap().contains("attach the functions to vpc-1"));
    }
}
