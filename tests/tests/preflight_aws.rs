//! Preflight's AWS checks against the emulator (moto): RDS instances, parameter groups, managed
//! secrets, certificate authorities and the network path from the functions, each with a
//! passing and a failing case. Instances point at the test bed's servers with `host`/`port`.

use pgferry_core::aws::Clients;
use pgferry_core::context::{Credentials, StepContext};
use pgferry_core::job::{Job, Side};
use pgferry_core::preflight::{self, Requirements};
use pgferry_core::step::{Check, CheckStatus, PreflightOutput, StepInput};
use pgferry_core::store::ArtifactStore;
use pgferry_tests::aws::{self, Instance, InstanceSpec, Vpc};
use pgferry_tests::{Server, connect, create_db, drop_db, testbed, unique_name};
use serde_json::{Value, json};

/// A VPC with two function subnets and one database subnet pair, a security group for the
/// functions and one for the databases.
struct World {
    c: Clients,
    vpc: Vpc,
    fn_sg: String,
    db_sg: String,
}

/// A world whose function subnets reach the RDS and Secrets Manager APIs through interface VPC
/// endpoints, as a private deployment would.
async fn world() -> World {
    let w = bare_world().await;
    for service in ["rds", "secretsmanager"] {
        w.api_endpoint(service).await;
    }
    w
}

/// A world without any way to the AWS APIs from the function subnets.
async fn bare_world() -> World {
    let c = aws::clients().await;
    let o = aws::vpc_octet();
    let vpc = aws::vpc(
        &c,
        &format!("10.{o}.0.0/16"),
        &[&format!("10.{o}.1.0/24"), &format!("10.{o}.2.0/24"), &format!("10.{o}.8.0/24"), &format!("10.{o}.9.0/24")],
    )
    .await;
    let fn_sg = aws::security_group(&c, &vpc, "pgferry-fn").await;
    let db_sg = aws::security_group(&c, &vpc, "pgferry-db").await;
    World { c, vpc, fn_sg, db_sg }
}

impl World {
    async fn api_endpoint(&self, service: &str) {
        self.c
            .ec2
            .create_vpc_endpoint()
            .vpc_id(&self.vpc.id)
            .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
            .service_name(format!("com.amazonaws.us-east-1.{service}"))
            .set_subnet_ids(Some(self.function_subnets()))
            .security_group_ids(&self.fn_sg)
            .private_dns_enabled(true)
            .send()
            .await
            .expect("create vpc endpoint");
    }

    fn function_subnets(&self) -> Vec<String> {
        self.vpc.subnets[..2].to_vec()
    }

    fn db_vpc(&self) -> Vpc {
        Vpc { id: self.vpc.id.clone(), subnets: self.vpc.subnets[2..].to_vec() }
    }

    fn spec(&self, master: &str) -> InstanceSpec {
        InstanceSpec::new(&self.db_vpc(), &[&self.db_sg], master)
    }

    /// An instance whose managed secret holds the test bed master password of `server`.
    async fn instance(&self, server: Server, spec: InstanceSpec) -> Instance {
        let instance = aws::rds_instance(&self.c, &spec).await;
        aws::point_secret_at(&self.c, &instance.secret_arn, server).await;
        instance
    }

    fn network(&self) -> Value {
        json!({"securityGroupIds": [self.fn_sg], "subnetIds": self.function_subnets()})
    }

    fn context(&self) -> StepContext {
        let store = ArtifactStore::local(std::env::temp_dir().join(unique_name("pgferry-preflight-aws")));
        StepContext::new(store, Credentials::default()).with_aws(self.c.clone())
    }
}

/// A source database with a table, on the test bed's source server.
async fn source_db(prefix: &str) -> String {
    let db = create_db(Server::Source, prefix).await;
    let client = connect(&testbed().url(Server::Source, &db)).await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a')")
        .await
        .unwrap();
    db
}

async fn run(ctx: &StepContext, job: Value) -> PreflightOutput {
    run_with(ctx, job, Requirements::default()).await
}

