//! The schema report: every statement kept, rewritten (before and after), skipped or tried, with
//! its rule and reason, plus what the operator must do by hand (passwords, parameter groups).
//!
//! One artifact per step (`runs/<run>/schema/<phase>-report.json`), because each step may be
//! retried on its own; [`summary`] reads them all and gives the CLI the few lines a person reads.
//! Nothing is dropped without a line in a report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sanitize::{Plan, RULES, Rule, Verdict};
use crate::step::keys;
use crate::store::ArtifactStore;

/// The report of one schema step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaReport {
    pub run_id: String,
    /// `globals`, `pre-data` or `post-data`.
    pub step: String,
    /// Statements sent to the target (kept, rewritten and tried ones).
    pub applied: usize,
    pub kept: usize,
    pub rewritten: usize,
    pub skipped: usize,
    pub tried: usize,
    /// Tried statements the target refused (classified, not failures).
    pub refused: usize,
    /// Set when an earlier run applied the same section into this database already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already_applied_by: Option<String>,
    /// LOGIN roles that arrive without a password: set one (or use IAM auth) for each (T7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub login_roles_without_password: Vec<String>,
    /// Roles the master was made a member of for this run (revoked by the release step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temporary_memberships: Vec<String>,
    /// Source objects that were not dumped on purpose (publications, subscriptions: T22).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_recreated: Vec<String>,
    pub plans: Vec<Plan>,
    /// The rules, with their reasons and the facts they consult.
    #[serde(default, skip_deserializing)]
    pub rules: Vec<Rule>,
}

impl SchemaReport {
    pub fn new(run_id: &str, step: &str, plans: Vec<Plan>) -> Self {
        let mut r = Self {
            run_id: run_id.to_string(),
            step: step.to_string(),
            applied: 0,
            kept: 0,
            rewritten: 0,
            skipped: 0,
            tried: 0,
            refused: 0,
            already_applied_by: None,
            login_roles_without_password: vec![],
            temporary_memberships: vec![],
            not_recreated: vec![],
            plans,
            rules: RULES.to_vec(),
        };
        r.recount();
        r
    }

    /// Recomputes the counts from the plans.
    pub fn recount(&mut self) {
        let all = || self.plans.iter().flat_map(|p| &p.statements);
        self.kept = all().filter(|s| s.verdict == Verdict::Keep).count();
        self.rewritten = all().filter(|s| s.verdict == Verdict::Rewrite).count();
        self.skipped = all().filter(|s| s.verdict == Verdict::Skip).count();
        self.tried = all().filter(|s| s.verdict == Verdict::Try).count();
        self.refused = all().filter(|s| s.outcome.as_deref().is_some_and(|o| o.starts_with("refused"))).count();
        self.applied = if self.already_applied_by.is_some() { 0 } else { self.kept + self.rewritten + self.tried };
        self.login_roles_without_password =
            self.plans.iter().flat_map(|p| p.login_roles_without_password.iter().cloned()).collect();
    }

    /// Skips by rule id.
    pub fn skipped_by_rule(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for s in self.plans.iter().flat_map(|p| &p.statements).filter(|s| s.verdict == Verdict::Skip) {
            *by.entry(s.rule.clone().unwrap_or_default()).or_insert(0) += 1;
        }
        by
    }
}

/// The steps that write reports, in order.
pub const STEPS: [&str; 3] = ["globals", "pre-data", "post-data"];

/// A few lines for a person: what was applied, what was changed or left out and why, and what to
/// do by hand. `None` when the run has no schema report.
pub async fn summary(store: &ArtifactStore, run: &str) -> Option<String> {
    let mut reports = Vec::new();
    for step in STEPS {
        if let Ok(r) = store.get_json::<SchemaReport>(&keys::schema_report(run, step)).await {
            reports.push(r);
        }
    }
    if reports.is_empty() {
        return None;
    }
    let steps: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{} {} applied ({} rewritten{}), {} skipped{}",
                r.step,
                r.applied,
                r.rewritten,
                if r.refused > 0 { format!(", {} refused", r.refused) } else { String::new() },
                r.skipped,
                r.already_applied_by.as_ref().map_or(String::new(), |by| format!(" (already applied by {by})"))
            )
        })
        .collect();
    let mut out = format!("schema: {}\n", steps.join("; "));
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reports {
        for (rule, n) in r.skipped_by_rule() {
            *by_rule.entry(rule).or_insert(0) += n;
        }
    }
    // Psql lines, pinned timeouts and roles that exist already are housekeeping, not losses.
    by_rule.retain(|rule, _| {
        !matches!(rule.as_str(), "meta.psql-only" | "meta.connect" | "session.timeouts" | "role.exists")
    });
    if !by_rule.is_empty() {
        let parts: Vec<String> = by_rule.iter().map(|(rule, n)| format!("{rule} ×{n}")).collect();
        out += &format!("  skipped by rule: {}\n", parts.join(", "));
    }
    let refused: Vec<String> = reports
        .iter()
        .flat_map(|r| r.plans.iter().flat_map(|p| &p.statements))
        .filter(|s| s.outcome.as_deref().is_some_and(|o| o.starts_with("refused")))
        .map(|s| s.before.clone())
        .collect();
    if !refused.is_empty() {
        out += &format!("  refused by the target: {}\n", refused.join("; "));
    }
    let logins: Vec<String> = reports.iter().flat_map(|r| r.login_roles_without_password.iter().cloned()).collect();
    if !logins.is_empty() {
        out += &format!(
            "  LOGIN roles without a password (passwords cannot be read from RDS; set them or use IAM auth): {}\n",
            logins.join(", ")
        );
    }
    let not_recreated: Vec<String> = reports.iter().flat_map(|r| r.not_recreated.iter().cloned()).collect();
    if !not_recreated.is_empty() {
        out += &format!("  not recreated: {}\n", not_recreated.join(", "));
    }
    out += &format!("  details: {}\n", store.location(&keys::schema_report(run, "<step>")));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_summary_names_each_step_and_the_run_that_applied_a_section_already() {
        let dir = std::env::temp_dir().join(format!("pgferry-report-{}", rand::random::<u64>()));
        let store = ArtifactStore::local(&dir);
        let mut post = SchemaReport::new("run-2", "post-data", vec![]);
        post.already_applied_by = Some("run-1".to_string());
        for r in [SchemaReport::new("run-2", "globals", vec![]), post] {
            store.put_json(&keys::schema_report("run-2", &r.step), &r).await.unwrap();
        }
        let text = summary(&store, "run-2").await.unwrap();
        assert_eq!(
            text.lines().next(),
            Some(
                "schema: globals 0 applied (0 rewritten), 0 skipped; \
                 post-data 0 applied (0 rewritten), 0 skipped (already applied by run-1)"
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
