//! What RDS says about an instance or an Aurora cluster: endpoint, state, network placement,
//! managed secret, TLS certificate authority, storage, and its parameter group's settings.
//!
//! Everything is read with `Describe*` calls, except for the temporary clones of `"consistency":
//! "clone"` ([`restore_instance_clone`], [`restore_cluster_clone`], [`delete_clone`]), which only
//! ever create or delete resources named with [`CLONE_PREFIX`].
//!
//! Parameter groups report only what differs from the engine default (always so in the emulator,
//! and for user groups on AWS when filtered), so an absent parameter means "engine default" and the
//! defaults pgferry relies on are written down here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Clients, region_of_arn, sdk_error};
use crate::error::Result;

/// An instance or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResourceKind {
    Instance,
    Cluster,
}

/// The facts pgferry uses about one RDS database server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DbFacts {
    pub kind: ResourceKind,
    /// `DBInstanceIdentifier` or `DBClusterIdentifier`.
    pub identifier: String,
    pub arn: Option<String>,
    /// Region of the resource (from its ARN, else the client's).
    pub region: String,
    /// `available`, `stopped`, `rebooting`…
    pub status: String,
    /// `postgres` or `aurora-postgresql`.
    pub engine: String,
    pub engine_version: String,
    /// Endpoint address and port (the cluster's writer endpoint for a cluster).
    pub address: Option<String>,
    pub port: Option<u16>,
    pub master_username: Option<String>,
    /// `MasterUserSecret.SecretArn`: the RDS-managed master password.
    pub master_secret_arn: Option<String>,
    pub master_secret_status: Option<String>,
    pub security_group_ids: Vec<String>,
    pub vpc_id: Option<String>,
    /// Subnets of the DB subnet group.
    pub subnet_ids: Vec<String>,
    pub publicly_accessible: Option<bool>,
    /// `CACertificateIdentifier`, e.g. `rds-ca-rsa2048-g1`.
    pub ca_certificate: Option<String>,
    pub iam_auth_enabled: bool,
    pub storage_type: Option<String>,
    /// GiB; `None` for Aurora, whose storage grows by itself.
    pub allocated_storage_gib: Option<i64>,
    /// Storage autoscaling limit in GiB, when autoscaling is on.
    pub max_allocated_storage_gib: Option<i64>,
    /// DB parameter group (instance) or DB cluster parameter group (cluster).
    pub parameter_group: Option<String>,
    /// `in-sync`, `pending-reboot`, `applying`.
    pub parameter_apply_status: Option<String>,
    /// Modifications waiting for the maintenance window or a reboot, by name.
    pub pending_modifications: Vec<String>,
    /// `DbiResourceId` / `DbClusterResourceId`: stable across renames.
    pub resource_id: Option<String>,
    /// `DBInstanceClass` (of the writer, for a cluster).
    #[serde(default)]
    pub instance_class: Option<String>,
    /// `DBSubnetGroupName` (`DBSubnetGroup` of a cluster).
    #[serde(default)]
    pub subnet_group: Option<String>,
    /// Days of automated backups kept; 0 disables them (and point-in-time restore).
    #[serde(default)]
    pub backup_retention_days: Option<i32>,
    /// The latest instant a point-in-time restore can reach, RFC 3339 UTC.
    #[serde(default)]
    pub latest_restorable_time: Option<String>,
    /// Tags, by key (read from `TagList`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `KmsKeyId` of encrypted storage (`StorageEncrypted`); a clone is encrypted with it.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

impl DbFacts {
    /// `RDS instance prod-db` / `Aurora cluster prod`.
    pub fn label(&self) -> String {
        match self.kind {
            ResourceKind::Instance => format!("RDS instance {}", self.identifier),
            ResourceKind::Cluster => format!("Aurora cluster {}", self.identifier),
        }
    }

    /// Major version from `EngineVersion` (`15.4` → 15).
    pub fn major_version(&self) -> Option<u32> {
        self.engine_version.split('.').next()?.parse().ok()
    }

