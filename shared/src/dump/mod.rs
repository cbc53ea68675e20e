//! What turns a `pg_dumpall`/`pg_dump` dump into statements a target that is not a superuser
//! accepts — machinery, no step: the schema step, refresh, the plan and the inventory use it.
//!
//! `pg_dumpall` and `pg_dump` output is not restorable on RDS as it is: the master user is not a
//! superuser, RDS owns some roles, and a peer tool's substring filter once turned every role
//! NOLOGIN because `NOSUPERUSER` contains `SUPERUSER`. Here a real lexer ([`lex`]) splits the dump
//! into statements, a parser ([`parse`]) reads the shapes that matter, rules ([`sanitize`])
//! decide from facts about the target ([`facts`]) what to keep, rewrite, skip or try, and the
//! apply engine ([`apply`]) runs the plan one statement at a time. Every step writes a report
//! ([`report`]) naming each statement's verdict and rule (RDS-CASES A, B, T60). The dump itself is
//! taken once per run by [`tool`]; post-data is split into parallel items by [`postdata`].

pub mod apply;
pub mod facts;
pub mod lex;
pub mod parse;
pub mod postdata;
pub mod report;
pub mod sanitize;
pub mod tool;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ledger::BOOKKEEPING_DDL;
use crate::roles::MembershipLog;
use facts::Facts;
use lex::{Item, ItemKind};
use sanitize::{ApplyAs, Phase, Plan, Sanitizer, Verdict};

/// Dump sections, in the order they are applied.
pub const PRE_DATA: &str = "pre-data";

pub const POST_DATA: &str = "post-data";

/// The pre-data and post-data plans, computed together so that the post-data plan knows which
/// pre-data objects were skipped.
pub(crate) fn plan_sections(facts: &Facts, pre_data: &[Item<'_>], post_data: &[Item<'_>]) -> (Plan, Plan) {
    let mut sanitizer = Sanitizer::new(facts);
    let pre = sanitizer.plan(Phase::PreData, pre_data);
    let post = sanitizer.plan(Phase::PostData, post_data);
    (pre, post)
}

/// A hash of a section's statements as dumped (comments and psql lines excluded), which says
/// whether two runs dumped the same schema.
pub(crate) fn section_hash(items: &[Item<'_>]) -> String {
    let mut h = Sha256::new();
    for item in items.iter().filter(|i| i.kind == ItemKind::Statement && !i.is_empty()) {
        h.update(item.sql().as_bytes());
        h.update(b"\n;\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens a section's transaction for its statements: the master made a member of the database
/// owner and of the roles the plan acts as, pgferry's bookkeeping and chunk ledger in place.
pub(crate) async fn prepare_section(
    tx: &tokio_postgres::Transaction<'_>,
    log: &mut MembershipLog,
    facts: &Facts,
    plan: &Plan,
) -> Result<()> {
    apply::ensure_database_owner(tx, log, &facts.target_database).await?;
    for role in acting_roles(facts, plan) {
        log.ensure(tx, &role).await?;
    }
    tx.batch_execute(BOOKKEEPING_DDL).await.map_err(|e| Error::db("create pgferry bookkeeping schema", e))?;
    tx.batch_execute(crate::ledger::LEDGER_DDL).await.map_err(|e| Error::db("create the chunk ledger", e))?;
    Ok(())
}

/// Roles the master must be a member of to apply a plan (and to copy into the tables it owns).
pub(crate) fn acting_roles(facts: &Facts, plan: &Plan) -> Vec<String> {
    let mut roles: Vec<String> = plan.acting_roles.iter().filter(|r| **r != facts.target.master).cloned().collect();
    // Owners of the objects a plan gives away are acting roles too.
    for s in &plan.statements {
        if let ApplyAs::Owner { owner, .. } = &s.apply
            && s.verdict != Verdict::Skip
            && !roles.contains(owner)
        {
            roles.push(owner.clone());
        }
    }
    roles
}
