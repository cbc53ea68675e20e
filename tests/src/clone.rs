//! Local stand-ins for the temporary RDS clone of `"consistency": "clone"`.
//!
//! The emulator creates, describes and deletes the clone's RDS resource, but has no database
//! behind it. The data path is played by a third PostgreSQL server made from the test bed's source
//! with `pg_basebackup` (a physical copy of a live server at one instant, which is what a
//! point-in-time restore is), started on a free port. The job reaches it through
//! `source.clone.host`/`port`, pgferry's explicit local-only override (refused in Lambda): nothing
//! redirects connections behind pgferry's back.

use std::path::PathBuf;
use std::process::Command;

use pgferry_core::aws::Clients;
use pgferry_core::pg::ConnSpec;

use crate::aws::{InstanceSpec, unique};
use crate::{Server, testbed};

/// Whether this process runs as root (`/proc/self` belongs to the process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a server-side program as the `postgres` OS user when this process is root (the server
/// refuses to run as root), else as ourselves.
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server made from the test bed's source by `pg_basebackup`; stopped and removed
/// when dropped.
#[derive(Debug)]
pub struct StandIn {
    pub port: u16,
    dir: PathBuf,
}

impl StandIn {
    /// Copies the live source (as rdsadmin, over a TLS replication connection) and starts the copy
    /// as a primary of its own on a free loopback port. Its roles and passwords are the source's,
    /// as a clone's are.
    pub fn from_source() -> Self {
        let bed = testbed();
        let admin = ConnSpec::parse(&bed.admin_url(Server::Source, "postgres")).expect("admin URL");
        let dir = std::env::temp_dir().join(unique("pgferry-clone-standin"));
        std::fs::create_dir_all(&dir).expect("stand-in directory");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown stand-in directory",
            );
        }
        let data = dir.join("data");
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} sslmode=verify-full sslrootcert={}",
            bed.port(Server::Source),
            admin.user,
            bed.ca()
        );
        let mut backup = as_postgres(&bed.source_pg_bin("pg_basebackup"));
        backup
            .arg("-d")
            .arg(&conninfo)
            .arg("-D")
            .arg(&data)
            .args(["-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", admin.password.as_ref().expect("admin password").expose());
        run(backup, "pg_basebackup of the source");
        let port = crate::moto::free_port();
        let standin = Self { port, dir };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_wal_senders=0 \
             -c max_replication_slots=0 -c wal_level=replica",
            standin.dir.display()
        );
        let mut start = as_postgres(&bed.source_pg_bin("pg_ctl"));
        start
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(standin.dir.join("log"))
            .args(["-o", &options]);
        run(start, "start the stand-in clone");
        standin
    }

    /// A URL of the stand-in as the master user (the source's password).
    pub fn url(&self, db: &str) -> String {
        testbed()
            .url(Server::Source, db)
            .replace(&format!("127.0.0.1:{}", testbed().port(Server::Source)), &format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let mut stop = as_postgres(&testbed().source_pg_bin("pg_ctl"));
        stop.args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"]).arg(self.dir.join("data"));
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates an RDS for PostgreSQL instance named `id` (not with the `pgferry-` prefix, so that a
/// test can say "no pgferry-* instance is left") with a managed master secret pointing at the
/// test bed source's master user; returns the secret's ARN.
pub async fn source_instance(c: &Clients, spec: &InstanceSpec, id: &str, backup_days: i32) -> String {
    let subnet_group = crate::aws::db_subnet_group(c, &spec.vpc, "clone-src-sng").await;
    let out = c
        .rds
        .create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .engine_version("15.4")
        .db_instance_class("db.r6g.large")
        .allocated_storage(spec.storage_gib)
        .storage_type(&spec.storage_type)
        .master_username(&spec.master_username)
        .manage_master_user_password(true)
        .backup_retention_period(backup_days)
        .set_vpc_security_group_ids(Some(spec.security_groups.clone()))
        .db_subnet_group_name(&subnet_group)
        .set_db_parameter_group_name(spec.parameter_group.clone())
        .publicly_accessible(false)
        .set_ca_certificate_identifier(spec.ca.clone())
        .set_storage_encrypted(spec.kms_key.as_ref().map(|_| true))
        .set_kms_key_id(spec.kms_key.clone())
        .send()
        .await
        .expect("create db instance");
    let arn = out
        .db_instance()
        .and_then(|d| d.master_user_secret())
        .and_then(|s| s.secret_arn())
        .expect("managed secret")
        .to_string();
    crate::aws::point_secret_at(c, &arn, Server::Source).await;
    arn
}

/// Identifiers of every RDS instance and cluster the emulator knows that start with `prefix`.
pub async fn rds_resources_named(c: &Clients, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = c
        .rds
        .describe_db_instances()
        .send()
        .await
        .expect("describe instances")
        .db_instances()
        .iter()
        .filter_map(|d| d.db_instance_identifier())
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect();
    let clusters = c.rds.describe_db_clusters().send().await.expect("describe clusters");
    found.extend(
        clusters
            .db_clusters()
            .iter()
            .filter_map(|d| d.db_cluster_identifier())
            .filter(|id| id.starts_with(prefix))
            .map(str::to_string),
    );
    found
}