    /// The AWS CLI option naming this resource (`--db-instance-identifier prod-db`).
    pub fn cli_identifier(&self) -> String {
        match self.kind {
            ResourceKind::Instance => format!("--db-instance-identifier {}", self.identifier),
            ResourceKind::Cluster => format!("--db-cluster-identifier {}", self.identifier),
        }
    }

    /// Whether the parameter group is an RDS default group, which cannot be modified.
    /// The commands that turn automated backups on (point-in-time restores need them).
    pub fn backups_advice(&self) -> String {
        let modify = match self.kind {
            ResourceKind::Instance => "modify-db-instance",
            ResourceKind::Cluster => "modify-db-cluster",
        };
        format!(
            "turn automated backups on (point-in-time restore needs them; the first backup takes a while): aws rds \
             {modify} {} --backup-retention-period 7 --apply-immediately",
            self.cli_identifier()
        )
    }

    pub fn uses_default_parameter_group(&self) -> bool {
        self.parameter_group.as_deref().is_none_or(|g| g.starts_with("default."))
    }
}

/// Describes an RDS instance.
pub async fn describe_instance(clients: &Clients, identifier: &str) -> Result<DbFacts> {
    let out = clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(identifier)
        .send()
        .await
        .map_err(|e| sdk_error("rds:DescribeDBInstances", identifier, e))?;
    let Some(db) = out.db_instances().first() else {
        return Err(not_found("rds:DescribeDBInstances", identifier, "DBInstanceNotFound"));
    };
    let mut pending = Vec::new();
    if let Some(p) = db.pending_modified_values() {
        let named = [
            ("DBInstanceClass", p.db_instance_class().is_some()),
            ("AllocatedStorage", p.allocated_storage().is_some()),
            ("Port", p.port().is_some()),
            ("EngineVersion", p.engine_version().is_some()),
            ("StorageType", p.storage_type().is_some()),
            ("CACertificateIdentifier", p.ca_certificate_identifier().is_some()),
            ("DBSubnetGroupName", p.db_subnet_group_name().is_some()),
            ("IAMDatabaseAuthenticationEnabled", p.iam_database_authentication_enabled().is_some()),
            ("MultiAZ", p.multi_az().is_some()),
        ];
        pending.extend(named.iter().filter(|(_, set)| *set).map(|(n, _)| n.to_string()));
    }
    let group = db.db_parameter_groups().first();
    let subnet_group = db.db_subnet_group();
    let arn = db.db_instance_arn().map(str::to_string);
    Ok(DbFacts {
        kind: ResourceKind::Instance,
        identifier: db.db_instance_identifier().unwrap_or(identifier).to_string(),
        region: arn.as_deref().and_then(region_of_arn).unwrap_or(clients.region()).to_string(),
        arn,
        status: db.db_instance_status().unwrap_or("unknown").to_string(),
        engine: db.engine().unwrap_or("").to_string(),
        engine_version: db.engine_version().unwrap_or("").to_string(),
        address: db.endpoint().and_then(|e| e.address()).map(str::to_string),
        port: db.endpoint().and_then(|e| e.port()).and_then(|p| u16::try_from(p).ok()),
        master_username: db.master_username().map(str::to_string),
        master_secret_arn: db.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_string),
        master_secret_status: db.master_user_secret().and_then(|s| s.secret_status()).map(str::to_string),
        security_group_ids: db
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(str::to_string)
            .collect(),
        vpc_id: subnet_group.and_then(|g| g.vpc_id()).map(str::to_string),
        subnet_ids: subnet_group
            .map(|g| g.subnets().iter().filter_map(|s| s.subnet_identifier()).map(str::to_string).collect())
            .unwrap_or_default(),
        publicly_accessible: db.publicly_accessible(),
        ca_certificate: db.ca_certificate_identifier().map(str::to_string),
        iam_auth_enabled: db.iam_database_authentication_enabled().unwrap_or(false),
        storage_type: db.storage_type().map(str::to_string),
        allocated_storage_gib: db.allocated_storage().map(i64::from),
        max_allocated_storage_gib: db.max_allocated_storage().map(i64::from),
        parameter_group: group.and_then(|g| g.db_parameter_group_name()).map(str::to_string),
        parameter_apply_status: group.and_then(|g| g.parameter_apply_status()).map(str::to_string),
        pending_modifications: pending,
        resource_id: db.dbi_resource_id().map(str::to_string),
        instance_class: db.db_instance_class().map(str::to_string),
        subnet_group: subnet_group.and_then(|g| g.db_subnet_group_name()).map(str::to_string),
        backup_retention_days: db.backup_retention_period(),
        kms_key_id: db.storage_encrypted().unwrap_or(false).then(|| db.kms_key_id().map(str::to_string)).flatten(),
        latest_restorable_time: db.latest_restorable_time().and_then(rfc3339),
        tags: tags_of(db.tag_list()),
    })
}

