//! The AWS emulator of the test bed (moto on 127.0.0.1): clients pointed at it, and builders for
//! the VPCs, security groups, parameter groups, RDS instances and secrets that preflight reads.
//!
//! Clients are built only from the test bed's endpoint, which must be a loopback address, so a
//! test can never reach a real AWS account whatever the developer's environment holds. The
//! emulator is shared by all tests: every resource gets a unique name.

use aws_sdk_ec2::types::{IpPermission, IpRange, UserIdGroupPair};
use pgferry_core::aws::Clients;
use pgferry_core::pg::ConnSpec;

use crate::{Server, testbed};

/// Clients for the test bed's emulator; panics when the endpoint is not on this machine.
pub async fn clients() -> Clients {
    let bed = testbed();
    let endpoint = bed.aws_var("AWS_ENDPOINT_URL");
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "the AWS endpoint of the test bed must be the local emulator, not {endpoint}"
    );
    Clients::for_endpoint(
        endpoint,
        bed.aws_var("AWS_REGION"),
        bed.aws_var("AWS_ACCESS_KEY_ID"),
        bed.aws_var("AWS_SECRET_ACCESS_KEY"),
    )
    .await
    .expect("emulator clients")
}

/// Environment for a child process (the CLI) that must talk to the emulator and nothing else.
pub fn child_env() -> Vec<(String, String)> {
    let bed = testbed();
    let mut env: Vec<(String, String)> =
        ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .iter()
            .map(|k| (k.to_string(), bed.aws_var(k).to_string()))
            .collect();
    env.push(("AWS_CONFIG_FILE".to_string(), "/dev/null".to_string()));
    env.push(("AWS_SHARED_CREDENTIALS_FILE".to_string(), "/dev/null".to_string()));
    env.push(("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()));
    env
}

/// Variables a child must not inherit (they would point it elsewhere).
pub const CHILD_ENV_REMOVE: &[&str] = &["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN"];

/// A unique lower-case name usable as an RDS identifier or a group name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A VPC with its subnets (one per listed CIDR, alternating availability zones).
#[derive(Debug, Clone)]
pub struct Vpc {
    pub id: String,
    pub subnets: Vec<String>,
}

/// Creates a VPC and subnets.
pub async fn vpc(c: &Clients, cidr: &str, subnet_cidrs: &[&str]) -> Vpc {
    let id = c
        .ec2
        .create_vpc()
        .cidr_block(cidr)
        .send()
        .await
        .expect("create vpc")
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let mut subnets = Vec::new();
    for (i, s) in subnet_cidrs.iter().enumerate() {
        let az = if i % 2 == 0 { "us-east-1a" } else { "us-east-1b" };
        let out =
            c.ec2.create_subnet().vpc_id(&id).cidr_block(*s).availability_zone(az).send().await.expect("create subnet");
        subnets.push(out.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    Vpc { id, subnets }
}

/// Creates a security group (with the default allow-all egress rule).
pub async fn security_group(c: &Clients, vpc: &Vpc, name: &str) -> String {
    c.ec2
        .create_security_group()
        .group_name(unique(name))
        .description("pgferry test")
        .vpc_id(&vpc.id)
        .send()
        .await
        .expect("create security group")
        .group_id()
        .unwrap()
        .to_string()
}

fn tcp(from: i32, to: i32) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
    IpPermission::builder().ip_protocol("tcp").from_port(from).to_port(to)
}

/// Adds an inbound rule: TCP `from..=to` from another security group.
pub async fn allow_group(c: &Clients, sg: &str, from: i32, to: i32, source_sg: &str) {
    c.ec2
        .authorize_security_group_ingress()
        .group_id(sg)
        .ip_permissions(
            tcp(from, to).user_id_group_pairs(UserIdGroupPair::builder().group_id(source_sg).build()).build(),
        )
        .send()
        .await
        .expect("authorize ingress from group");
}

/// Adds an inbound rule: TCP `from..=to` from a CIDR.
pub async fn allow_cidr(c: &Clients, sg: &str, from: i32, to: i32, cidr: &str) {
    c.ec2
        .authorize_security_group_ingress()
        .group_id(sg)
        .ip_permissions(tcp(from, to).ip_ranges(IpRange::builder().cidr_ip(cidr).build()).build())
        .send()
        .await
        .expect("authorize ingress from cidr");
}

/// Replaces the default allow-all egress rule by TCP `port` to 0.0.0.0/0 only… or nothing.
pub async fn restrict_egress(c: &Clients, sg: &str, keep_port: Option<i32>) {
    c.ec2
        .revoke_security_group_egress()
        .group_id(sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .expect("revoke default egress");
    if let Some(port) = keep_port {
        c.ec2
            .authorize_security_group_egress()
            .group_id(sg)
            .ip_permissions(tcp(port, port).ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build())
            .send()
            .await
            .expect("authorize egress");
    }
}

/// Creates a DB parameter group of family postgres15 with the given parameters set.
pub async fn parameter_group(c: &Clients, params: &[(&str, &str)]) -> String {
    let name = unique("pgferry-pg");
    c.rds
        .create_db_parameter_group()
        .db_parameter_group_name(&name)
        .db_parameter_group_family("postgres15")
        .description("pgferry test")
        .send()
        .await
        .expect("create parameter group");
    if !params.is_empty() {
        let mut req = c.rds.modify_db_parameter_group().db_parameter_group_name(&name);
        for (k, v) in params {
            req = req.parameters(
                aws_sdk_rds::types::Parameter::builder()
                    .parameter_name(*k)
                    .parameter_value(*v)
                    .apply_method(aws_sdk_rds::types::ApplyMethod::PendingReboot)
                    .build(),
            );
        }
        req.send().await.expect("modify parameter group");
    }
    name
}

/// How a test RDS instance is made.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub vpc: Vpc,
    pub security_groups: Vec<String>,
    pub parameter_group: Option<String>,
    pub publicly_accessible: bool,
    pub iam_auth: bool,
    pub ca: Option<String>,
    pub storage_gib: i32,
    pub storage_type: String,
    pub master_username: String,
    /// Storage encrypted with this KMS key (`None`: unencrypted).
    pub kms_key: Option<String>,
}

impl InstanceSpec {
    /// A private PostgreSQL 15 instance in `vpc` behind `security_groups`.
    pub fn new(vpc: &Vpc, security_groups: &[&str], master_username: &str) -> Self {
        Self {
            vpc: vpc.clone(),
            security_groups: security_groups.iter().map(|s| s.to_string()).collect(),
            parameter_group: None,
            publicly_accessible: false,
            iam_auth: false,
            ca: Some("rds-ca-rsa2048-g1".to_string()),
            storage_gib: 20,
            storage_type: "gp3".to_string(),
            master_username: master_username.to_string(),
            kms_key: None,
        }
    }
}

/// A created instance: its identifier and managed secret.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub secret_arn: String,
}

/// A DB subnet group over the subnets of `vpc`, named `<prefix>-<unique>`.
pub async fn db_subnet_group(c: &Clients, vpc: &Vpc, prefix: &str) -> String {
    let name = unique(prefix);
    c.rds
        .create_db_subnet_group()
        .db_subnet_group_name(&name)
        .db_subnet_group_description("pgferry test")
        .set_subnet_ids(Some(vpc.subnets.clone()))
        .send()
        .await
        .expect("create db subnet group");
    name
}

/// Creates an RDS for PostgreSQL 15 instance with an RDS-managed master secret (always with an
/// explicit engine version: the emulator's default is 9.3).
pub async fn rds_instance(c: &Clients, spec: &InstanceSpec) -> Instance {
    let id = unique("pgferry-db");
    let subnet_group = db_subnet_group(c, &spec.vpc, "pgferry-sng").await;
    let out = c
        .rds
        .create_db_instance()
        .db_instance_identifier(&id)
        .engine("postgres")
        .engine_version("15.4")
        .db_instance_class("db.t3.micro")
        .allocated_storage(spec.storage_gib)
        .storage_type(&spec.storage_type)
        .master_username(&spec.master_username)
        .manage_master_user_password(true)
        .set_vpc_security_group_ids(Some(spec.security_groups.clone()))
        .db_subnet_group_name(&subnet_group)
        .set_db_parameter_group_name(spec.parameter_group.clone())
        .publicly_accessible(spec.publicly_accessible)
        .enable_iam_database_authentication(spec.iam_auth)
        .set_ca_certificate_identifier(spec.ca.clone())
        .send()
        .await
        .expect("create db instance");
    let db = out.db_instance().expect("instance");
    let secret_arn = db.master_user_secret().and_then(|s| s.secret_arn()).expect("managed secret").to_string();
    Instance { id, secret_arn }
}

/// Writes `{"username", "password"}` into a secret (as rotation would).
pub async fn put_secret(c: &Clients, arn: &str, username: &str, password: &str) {
    let text = serde_json::json!({"username": username, "password": password}).to_string();
    c.secrets.put_secret_value().secret_id(arn).secret_string(text).send().await.expect("put secret value");
}

/// Creates a secret and returns its ARN.
pub async fn create_secret(c: &Clients, username: &str, password: &str) -> String {
    let text = serde_json::json!({"username": username, "password": password}).to_string();
    c.secrets
        .create_secret()
        .name(unique("pgferry-secret"))
        .secret_string(text)
        .send()
        .await
        .expect("create secret")
        .arn()
        .unwrap()
        .to_string()
}

/// Points a managed secret at a test bed server's master user and password.
pub async fn point_secret_at(c: &Clients, arn: &str, server: Server) {
    let spec = ConnSpec::parse(&testbed().url(server, "postgres")).expect("test bed URL");
    put_secret(c, arn, &spec.user, spec.password.as_ref().expect("test bed password").expose()).await;
}

/// The job endpoint of an instance whose connections go to a test bed server (`host`/`port`
/// override, the test bed's CA).
pub fn endpoint_json(instance: &Instance, server: Server, database: &str) -> serde_json::Value {
    serde_json::json!({
        "rdsInstance": instance.id,
        "database": database,
        "host": "127.0.0.1",
        "port": testbed().port(server),
        "sslRootCert": testbed().ca(),
    })
}

/// Interface VPC endpoints (private DNS) for the RDS and Secrets Manager APIs in the functions'
/// subnets, as a private deployment has them.
pub async fn api_endpoints(c: &Clients, vpc: &Vpc, subnets: &[String], security_group: &str) {
    for service in ["rds", "secretsmanager"] {
        c.ec2
            .create_vpc_endpoint()
            .vpc_id(&vpc.id)
            .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
            .service_name(format!("com.amazonaws.us-east-1.{service}"))
            .set_subnet_ids(Some(subnets.to_vec()))
            .security_group_ids(security_group)
            .private_dns_enabled(true)
            .send()
            .await
            .expect("create vpc endpoint");
    }
}

/// A random second octet for a test VPC's `10.x.0.0/16`, so that CIDR rules of one test rarely
/// match another's subnets in the shared emulator.
pub fn vpc_octet() -> u8 {
    rand::random::<u8>() % 200 + 20
}
