//! Taking the run's one dump: globals with `pg_dumpall`, the schema with `pg_dump`, and its two
//! sections rendered as text by `pg_restore` from the same archive.
//!
//! The schema is dumped once per run, in custom format, so the post-data applied after the copy
//! belongs to the same snapshot of the schema as the pre-data applied before it. Sections are
//! rendered with `--verbose` because that is where pg_dump writes each TOC entry's id and
//! dependencies, which the sanitizer needs to skip the dependents of an object it cannot create.
//! Owners and privileges are kept (RDS-CASES T23, T24); tablespaces, publications and
//! subscriptions are left out (T11, T22). The artifacts are written first and the manifest last,
//! so a retried step either finds a complete dump or takes it again.

use serde::{Deserialize, Serialize};

use crate::catalog::PGFERRY_SCHEMA;
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::{LibpqInvocation, Session};
use crate::step::{StepInput, keys};

use super::sanitize::redact_secrets;

/// What was dumped, written after the dump artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub globals_key: String,
    pub pre_data_key: String,
    pub post_data_key: String,
    /// `pg_dump --version` of the program used.
    pub pg_dump_version: String,
}

/// The run's dump texts.
#[derive(Debug, Clone)]
pub struct Dump {
    pub manifest: Manifest,
    pub globals: String,
    /// Rendered with `--create`: database-level entries first.
    pub pre_data: String,
    pub post_data: String,
}

/// Returns the run's dump, taking it if no complete one is stored yet.
pub async fn ensure(ctx: &StepContext, input: &StepInput) -> Result<Dump> {
    let run = &input.run_id;
    if let Ok(manifest) = ctx.store.get_json::<Manifest>(&keys::schema_manifest(run)).await {
        return load(ctx, manifest).await;
    }
    let spec = ctx.conn_spec(&input.job, Side::Source).await?;
    let libpq = LibpqInvocation::new(&spec, &Session::new("schema-dump", run), &ctx.scratch)?;
    let globals =
        run_tool(ctx, &libpq, "pg_dumpall", &["--globals-only", "--no-role-passwords", "--dbname"], true).await?;
    let archive_path = ctx.scratch.join(format!("{}-schema.dump", rand::random::<u64>()));
    crate::pg::private_dir(&ctx.scratch)?;
    let archive_arg = archive_path.display().to_string();
    // pg_dump locks every table it dumps: behind a long-running DDL it must fail, not wait forever.
    let lock_wait = format!("--lock-wait-timeout={}", crate::pg::DEFAULT_LOCK_TIMEOUT.as_millis());
    let result = async {
        run_tool(
            ctx,
            &libpq,
            "pg_dump",
            &[
                "--schema-only",
                &lock_wait,
                "--create",
                "--format=custom",
                "--encoding=UTF8",
                "--no-tablespaces",
                "--no-subscriptions",
                "--exclude-schema",
                PGFERRY_SCHEMA,
                "--file",
                &archive_arg,
                "--dbname",
            ],
            true,
        )
        .await?;
        let pre = restore(ctx, &archive_arg, &["--create", "--section=pre-data"]).await?;
        let post = restore(ctx, &archive_arg, &["--section=post-data"]).await?;
        Ok::<_, Error>((pre, post))
    }
    .await;
    let _ = std::fs::remove_file(&archive_path);
    // The archive stays in the scratch directory only (removed above): the texts are what the
    // steps apply, stored with the secrets a schema may hold redacted (RDS-CASES T70).
    let (pre_data, post_data) = result?;
    let (pre_data, post_data) = (redact_secrets(&pre_data), redact_secrets(&post_data));
    let version = tool_version(ctx, "pg_dump").await.unwrap_or_default();

    let manifest = Manifest {
        globals_key: keys::dump(run, "globals"),
        pre_data_key: keys::dump(run, "pre-data"),
        post_data_key: keys::dump(run, "post-data"),
        pg_dump_version: version,
    };
    ctx.store.put_bytes(&manifest.globals_key, globals.as_bytes()).await?;
    ctx.store.put_bytes(&manifest.pre_data_key, pre_data.as_bytes()).await?;
    ctx.store.put_bytes(&manifest.post_data_key, post_data.as_bytes()).await?;
    ctx.store.put_json(&keys::schema_manifest(run), &manifest).await?;
    Ok(Dump { manifest, globals, pre_data, post_data })
}

/// Reads a stored dump.
pub async fn load(ctx: &StepContext, manifest: Manifest) -> Result<Dump> {
    let text = |key: String| async move {
        String::from_utf8(ctx.store.get_bytes(&key).await?)
            .map_err(|_| Error::Store { key: key.clone(), reason: "not UTF-8".to_string() })
    };
    Ok(Dump {
        globals: text(manifest.globals_key.clone()).await?,
        pre_data: text(manifest.pre_data_key.clone()).await?,
        post_data: text(manifest.post_data_key.clone()).await?,
        manifest,
    })
}

/// Reads the run's stored dump; the globals step takes it.
pub async fn stored(ctx: &StepContext, run: &str) -> Result<Dump> {
    let manifest = ctx.store.get_json::<Manifest>(&keys::schema_manifest(run)).await.map_err(|_| Error::Store {
        key: keys::schema_manifest(run),
        reason: "no schema dump for this run: the globals step takes it".to_string(),
    })?;
    load(ctx, manifest).await
}

/// Runs a libpq client program with the connection's conninfo as its last argument.
async fn run_tool(
    ctx: &StepContext,
    libpq: &LibpqInvocation,
    tool: &str,
    args: &[&str],
    conninfo_last: bool,
) -> Result<String> {
    let path = ctx.pg_tool(tool);
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args);
    if conninfo_last {
        cmd.arg(&libpq.conninfo);
    }
    let output = cmd
        .env_clear()
        .envs(libpq.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {}", path.display()), e))?;
    stdout_of(tool, output)
}

/// The standard output of a finished client program, or its failure with its stderr.
fn stdout_of(tool: &str, output: std::process::Output) -> Result<String> {
    if !output.status.success() {
        return Err(Error::Tool {
            tool: tool.to_string(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| Error::Internal(format!("{tool} wrote invalid UTF-8")))
}

/// Renders sections of a custom-format archive as SQL text, with TOC ids and dependencies.
async fn restore(ctx: &StepContext, archive: &str, args: &[&str]) -> Result<String> {
    let path = ctx.pg_tool("pg_restore");
    let output = tokio::process::Command::new(&path)
        .args(["--verbose", "--no-tablespaces"])
        .args(args)
        .args(["--file", "-", archive])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {}", path.display()), e))?;
    stdout_of("pg_restore", output)
}

async fn tool_version(ctx: &StepContext, tool: &str) -> Option<String> {
    let out = tokio::process::Command::new(ctx.pg_tool(tool)).arg("--version").output().await.ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