/// Describes an Aurora cluster; network and TLS facts come from its subnet group and its writer.
pub async fn describe_cluster(clients: &Clients, identifier: &str) -> Result<DbFacts> {
    let out = clients
        .rds
        .describe_db_clusters()
        .db_cluster_identifier(identifier)
        .send()
        .await
        .map_err(|e| sdk_error("rds:DescribeDBClusters", identifier, e))?;
    let Some(c) = out.db_clusters().first() else {
        return Err(not_found("rds:DescribeDBClusters", identifier, "DBClusterNotFoundFault"));
    };
    let (mut vpc_id, mut subnet_ids) = (None, Vec::new());
    if let Some(name) = c.db_subnet_group() {
        let groups = clients
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("rds:DescribeDBSubnetGroups", name, e));
        // Without its subnet group the network path is unknown, which the network check reports.
        let groups = match groups {
            Ok(g) => Some(g),
            Err(e) if e.kind() == crate::ErrorKind::AwsNotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(g) = groups.as_ref().and_then(|g| g.db_subnet_groups().first()) {
            vpc_id = g.vpc_id().map(str::to_string);
            subnet_ids = g.subnets().iter().filter_map(|s| s.subnet_identifier()).map(str::to_string).collect();
        }
    }
    // The writer instance knows what the cluster does not report: public accessibility and CA.
    let writer = c.db_cluster_members().iter().find(|m| m.is_cluster_writer() == Some(true));
    let writer = match writer.and_then(|m| m.db_instance_identifier()) {
        Some(id) => Some(describe_instance(clients, id).await?),
        None => None,
    };
    let arn = c.db_cluster_arn().map(str::to_string);
    Ok(DbFacts {
        kind: ResourceKind::Cluster,
        identifier: c.db_cluster_identifier().unwrap_or(identifier).to_string(),
        region: arn.as_deref().and_then(region_of_arn).unwrap_or(clients.region()).to_string(),
        arn,
        status: c.status().unwrap_or("unknown").to_string(),
        engine: c.engine().unwrap_or("").to_string(),
        engine_version: c.engine_version().unwrap_or("").to_string(),
        address: c.endpoint().map(str::to_string),
        port: c.port().and_then(|p| u16::try_from(p).ok()),
        master_username: c.master_username().map(str::to_string),
        master_secret_arn: c.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_string),
        master_secret_status: c.master_user_secret().and_then(|s| s.secret_status()).map(str::to_string),
        security_group_ids: c
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(str::to_string)
            .collect(),
        vpc_id,
        subnet_ids,
        publicly_accessible: writer.as_ref().and_then(|w| w.publicly_accessible).or(c.publicly_accessible()),
        ca_certificate: writer.as_ref().and_then(|w| w.ca_certificate.clone()),
        iam_auth_enabled: c.iam_database_authentication_enabled().unwrap_or(false),
        storage_type: c.storage_type().map(str::to_string),
        allocated_storage_gib: None,
        max_allocated_storage_gib: None,
        parameter_group: c.db_cluster_parameter_group().map(str::to_string),
        parameter_apply_status: c
            .db_cluster_members()
            .iter()
            .find(|m| m.is_cluster_writer() == Some(true))
            .and_then(|m| m.db_cluster_parameter_group_status())
            .map(str::to_string),
        instance_class: writer.as_ref().and_then(|w| w.instance_class.clone()),
        pending_modifications: writer.map(|w| w.pending_modifications).unwrap_or_default(),
        resource_id: c.db_cluster_resource_id().map(str::to_string),
        subnet_group: c.db_subnet_group().map(str::to_string),
        backup_retention_days: c.backup_retention_period(),
        kms_key_id: c.storage_encrypted().unwrap_or(false).then(|| c.kms_key_id().map(str::to_string)).flatten(),
        latest_restorable_time: c.latest_restorable_time().and_then(rfc3339),
        tags: tags_of(c.tag_list()),
    })
}

