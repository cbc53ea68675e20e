//! `pgferry preflight` and `pgferry run` against the AWS emulator and the test bed: the network
//! finding a user acts on, a target that is the source under another name, and a typo'd job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgferry_tests::aws::{self, InstanceSpec, Vpc};
use pgferry_tests::{Server, connect, create_db, drop_db, testbed, unique_name};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(&format!("pgferry-cli-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the CLI with the emulator as its only AWS.
fn pgferry(args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgferry"));
    cmd.args(args).arg("--store").arg(dir.join("artifacts")).envs(aws::child_env());
    for var in aws::CHILD_ENV_REMOVE {
        cmd.env_remove(var);
    }
    cmd.output().expect("run pgferry")
}

fn write(dir: &Path, job: &serde_json::Value) -> String {
    let path = dir.join("job.json");
    std::fs::write(&path, serde_json::to_string_pretty(job).unwrap()).unwrap();
    path.display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn preflight_names_the_security_group_and_the_missing_inbound_rule_and_passes_once_it_is_added() {
    let c = aws::clients().await;
    let o = aws::vpc_octet();
    let vpc = aws::vpc(&c, &format!("10.{o}.0.0/16"), &[&format!("10.{o}.1.0/24"), &format!("10.{o}.2.0/24")]).await;
    let fn_sg = aws::security_group(&c, &vpc, "pgferry-fn").await;
    let db_sg = aws::security_group(&c, &vpc, "pgferry-db").await;
    let admin_sg = aws::security_group(&c, &vpc, "pgferry-admin").await;
    aws::allow_group(&c, &db_sg, 5432, 5432, &admin_sg).await;
    aws::api_endpoints(&c, &vpc, &vpc.subnets, &fn_sg).await;
    let placement = Vpc { id: vpc.id.clone(), subnets: vpc.subnets.clone() };
    let source = aws::rds_instance(&c, &InstanceSpec::new(&placement, &[&db_sg], "postgres")).await;
    let target = aws::rds_instance(&c, &InstanceSpec::new(&placement, &[&db_sg], "dbadmin")).await;
    aws::point_secret_at(&c, &source.secret_arn, Server::Source).await;
    aws::point_secret_at(&c, &target.secret_arn, Server::Target).await;
    let src_db = create_db(Server::Source, "cli_net").await;
    connect(&testbed().url(Server::Source, &src_db))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = scratch("net");
    let job = write(
        &dir,
        &serde_json::json!({
            "source": aws::endpoint_json(&source, Server::Source, &src_db),
            "target": aws::endpoint_json(&target, Server::Target, &unique_name("cli_net_dst")),
            "network": {"securityGroupIds": [fn_sg], "subnetIds": vpc.subnets},
        }),
    );

    let out = pgferry(&["preflight", &job], &dir);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    let missing = format!("missing inbound rule on {db_sg}: tcp 5432 from {fn_sg}");
    let fix = format!(
        "aws ec2 authorize-security-group-ingress --group-id {db_sg} --protocol tcp --port 5432 --source-group {fn_sg}"
    );
    let line = stdout.lines().find(|l| l.starts_with("FAIL source-network")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&db_sg) && line.contains(&missing), "{line}");
    assert!(stdout.lines().any(|l| l.starts_with("FAIL target-network")), "{stdout}");
    assert!(stdout.contains(&fix), "{stdout}");
    // The report artifact says the same.
    let report_path = stdout.lines().last().unwrap().rsplit("report ").next().unwrap().trim().to_string();
    let report = std::fs::read_to_string(&report_path).unwrap_or_else(|e| panic!("{report_path}: {e}"));
    assert!(report.contains(&missing) && report.contains(&fix), "{report}");
    assert!(!stdout.contains("p@ss") && !report.contains("p@ss"), "no secret in the output");

    aws::allow_group(&c, &db_sg, 5432, 5432, &fn_sg).await;
    let out = pgferry(&["preflight", &job], &dir);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok   source-network")
                && l.contains(&format!("{db_sg} allows tcp 5432 from {fn_sg}"))),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "every check passes now:\n{stdout}");
    drop_db(Server::Source, &src_db).await;
}