async fn run_with(ctx: &StepContext, job: Value, req: Requirements) -> PreflightOutput {
    let job = Job::from_value(job).expect("valid job");
    preflight::run_with(ctx, &StepInput { job, run_id: unique_name("run") }, req).await.expect("preflight runs")
}

fn check<'a>(out: &'a PreflightOutput, name: &str) -> &'a Check {
    out.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", out.checks.iter().map(|c| &c.name).collect::<Vec<_>>()))
}

fn status(out: &PreflightOutput, name: &str) -> CheckStatus {
    check(out, name).status
}

/// The standard pair: source instance → test bed source, target instance → a missing database
/// on the test bed target.
async fn pair(w: &World, prefix: &str, source: InstanceSpec, target: InstanceSpec) -> (Value, String, String) {
    let src_db = source_db(prefix).await;
    let dst_db = unique_name(&format!("{prefix}_dst"));
    let s = w.instance(Server::Source, source).await;
    let t = w.instance(Server::Target, target).await;
    let job = json!({
        "source": aws::endpoint_json(&s, Server::Source, &src_db),
        "target": aws::endpoint_json(&t, Server::Target, &dst_db),
        "network": w.network(),
    });
    (job, src_db, dst_db)
}

#[tokio::test]
async fn network_an_sg_to_sg_rule_passes_and_a_missing_rule_names_the_group_the_rule_and_the_fix() {
    let w = world().await;
    let other = aws::security_group(&w.c, &w.vpc, "pgferry-other").await;
    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &other).await;
    let (job, src, _) = pair(&w, "net_sg", w.spec("postgres"), w.spec("dbadmin")).await;
    let ctx = w.context();

    let out = run(&ctx, job.clone()).await;
    assert!(!out.ok);
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains(&format!("allow only {other} ({})", w.db_sg)), "{}", c.detail);
    assert!(
        c.detail.contains(&format!("missing inbound rule on {}: tcp 5432 from {}", w.db_sg, w.fn_sg)),
        "{}",
        c.detail
    );
    let fix = format!(
        "aws ec2 authorize-security-group-ingress --group-id {} --protocol tcp --port 5432 --source-group {}",
        w.db_sg, w.fn_sg
    );
    assert!(c.advice.as_deref().unwrap().contains(&fix), "{c:?}");
    assert!(out.summary.contains("source-network"), "{}", out.summary);

    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &w.fn_sg).await;
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains(&format!("{} allows tcp 5432 from {}", w.db_sg, w.fn_sg)), "{}", c.detail);
    assert_eq!(status(&out, "target-network"), CheckStatus::Pass);
    assert!(out.ok, "{}", out.summary);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn network_cidr_rules_pass_when_they_cover_every_function_subnet_and_fail_when_they_cover_one() {
    let w = world().await;
    let one = w.function_subnets()[0].clone();
    let c = &w.c;
    let subnets = c.ec2.describe_subnets().subnet_ids(&one).send().await.unwrap();
    let first_cidr = subnets.subnets()[0].cidr_block().unwrap().to_string();
    aws::allow_cidr(c, &w.db_sg, 5432, 5432, &first_cidr).await;
    let (job, src, _) = pair(&w, "net_cidr", w.spec("postgres"), w.spec("dbadmin")).await;

    let out = run(&w.context(), job.clone()).await;
    let check_ = check(&out, "source-network");
    assert_eq!(check_.status, CheckStatus::Fail, "{check_:?}");
    assert!(check_.detail.contains(&format!("but not {}", w.function_subnets()[1])), "{}", check_.detail);

    let vpc = c.ec2.describe_vpcs().vpc_ids(&w.vpc.id).send().await.unwrap();
    let vpc_cidr = vpc.vpcs()[0].cidr_block().unwrap().to_string();
    aws::allow_cidr(c, &w.db_sg, 5432, 5432, &vpc_cidr).await;
    let out = run(&w.context(), job).await;
    let check_ = check(&out, "source-network");
    assert_eq!(check_.status, CheckStatus::Pass, "{check_:?}");
    assert!(check_.detail.contains(&format!("from {vpc_cidr}")), "{}", check_.detail);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn network_a_port_range_covering_the_port_passes_and_a_rule_for_another_port_is_named() {
    let w = world().await;
    aws::allow_group(&w.c, &w.db_sg, 3306, 3306, &w.fn_sg).await;
    let (job, src, _) = pair(&w, "net_port", w.spec("postgres"), w.spec("dbadmin")).await;

    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains(&format!("{} allows tcp 3306 from {}, not 5432", w.db_sg, w.fn_sg)), "{}", c.detail);

    aws::allow_group(&w.c, &w.db_sg, 5000, 6000, &w.fn_sg).await;
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("tcp 5000-6000"), "{}", c.detail);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn network_a_missing_outbound_rule_of_the_functions_is_named_with_its_fix() {
    let w = world().await;
    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &w.fn_sg).await;
    aws::restrict_egress(&w.c, &w.fn_sg, Some(443)).await;
    let (job, src, _) = pair(&w, "net_egress", w.spec("postgres"), w.spec("dbadmin")).await;

    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains(&format!("missing outbound rule on {}", w.fn_sg)), "{}", c.detail);
    assert!(c.advice.as_deref().unwrap().contains(&format!("authorize-security-group-egress --group-id {}", w.fn_sg)));

    w.c.ec2
        .authorize_security_group_egress()
        .group_id(&w.fn_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(5432)
                .to_port(5432)
                .user_id_group_pairs(aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(&w.db_sg).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = run(&w.context(), job).await;
    assert_eq!(status(&out, "source-network"), CheckStatus::Pass, "{:?}", check(&out, "source-network"));
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn network_another_vpc_without_a_route_fails_and_a_peering_route_passes() {
    let w = world().await;
    let o = aws::vpc_octet();
    let other = aws::vpc(
        &w.c,
        &format!("172.{}.0.0/16", o % 16 + 16),
        &[&format!("172.{}.8.0/24", o % 16 + 16), &format!("172.{}.9.0/24", o % 16 + 16)],
    )
    .await;
    let db_sg = aws::security_group(&w.c, &other, "pgferry-db-far").await;
    aws::allow_group(&w.c, &db_sg, 5432, 5432, &w.fn_sg).await;
    let src_db = source_db("net_vpc").await;
    let s = w.instance(Server::Source, InstanceSpec::new(&other, &[&db_sg], "postgres")).await;
    let job = json!({
        "source": aws::endpoint_json(&s, Server::Source, &src_db),
        "target": {"url": testbed().url(Server::Target, &unique_name("net_vpc_dst"))},
        "network": w.network(),
    });

    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains(&format!("no route from the functions' VPC {}", w.vpc.id)), "{}", c.detail);
    assert!(c.detail.contains("not publicly accessible"), "{}", c.detail);

    let pcx =
        w.c.ec2
            .create_vpc_peering_connection()
            .vpc_id(&w.vpc.id)
            .peer_vpc_id(&other.id)
            .send()
            .await
            .unwrap()
            .vpc_peering_connection()
            .unwrap()
            .vpc_peering_connection_id()
            .unwrap()
            .to_string();
    let tables =
        w.c.ec2
            .describe_route_tables()
            .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&w.vpc.id).build())
            .send()
            .await
            .unwrap();
    let rtb = tables.route_tables()[0].route_table_id().unwrap().to_string();
    let far_cidr =
        w.c.ec2.describe_vpcs().vpc_ids(&other.id).send().await.unwrap().vpcs()[0].cidr_block().unwrap().to_string();
    w.c.ec2
        .create_route()
        .route_table_id(&rtb)
        .destination_cidr_block(&far_cidr)
        .vpc_peering_connection_id(&pcx)
        .send()
        .await
        .unwrap();
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-network");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains(&format!("via {pcx}")), "{}", c.detail);
    drop_db(Server::Source, &src_db).await;
}