/// An SDK timestamp as RFC 3339 UTC (`2026-11-26T16:50:00Z`).
pub fn rfc3339(t: &aws_sdk_rds::primitives::DateTime) -> Option<String> {
    t.fmt(aws_sdk_rds::primitives::DateTimeFormat::DateTime).ok()
}

fn tags_of(tags: &[aws_sdk_rds::types::Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))).collect()
}

/// Every resource pgferry creates in RDS starts with this: the IAM policy of the template allows
/// restoring and deleting only `db:pgferry-*` and `cluster:pgferry-*`.
pub const CLONE_PREFIX: &str = "pgferry-";

/// Tag naming the Step Functions execution (run id) that created a clone.
pub const TAG_EXECUTION: &str = "pgferry:execution";
/// Tag naming the resource a clone was restored from.
pub const TAG_SOURCE: &str = "pgferry:source";
/// Tag holding the clone's point in time (RFC 3339), so that a retried create can report it.
pub const TAG_POINT_IN_TIME: &str = "pgferry:point-in-time";

fn tag(key: &str, value: &str) -> aws_sdk_rds::types::Tag {
    aws_sdk_rds::types::Tag::builder().key(key).value(value).build()
}

/// How a clone is made: where it lives and what it is tagged with.
#[derive(Debug, Clone)]
pub struct CloneSpec<'a> {
    /// Identifier of the clone (instance, or cluster for Aurora); starts with [`CLONE_PREFIX`].
    pub identifier: &'a str,
    /// Aurora: the clone's writer instance.
    pub instance_identifier: Option<&'a str>,
    /// The source, as described.
    pub source: &'a DbFacts,
    /// Instance class; default the source's (its writer's for Aurora).
    pub instance_class: Option<&'a str>,
    pub tags: Vec<(String, String)>,
}

impl CloneSpec<'_> {
    fn tags(&self) -> Vec<aws_sdk_rds::types::Tag> {
        self.tags.iter().map(|(k, v)| tag(k, v)).collect()
    }

    fn class(&self) -> Option<String> {
        self.instance_class.map(str::to_string).or_else(|| self.source.instance_class.clone())
    }
}

fn refuse_unprefixed(identifier: &str) -> Result<()> {
    if identifier.starts_with(CLONE_PREFIX) {
        return Ok(());
    }
    Err(crate::Error::Internal(format!(
        "refusing to create or delete `{identifier}`: pgferry only manages {CLONE_PREFIX}* resources"
    )))
}