#[tokio::test]
async fn run_refuses_a_target_on_the_source_server_under_another_host_name_before_writing_anything() {
    let src_db = create_db(Server::Source, "cli_same").await;
    connect(&testbed().url(Server::Source, &src_db))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let copy_db = unique_name("cli_same_copy");
    let port = testbed().port(Server::Source);
    let target_url = testbed()
        .url(Server::Source, &copy_db)
        .replace(&format!("@127.0.0.1:{port}"), &format!("@localhost:{port}"))
        .replace("sslmode=verify-full", "sslmode=verify-ca");
    let dir = scratch("same");
    let job = write(
        &dir,
        &serde_json::json!({"source": {"url": testbed().url(Server::Source, &src_db)}, "target": {"url": target_url}}),
    );

    let out = pgferry(&["run", &job], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let reason = text(&out.stderr).lines().last().unwrap_or("").to_string();
    assert!(reason.contains("Pgferry.PreflightFailed") && reason.contains("distinct-servers"), "{reason}");
    let admin = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    let created = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&copy_db]).await.unwrap();
    assert!(created.is_none(), "nothing was written: the target database does not exist");
    drop_db(Server::Source, &src_db).await;
}

#[tokio::test]
async fn a_typo_in_a_job_field_is_refused_naming_the_field_and_the_schema_is_published() {
    let dir = scratch("typo");
    let job = write(
        &dir,
        &serde_json::json!({"source": {"rdsInstnace": "prod-db", "database": "shop"}, "target": {"rdsInstance": "staging-db", "database": "shop"}}),
    );
    let out = pgferry(&["preflight", &job], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown field `rdsInstnace` in source (did you mean `rdsInstance`?)"), "{stderr}");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/job.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["$defs"]["endpoint"]["additionalProperties"], false);
}

/// Issue 23: a deployment names the databases jobs may read and write; the CLI honours the same
/// variables. A target outside `PGFERRY_ALLOWED_TARGETS` is refused by preflight (Pgferry.NotAllowed,
/// naming the endpoint) while the allowed source passes, and an RDS source outside
/// `PGFERRY_ALLOWED_SOURCES` is refused before its secret is read.
#[tokio::test]
async fn an_endpoint_outside_the_allow_lists_is_refused_by_preflight() {
    let src_db = create_db(Server::Source, "cli_allow").await;
    let dir = scratch("allow");
    let job = write(
        &dir,
        &serde_json::json!({
            "source": {"url": testbed().url(Server::Source, &src_db)},
            "target": {"url": testbed().url(Server::Target, &unique_name("cli_allow_dst"))},
        }),
    );
    let source_port = testbed().port(Server::Source);
    let target_port = testbed().port(Server::Target);
    let run = |sources: String, targets: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgferry"));
        cmd.args(["preflight", &job])
            .arg("--store")
            .arg(dir.join("artifacts"))
            .envs(aws::child_env())
            .env("PGFERRY_ALLOWED_SOURCES", sources)
            .env("PGFERRY_ALLOWED_TARGETS", targets);
        cmd.output().expect("run pgferry")
    };

    let out = run(format!("prod-db, 127.0.0.1:{source_port}"), "db.example.com:5432");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("FAIL target-allowed")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(&format!("target 127.0.0.1:{target_port} is not allowed"))
            && line.contains("PGFERRY_ALLOWED_TARGETS = db.example.com:5432"),
        "{line}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("ok   source-connect")), "{stdout}");

    // Both allowed (a host alone allows any port): no allow-list failure.
    let out = run("127.0.0.1".to_string(), &format!("127.0.0.1:{target_port}"));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("not allowed"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("ok   target-connect")), "{stdout}");

    // An RDS source by name, outside the list: refused by name, before anything is looked up.
    let rds_job = write(
        &dir,
        &serde_json::json!({
            "source": {"rdsInstance": "prod-db", "database": "shop"},
            "target": {"url": testbed().url(Server::Target, &unique_name("cli_allow_dst"))},
        }),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgferry"));
    cmd.args(["preflight", &rds_job])
        .arg("--store")
        .arg(dir.join("artifacts"))
        .envs(aws::child_env())
        .env("PGFERRY_ALLOWED_SOURCES", "arn:aws:rds:us-east-1:123456789012:db:staging-db");
    let out = cmd.output().expect("run pgferry");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("FAIL source-allowed")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("source RDS instance prod-db is not allowed"), "{line}");
    assert!(!stdout.contains("source-rds"), "nothing is looked up: {stdout}");
    drop_db(Server::Source, &src_db).await;
}
