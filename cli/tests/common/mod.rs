//! Helpers shared by the CLI's integration tests: a scratch directory, the `pgferry` binary with
//! a private artifact store, and the test bed's libpq programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgferry_core::pg::{ConnSpec, LibpqInvocation, Session};
use pgferry_tests::{Server, testbed, unique_name};

/// A new directory under the system's temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(&format!("pgferry-cli-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `pgferry ARGS --store DIR/artifacts`.
pub fn pgferry(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgferry"))
        .args(args)
        .arg("--store")
        .arg(dir.join("artifacts"))
        .output()
        .expect("run pgferry")
}

/// Runs a libpq program of the test bed against a database as the master user.
pub fn libpq_tool(program: &str, args: &[&str], server: Server, db: &str) {
    let spec = ConnSpec::parse(&testbed().url(server, db)).unwrap();
    let libpq = LibpqInvocation::new(&spec, &Session::new("test", "cli"), &std::env::temp_dir()).unwrap();
    let out = Command::new(testbed().pg_bin(program))
        .args(args)
        .arg(&libpq.conninfo)
        .envs(libpq.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
}