/// Restores an RDS instance to `restore_time` (RFC 3339) as a new private instance in the
/// source's subnet group, security groups and parameter group.
pub async fn restore_instance_clone(clients: &Clients, spec: &CloneSpec<'_>, restore_time: &str) -> Result<()> {
    refuse_unprefixed(spec.identifier)?;
    let at =
        aws_sdk_rds::primitives::DateTime::from_str(restore_time, aws_sdk_rds::primitives::DateTimeFormat::DateTime)
            .map_err(|e| crate::Error::Internal(format!("restore time `{restore_time}`: {e}")))?;
    let src = spec.source;
    clients
        .rds
        .restore_db_instance_to_point_in_time()
        .source_db_instance_identifier(&src.identifier)
        .target_db_instance_identifier(spec.identifier)
        .restore_time(at)
        .set_db_subnet_group_name(src.subnet_group.clone())
        .set_vpc_security_group_ids(Some(src.security_group_ids.clone()))
        .set_db_parameter_group_name(src.parameter_group.clone().filter(|_| !src.uses_default_parameter_group()))
        .set_db_instance_class(spec.class())
        .publicly_accessible(false)
        .multi_az(false)
        .deletion_protection(false)
        .copy_tags_to_snapshot(false)
        .enable_iam_database_authentication(src.iam_auth_enabled)
        .set_tags(Some(spec.tags()))
        .send()
        .await
        .map_err(|e| sdk_error("rds:RestoreDBInstanceToPointInTime", spec.identifier, e))?;
    Ok(())
}

/// Creates an Aurora copy-on-write clone of the source cluster (as of now), then its writer.
/// Each call is skipped when its resource exists already (a retried step).
pub async fn restore_cluster_clone(clients: &Clients, spec: &CloneSpec<'_>) -> Result<()> {
    refuse_unprefixed(spec.identifier)?;
    let src = spec.source;
    let exists = match describe_cluster(clients, spec.identifier).await {
        Ok(_) => true,
        Err(e) if e.kind() == crate::ErrorKind::AwsNotFound => false,
        Err(e) => return Err(e),
    };
    if !exists {
        clients
            .rds
            .restore_db_cluster_to_point_in_time()
            .source_db_cluster_identifier(&src.identifier)
            .db_cluster_identifier(spec.identifier)
            .restore_type("copy-on-write")
            .use_latest_restorable_time(true)
            .set_db_subnet_group_name(src.subnet_group.clone())
            .set_vpc_security_group_ids(Some(src.security_group_ids.clone()))
            .set_db_cluster_parameter_group_name(
                src.parameter_group.clone().filter(|_| !src.uses_default_parameter_group()),
            )
            .deletion_protection(false)
            .copy_tags_to_snapshot(false)
            .enable_iam_database_authentication(src.iam_auth_enabled)
            .set_tags(Some(spec.tags()))
            .send()
            .await
            .map_err(|e| sdk_error("rds:RestoreDBClusterToPointInTime", spec.identifier, e))?;
    }
    let Some(writer) = spec.instance_identifier else { return Ok(()) };
    refuse_unprefixed(writer)?;
    match describe_instance(clients, writer).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == crate::ErrorKind::AwsNotFound => {}
        Err(e) => return Err(e),
    }
    clients
        .rds
        .create_db_instance()
        .db_instance_identifier(writer)
        .db_cluster_identifier(spec.identifier)
        .engine(&src.engine)
        .set_db_instance_class(spec.class())
        .publicly_accessible(false)
        .set_tags(Some(spec.tags()))
        .send()
        .await
        .map_err(|e| sdk_error("rds:CreateDBInstance", writer, e))?;
    Ok(())
}

