//! Preflight: find what would make the run fail, before anything is written.
//!
//! Every problem becomes a [`Check`] with advice instead of an exception, so the user reads all of
//! them at once. Preflight only reads: it never creates the target database or anything in it.

use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog;
use crate::context::StepContext;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Side;
use crate::pg;
use crate::step::{Check, CheckStatus, PreflightOutput, StepInput, keys};

/// Oldest source server pgferry supports (generated columns, `hashtextextended`).
pub const MIN_SERVER_VERSION_NUM: i32 = 120000;

/// Runs all checks and stores the preflight report.
pub async fn run(ctx: &StepContext, input: &StepInput) -> Result<PreflightOutput> {
    let started = Instant::now();
    let mut checks = Vec::new();
    let job = &input.job;
    job.validate()?;

    let source = match ctx.connect(job, Side::Source, "preflight", &input.run_id).await {
        Ok(client) => {
            checks.push(pass("source-connect", describe(&client).await?));
            Some(client)
        }
        Err(e) => {
            checks.push(fail_from("source-connect", &e));
            None
        }
    };
    let mut source_major = None;
    if let Some(client) = &source {
        let v = catalog::server_version_num(client).await?;
        source_major = Some(v / 10000);
        checks.push(if v >= MIN_SERVER_VERSION_NUM {
            pass("source-version", format!("server_version_num {v}"))
        } else {
            fail(
                "source-version",
                format!("server_version_num {v}"),
                "pgferry supports PostgreSQL 12 and newer sources",
            )
        });
        checks.push(pg_dump_check(ctx, v / 10000).await);
    }

    let target_spec = ctx.conn_spec(job, Side::Target)?;
    let session = pg::Session::new("preflight", &input.run_id);
    let target = match pg::connect(&target_spec, &session).await {
        Ok(client) => {
            checks.push(pass("target-connect", describe(&client).await?));
            let (count, names) = catalog::some_user_relations(&client, 5).await?;
            checks.push(if count == 0 {
                pass("target-empty", format!("database {} holds no user relations", target_spec.dbname))
            } else {
                let err = Error::TargetNotEmpty { database: target_spec.dbname.clone(), objects: names };
                fail(
                    "target-empty",
                    format!("{err} ({count} relations)"),
                    ErrorKind::TargetNotEmpty.advice().unwrap_or_default(),
                )
            });
            Some(client)
        }
        Err(e) if e.kind() == ErrorKind::DatabaseMissing => {
            // The database will be created by the globals step; the user must be allowed to.
            match pg::connect(&target_spec.with_dbname("postgres"), &session).await {
                Ok(client) => {
                    let row = client
                        .query_one("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
                        .await
                        .map_err(|e| Error::db("read role attributes", e))?;
                    let can_create: bool = row.get(0);
                    checks.push(if can_create {
                        pass(
                            "target-connect",
                            format!("database {} is missing and will be created", target_spec.dbname),
                        )
                    } else {
                        fail(
                            "target-connect",
                            format!(
                                "database {} is missing and {} may not create it",
                                target_spec.dbname, target_spec.user
                            ),
                            "create the database first, or connect as the RDS master user (CREATEDB)",
                        )
                    });
                    Some(client)
                }
                Err(e) => {
                    checks.push(fail_from("target-connect", &e));
                    None
                }
            }
        }
        Err(e) => {
            checks.push(fail_from("target-connect", &e));
            None
        }
    };

    if let (Some(source), Some(target)) = (&source, &target) {
        let tv = catalog::server_version_num(target).await?;
        if let Some(sm) = source_major {
            checks.push(if tv / 10000 >= sm {
                pass("target-version", format!("server_version_num {tv}"))
            } else {
                warn(
                    "target-version",
                    format!("target major {} is older than source major {sm}", tv / 10000),
                    "schema features of the newer source may be refused; upgrade the target instance first",
                )
            });
        }
        checks.push(same_server_check(source, target).await?);
    }

    let failures: Vec<String> =
        checks.iter().filter(|c| c.status == CheckStatus::Fail).map(|c| format!("{}: {}", c.name, c.detail)).collect();
    let output = PreflightOutput {
        ok: failures.is_empty(),
        summary: failures.join("; "),
        checks,
        report_key: keys::preflight(&input.run_id),
    };
    ctx.store.put_json(&output.report_key, &output).await?;
    tracing::info!(ok = output.ok, elapsed_ms = started.elapsed().as_millis() as u64, "preflight done");
    Ok(output)
}

async fn describe(client: &Client) -> Result<String> {
    let row = client
        .query_one("SELECT version(), current_user::text, current_database()::text", &[])
        .await
        .map_err(|e| Error::db("describe server", e))?;
    let version: String = row.get(0);
    let short = version.split(" on ").next().unwrap_or(&version).to_string();
    Ok(format!("{short}, user {}, database {}", row.get::<_, String>(1), row.get::<_, String>(2)))
}

/// pg_dump refuses servers of a newer major version than itself.
async fn pg_dump_check(ctx: &StepContext, source_major: i32) -> Check {
    let tool = ctx.pg_tool("pg_dump");
    match tokio::process::Command::new(&tool).arg("--version").output().await {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major = text
                .split_whitespace()
                .find_map(|w| w.split('.').next().and_then(|m| m.parse::<i32>().ok()))
                .unwrap_or(0);
            if major >= source_major {
                pass("pg-dump-version", text)
            } else {
                fail(
                    "pg-dump-version",
                    format!("{text} is older than the source's major version {source_major}"),
                    "install a pg_dump at least as new as the source (set PGFERRY_PG_BIN to its directory)",
                )
            }
        }
        Ok(out) => fail(
            "pg-dump-version",
            format!("{} --version failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr).trim()),
            "install the PostgreSQL client programs",
        ),
        Err(e) => fail(
            "pg-dump-version",
            format!("cannot run {}: {e}", tool.display()),
            "install the PostgreSQL client programs or set PGFERRY_PG_BIN to their directory",
        ),
    }
}

/// Source and target must be different databases, whatever names reach them (RDS-CASES T59):
/// the same postmaster start time and port with the same database name is the same database.
async fn same_server_check(source: &Client, target: &Client) -> Result<Check> {
    const IDENTITY: &str = "SELECT pg_postmaster_start_time()::text || ':' || coalesce(inet_server_port(), 0)::text \
                            || '/' || current_database()";
    let s: String = source.query_one(IDENTITY, &[]).await.map_err(|e| Error::db("read source identity", e))?.get(0);
    let t: String = target.query_one(IDENTITY, &[]).await.map_err(|e| Error::db("read target identity", e))?.get(0);
    Ok(if s == t {
        fail(
            "distinct-databases",
            "source and target are the same database on the same server".to_string(),
            "check the target endpoint: a CNAME or IP address may point at the source instance",
        )
    } else {
        pass("distinct-databases", "source and target are different databases".to_string())
    })
}

fn pass(name: &str, detail: String) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Pass, detail, advice: None }
}

fn warn(name: &str, detail: String, advice: &str) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Warn, detail, advice: Some(advice.to_string()) }
}

fn fail(name: &str, detail: String, advice: &str) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Fail, detail, advice: Some(advice.to_string()) }
}

fn fail_from(name: &str, err: &Error) -> Check {
    Check {
        name: name.to_string(),
        status: CheckStatus::Fail,
        detail: err.to_string(),
        advice: err.kind().advice().map(str::to_string),
    }
}