#[tokio::test]
async fn functions_without_a_nat_gateway_or_vpc_endpoints_cannot_reach_secrets_manager_and_rds() {
    let w = bare_world().await;
    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &w.fn_sg).await;
    let (job, src, _) = pair(&w, "api_reach", w.spec("postgres"), w.spec("dbadmin")).await;

    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "functions-aws-apis");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("Secrets Manager (no VPC endpoint)") && c.detail.contains("the RDS API"), "{}", c.detail);
    assert!(c.advice.as_deref().unwrap().contains("--service-name com.amazonaws.us-east-1.secretsmanager"), "{c:?}");

    w.api_endpoint("rds").await;
    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "functions-aws-apis");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("Secrets Manager (no VPC endpoint)") && !c.detail.contains("RDS API"), "{}", c.detail);
    w.api_endpoint("secretsmanager").await;
    let out = run(&w.context(), job).await;
    let c = check(&out, "functions-aws-apis");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn a_missing_instance_is_named_and_a_stopped_one_fails_with_the_start_command() {
    let w = world().await;
    let src = source_db("rds_state").await;
    let job = json!({
        "source": {"rdsInstance": "pgferry-no-such-instance", "database": src},
        "target": {"url": testbed().url(Server::Target, &unique_name("rds_state_dst"))},
    });
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-rds");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains("pgferry-no-such-instance") && c.detail.contains("DBInstanceNotFound"), "{c:?}");

    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let job = json!({
        "source": aws::endpoint_json(&s, Server::Source, &src),
        "target": {"url": testbed().url(Server::Target, &unique_name("rds_state_dst"))},
    });
    let out = run(&w.context(), job.clone()).await;
    let c = check(&out, "source-rds");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("postgres 15.4, available, gp3 20 GiB"), "{}", c.detail);
    assert_eq!(status(&out, "source-pending-reboot"), CheckStatus::Pass);

    w.c.rds.stop_db_instance().db_instance_identifier(&s.id).send().await.unwrap();
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-rds");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.advice.as_deref().unwrap().contains(&format!("aws rds start-db-instance --db-instance-identifier {}", s.id))
    );
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t50_force_ssl_passes_with_verify_full_and_fails_against_sslmode_disable() {
    let w = world().await;
    let src = source_db("force_ssl").await;
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    let target = json!({"url": testbed().url(Server::Target, &unique_name("force_ssl_dst"))});

    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-force-ssl");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("rds.force_ssl=1 (engine default)"), "{}", c.detail);

    source["sslMode"] = json!("disable");
    source.as_object_mut().unwrap().remove("sslRootCert");
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-force-ssl");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("rds.force_ssl=1") && c.detail.contains("sslMode `disable`"), "{}", c.detail);
    // The server (like RDS with rds.force_ssl=1) refuses the plain connection; the failure says why.
    let c = check(&out, "source-connect");
    assert!(c.detail.contains("rds.force_ssl=1"), "{c:?}");
    assert!(c.advice.as_deref().unwrap().contains("SSL is required"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t44_logical_replication_is_required_of_the_source_parameter_group_for_continuous_mode() {
    let w = world().await;
    let src = source_db("logical").await;
    let target = json!({"url": testbed().url(Server::Target, &unique_name("logical_dst"))});
    let req = Requirements { logical_replication: true };

    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let out =
        run_with(&w.context(), json!({"source": aws::endpoint_json(&s, Server::Source, &src), "target": target}), req)
            .await;
    let c = check(&out, "source-logical-replication");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    let advice = c.advice.as_deref().unwrap();
    assert!(advice.contains("create-db-parameter-group"), "a default group must be replaced first: {advice}");
    assert!(
        advice.contains("ParameterName=rds.logical_replication,ParameterValue='1'")
            && advice.contains("reboot-db-instance"),
        "{advice}"
    );

    let group = aws::parameter_group(&w.c, &[("rds.logical_replication", "1")]).await;
    let mut spec = w.spec("postgres");
    spec.parameter_group = Some(group.clone());
    let s = w.instance(Server::Source, spec).await;
    let out =
        run_with(&w.context(), json!({"source": aws::endpoint_json(&s, Server::Source, &src), "target": target}), req)
            .await;
    let c = check(&out, "source-logical-replication");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains(&group));
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t18_the_target_parameter_group_must_preload_what_source_extensions_need() {
    let w = world().await;
    let src = source_db("preload").await;
    let admin = connect(&testbed().admin_url(Server::Source, &src)).await;
    admin.batch_execute("CREATE EXTENSION pg_stat_statements").await.unwrap();
    drop(admin);

    // Absent from the group: the RDS default, which preloads pg_stat_statements.
    let t = w.instance(Server::Target, w.spec("dbadmin")).await;
    let source = json!({"url": testbed().url(Server::Source, &src)});
    let out = run(
        &w.context(),
        json!({"source": source, "target": aws::endpoint_json(&t, Server::Target, &unique_name("preload_dst"))}),
    )
    .await;
    let c = check(&out, "shared-preload");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");

    let group = aws::parameter_group(&w.c, &[("shared_preload_libraries", "auto_explain")]).await;
    let mut spec = w.spec("dbadmin");
    spec.parameter_group = Some(group.clone());
    let t = w.instance(Server::Target, spec).await;
    let out = run(
        &w.context(),
        json!({"source": source, "target": aws::endpoint_json(&t, Server::Target, &unique_name("preload_dst"))}),
    )
    .await;
    let c = check(&out, "shared-preload");
    assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
    assert!(c.detail.contains("lacks pg_stat_statements"), "{}", c.detail);
    let advice = c.advice.as_deref().unwrap();
    assert!(
        advice.contains(&format!(
            "modify-db-parameter-group --db-parameter-group-name {group} --parameters \
             \"ParameterName=shared_preload_libraries,ParameterValue='auto_explain,pg_stat_statements',ApplyMethod=pending-reboot\""
        )),
        "{advice}"
    );
    assert!(advice.contains(&format!("reboot-db-instance --db-instance-identifier {}", t.id)), "{advice}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn the_managed_secret_is_read_and_a_missing_secret_is_named() {
    let w = world().await;
    let src = source_db("secret").await;
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let target = json!({"url": testbed().url(Server::Target, &unique_name("secret_dst"))});
    let out =
        run(&w.context(), json!({"source": aws::endpoint_json(&s, Server::Source, &src), "target": target})).await;
    let c = check(&out, "source-secret");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(
        c.detail.contains(&format!("RDS-managed secret {} is readable (user postgres)", s.secret_arn)),
        "{}",
        c.detail
    );
    assert_eq!(status(&out, "source-connect"), CheckStatus::Pass, "{:?}", check(&out, "source-connect"));
    let report = serde_json::to_string(&out).unwrap();
    assert!(!report.contains("p@ss"), "no password in the report");

    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pgferry-missing-AbCdEf";
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    source["secretArn"] = json!(missing);
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-secret");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains(missing) && c.detail.contains("ResourceNotFoundException"), "{}", c.detail);
    assert!(c.advice.as_deref().unwrap().contains("check `secretArn`"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn iam_auth_requested_on_an_instance_without_it_fails_with_the_modify_command() {
    let w = world().await;
    let src = source_db("iam").await;
    let target = json!({"url": testbed().url(Server::Target, &unique_name("iam_dst"))});
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    source["iamAuth"] = json!(true);
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-iam-auth");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.advice.as_deref().unwrap().contains("--enable-iam-database-authentication"), "{c:?}");

    let mut spec = w.spec("postgres");
    spec.iam_auth = true;
    let s = w.instance(Server::Source, spec).await;
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    source["iamAuth"] = json!(true);
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    assert_eq!(status(&out, "source-iam-auth"), CheckStatus::Pass);
    // The token is generated and offered as the password; the test bed has no IAM, so it is refused.
    let c = check(&out, "source-connect");
    assert!(
        c.detail.contains("password authentication failed") || c.advice.as_deref().unwrap_or("").contains("IAM"),
        "{c:?}"
    );
    assert!(c.detail.contains("an RDS IAM auth token"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t49_a_ca_in_the_embedded_bundle_passes_and_the_expired_2019_ca_fails() {
    let w = world().await;
    let src = source_db("ca").await;
    let target = json!({"url": testbed().url(Server::Target, &unique_name("ca_dst"))});
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    source.as_object_mut().unwrap().remove("sslRootCert");
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-ca-certificate");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("Amazon RDS us-east-1 Root CA RSA2048 G1"), "{}", c.detail);

    let mut spec = w.spec("postgres");
    spec.ca = Some("rds-ca-2019".to_string());
    let s = w.instance(Server::Source, spec).await;
    let mut source = aws::endpoint_json(&s, Server::Source, &src);
    source.as_object_mut().unwrap().remove("sslRootCert");
    let out = run(&w.context(), json!({"source": source, "target": target})).await;
    let c = check(&out, "source-ca-certificate");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.advice.as_deref().unwrap().contains("--ca-certificate-identifier rds-ca-rsa2048-g1"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn target_storage_passes_for_a_small_source_and_warns_on_magnetic_storage() {
    let w = world().await;
    let src = source_db("storage").await;
    let source = json!({"url": testbed().url(Server::Source, &src)});
    let t = w.instance(Server::Target, w.spec("dbadmin")).await;
    let out = run(
        &w.context(),
        json!({"source": source, "target": aws::endpoint_json(&t, Server::Target, &unique_name("st_dst"))}),
    )
    .await;
    let c = check(&out, "target-storage");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("gp3 20 GiB allocated"), "{}", c.detail);

    let mut spec = w.spec("dbadmin");
    spec.storage_type = "standard".to_string();
    let t = w.instance(Server::Target, spec).await;
    let out = run(
        &w.context(),
        json!({"source": source, "target": aws::endpoint_json(&t, Server::Target, &unique_name("st_dst"))}),
    )
    .await;
    assert_eq!(status(&out, "target-storage"), CheckStatus::Warn, "{:?}", check(&out, "target-storage"));
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t59_two_names_for_one_instance_are_refused_before_connecting() {
    let w = world().await;
    let src = source_db("same_rds").await;
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    let out = run(
        &w.context(),
        json!({"source": aws::endpoint_json(&s, Server::Source, &src), "target": aws::endpoint_json(&s, Server::Source, "other_db")}),
    )
    .await;
    assert!(!out.ok);
    let c = check(&out, "distinct-servers");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains(&s.id), "{}", c.detail);
    assert!(out.checks.iter().all(|c| c.name != "source-connect"), "nothing is connected to");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn a_rotated_managed_secret_is_read_again_once_when_the_password_is_rejected() {
    let w = world().await;
    let src = source_db("rotate").await;
    let s = w.instance(Server::Source, w.spec("postgres")).await;
    aws::put_secret(&w.c, &s.secret_arn, "postgres", "an-old-password").await;
    let job = Job::from_value(json!({
        "source": aws::endpoint_json(&s, Server::Source, &src),
        "target": {"url": testbed().url(Server::Target, "postgres")},
    }))
    .unwrap();
    let ctx = w.context();
    // The old version is cached, as in a warm Lambda container…
    let stale = ctx.conn_spec(&job, Side::Source).await.unwrap();
    assert_eq!(stale.password.unwrap().expose(), "an-old-password");
    // …then the secret rotates.
    aws::point_secret_at(&w.c, &s.secret_arn, Server::Source).await;
    let client = ctx.connect(&job, Side::Source, "copy", "rotate-run").await.expect("the re-read secret connects");
    let n: i64 = client.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    // A secret that is simply wrong is re-read once and then reported with its source.
    aws::put_secret(&w.c, &s.secret_arn, "postgres", "still-wrong").await;
    ctx.forget_secret(&s.secret_arn);
    let err = ctx.connect(&job, Side::Source, "copy", "rotate-run").await.unwrap_err();
    assert_eq!(err.kind(), pgferry_core::ErrorKind::AuthFailed);
    drop(client);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn a_connection_failure_in_a_later_step_is_explained_with_the_network_path_preflight_found() {
    let w = world().await;
    let other = aws::security_group(&w.c, &w.vpc, "pgferry-other").await;
    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &other).await;
    let (mut job, src, _) = pair(&w, "explain", w.spec("postgres"), w.spec("dbadmin")).await;
    let ctx = w.context();
    let job_value = job.clone();
    let parsed = Job::from_value(job_value).unwrap();
    let input = StepInput { job: parsed, run_id: unique_name("run") };
    let out = preflight::run(&ctx, &input).await.unwrap();
    assert_eq!(status(&out, "source-network"), CheckStatus::Fail);

    // Later, a copy step cannot reach the source (here: nothing listens on the port dialled).
    job["source"]["port"] = json!(1);
    let broken = Job::from_value(job).unwrap();
    let err = ctx.connect(&broken, Side::Source, "copy", &input.run_id).await.unwrap_err();
    let message = err.with_advice();
    assert_eq!(err.kind(), pgferry_core::ErrorKind::ConnectionRefused);
    assert!(message.contains("preflight found:") && message.contains("was `available` at preflight"), "{message}");
    let facts = out.facts.iter().find(|f| f.side == Side::Source).unwrap();
    assert_eq!(facts.network_open, Some(false));
    assert!(facts.network.as_deref().unwrap().contains(&format!("missing inbound rule on {}", w.db_sg)));
    // A timeout (the usual symptom of a security group) is explained with that rule.
    let explained = pgferry_core::preflight::explain(facts, pgferry_core::ErrorKind::ConnectTimeout).unwrap();
    assert!(
        explained.contains(&format!("missing inbound rule on {}: tcp 5432 from {}", w.db_sg, w.fn_sg)),
        "{explained}"
    );
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn a_security_group_of_the_functions_that_does_not_exist_is_named() {
    let w = world().await;
    aws::allow_group(&w.c, &w.db_sg, 5432, 5432, &w.fn_sg).await;
    let (mut job, src, _) = pair(&w, "fn_missing", w.spec("postgres"), w.spec("dbadmin")).await;
    let out = run(&w.context(), job.clone()).await;
    assert_eq!(status(&out, "source-network"), CheckStatus::Pass);
    assert!(out.checks.iter().all(|c| c.name != "functions-network"));

    job["network"]["securityGroupIds"] = json!(["sg-0000000000000dead"]);
    let out = run(&w.context(), job).await;
    let c = check(&out, "functions-network");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("sg-0000000000000dead") && c.detail.contains("InvalidGroup.NotFound"), "{}", c.detail);
    assert!(c.advice.as_deref().unwrap().contains("does not exist"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn an_aurora_cluster_is_resolved_through_its_writer_endpoint_and_managed_secret() {
    let w = world().await;
    let src = source_db("aurora").await;
    let id = aws::unique("pgferry-cluster");
    let cluster =
        w.c.rds
            .create_db_cluster()
            .db_cluster_identifier(&id)
            .engine("aurora-postgresql")
            .engine_version("15.4")
            .master_username("postgres")
            .manage_master_user_password(true)
            .send()
            .await
            .unwrap();
    let arn = cluster.db_cluster().unwrap().master_user_secret().unwrap().secret_arn().unwrap().to_string();
    aws::point_secret_at(&w.c, &arn, Server::Source).await;
    let job = json!({
        "source": {"rdsCluster": id, "database": src, "host": "127.0.0.1", "port": testbed().port(Server::Source),
                   "sslRootCert": testbed().ca()},
        "target": {"url": testbed().url(Server::Target, &unique_name("aurora_dst"))},
    });
    let out = run(&w.context(), job).await;
    let c = check(&out, "source-rds");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.starts_with(&format!("Aurora cluster {id}: aurora-postgresql 15.4")), "{}", c.detail);
    assert_ne!(status(&out, "source-secret"), CheckStatus::Fail);
    assert_eq!(status(&out, "source-connect"), CheckStatus::Pass, "{:?}", check(&out, "source-connect"));
    drop_db(Server::Source, &src).await;
}