/// Deletes a clone without a final snapshot, with its automated backups. Returns false when it
/// was gone already; an Aurora clone's writer is deleted first.
pub async fn delete_clone(
    clients: &Clients,
    kind: ResourceKind,
    identifier: &str,
    writer: Option<&str>,
) -> Result<bool> {
    refuse_unprefixed(identifier)?;
    let gone = |e: &crate::Error| e.kind() == crate::ErrorKind::AwsNotFound;
    let instance = |id: String| async move {
        clients
            .rds
            .delete_db_instance()
            .db_instance_identifier(&id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
            .map_err(|e| sdk_error("rds:DeleteDBInstance", &id, e))
    };
    match kind {
        ResourceKind::Instance => match instance(identifier.to_string()).await {
            Ok(_) => Ok(true),
            Err(e) if gone(&e) => Ok(false),
            Err(e) => Err(busy_is_retryable(e)),
        },
        ResourceKind::Cluster => {
            let mut deleted = false;
            if let Some(w) = writer {
                refuse_unprefixed(w)?;
                match instance(w.to_string()).await {
                    Ok(_) => deleted = true,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(busy_is_retryable(e)),
                }
            }
            let out = clients
                .rds
                .delete_db_cluster()
                .db_cluster_identifier(identifier)
                .skip_final_snapshot(true)
                .delete_automated_backups(true)
                .send()
                .await
                .map_err(|e| sdk_error("rds:DeleteDBCluster", identifier, e));
            match out {
                Ok(_) => Ok(true),
                Err(e) if gone(&e) => Ok(deleted),
                Err(e) => Err(busy_is_retryable(e)),
            }
        }
    }
}

/// A resource in a state that refuses deletion now (still being created, or its writer still
/// being deleted) will accept it later: that is a retry, not a failure.
fn busy_is_retryable(err: crate::Error) -> crate::Error {
    match err {
        crate::Error::Aws { operation, resource, code: Some(code), message, .. }
            if code.starts_with("InvalidDBInstanceState") || code.starts_with("InvalidDBClusterState") =>
        {
            crate::Error::Aws { operation, resource, failure: super::AwsFailure::Transient, code: Some(code), message }
        }
        other => other,
    }
}

fn not_found(operation: &str, resource: &str, code: &str) -> crate::Error {
    crate::Error::Aws {
        operation: operation.to_string(),
        resource: resource.to_string(),
        failure: super::AwsFailure::NotFound,
        code: Some(code.to_string()),
        message: String::new(),
    }
}

/// The parameters of a DB's parameter group that differ from the engine default, by name.
///
/// RDS default groups (`default.postgres15`) cannot be changed, so they hold defaults only and are
/// not read (the emulator does not even know them).
pub async fn modified_parameters(clients: &Clients, db: &DbFacts) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let Some(group) = db.parameter_group.as_deref().filter(|_| !db.uses_default_parameter_group()) else {
        return Ok(params);
    };
    let mut marker: Option<String> = None;
    loop {
        let (items, next) = match db.kind {
            ResourceKind::Instance => {
                let out = clients
                    .rds
                    .describe_db_parameters()
                    .db_parameter_group_name(group)
                    .set_marker(marker.clone())
                    .send()
                    .await
                    .map_err(|e| sdk_error("rds:DescribeDBParameters", group, e))?;
                (out.parameters().to_vec(), out.marker().map(str::to_string))
            }
            ResourceKind::Cluster => {
                let out = clients
                    .rds
                    .describe_db_cluster_parameters()
                    .db_cluster_parameter_group_name(group)
                    .set_marker(marker.clone())
                    .send()
                    .await
                    .map_err(|e| sdk_error("rds:DescribeDBClusterParameters", group, e))?;
                (out.parameters().to_vec(), out.marker().map(str::to_string))
            }
        };
        for p in items {
            // AWS lists every parameter, with Source `engine-default`/`system` for those nobody
            // set; only user-set values override the defaults below.
            let user_set = p.source().is_none_or(|s| s == "user");
            if let (Some(name), Some(value), true) = (p.parameter_name(), p.parameter_value(), user_set) {
                params.insert(name.to_string(), value.to_string());
            }
        }
        match next.filter(|m| !m.is_empty()) {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    Ok(params)
}

/// Effective values of the parameters pgferry cares about: the group's value or the engine default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    pub force_ssl: bool,
    pub logical_replication: bool,
    /// Libraries, lower-cased, in order.
    pub shared_preload_libraries: Vec<String>,
    /// Whether each value came from the group (true) or the engine default (false).
    pub force_ssl_set: bool,
    pub logical_replication_set: bool,
    pub shared_preload_libraries_set: bool,
}

/// `shared_preload_libraries` of RDS for PostgreSQL's default parameter groups.
pub const RDS_DEFAULT_SHARED_PRELOAD_LIBRARIES: &str = "pg_stat_statements";

impl Parameters {
    /// Applies the engine defaults to the modified parameters of `db`'s group.
    pub fn effective(db: &DbFacts, modified: &BTreeMap<String, String>) -> Self {
        let flag = |v: &String| matches!(v.trim(), "1" | "on" | "true");
        // rds.force_ssl defaults to 1 from RDS for PostgreSQL 15; Aurora and older majors: 0.
        let default_force_ssl = db.engine == "postgres" && db.major_version().is_some_and(|m| m >= 15);
        let spl = modified.get("shared_preload_libraries");
        Self {
            force_ssl: modified.get("rds.force_ssl").map_or(default_force_ssl, flag),
            force_ssl_set: modified.contains_key("rds.force_ssl"),
            logical_replication: modified.get("rds.logical_replication").is_some_and(flag),
            logical_replication_set: modified.contains_key("rds.logical_replication"),
            shared_preload_libraries: split_libraries(spl.map_or(RDS_DEFAULT_SHARED_PRELOAD_LIBRARIES, |s| s.as_str())),
            shared_preload_libraries_set: spl.is_some(),
        }
    }
}

/// `'pg_stat_statements, pg_cron'` → `["pg_stat_statements", "pg_cron"]`.
pub fn split_libraries(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(engine: &str, version: &str) -> DbFacts {
        DbFacts {
            kind: ResourceKind::Instance,
            identifier: "db".into(),
            arn: None,
            region: "us-east-1".into(),
            status: "available".into(),
            engine: engine.into(),
            engine_version: version.into(),
            address: None,
            port: None,
            master_username: None,
            master_secret_arn: None,
            master_secret_status: None,
            security_group_ids: vec![],
            vpc_id: None,
            subnet_ids: vec![],
            publicly_accessible: None,
            ca_certificate: None,
            iam_auth_enabled: false,
            storage_type: None,
            allocated_storage_gib: None,
            max_allocated_storage_gib: None,
            parameter_group: Some("custom".into()),
            parameter_apply_status: None,
            pending_modifications: vec![],
            resource_id: None,
            instance_class: None,
            subnet_group: None,
            backup_retention_days: None,
            kms_key_id: None,
            latest_restorable_time: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn absent_parameters_take_the_engine_defaults() {
        let none = BTreeMap::new();
        let p = Parameters::effective(&facts("postgres", "15.4"), &none);
        assert!(p.force_ssl, "rds.force_ssl defaults to 1 from PostgreSQL 15");
        assert!(!p.force_ssl_set);
        assert!(!p.logical_replication);
        assert_eq!(p.shared_preload_libraries, vec!["pg_stat_statements"]);
        assert!(!Parameters::effective(&facts("postgres", "14.9"), &none).force_ssl);
        assert!(!Parameters::effective(&facts("aurora-postgresql", "15.4"), &none).force_ssl);
    }

    #[test]
    fn modified_parameters_override_the_defaults() {
        let mut m = BTreeMap::new();
        m.insert("rds.force_ssl".to_string(), "0".to_string());
        m.insert("rds.logical_replication".to_string(), "1".to_string());
        m.insert("shared_preload_libraries".to_string(), "pg_stat_statements, PG_CRON".to_string());
        let p = Parameters::effective(&facts("postgres", "16.1"), &m);
        assert!(!p.force_ssl && p.force_ssl_set);
        assert!(p.logical_replication);
        assert_eq!(p.shared_preload_libraries, vec!["pg_stat_statements", "pg_cron"]);
    }
}
