//! The sanitizer: classifies every statement of a dump as keep, rewrite, skip or try, by rules.
//!
//! `pg_dumpall` and `pg_dump` output is written for a superuser restoring into a cluster like the
//! one dumped; an RDS target has a master user that is not a superuser, RDS-owned roles and other
//! limits. Each rule below has an id and a reason, consults named facts about the target
//! ([`super::facts`]) and acts on parsed statements ([`super::parse`]), never on substrings.
//! Every statement ends up in the plan with its verdict, and every rewrite and skip names its rule,
//! so the report lists everything that did not arrive as dumped (nothing is dropped silently).
//!
//! Objects that cannot be created (an extension the target lacks, a C-language function, an event
//! trigger that needs a superuser) take their dependents with them: `pg_dump` writes each TOC
//! entry's dependencies into its header (`--verbose`), and an entry depending on a skipped one is
//! skipped by rule `dep.skipped`, naming the cause.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::facts::{Facts, is_predefined, is_rds_internal};
use super::lex::{Item, ItemKind};
use super::parse::{DatabaseAction, Edits, Name, Parsed, RoleOption, RoleRef, Statement};
use crate::catalog::{REPLICATION_OBJECT_PREFIX, VERSIONED_PRIVILEGES};
use crate::pg::{quote_ident, quote_literal};

/// A rule: what it does and why, and which facts it consults.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: &'static str,
    pub reason: &'static str,
    pub facts: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $id:literal, $reason:literal, $facts:literal;)*) => {
        $(#[doc = $reason] pub const $konst: Rule = Rule { id: $id, reason: $reason, facts: $facts };)*
        /// Every rule, for the report and the documentation.
        pub const RULES: &[Rule] = &[$($konst),*];
    };
}

rules! {
    META_PSQL_ONLY = "meta.psql-only",
        "psql meta-commands (\\restrict, \\unrestrict…) are not SQL; statements are sent through a driver (T10)", "none";
    META_CONNECT = "meta.connect",
        "\\connect switches databases in psql; pgferry is already connected to the job's target database", "none";
    SESSION_TIMEOUTS = "session.timeouts",
        "the dump turns timeouts off; pgferry keeps its own statement and lock timeouts so a step ends inside its Lambda", "none";
    SESSION_UNKNOWN = "session.unknown-setting",
        "a session setting the target server does not know (a newer source's pg_dump)", "pg_settings";
    SESSION_ENCODING = "session.client-encoding",
        "pgferry's connections speak UTF8 and the dump is taken with --encoding=UTF8", "none";
    ROLE_INTERNAL = "role.internal",
        "RDS-internal and predefined roles belong to the target's own installation and are never created or altered (T4)", "role names";
    ROLE_SOURCE_MASTER = "role.source-master",
        "the source's master user maps to the target's master user, whose attributes, settings and RDS memberships are never altered (T8)", "connecting users";
    ROLE_TARGET_MASTER = "role.target-master",
        "a source role with the target master's name is the target master: never altered (T8)", "connecting users";
    ROLE_EXISTS = "role.exists",
        "the role exists on the target; the attribute statement that follows converges it (T9)", "target roles";
    ROLE_ATTRIBUTES = "role.attributes",
        "attributes the connecting role may not grant are dropped as tokens; LOGIN, CREATEDB, CREATEROLE, INHERIT, CONNECTION LIMIT and VALID UNTIL are kept (T1)", "connecting role's attributes, server version";
    ROLE_PASSWORD = "role.password",
        "role passwords cannot be read from RDS and are never copied: LOGIN roles arrive without one (T7)", "none";
    ROLE_REPLICATION = "role.replication-membership",
        "REPLICATION cannot be granted by a non-superuser: on RDS it becomes membership in rds_replication (T1)", "rds_replication exists";
    ROLE_PROTECTED = "role.protected",
        "the target role is a superuser or replication role (or lacks ADMIN for the master): only a superuser may alter it", "target roles";
    ROLE_MISSING = "role.missing",
        "the statement names a role that is neither carried nor present on the target", "target roles, globals plan";
    SETTING_CONTEXT = "setting.context",
        "a parameter setting is kept when the target lets the connecting role set it (user context, or SET privilege); otherwise it belongs in the DB parameter group (T3)", "pg_settings.context, has_parameter_privilege";
    SETTING_TABLESPACE = "setting.tablespace",
        "tablespace parameters name tablespaces that RDS does not have (T11)", "none";
    MEMBERSHIP_INTERNAL = "membership.internal",
        "memberships in RDS roles are kept on RDS targets (without GRANTED BY) and dropped elsewhere; memberships of RDS roles are RDS's (T4)", "rds roles on target";
    MEMBERSHIP_TEMPORARY = "membership.temporary",
        "memberships the source user was given for the run to read the source (obtainSourceAccess, T39) are not the source's own and are not carried", "run's source access log";
    MEMBERSHIP_MASTER = "membership.master",
        "the source master's memberships go to the target master (T8)", "connecting users";
    MEMBERSHIP_MASTER_ADMIN = "membership.master-admin",
        "ADMIN on a role for the master is the platform's, not data: PostgreSQL 16+ gives a CREATEROLE role ADMIN on each role it creates (the target master gets its own by creating the role, and cannot grant it to itself), and before 16 CREATEROLE administers every non-superuser role (T62)", "server version, connecting role";
    MEMBERSHIP_GRANTED_BY = "membership.granted-by",
        "only a superuser may name another grantor: GRANTED BY is dropped or mapped to the master (T4, T6)", "connecting role";
    MEMBERSHIP_OPTIONS = "membership.options",
        "PG16 membership options (INHERIT, SET) do not exist before PostgreSQL 16: only ADMIN OPTION is kept (T6)", "server version";
    MEMBERSHIP_PREDEFINED = "membership.predefined",
        "grants of predefined roles depend on the target's version and on RDS: each is tried alone and classified (T5)", "target roles, server version";
    PARAMETER_GRANT = "parameter.grant",
        "GRANT SET ON PARAMETER needs the grant option; without it the server only warns and grants nothing", "has_parameter_privilege WITH GRANT OPTION";
    TABLESPACE = "tablespace.skip",
        "tablespaces cannot be created on RDS (storage is managed) and the schema is dumped with --no-tablespaces (T11)", "none";
    DB_CREATE = "db.create",
        "the database is created under the job's target name from template0 with the source's encoding, locale provider and collation (T14)", "server version";
    DB_EXISTS = "db.exists",
        "the target database exists already; its encoding and collation are compared and any difference noted (T12, T14)", "target database";
    DB_RENAME = "db.rename",
        "statements naming the source database are applied to the target database: owner, settings, ACL and comment (T15)", "job's target database";
    OWNER_MAP = "owner.map",
        "owners that are the source master, RDS-internal, absent from the target or unusable by the master map to the target master (T8, T23)", "target roles";
    ACL_GRANTEE_MAP = "acl.grantee-map",
        "privileges of the source master go to the target master (T8, T24)", "connecting users";
    ACL_GRANTEE_MISSING = "acl.grantee-missing",
        "a privilege for a role that does not exist on the target cannot be granted (T24)", "target roles";
    ACL_SESSION = "acl.session-authorization",
        "SET SESSION AUTHORIZATION needs a superuser: grants by a non-owner grantor are made under SET ROLE instead (T24)", "connecting role";
    ACL_GRANTED_BY = "acl.granted-by",
        "only a superuser may name another grantor", "connecting role";
    DEFACL_MAP = "defacl.map",
        "default privileges are kept; their roles are mapped like owners and grantees (T24)", "target roles";
    POLICY_ROLES = "policy.roles",
        "a policy's roles are mapped; a policy left with no role is skipped rather than widened to PUBLIC", "target roles";
    EXT_UNAVAILABLE = "ext.unavailable",
        "the target server does not offer the extension (or rds.allowed_extensions excludes it); it and its dependents are skipped (T17, T19)", "pg_available_extensions, rds.allowed_extensions";
    EXT_NOT_PERMITTED = "ext.not-permitted",
        "the connecting role may not create the extension (not trusted, not a superuser, not RDS); it and its dependents are skipped (T17, T18)", "pg_available_extension_versions.trusted, superuser, RDS";
    EXT_COMMENT = "ext.comment-not-owner",
        "COMMENT ON EXTENSION needs the extension's owner; the extension on the target belongs to another role (T20)", "pg_extension owners";
    EXT_OWNER = "ext.owner",
        "an extension belongs to the role that creates it: on the target that is the master (T20)", "source extension owners";
    LANG_UNTRUSTED = "lang.untrusted",
        "untrusted procedural languages need a superuser (T17)", "superuser";
    ROUTINE_UNTRUSTED = "routine.untrusted-language",
        "functions in C, internal or untrusted languages need a superuser (not allowed on RDS at all for C) (T17)", "pg_language.lanpltrusted, superuser";
    ACCESS_METHOD = "am.needs-superuser",
        "access methods need a superuser: the access method is not created, and the relations the source keeps in it use the target's default (table access method) instead", "superuser";
    AGGREGATE_INTERNAL = "aggregate.internal-state",
        "an aggregate whose transition state is `internal` needs a superuser (its support functions are C): it and its dependents are skipped", "superuser";
    EVENT_TRIGGER = "evt.needs-superuser",
        "event triggers need a superuser on vanilla PostgreSQL (rds_superuser may create them on RDS) (T21)", "superuser, RDS";
    USER_MAPPING_PASSWORD = "fdw.user-mapping-password",
        "user mapping passwords are secrets for the old endpoint: the mapping is created without one; set a new one (T27)", "none";
    COLUMN_OPTIONS = "column.options",
        "column attribute options other than PostgreSQL's own (n_distinct, n_distinct_inherited) belong to one server build (PostgreSQL 15.20 sets pg_attver on every column) and are kept only for a target of the same version", "server versions";
    SCHEMA_PUBLIC = "schema.public",
        "the target database has its own public schema already", "target schemas";
    SECURITY_LABEL = "seclabel.skip",
        "security labels need a label provider, which RDS does not load", "none";
    PUBSUB = "pubsub.not-recreated",
        "subscriptions are not recreated: a restored subscription would pull from the original upstream (T22); publications are, as they hold no slot (T67)", "source catalog";
    PUBLICATION_OWN = "pubsub.pgferry",
        "a publication named pgferry_… is a continuous run's own, on the source for its subscription: not part of the schema", "none";
    PRIVILEGE_VERSION = "privilege.version",
        "a privilege a newer major added (MAINTAIN, 17) does not exist on an older target: dropped from the grant (T63)", "server version";
    VERSION_OLDER_TARGET = "version.older-target",
        "copying to an older major (allowOlderTarget): a statement the older target does not understand (syntax, object or parameter it lacks) is skipped when applied and reported with the server's message", "server versions, the target's answer";
    TARGET_REFUSED = "target.refused",
        "the target refused the statement for a privilege no RDS master has (42501: a superuser's, or the owner's of a built-in object, such as a transform or operator class for a built-in type); it and what depends on it are skipped, with the server's message", "the target's answer";
    DEP_SKIPPED = "dep.skipped",
        "the statement's object depends on an object that was skipped", "pg_dump TOC dependencies";
}

/// Which part of the schema a plan covers, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Roles and other cluster-wide objects (`pg_dumpall --globals-only`).
    Globals,
    /// The database itself: creation, owner, settings, ACL, comment (`pg_dump --create`).
    Database,
    PreData,
    PostData,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Globals => "globals",
            Self::Database => "database",
            Self::PreData => "pre-data",
            Self::PostData => "post-data",
        }
    }
}

/// What happens to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Keep,
    Rewrite,
    Skip,
    /// Applied alone; a refusal is classified and reported instead of failing the step.
    Try,
}

/// How the apply engine runs a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "as")]
pub enum ApplyAs {
    Plain,
    /// `CREATE ROLE`: a concurrent or earlier creation (42710) is fine.
    CreateRole {
        role: String,
    },
    /// `CREATE DATABASE`: an existing database (42P04) is fine; not in a transaction.
    CreateDatabase,
    /// `ALTER DATABASE … OWNER TO`: the master must be able to become the owner and the owner
    /// must have CREATEDB; both are arranged for the statement.
    DatabaseOwner {
        owner: String,
    },
    /// `ALTER … OWNER TO owner`: the new owner needs CREATE on the object's schema (or database,
    /// for a schema); granted for the statement and revoked after it when missing.
    Owner {
        owner: String,
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<String>,
    },
    /// A grant of a predefined role, classified when refused.
    Try,
}

/// A note attached to a kept statement (nothing changed, but something worth knowing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub rule: String,
    pub text: String,
}

/// One statement of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    /// 1-based position among the statements (and meta-commands) of the dump text.
    pub index: usize,
    /// 1-based line in the dump text.
    pub line: usize,
    /// `TYPE name` of the pg_dump TOC entry the statement belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The schema of that entry's object, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_schema: Option<String>,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The statement as dumped (secrets redacted).
    pub before: String,
    /// What is applied, when it differs from `before` or is applied at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// What applying it did, when that is worth saying (tried grants, temporary privileges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A skipped statement that is not its TOC entry's object: the object is created all the
    /// same (an attribute option of a column of a table, say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub statement_only: bool,
    #[serde(skip)]
    pub sql: Option<String>,
    #[serde(skip, default = "plain")]
    pub apply: ApplyAs,
    /// The pg_dump TOC entry's dump id and the ids it depends on: what to skip with a statement
    /// the target refuses when applied (`target.refused`).
    #[serde(skip)]
    pub toc: Option<(u32, Vec<u32>)>,
}

fn plain() -> ApplyAs {
    ApplyAs::Plain
}

/// The plan of one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub phase: Phase,
    pub statements: Vec<Planned>,
    /// LOGIN roles created or converged without a password (RDS-CASES T7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub login_roles_without_password: Vec<String>,
    /// Roles the master must be able to act as (owners, grantors, default-privilege roles).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acting_roles: BTreeSet<String>,
    /// The target's major when it is older than the source's (a copy down, consented to with
    /// `allowOlderTarget`): a statement that major does not understand is skipped when applied,
    /// and reported by rule `version.older-target`, instead of failing the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_target: Option<i32>,
}

impl Plan {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.statements.iter().filter(|s| s.verdict == verdict).count()
    }
}

/// A pg_dump TOC entry header: `-- TOC entry N (…)`, `-- Dependencies: …`, `-- Name: …; Type: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: u32,
    pub deps: Vec<u32>,
    pub desc: String,
    pub name: String,
    /// The entry's schema (`None` for `-`: objects outside schemas).
    pub schema: Option<String>,
}

impl TocEntry {
    /// Parses the header from a statement's leading comments (written by `pg_dump --verbose`).
    pub fn parse(leading: &str) -> Option<Self> {
        let mut dump_id = None;
        let mut deps = Vec::new();
        let mut desc_name = None;
        let mut schema = None;
        for line in leading.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("-- TOC entry ") {
                dump_id = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            } else if let Some(rest) = line.strip_prefix("-- Dependencies:") {
                deps = rest.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            } else if let Some(rest) = line.strip_prefix("-- Name: ") {
                // `Name: {tag}; Type: {desc}; Schema: {ns}; Owner: {owner}`: the tag may contain
                // anything, the type never contains `; `.
                desc_name = rest.rmatch_indices("; Type: ").find_map(|(at, sep)| {
                    let after = &rest[at + sep.len()..];
                    let mut parts = after.split("; Schema: ");
                    let desc = parts.next()?;
                    schema = parts
                        .next()
                        .and_then(|r| r.rsplit_once("; Owner: ").map_or(Some(r), |(ns, _)| Some(ns)))
                        .filter(|ns| *ns != "-")
                        .map(str::to_string);
                    (!desc.contains("; ")).then(|| (desc.to_string(), rest[..at].to_string()))
                });
            }
        }
        let (desc, name) = desc_name?;
        Some(Self { dump_id: dump_id?, deps, desc, name, schema })
    }

    fn label(&self) -> String {
        format!("{} {}", self.desc, self.name)
    }
}

/// Items of the pre-data text (`pg_restore --create`) that belong to the database itself.
pub fn database_items<'a>(items: &[Item<'a>]) -> (Vec<Item<'a>>, Vec<Item<'a>>) {
    let mut database_ids = BTreeSet::new();
    let mut in_database = false;
    let (mut db, mut rest) = (Vec::new(), Vec::new());
    for item in items {
        if item.kind == ItemKind::Statement {
            if let Some(entry) = TocEntry::parse(item.leading()) {
                in_database = entry.desc == "DATABASE"
                    || entry.desc == "DATABASE PROPERTIES"
                    || entry.deps.iter().any(|d| database_ids.contains(d));
                if entry.desc == "DATABASE" {
                    database_ids.insert(entry.dump_id);
                }
            } else if is_session_statement(item) {
                in_database = false;
            }
        } else {
            in_database = false;
        }
        if in_database { db.push(*item) } else { rest.push(*item) }
    }
    (db, rest)
}

fn is_session_statement(item: &Item<'_>) -> bool {
    let st = Statement::new(item.sql());
    matches!(st.parse(), Parsed::Set { .. }) || st.keywords(1) == ["SELECT"]
}

/// Parameters pgferry keeps pinned for its own session.
const PINNED_TIMEOUTS: &[&str] =
    &["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "transaction_timeout"];

/// Parameters that name tablespaces.
const TABLESPACE_PARAMS: &[&str] = &["temp_tablespaces", "default_tablespace"];

/// What becomes of a role named in a statement.
#[derive(Debug, Clone)]
enum Fate {
    /// Used as is (exists on the target or is created by the globals plan).
    Keep,
    /// Replaced by another role (the target master), for the reason given.
    Map(String, &'static Rule, String),
    /// Cannot be used, for the reason given.
    Drop(&'static Rule, String),
}

/// Computes plans from dump texts and facts. One sanitizer is used for a whole run's phases, in
/// order, so that roles created by the globals plan and entries skipped in pre-data are known
/// when later phases are planned.
#[derive(Debug)]
pub struct Sanitizer<'f> {
    facts: &'f Facts,
    /// Roles the globals plan creates.
    created_roles: BTreeSet<String>,
    /// Skipped TOC entries and why.
    skipped_entries: BTreeMap<u32, String>,
    /// Languages created by the plan, with their trust.
    created_languages: BTreeMap<String, bool>,
    /// Access methods the plan does not create.
    skipped_access_methods: BTreeSet<String>,
    /// Dump ids of the TOC entries seen, by label.
    entry_ids: BTreeMap<String, u32>,
}

struct Decision {
    verdict: Verdict,
    rule: Option<&'static Rule>,
    reason: Option<String>,
    sql: Option<String>,
    apply: ApplyAs,
    /// The object of the statement's TOC entry is not created: skip its dependents.
    propagate: bool,
    /// Skipped, but the entry's object is created by its other statements.
    statement_only: bool,
    notes: Vec<Note>,
    /// Replaces the statement text shown in the report (secrets redacted).
    redacted: Option<String>,
}

impl Decision {
    fn keep(sql: &str) -> Self {
        Self {
            verdict: Verdict::Keep,
            rule: None,
            reason: None,
            sql: Some(sql.to_string()),
            apply: ApplyAs::Plain,
            propagate: false,
            statement_only: false,
            notes: vec![],
            redacted: None,
        }
    }
    fn skip(rule: &'static Rule, reason: impl Into<String>) -> Self {
        Self { verdict: Verdict::Skip, rule: Some(rule), reason: Some(reason.into()), sql: None, ..Self::keep("") }
    }
    fn skip_object(rule: &'static Rule, reason: impl Into<String>) -> Self {
        Self { propagate: true, ..Self::skip(rule, reason) }
    }
    fn skip_statement(rule: &'static Rule, reason: impl Into<String>) -> Self {
        Self { statement_only: true, ..Self::skip(rule, reason) }
    }
    fn rewrite(rule: &'static Rule, reason: impl Into<String>, sql: String) -> Self {
        Self {
            verdict: Verdict::Rewrite,
            rule: Some(rule),
            reason: Some(reason.into()),
            sql: Some(sql),
            ..Self::keep("")
        }
    }
    fn with_apply(mut self, apply: ApplyAs) -> Self {
        self.apply = apply;
        self
    }
    fn note(mut self, rule: &'static Rule, text: impl Into<String>) -> Self {
        self.notes.push(Note { rule: rule.id.to_string(), text: text.into() });
        self
    }
}

/// Collects rewrites of one statement and the reasons for them.
#[derive(Default)]
struct Rewrites {
    edits: Edits,
    first: Option<&'static Rule>,
    reasons: Vec<String>,
    acting: Vec<String>,
}

impl Rewrites {
    /// Removes a clause together with the whitespace before it.
    fn remove(&mut self, sql: &str, (start, end): (usize, usize)) {
        let start = sql[..start].trim_end().len();
        self.edits.replace((start, end), "");
    }

    fn add(&mut self, rule: &'static Rule, reason: String) {
        self.first.get_or_insert(rule);
        self.reasons.push(reason);
    }

    fn finish(self, sql: &str) -> Decision {
        match self.first {
            Some(rule) if !self.edits.is_empty() || !self.reasons.is_empty() => {
                Decision::rewrite(rule, self.reasons.join("; "), self.edits.apply(sql))
            }
            _ => Decision::keep(sql),
        }
    }
}

impl<'f> Sanitizer<'f> {
    pub fn new(facts: &'f Facts) -> Self {
        Self {
            facts,
            created_roles: BTreeSet::new(),
            skipped_entries: BTreeMap::new(),
            created_languages: BTreeMap::new(),
            skipped_access_methods: BTreeSet::new(),
            entry_ids: BTreeMap::new(),
        }
    }

    fn target_master(&self) -> &str {
        &self.facts.target.master
    }

    fn source_master(&self) -> &str {
        &self.facts.source.master
    }

    fn role_available(&self, name: &str) -> bool {
        self.facts.target.has_role(name) || self.created_roles.contains(name)
    }

    /// Fate of a role used as a grantee, member or policy role.
    fn grantee_fate(&self, name: &str) -> Fate {
        if name == self.source_master() && name != self.target_master() {
            return Fate::Map(
                self.target_master().to_string(),
                &ACL_GRANTEE_MAP,
                format!("{name} (source master) → {}", self.target_master()),
            );
        }
        if self.role_available(name) {
            return Fate::Keep;
        }
        if is_rds_internal(name) {
            return Fate::Drop(&ROLE_INTERNAL, format!("{name} is an RDS-internal role the target does not have"));
        }
        Fate::Drop(&ACL_GRANTEE_MISSING, format!("role {name} does not exist on the target"))
    }

    /// Fate of a role used as an owner (or a role the master must act as).
    fn owner_fate(&self, name: &str) -> Fate {
        let master = self.target_master().to_string();
        let map = |why: String| Fate::Map(master.clone(), &OWNER_MAP, why);
        if name == self.target_master() {
            return Fate::Keep;
        }
        if name == self.source_master() {
            return map(format!("{name} (source master) → {master}"));
        }
        if is_rds_internal(name) {
            return map(format!("{name} is RDS-internal → {master}"));
        }
        if self.facts.target.superuser {
            return if self.role_available(name) {
                Fate::Keep
            } else {
                map(format!("{name} does not exist → {master}"))
            };
        }
        match self.facts.target.roles.get(name) {
            Some(r) if r.superuser => {
                map(format!("{name} is a superuser on the target; the master cannot act as it → {master}"))
            }
            Some(r) if r.member_of_master => {
                map(format!("{name} is a member of {master}; the master cannot also become a member of it → {master}"))
            }
            Some(_) => Fate::Keep,
            None if self.created_roles.contains(name) => Fate::Keep,
            None => map(format!("{name} does not exist on the target → {master}")),
        }
    }

    /// Maps a role reference for a grantee-like position; `None` when it must be dropped.
    fn map_grantee(&self, role: &RoleRef, rw: &mut Rewrites) -> Result<(), (&'static Rule, String)> {
        let Some(name) = &role.name else { return Ok(()) };
        match self.grantee_fate(name) {
            Fate::Keep => Ok(()),
            Fate::Map(to, rule, why) => {
                rw.edits.rename_role(role, &to);
                rw.add(rule, why);
                Ok(())
            }
            Fate::Drop(rule, why) => Err((rule, why)),
        }
    }

    fn map_owner(&self, role: &RoleRef, rw: &mut Rewrites) -> String {
        let Some(name) = &role.name else { return self.target_master().to_string() };
        match self.owner_fate(name) {
            Fate::Keep => {
                rw.acting.push(name.clone());
                name.clone()
            }
            Fate::Map(to, rule, why) => {
                rw.edits.rename_role(role, &to);
                rw.add(rule, why);
                to
            }
            Fate::Drop(rule, why) => {
                rw.edits.rename_role(role, self.target_master());
                rw.add(rule, why);
                self.target_master().to_string()
            }
        }
    }

    /// Renames the source database to the target database in a statement.
    fn rename_database(&self, name: &Name, rw: &mut Rewrites) -> bool {
        if name.value != self.facts.source.database {
            return false;
        }
        if name.value != self.facts.target_database {
            rw.edits.replace(name.span, quote_ident(&self.facts.target_database));
            rw.add(&DB_RENAME, format!("database {} → {}", name.value, self.facts.target_database));
        }
        true
    }

    /// Plans one phase.
    pub fn plan(&mut self, phase: Phase, items: &[Item<'_>]) -> Plan {
        let mut plan = Plan {
            phase,
            statements: vec![],
            login_roles_without_password: vec![],
            acting_roles: BTreeSet::new(),
            older_target: None,
        };
        let (source_major, target_major) =
            (self.facts.source.server_version_num / 10000, self.facts.target.server_version_num / 10000);
        if source_major > 0 && target_major > 0 && target_major < source_major {
            plan.older_target = Some(target_major);
        }
        let mut entry: Option<TocEntry> = None;
        let mut index = 0usize;
        for item in items {
            if item.kind == ItemKind::Trailing || (item.kind == ItemKind::Statement && item.is_empty()) {
                continue;
            }
            index += 1;
            let before =
                if item.kind == ItemKind::MetaCommand { item.text.trim().to_string() } else { item.sql().to_string() };
            if item.kind == ItemKind::MetaCommand {
                entry = None;
                let connect = before.starts_with("\\connect") || before.starts_with("\\c ");
                let d = if connect {
                    Decision::skip(&META_CONNECT, "already connected to the target database")
                } else {
                    Decision::skip(&META_PSQL_ONLY, "psql-only line")
                };
                plan.statements.push(planned(index, item.line, None, before, d));
                continue;
            }
            if let Some(mut e) = TocEntry::parse(item.leading()) {
                // pg_dump writes a user mapping's entry without a dependency on its server: it
                // is one all the same (skipped or refused with it).
                if e.desc == "USER MAPPING"
                    && let Some((_, server)) = e.name.rsplit_once(" SERVER ")
                    && let Some(id) = self.entry_ids.get(&format!("SERVER {server}"))
                {
                    e.deps.push(*id);
                }
                self.entry_ids.insert(e.label(), e.dump_id);
                entry = Some(e);
            } else if is_session_statement(item) {
                entry = None;
            }
            let decision = match entry.as_ref().and_then(|e| self.skipped_cause(e)) {
                Some(cause) => Decision::skip(&DEP_SKIPPED, cause),
                None => self.decide(&before, &mut plan),
            };
            if decision.propagate
                && let Some(e) = &entry
            {
                let why = format!("depends on {} (skipped: {})", e.label(), decision.rule.map_or("", |r| r.id));
                self.skipped_entries.insert(e.dump_id, why);
            }
            let label = entry.as_ref().map(TocEntry::label);
            let mut p = planned(index, item.line, label, before, decision);
            p.toc = entry.as_ref().map(|e| (e.dump_id, e.deps.clone()));
            p.entry_schema = entry.as_ref().and_then(|e| e.schema.clone());
            plan.statements.push(p);
        }
        plan
    }

    /// Why an entry is skipped: itself or one of its dependencies was.
    fn skipped_cause(&mut self, entry: &TocEntry) -> Option<String> {
        if let Some(why) = self.skipped_entries.get(&entry.dump_id) {
            return Some(why.clone());
        }
        let cause = entry.deps.iter().find_map(|d| self.skipped_entries.get(d)).cloned()?;
        self.skipped_entries.insert(entry.dump_id, cause.clone());
        Some(cause)
    }

    fn decide(&mut self, sql: &str, plan: &mut Plan) -> Decision {
        let st = Statement::new(sql);
        let parsed = st.parse();
        let t = &self.facts.target;
        match parsed {
            Parsed::Set { param } => {
                let name = param.value.to_lowercase();
                if PINNED_TIMEOUTS.contains(&name.as_str()) {
                    return Decision::skip(&SESSION_TIMEOUTS, format!("{name} stays pinned by pgferry"));
                }
                if TABLESPACE_PARAMS.contains(&name.as_str())
                    && st
                        .tokens
                        .last()
                        .is_some_and(|v| v.text != "''" && v.text != "=" && !v.text.eq_ignore_ascii_case("DEFAULT"))
                {
                    return Decision::skip(&SETTING_TABLESPACE, format!("{name} names a tablespace RDS does not have"));
                }
                if name == "client_encoding" {
                    let utf8 = st.tokens.last().is_some_and(|v| {
                        v.text.trim_matches('\'').replace(['-', '_'], "").eq_ignore_ascii_case("utf8")
                    });
                    return if utf8 {
                        Decision::keep(sql)
                    } else {
                        Decision::skip(&SESSION_ENCODING, "the connection stays UTF8")
                    };
                }
                if name == "default_table_access_method"
                    && let Some(v) = st.tokens.last()
                    && self.skipped_access_methods.contains(&unquote_value(v.text))
                {
                    return Decision::rewrite(
                        &ACCESS_METHOD,
                        format!("access method {} is not created: the target's default instead", v.text),
                        "SET default_table_access_method = DEFAULT".to_string(),
                    );
                }
                if t.setting(&param.value).is_none() && !param.value.contains('.') {
                    return Decision::skip(&SESSION_UNKNOWN, format!("{} is unknown to the target", param.value));
                }
                Decision::keep(sql)
            }
            Parsed::CreateRole { role, options } => self.create_role(sql, &role, &options, plan),
            Parsed::AlterRoleOptions { role, options } => self.alter_role(sql, &role, &options, plan),
            Parsed::AlterRoleSet { role, database, param } => {
                let mut rw = Rewrites::default();
                if let Some(d) = self.role_target_check(&role, true) {
                    return d;
                }
                if let Some(db) = &database
                    && !self.rename_database(db, &mut rw)
                {
                    return Decision::skip(&DB_RENAME, format!("setting for another database {}", db.value));
                }
                if let Some(d) = self.setting_check(&param, sql) {
                    return d;
                }
                rw.finish(sql)
            }
            Parsed::GrantRole { revoke, roles, grantees, with_options, with_span, granted_by } => {
                self.grant_role(sql, revoke, &roles, &grantees, &with_options, with_span, granted_by.as_ref())
            }
            Parsed::GrantParameter { params, grantees, .. } => {
                let mut rw = Rewrites::default();
                for g in &grantees {
                    if g.name.as_deref().is_some_and(is_rds_internal) {
                        return Decision::skip(&ROLE_INTERNAL, "privileges of RDS-internal roles are RDS's");
                    }
                    if let Err((rule, why)) = self.map_grantee(g, &mut rw) {
                        return Decision::skip(rule, why);
                    }
                }
                for p in &params {
                    match t.setting(&p.value) {
                        None if !t.superuser => {
                            return Decision::skip(&PARAMETER_GRANT, format!("{} is unknown to the target", p.value));
                        }
                        Some(s) if !s.grantable => {
                            return Decision::skip(
                                &PARAMETER_GRANT,
                                format!(
                                    "{} may not grant SET on {}; grant it in the parameter group or as a superuser",
                                    t.master, s.name
                                ),
                            );
                        }
                        _ => {}
                    }
                }
                rw.finish(sql)
            }
            Parsed::Tablespace => Decision::skip_object(&TABLESPACE, "tablespace statement"),
            Parsed::CommentOn { kind, name, security_label } => {
                if security_label {
                    return Decision::skip(&SECURITY_LABEL, "security label");
                }
                self.comment(sql, &kind, name.as_ref())
            }
            Parsed::CreateDatabase { name, options } => self.create_database(sql, &name, &options),
            Parsed::AlterDatabase { name, action } => {
                let mut rw = Rewrites::default();
                if !self.rename_database(&name, &mut rw) {
                    return Decision::skip(&DB_RENAME, format!("statement about another database {}", name.value));
                }
                match action {
                    DatabaseAction::Owner(owner) => {
                        let owner = self.map_owner(&owner, &mut rw);
                        plan.acting_roles.insert(owner.clone());
                        rw.finish(sql).with_apply(ApplyAs::DatabaseOwner { owner })
                    }
                    DatabaseAction::Set(param) => match self.setting_check(&param, sql) {
                        Some(d) => d,
                        None => rw.finish(sql),
                    },
                    DatabaseAction::Other => rw.finish(sql),
                }
            }
            Parsed::GrantObject { kind, object, privileges, grantees, granted_by, .. } => {
                let mut rw = Rewrites::default();
                if kind == "TABLESPACE" {
                    return Decision::skip(&TABLESPACE, "privileges on a tablespace");
                }
                let unknown: Vec<&(String, (usize, usize))> = privileges
                    .iter()
                    .filter(|(p, _)| {
                        VERSIONED_PRIVILEGES.iter().any(|(_, name, since)| p == name && t.server_version_num < *since)
                    })
                    .collect();
                if !unknown.is_empty() {
                    let names = unknown.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ");
                    let why = format!("{names} does not exist on PostgreSQL {}", t.server_version_num / 10000);
                    if unknown.len() == privileges.len() {
                        return Decision::skip_statement(&PRIVILEGE_VERSION, why);
                    }
                    for (_, span) in &unknown {
                        rw.edits.replace(*span, "");
                    }
                    rw.add(&PRIVILEGE_VERSION, why);
                }
                if kind == "DATABASE"
                    && let Some(db) = &object
                    && !self.rename_database(db, &mut rw)
                {
                    return Decision::skip(&DB_RENAME, format!("privileges on another database {}", db.value));
                }
                for g in &grantees {
                    if let Err((rule, why)) = self.map_grantee(g, &mut rw) {
                        return Decision::skip(rule, why);
                    }
                }
                if let Some((by, span)) = &granted_by
                    && !t.superuser
                    && by.name.as_deref() != Some(t.master.as_str())
                {
                    rw.remove(sql, *span);
                    rw.add(&ACL_GRANTED_BY, format!("GRANTED BY {} dropped", by.name.as_deref().unwrap_or("-")));
                }
                rw.finish(sql)
            }
            Parsed::AlterDefaultPrivileges { for_roles, grantees } => {
                let mut rw = Rewrites::default();
                for r in &for_roles {
                    let Some(name) = &r.name else { continue };
                    match self.owner_fate(name) {
                        Fate::Keep => {
                            plan.acting_roles.insert(name.clone());
                        }
                        Fate::Map(to, _, why) if name == self.source_master() => {
                            rw.edits.rename_role(r, &to);
                            rw.add(&DEFACL_MAP, why);
                        }
                        Fate::Map(_, _, why) | Fate::Drop(_, why) => return Decision::skip(&DEFACL_MAP, why),
                    }
                }
                for g in &grantees {
                    if let Err((rule, why)) = self.map_grantee(g, &mut rw) {
                        return Decision::skip(rule, why);
                    }
                }
                rw.finish(sql)
            }
            Parsed::AlterOwner { kind, object, owner } => {
                let mut rw = Rewrites::default();
                let owner = self.map_owner(&owner, &mut rw);
                plan.acting_roles.extend(rw.acting.drain(..));
                let schema = (object.len() >= 2 && kind != "SCHEMA").then(|| object[0].value.clone());
                let apply = if owner == t.master { ApplyAs::Plain } else { ApplyAs::Owner { owner, kind, schema } };
                rw.finish(sql).with_apply(apply)
            }
            Parsed::SessionAuthorization { role } => {
                let Some(role) = role else {
                    return Decision::rewrite(&ACL_SESSION, "RESET ROLE instead", "RESET ROLE".to_string());
                };
                let name = role.name.clone().unwrap_or_else(|| t.master.clone());
                let mut rw = Rewrites::default();
                let acting = self.map_owner(&RoleRef { name: Some(name), span: role.span }, &mut rw);
                plan.acting_roles.extend(rw.acting.drain(..));
                let mut d = Decision::rewrite(
                    &ACL_SESSION,
                    format!(
                        "SET ROLE {acting} instead{}",
                        if rw.reasons.is_empty() { String::new() } else { format!(" ({})", rw.reasons.join("; ")) }
                    ),
                    format!("SET ROLE {}", quote_ident(&acting)),
                );
                d.apply = ApplyAs::Plain;
                d
            }
            Parsed::Policy { roles } => {
                let mut rw = Rewrites::default();
                let mut dropped = Vec::new();
                for r in &roles {
                    if let Err((_, why)) = self.map_grantee(r, &mut rw) {
                        dropped.push((r.span, why));
                    }
                }
                if !dropped.is_empty() {
                    if dropped.len() == roles.len() {
                        return Decision::skip(
                            &POLICY_ROLES,
                            format!(
                                "none of its roles exist on the target ({})",
                                dropped.iter().map(|d| d.1.as_str()).collect::<Vec<_>>().join("; ")
                            ),
                        );
                    }
                    for (span, why) in &dropped {
                        rw.edits.replace(*span, "");
                        rw.add(&POLICY_ROLES, why.clone());
                    }
                    // Re-join the remaining roles with commas.
                    let kept: Vec<String> = roles
                        .iter()
                        .filter(|r| !dropped.iter().any(|d| d.0 == r.span))
                        .map(|r| r.name.as_deref().map_or("PUBLIC".to_string(), quote_ident))
                        .collect();
                    let span = (roles[0].span.0, roles[roles.len() - 1].span.1);
                    let mut edits = Edits::default();
                    edits.replace(span, kept.join(", "));
                    return Decision::rewrite(&POLICY_ROLES, rw.reasons.join("; "), edits.apply(sql));
                }
                rw.finish(sql)
            }
            Parsed::UserMapping { role, password_options } => {
                if let Some(name) = &role.name
                    && let Fate::Drop(rule, why) = self.grantee_fate(name)
                {
                    return Decision::skip(rule, why);
                }
                let mut rw = Rewrites::default();
                if !password_options.is_empty() {
                    for &(start, end) in &password_options {
                        let ws = sql[..start].trim_end().len();
                        rw.edits.replace((ws, end), "");
                    }
                    rw.add(&USER_MAPPING_PASSWORD, "password removed: set a new one for the new endpoint".to_string());
                }
                if self.map_grantee(&role, &mut rw).is_err() {
                    return Decision::skip(&ACL_GRANTEE_MISSING, "user mapping for a missing role");
                }
                let mut d = rw.finish(sql);
                if !password_options.is_empty() {
                    d.redacted = Some(redact_spans(sql, &password_options));
                }
                d
            }
            Parsed::CreateExtension { name } => self.create_extension(sql, &name),
            Parsed::CreateLanguage { name, trusted } => {
                if !trusted && !t.superuser {
                    return Decision::skip_object(&LANG_UNTRUSTED, format!("language {} is untrusted", name.value));
                }
                self.created_languages.insert(name.value.clone(), trusted);
                Decision::keep(sql)
            }
            Parsed::CreateRoutine { language } => {
                let Some(lang) = language else { return Decision::keep(sql) };
                let trusted = match lang.value.as_str() {
                    "sql" | "plpgsql" => Some(true),
                    "c" | "internal" => Some(false),
                    other => self.created_languages.get(other).or_else(|| t.languages.get(other)).copied(),
                };
                match trusted {
                    Some(true) => Decision::keep(sql),
                    _ if t.superuser => Decision::keep(sql),
                    Some(false) => Decision::skip_object(
                        &ROUTINE_UNTRUSTED,
                        format!("LANGUAGE {} needs a superuser on the target", lang.value),
                    ),
                    None => Decision::skip_object(
                        &ROUTINE_UNTRUSTED,
                        format!("language {} is not installed on the target", lang.value),
                    ),
                }
            }
            Parsed::CreateEventTrigger { name } => {
                if t.superuser || t.rds_superuser_powers {
                    Decision::keep(sql)
                } else {
                    Decision::skip_object(
                        &EVENT_TRIGGER,
                        format!("event trigger {} needs a superuser on this target", name.value),
                    )
                }
            }
            Parsed::CreateAccessMethod { name } => {
                if t.superuser {
                    Decision::keep(sql)
                } else {
                    self.skipped_access_methods.insert(name.value.clone());
                    Decision::skip_object(&ACCESS_METHOD, format!("access method {}", name.value))
                }
            }
            Parsed::SetAccessMethod { method } => {
                if self.skipped_access_methods.contains(&method.value) {
                    Decision::skip_statement(
                        &ACCESS_METHOD,
                        format!("access method {} is not created: the target's default instead", method.value),
                    )
                } else {
                    Decision::keep(sql)
                }
            }
            Parsed::CreateAggregate { name, internal_state } => {
                if internal_state && !t.superuser {
                    Decision::skip_object(
                        &AGGREGATE_INTERNAL,
                        format!("aggregate {} keeps an internal state", name.value),
                    )
                } else {
                    Decision::keep(sql)
                }
            }
            Parsed::CreateSchema { name } => {
                if name.value == "public" && t.schemas.contains("public") {
                    Decision::skip(&SCHEMA_PUBLIC, "schema public exists")
                } else {
                    Decision::keep(sql)
                }
            }
            Parsed::PubSub => Decision::skip_object(&PUBSUB, "subscription"),
            Parsed::Publication { name } => {
                if name.value.starts_with(REPLICATION_OBJECT_PREFIX) {
                    Decision::skip_object(&PUBLICATION_OWN, format!("publication {} is pgferry's own", name.value))
                } else {
                    Decision::keep(sql)
                }
            }
            Parsed::ColumnOptions { options } => self.column_options(sql, &options),
            Parsed::Other => Decision::keep(sql),
        }
    }

    /// `ALTER … ALTER COLUMN c SET (options)`: options of PostgreSQL itself are kept; any other is
    /// the source build's own and kept only for a target of the very same version.
    fn column_options(&self, sql: &str, options: &[(String, (usize, usize))]) -> Decision {
        const POSTGRES_OPTIONS: [&str; 2] = ["n_distinct", "n_distinct_inherited"];
        let (t, s) = (&self.facts.target, &self.facts.source);
        if t.server_version_num == s.server_version_num {
            return Decision::keep(sql);
        }
        let foreign: Vec<&(String, (usize, usize))> =
            options.iter().filter(|(name, _)| !POSTGRES_OPTIONS.contains(&name.as_str())).collect();
        if foreign.is_empty() {
            return Decision::keep(sql);
        }
        let names = foreign.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let why =
            format!("{names} unknown to PostgreSQL {} (the source is {})", t.server_version_num, s.server_version_num);
        if foreign.len() == options.len() {
            return Decision::skip_statement(&COLUMN_OPTIONS, why);
        }
        let mut rw = Rewrites::default();
        for (_, span) in foreign {
            rw.edits.replace(*span, "");
        }
        rw.add(&COLUMN_OPTIONS, why);
        rw.finish(sql)
    }

    fn create_role(&mut self, sql: &str, role: &Name, options: &[RoleOption], plan: &mut Plan) -> Decision {
        let r = RoleRef { name: Some(role.value.clone()), span: role.span };
        if let Some(d) = self.role_target_check(&r, false) {
            return d;
        }
        if self.facts.target.has_role(&role.value) {
            return Decision::skip(&ROLE_EXISTS, format!("role {} exists", role.value));
        }
        self.created_roles.insert(role.value.clone());
        let apply = ApplyAs::CreateRole { role: role.value.clone() };
        if options.is_empty() {
            return Decision::keep(sql).with_apply(apply);
        }
        let mut d = self.role_options(sql, role.span, &role.value, options, plan, "CREATE ROLE");
        d.apply = apply;
        d
    }

    fn alter_role(&mut self, sql: &str, role: &RoleRef, options: &[RoleOption], plan: &mut Plan) -> Decision {
        if let Some(d) = self.role_target_check(role, true) {
            return d;
        }
        let name = role.name.clone().unwrap_or_default();
        self.role_options(sql, role.span, &name, options, plan, "ALTER ROLE")
    }

    /// Checks common to statements that change a role: internal, masters, missing, protected.
    fn role_target_check(&self, role: &RoleRef, must_exist: bool) -> Option<Decision> {
        let t = &self.facts.target;
        let Some(name) = &role.name else {
            return (!t.superuser).then(|| Decision::skip(&ROLE_PROTECTED, "ALTER ROLE ALL needs a superuser"));
        };
        if name == &t.master {
            return Some(Decision::skip(&ROLE_TARGET_MASTER, format!("{name} is the target master")));
        }
        if name == self.source_master() {
            return Some(Decision::skip(&ROLE_SOURCE_MASTER, format!("{name} maps to {}", t.master)));
        }
        if is_rds_internal(name) || is_predefined(name) {
            return Some(Decision::skip(&ROLE_INTERNAL, format!("{name} belongs to the target's installation")));
        }
        if must_exist && !self.role_available(name) {
            return Some(Decision::skip(&ROLE_MISSING, format!("role {name} is not on the target")));
        }
        if let Some(existing) = t.roles.get(name)
            && !existing.alterable
            && !t.superuser
            && must_exist
        {
            let what = if existing.superuser {
                "a superuser"
            } else if existing.replication {
                "a replication role"
            } else {
                "not administered by the master"
            };
            return Some(Decision::skip(&ROLE_PROTECTED, format!("target role {name} is {what}")));
        }
        None
    }

    fn role_options(
        &mut self,
        sql: &str,
        name_span: (usize, usize),
        name: &str,
        options: &[RoleOption],
        plan: &mut Plan,
        verb: &str,
    ) -> Decision {
        let t = &self.facts.target;
        let pg16 = t.server_version_num >= 160000;
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut redacted = None;
        let mut replication = false;
        let mut login = false;
        for o in options {
            let text = &sql[o.span.0..o.span.1];
            let allowed = match o.keyword.as_str() {
                "SUPERUSER" | "NOSUPERUSER" | "REPLICATION" | "NOREPLICATION" => t.superuser,
                "BYPASSRLS" | "NOBYPASSRLS" => t.superuser || (pg16 && t.bypassrls),
                "CREATEDB" => t.superuser || !pg16 || t.createdb,
                "PASSWORD" => {
                    redacted = Some(redact_spans(sql, &[o.span]));
                    dropped.push(("PASSWORD".to_string(), ROLE_PASSWORD.id));
                    continue;
                }
                _ => true,
            };
            if o.keyword == "LOGIN" {
                login = true;
            }
            if allowed {
                kept.push(text.to_string());
                continue;
            }
            if o.keyword == "REPLICATION" {
                replication = true;
            }
            dropped.push((o.keyword.clone(), ROLE_ATTRIBUTES.id));
        }
        if login && !self.source_master_named(name) {
            plan.login_roles_without_password.push(name.to_string());
        }
        let mut reasons: Vec<String> = dropped
            .iter()
            .map(|(kw, rule)| {
                if *rule == ROLE_PASSWORD.id {
                    "PASSWORD removed".to_string()
                } else if kw.starts_with("NO") {
                    format!("{kw} dropped (the default; only a superuser may name it)")
                } else {
                    format!("{kw} dropped (only a superuser may grant it)")
                }
            })
            .collect();
        let mut extra = String::new();
        if replication {
            if t.has_role("rds_replication") {
                extra = format!(";\nGRANT rds_replication TO {}", quote_ident(name));
                reasons.push("REPLICATION → membership in rds_replication".to_string());
            } else {
                reasons.push("REPLICATION lost: the target has no rds_replication".to_string());
            }
        }
        if dropped.is_empty() {
            return Decision::keep(sql);
        }
        let rule = if replication {
            &ROLE_REPLICATION
        } else if dropped.iter().all(|d| d.1 == ROLE_PASSWORD.id) {
            &ROLE_PASSWORD
        } else {
            &ROLE_ATTRIBUTES
        };
        let _ = name_span;
        let head = format!("{verb} {}", quote_ident(name));
        let sql = if kept.is_empty() && verb == "ALTER ROLE" && extra.is_empty() {
            let mut d = Decision::skip(rule, format!("{}; nothing left to change", reasons.join("; ")));
            d.redacted = redacted;
            return d;
        } else if kept.is_empty() && verb == "ALTER ROLE" {
            extra.trim_start_matches(";\n").to_string()
        } else if kept.is_empty() {
            format!("{head}{extra}")
        } else {
            format!("{head} WITH {}{extra}", kept.join(" "))
        };
        let mut d = Decision::rewrite(rule, reasons.join("; "), sql);
        d.redacted = redacted;
        d
    }

    fn source_master_named(&self, name: &str) -> bool {
        name == self.source_master()
    }

    /// `None` when a parameter setting may be applied; a skip otherwise.
    fn setting_check(&self, param: &Name, _sql: &str) -> Option<Decision> {
        let t = &self.facts.target;
        let name = param.value.to_lowercase();
        if TABLESPACE_PARAMS.contains(&name.as_str()) {
            return Some(Decision::skip(&SETTING_TABLESPACE, format!("{} names tablespaces", param.value)));
        }
        match t.setting(&param.value) {
            None if t.superuser => None,
            None => Some(Decision::skip(
                &SETTING_CONTEXT,
                format!(
                    "{} is not a parameter of the target server (custom placeholders need a superuser): set it in the parameter group",
                    param.value
                ),
            )),
            Some(s) if s.settable && matches!(s.context.as_str(), "user" | "superuser") => None,
            Some(s) if matches!(s.context.as_str(), "user" | "superuser") => Some(Decision::skip(
                &SETTING_CONTEXT,
                format!(
                    "{} has context {} and {} may not set it: set it in the DB parameter group, or grant SET on it to rds_superuser",
                    s.name, s.context, t.master
                ),
            )),
            Some(s) => Some(Decision::skip(
                &SETTING_CONTEXT,
                format!("{} has context {}: it can only be set in the DB parameter group", s.name, s.context),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn grant_role(
        &self,
        sql: &str,
        revoke: bool,
        roles: &[RoleRef],
        grantees: &[RoleRef],
        with_options: &[(String, String, (usize, usize))],
        with_span: Option<(usize, usize)>,
        granted_by: Option<&(RoleRef, (usize, usize))>,
    ) -> Decision {
        let t = &self.facts.target;
        let mut rw = Rewrites::default();
        let mut predefined = false;
        for r in roles {
            let Some(name) = &r.name else { return Decision::skip(&ROLE_MISSING, "membership in a special role") };
            if is_predefined(name) {
                if !t.has_role(name) {
                    return Decision::skip(
                        &MEMBERSHIP_PREDEFINED,
                        format!("{name} does not exist on PostgreSQL {}", t.server_version_num / 10000),
                    );
                }
                predefined = true;
                continue;
            }
            if is_rds_internal(name) {
                if !t.rds_roles || !t.has_role(name) {
                    return Decision::skip(&MEMBERSHIP_INTERNAL, format!("{name} exists only on RDS"));
                }
                continue;
            }
            if let Err((rule, why)) = self.map_grantee(r, &mut rw) {
                return Decision::skip(rule, why);
            }
        }
        for g in grantees {
            let Some(name) = &g.name else { continue };
            if is_rds_internal(name) || is_predefined(name) {
                return Decision::skip(&MEMBERSHIP_INTERNAL, format!("memberships of {name} are the target's own"));
            }
            if name == &t.master {
                return Decision::skip(&ROLE_TARGET_MASTER, format!("{name} is the target master"));
            }
            if name == self.source_master() {
                if let Some(r) = roles
                    .iter()
                    .filter_map(|r| r.name.as_deref())
                    .find(|r| self.facts.source.temporary_memberships.iter().any(|m| m == r))
                {
                    return Decision::skip(
                        &MEMBERSHIP_TEMPORARY,
                        format!("{name} is a member of {r} for this run only"),
                    );
                }
                if roles.iter().any(|r| r.name.as_deref().is_some_and(is_rds_internal)) {
                    return Decision::skip(
                        &MEMBERSHIP_MASTER,
                        format!("the target master's RDS memberships are RDS's ({name} → {})", t.master),
                    );
                }
                if !t.superuser
                    && !revoke
                    && let Some(why) = self.master_admin(roles, with_options, with_span, &mut rw, sql)
                {
                    return Decision::skip(&MEMBERSHIP_MASTER_ADMIN, why);
                }
                rw.edits.rename_role(g, &t.master);
                rw.add(&MEMBERSHIP_MASTER, format!("{name} (source master) → {}", t.master));
                continue;
            }
            if let Err((rule, why)) = self.map_grantee(g, &mut rw) {
                return Decision::skip(rule, why);
            }
        }
        if let Some((by, span)) = granted_by {
            let keep = t.superuser && by.name.as_deref().is_some_and(|n| self.role_available(n));
            let is_master = by.name.as_deref().is_some_and(|n| n == t.master || n == self.source_master());
            if is_master && !keep {
                rw.edits.rename_role(by, &t.master);
                rw.add(&MEMBERSHIP_GRANTED_BY, format!("GRANTED BY {}", t.master));
            } else if !keep {
                rw.remove(sql, *span);
                rw.add(&MEMBERSHIP_GRANTED_BY, format!("GRANTED BY {} dropped", by.name.as_deref().unwrap_or("-")));
            }
        }
        if t.server_version_num < 160000
            && let Some(span) = with_span
        {
            let admin = with_options.iter().any(|(o, v, _)| o == "ADMIN" && (v == "OPTION" || v == "TRUE"));
            let lossy: Vec<String> =
                with_options.iter().filter(|(o, _, _)| o != "ADMIN").map(|(o, v, _)| format!("{o} {v}")).collect();
            let only_admin_option =
                with_options.len() == 1 && with_options[0].0 == "ADMIN" && with_options[0].1 == "OPTION";
            if !only_admin_option {
                if admin {
                    rw.edits.replace(span, "WITH ADMIN OPTION");
                } else {
                    rw.remove(sql, span);
                }
                rw.add(
                    &MEMBERSHIP_OPTIONS,
                    format!(
                        "{} not expressible before PostgreSQL 16",
                        if lossy.is_empty() { "ADMIN TRUE".to_string() } else { lossy.join(", ") }
                    ),
                );
            }
        }
        let mut d = rw.finish(sql);
        if predefined && !revoke {
            d.verdict = Verdict::Try;
            d.rule = Some(&MEMBERSHIP_PREDEFINED);
            d.reason = Some(match d.reason {
                Some(r) => format!("tried alone and classified; {r}"),
                None => "tried alone and classified".to_string(),
            });
            d.apply = ApplyAs::Try;
        }
        d
    }

    /// The ADMIN part of a membership granted to the source master, which maps to a non-superuser
    /// target master. An ADMIN-only grant (`INHERIT FALSE, SET FALSE`: PostgreSQL 16+ writes one
    /// for every role a CREATEROLE master created) is not carried at all; on a 16+ target the ADMIN
    /// option of a real membership is dropped from it, since the master cannot grant ADMIN to
    /// itself (0LP01) and holds it on the roles it creates. Returns why the grant is skipped, if it is.
    fn master_admin(
        &self,
        roles: &[RoleRef],
        with_options: &[(String, String, (usize, usize))],
        with_span: Option<(usize, usize)>,
        rw: &mut Rewrites,
        sql: &str,
    ) -> Option<String> {
        let t = &self.facts.target;
        let value = |o: &str| with_options.iter().find(|(k, _, _)| k == o).map(|(_, v, _)| v.as_str());
        if !matches!(value("ADMIN"), Some("OPTION" | "TRUE")) {
            return None;
        }
        let role = roles.iter().filter_map(|r| r.name.as_deref()).collect::<Vec<_>>().join(", ");
        if value("INHERIT") == Some("FALSE") && value("SET") == Some("FALSE") {
            let why = if t.server_version_num >= 160000 {
                format!(
                    "ADMIN only on {role} for the source master: {} receives ADMIN on the roles it creates",
                    t.master
                )
            } else {
                format!(
                    "ADMIN only on {role} for the source master: {} (CREATEROLE) administers every non-superuser role before PostgreSQL 16",
                    t.master
                )
            };
            return Some(why);
        }
        if t.server_version_num < 160000 {
            return None;
        }
        let span = with_span?;
        let rest: Vec<String> =
            with_options.iter().filter(|(o, _, _)| o != "ADMIN").map(|(o, v, _)| format!("{o} {v}")).collect();
        if rest.is_empty() {
            rw.remove(sql, span);
        } else {
            rw.edits.replace(span, format!("WITH {}", rest.join(", ")));
        }
        rw.add(
            &MEMBERSHIP_MASTER_ADMIN,
            format!("ADMIN OPTION on {role} dropped: {} holds ADMIN on the roles it creates", t.master),
        );
        None
    }

    fn comment(&self, sql: &str, kind: &str, name: Option<&Name>) -> Decision {
        let t = &self.facts.target;
        let Some(name) = name else { return Decision::keep(sql) };
        match kind {
            "ROLE" => {
                let r = RoleRef { name: Some(name.value.clone()), span: name.span };
                match self.role_target_check(&r, true) {
                    Some(d) => d,
                    None => Decision::keep(sql),
                }
            }
            "TABLESPACE" => Decision::skip(&TABLESPACE, "comment on a tablespace"),
            "DATABASE" => {
                let mut rw = Rewrites::default();
                if self.rename_database(name, &mut rw) {
                    rw.finish(sql)
                } else {
                    Decision::skip(&DB_RENAME, format!("comment on another database {}", name.value))
                }
            }
            "EXTENSION" => match t.installed_extensions.get(&name.value) {
                Some(owner)
                    if !t.superuser
                        && owner != &t.master
                        && !t.roles.get(owner).is_some_and(|r| r.master_is_member) =>
                {
                    Decision::skip(&EXT_COMMENT, format!("extension {} belongs to {owner} on the target", name.value))
                }
                _ => Decision::keep(sql),
            },
            "SUBSCRIPTION" => Decision::skip(&PUBSUB, "comment on a subscription"),
            _ => Decision::keep(sql),
        }
    }

    fn create_database(&self, sql: &str, name: &Name, options: &[(String, (usize, usize))]) -> Decision {
        let t = &self.facts.target;
        let mut rw = Rewrites::default();
        if !self.rename_database(name, &mut rw) {
            return Decision::skip(&DB_RENAME, format!("another database {}", name.value));
        }
        if let Some(existing) = &t.database {
            let mut d = Decision::skip(&DB_EXISTS, format!("database {} exists", self.facts.target_database));
            let wanted: Vec<String> = options
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "ENCODING" | "LOCALE" | "LC_COLLATE" | "LC_CTYPE"))
                .map(|(_, s)| sql[s.0..s.1].to_string())
                .collect();
            d.notes.push(Note {
                rule: DB_EXISTS.id.to_string(),
                text: format!(
                    "target database has encoding {}, collate {}, ctype {}; the source asks for {}",
                    existing.encoding,
                    existing.collate,
                    existing.ctype,
                    wanted.join(" ")
                ),
            });
            return d;
        }
        if t.server_version_num < 150000 {
            for (key, span) in options {
                let value = sql[span.0..span.1].to_ascii_lowercase();
                if key == "LOCALE_PROVIDER" && value.contains("libc") {
                    rw.edits.replace(*span, "");
                    rw.add(&DB_CREATE, "LOCALE_PROVIDER = libc is the only provider before PostgreSQL 15".to_string());
                }
            }
        }
        let mut d = rw.finish(sql);
        if d.verdict == Verdict::Keep {
            d.notes.push(Note {
                rule: DB_CREATE.id.to_string(),
                text: "created from template0 with the source's locale".to_string(),
            });
        }
        d.apply = ApplyAs::CreateDatabase;
        d
    }

    fn create_extension(&mut self, sql: &str, name: &Name) -> Decision {
        let t = &self.facts.target;
        let ext = &name.value;
        let mut d = if t.installed_extensions.contains_key(ext) {
            Decision::keep(sql)
        } else if !t.available_extensions.contains_key(ext) {
            return Decision::skip_object(
                &EXT_UNAVAILABLE,
                format!("the target server does not offer extension {ext}"),
            );
        } else if t.allowed_extensions.as_ref().is_some_and(|a| !a.contains(ext)) {
            return Decision::skip_object(&EXT_UNAVAILABLE, format!("{ext} is not in rds.allowed_extensions"));
        } else if t.superuser || t.rds_superuser_powers || t.available_extensions.get(ext).is_some_and(|e| e.trusted) {
            Decision::keep(sql)
        } else {
            return Decision::skip_object(
                &EXT_NOT_PERMITTED,
                format!("{ext} is not trusted and {} is not a superuser", t.master),
            );
        };
        if let Some(owner) = self.facts.source.extension_owners.get(ext)
            && owner != self.source_master()
            && !t.installed_extensions.contains_key(ext)
        {
            d = d.note(&EXT_OWNER, format!("{ext} belongs to {owner} on the source and to {} on the target", t.master));
        }
        let trusted = t.available_extensions.get(ext).is_some_and(|e| e.trusted) || t.superuser;
        self.created_languages.entry(ext.clone()).or_insert(trusted);
        d
    }
}

fn planned(index: usize, line: usize, entry: Option<String>, before: String, d: Decision) -> Planned {
    let after = match d.verdict {
        Verdict::Rewrite | Verdict::Try => d.sql.clone().filter(|s| *s != before),
        _ => None,
    };
    Planned {
        index,
        line,
        entry,
        entry_schema: None,
        verdict: d.verdict,
        rule: d.rule.map(|r| r.id.to_string()),
        reason: d.reason,
        before: d.redacted.unwrap_or(before),
        after,
        notes: d.notes,
        outcome: None,
        statement_only: d.statement_only,
        sql: d.sql,
        apply: d.apply,
        toc: None,
    }
}

/// A setting's value as the server reads it: `'x'` and `"x"` unquoted, a bare word lower-cased.
fn unquote_value(text: &str) -> String {
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        inner.replace("\"\"", "\"")
    } else {
        text.to_lowercase()
    }
}

/// The dump text with every secret pg_dump writes into a schema (a user mapping's `password` and
/// `sslpassword` options, RDS-CASES T70) replaced by `'<redacted>'`: what is stored as the run's
/// artifact. Applying it loses nothing, as those options are never applied (`fdw.user-mapping-password`).
pub fn redact_secrets(text: &str) -> String {
    let mut edits = Edits::default();
    for item in crate::dump::lex::split(text) {
        if item.kind != ItemKind::Statement {
            continue;
        }
        let sql = item.sql();
        let base = sql.as_ptr() as usize - text.as_ptr() as usize;
        if let Parsed::UserMapping { password_options, .. } = Statement::new(sql).parse() {
            for (start, end) in password_options {
                let value = &sql[start..end];
                let Some(quote) = value.find('\'') else { continue };
                let close = value.rfind('\'').filter(|&c| c > quote).unwrap_or(value.len() - 1);
                edits.replace((base + start + quote, base + start + close + 1), quote_literal("<redacted>"));
            }
        }
    }
    edits.apply(text)
}

/// Replaces the values in `spans` by `'…'` for reports.
fn redact_spans(sql: &str, spans: &[(usize, usize)]) -> String {
    let mut edits = Edits::default();
    for &(start, end) in spans {
        let text = &sql[start..end];
        let cut = text.find('\'').unwrap_or(text.len());
        edits.replace((start, end), format!("{}{}", &text[..cut], quote_literal("<redacted>")));
    }
    edits.apply(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::facts::{AvailableExtension, Setting, SourceFacts, TargetFacts, TargetRole};
    use crate::dump::lex::split;

    const GLOBALS: &str = include_str!("../../tests/fixtures/schema/globals.sql");
    const PRE_DATA: &str = include_str!("../../tests/fixtures/schema/pre-data.sql");
    const POST_DATA: &str = include_str!("../../tests/fixtures/schema/post-data.sql");

    /// An RDS-like PG15 target whose master `dbadmin` is not a superuser but is a member of
    /// rds_superuser (SET on log_statement), as on the test bed.
    fn rds_facts() -> Facts {
        let mut t = TargetFacts {
            server_version_num: 150004,
            master: "dbadmin".into(),
            createrole: true,
            createdb: true,
            rds_roles: true,
            ..TargetFacts::default()
        };
        for r in [
            "dbadmin",
            "rds_superuser",
            "rds_replication",
            "rds_password",
            "rds_iam",
            "pg_monitor",
            "pg_checkpoint",
            "pg_read_all_data",
            "pg_read_all_settings",
            "pg_read_all_stats",
            "pg_signal_backend",
            "pg_stat_scan_tables",
            "pg_database_owner",
        ] {
            t.roles.insert(r.into(), TargetRole { alterable: true, ..TargetRole::default() });
        }
        t.roles.insert("rdsadmin".into(), TargetRole { superuser: true, replication: true, ..TargetRole::default() });
        let settings = [
            ("search_path", "user", true),
            ("TimeZone", "user", true),
            ("statement_timeout", "user", true),
            ("lock_timeout", "user", true),
            ("idle_in_transaction_session_timeout", "user", true),
            ("work_mem", "user", true),
            ("client_encoding", "user", true),
            ("standard_conforming_strings", "user", true),
            ("check_function_bodies", "user", true),
            ("xmloption", "user", true),
            ("client_min_messages", "user", true),
            ("row_security", "user", true),
            ("default_table_access_method", "user", true),
            ("default_tablespace", "user", true),
            ("temp_tablespaces", "user", true),
            ("default_transaction_read_only", "user", true),
            ("log_statement", "superuser", true),
            ("log_min_error_statement", "superuser", false),
            ("wal_level", "postmaster", false),
        ];
        for (name, context, settable) in settings {
            t.settings.insert(
                name.to_lowercase(),
                Setting { name: name.into(), context: context.into(), settable, grantable: false },
            );
        }
        t.available_extensions
            .insert("hstore".into(), AvailableExtension { default_version: "1.8".into(), trusted: true });
        t.available_extensions
            .insert("adminpack".into(), AvailableExtension { default_version: "2.1".into(), trusted: false });
        t.languages.extend([("plpgsql".to_string(), true), ("c".to_string(), false), ("internal".to_string(), false)]);
        t.schemas.extend(["public".to_string(), "pg_catalog".to_string()]);
        let source = SourceFacts {
            server_version_num: 150004,
            master: "postgres".into(),
            database: "shop".into(),
            extension_owners: [("hstore".to_string(), "app_owner".to_string())].into(),
            ..SourceFacts::default()
        };
        Facts { target: t, source, target_database: "shop_copy".into() }
    }

    /// The pre-data fixture names the source database `shop`.
    fn pre_data() -> String {
        PRE_DATA.to_string()
    }

    fn globals_plan(facts: &Facts) -> Plan {
        Sanitizer::new(facts).plan(Phase::Globals, &split(GLOBALS))
    }

    /// Plans database, pre-data and post-data after roles exist on the target.
    fn section_plans(facts: &Facts) -> (Plan, Plan, Plan) {
        let text = pre_data();
        let items = split(&text);
        let (db, rest) = database_items(&items);
        let database = Sanitizer::new(facts).plan(Phase::Database, &db);
        let mut s = Sanitizer::new(facts);
        let pre = s.plan(Phase::PreData, &rest);
        let post = s.plan(Phase::PostData, &split(POST_DATA));
        (database, pre, post)
    }

    fn with_roles(mut facts: Facts, roles: &[&str]) -> Facts {
        for r in roles {
            facts.target.roles.insert(r.to_string(), TargetRole { alterable: true, ..TargetRole::default() });
        }
        facts
    }

    const APP_ROLES: &[&str] = &["app", "app_owner", "reader", "asset_reader", "SuperUser Tool", "we;ird", "su"];

    fn find<'p>(plan: &'p Plan, needle: &str) -> &'p Planned {
        plan.statements.iter().find(|s| s.before.contains(needle)).unwrap_or_else(|| {
            panic!(
                "no statement with {needle:?} in {:#?}",
                plan.statements.iter().map(|s| &s.before).collect::<Vec<_>>()
            )
        })
    }

    fn applied(p: &Planned) -> &str {
        p.sql.as_deref().unwrap_or_else(|| panic!("{p:?} is not applied"))
    }

    #[test]
    fn t1_role_attributes_keep_login_and_drop_only_what_the_target_forbids() {
        let plan = globals_plan(&rds_facts());
        let app = find(&plan, "ALTER ROLE app WITH");
        assert_eq!(app.verdict, Verdict::Rewrite);
        assert_eq!(app.rule.as_deref(), Some("role.attributes"));
        assert_eq!(
            applied(app),
            r#"ALTER ROLE "app" WITH INHERIT NOCREATEROLE CREATEDB LOGIN CONNECTION LIMIT 20 VALID UNTIL '2030-01-01 00:00:00+00'"#
        );
        let su = find(&plan, "ALTER ROLE su WITH");
        assert!(applied(su).contains(" LOGIN") && !applied(su).contains("SUPERUSER"), "{su:?}");
        assert!(su.reason.as_deref().unwrap().contains("SUPERUSER dropped"), "{su:?}");
        let repl = find(&plan, "ALTER ROLE repl WITH");
        assert_eq!(repl.rule.as_deref(), Some("role.replication-membership"));
        assert!(applied(repl).ends_with(r#"GRANT rds_replication TO "repl""#), "{repl:?}");
    }

    #[test]
    fn t1_a_superuser_target_keeps_every_attribute() {
        let mut facts = rds_facts();
        facts.target.superuser = true;
        let plan = globals_plan(&facts);
        let su = find(&plan, "ALTER ROLE su WITH");
        assert_eq!(su.verdict, Verdict::Keep, "{su:?}");
    }

    #[test]
    fn t2_roles_named_like_keywords_are_created_and_converged() {
        let plan = globals_plan(&rds_facts());
        for name in [r#"CREATE ROLE "SuperUser Tool""#, r#"CREATE ROLE "we;ird""#, "CREATE ROLE asset_reader"] {
            let p = find(&plan, name);
            assert_eq!(p.verdict, Verdict::Keep, "{p:?}");
            assert!(matches!(p.apply, ApplyAs::CreateRole { .. }));
        }
        let tool = find(&plan, r#"ALTER ROLE "SuperUser Tool" WITH"#);
        assert!(
            applied(tool).starts_with(r#"ALTER ROLE "SuperUser Tool" WITH INHERIT"#) && applied(tool).contains("LOGIN")
        );
    }

    #[test]
    fn t3_role_settings_follow_the_target_parameter_context() {
        let plan = globals_plan(&rds_facts());
        assert_eq!(find(&plan, "SET search_path").verdict, Verdict::Keep);
        assert_eq!(find(&plan, "SET log_statement TO 'all'").verdict, Verdict::Keep, "SET granted to the master");
        for skipped in ["log_min_error_statement", "wal_level", "myapp.tenant"] {
            let p = find(&plan, skipped);
            assert_eq!((p.verdict, p.rule.as_deref()), (Verdict::Skip, Some("setting.context")), "{p:?}");
        }
        assert!(find(&plan, "log_min_error_statement").reason.as_deref().unwrap().contains("parameter group"));
    }

    #[test]
    fn t4_rds_roles_are_never_created_and_granted_by_is_dropped_on_rds_targets() {
        let plan = globals_plan(&rds_facts());
        for name in
            ["CREATE ROLE rdsadmin", "CREATE ROLE rds_superuser", "ALTER ROLE rdsadmin SET", "CREATE ROLE rds_ad"]
        {
            assert_eq!(find(&plan, name).rule.as_deref(), Some("role.internal"), "{name}");
        }
        let grant = find(&plan, "GRANT rds_superuser TO app_owner");
        assert_eq!(applied(grant), "GRANT rds_superuser TO app_owner");
        assert_eq!(find(&plan, "GRANT pg_monitor TO rds_superuser").rule.as_deref(), Some("membership.internal"));

        let mut vanilla = rds_facts();
        vanilla.target.rds_roles = false;
        vanilla.target.roles.retain(|r, _| !r.starts_with("rds"));
        let plan = globals_plan(&vanilla);
        let grant = find(&plan, "GRANT rds_superuser TO app_owner");
        assert_eq!((grant.verdict, grant.rule.as_deref()), (Verdict::Skip, Some("membership.internal")));
    }

    #[test]
    fn t5_predefined_role_grants_are_tried_or_skipped_by_target_version() {
        let plan = globals_plan(&rds_facts());
        let monitor = find(&plan, "GRANT pg_monitor TO asset_reader");
        assert_eq!((monitor.verdict, &monitor.apply), (Verdict::Try, &ApplyAs::Try));
        let maintain = find(&plan, "GRANT pg_maintain TO app");
        assert_eq!((maintain.verdict, maintain.rule.as_deref()), (Verdict::Skip, Some("membership.predefined")));
        assert!(maintain.reason.as_deref().unwrap().contains("PostgreSQL 15"));
    }

    #[test]
    fn t6_pg16_membership_options_match_the_target_version() {
        let plan = globals_plan(&rds_facts());
        let grant = find(&plan, "GRANT grp TO u WITH ADMIN OPTION, INHERIT FALSE");
        assert_eq!(applied(grant), "GRANT grp TO u WITH ADMIN OPTION");
        assert!(grant.reason.as_deref().unwrap().contains("INHERIT FALSE, SET TRUE"), "{grant:?}");
        let mut pg16 = rds_facts();
        pg16.target.server_version_num = 160002;
        let plan = globals_plan(&pg16);
        let grant = find(&plan, "GRANT grp TO u WITH ADMIN OPTION, INHERIT FALSE");
        assert_eq!(applied(grant), "GRANT grp TO u WITH ADMIN OPTION, INHERIT FALSE, SET TRUE");
    }

    /// What `pg_dumpall` of a PostgreSQL 16+ source writes for roles its CREATEROLE master made:
    /// the implicit ADMIN-only self-grant (by the bootstrap superuser), and a real membership.
    const PG16_MASTER_GRANTS: &str = "\
GRANT app_owner TO postgres WITH ADMIN OPTION, INHERIT FALSE, SET FALSE GRANTED BY rdsadmin;
GRANT app_owner TO postgres WITH INHERIT TRUE GRANTED BY postgres;
GRANT reader TO postgres WITH ADMIN OPTION, INHERIT TRUE GRANTED BY rdsadmin;
GRANT reader TO app WITH INHERIT TRUE GRANTED BY postgres;
";

    #[test]
    fn t62_createrole_self_grants_are_the_platforms_and_never_granted_back() {
        for target_version in [150004, 170002] {
            let pg16 = target_version >= 160000;
            let mut facts = with_roles(rds_facts(), APP_ROLES);
            facts.source.server_version_num = 170002;
            facts.target.server_version_num = target_version;
            let plan = Sanitizer::new(&facts).plan(Phase::Globals, &split(PG16_MASTER_GRANTS));
            let self_grant = find(&plan, "GRANT app_owner TO postgres WITH ADMIN OPTION, INHERIT FALSE");
            assert_eq!(self_grant.verdict, Verdict::Skip, "{self_grant:?}");
            assert_eq!(self_grant.rule.as_deref(), Some("membership.master-admin"));
            // Before 16 INHERIT is the member's attribute, not the membership's.
            let inherit = if pg16 { " WITH INHERIT TRUE" } else { "" };
            let member = find(&plan, "GRANT app_owner TO postgres WITH INHERIT TRUE");
            assert_eq!(applied(member), format!("GRANT app_owner TO \"dbadmin\"{inherit} GRANTED BY \"dbadmin\""));
            let with_admin = find(&plan, "GRANT reader TO postgres");
            // On 16+ the master cannot grant ADMIN to itself (0LP01); it holds it by creating the role.
            let options = if pg16 { " WITH INHERIT TRUE" } else { " WITH ADMIN OPTION" };
            assert_eq!(applied(with_admin), format!("GRANT reader TO \"dbadmin\"{options}"), "{with_admin:?}");
            let other = find(&plan, "GRANT reader TO app");
            assert_eq!(applied(other), format!("GRANT reader TO app{inherit} GRANTED BY \"dbadmin\""), "{other:?}");
        }
    }

    #[test]
    fn column_options_of_another_build_are_dropped_unless_the_target_runs_the_same_version() {
        let sql = "ALTER TABLE ONLY public.t ALTER COLUMN id SET (pg_attver=36076384);\n\
                   ALTER TABLE ONLY public.t ALTER COLUMN a SET (n_distinct='-0.5', pg_attver=1);\n\
                   ALTER TABLE public.t ALTER COLUMN b SET (pg_attver=2, n_distinct_inherited=10);";
        let mut facts = rds_facts();
        facts.source.server_version_num = 150020;
        facts.target.server_version_num = 170011;
        let plan = Sanitizer::new(&facts).plan(Phase::PreData, &split(sql));
        let only = find(&plan, "COLUMN id");
        assert_eq!((only.verdict, only.rule.as_deref()), (Verdict::Skip, Some("column.options")), "{only:?}");
        assert_eq!(
            applied(find(&plan, "COLUMN a")),
            "ALTER TABLE ONLY public.t ALTER COLUMN a SET (n_distinct='-0.5')"
        );
        assert_eq!(
            applied(find(&plan, "COLUMN b")),
            "ALTER TABLE public.t ALTER COLUMN b SET ( n_distinct_inherited=10)"
        );
        facts.target.server_version_num = 150020;
        let plan = Sanitizer::new(&facts).plan(Phase::PreData, &split(sql));
        assert!(plan.statements.iter().all(|s| s.verdict == Verdict::Keep), "{plan:?}");
    }

    #[test]
    fn t63_maintain_is_dropped_from_grants_for_a_target_older_than_17() {
        let sql = "GRANT SELECT,MAINTAIN ON TABLE public.t TO reader;\nGRANT MAINTAIN ON TABLE public.t TO app;\n\
                   GRANT SELECT(id),UPDATE ON TABLE public.t TO app;";
        let mut facts = with_roles(rds_facts(), APP_ROLES);
        facts.source.server_version_num = 170002;
        let plan = Sanitizer::new(&facts).plan(Phase::PreData, &split(sql));
        let both = find(&plan, "SELECT,MAINTAIN");
        assert_eq!(applied(both), "GRANT SELECT ON TABLE public.t TO reader");
        assert_eq!(both.rule.as_deref(), Some("privilege.version"));
        let only = find(&plan, "GRANT MAINTAIN");
        assert_eq!((only.verdict, only.rule.as_deref()), (Verdict::Skip, Some("privilege.version")));
        assert_eq!(find(&plan, "SELECT(id)").verdict, Verdict::Keep);
        facts.target.server_version_num = 170002;
        let plan = Sanitizer::new(&facts).plan(Phase::PreData, &split(sql));
        assert!(plan.statements.iter().all(|s| s.verdict == Verdict::Keep), "{plan:?}");
    }

    #[test]
    fn t7_passwords_are_never_copied_or_reported() {
        let plan = globals_plan(&rds_facts());
        let legacy = find(&plan, "ALTER ROLE legacy");
        assert!(!applied(legacy).contains("PASSWORD") && applied(legacy).contains("LOGIN"));
        assert!(!legacy.before.contains("secret") && legacy.before.contains("<redacted>"), "{legacy:?}");
        assert!(!serde_json::to_string(&plan).unwrap().contains("c2FsdA"));
        assert!(plan.login_roles_without_password.contains(&"legacy".to_string()));
        assert!(plan.login_roles_without_password.contains(&"app".to_string()));
    }

    #[test]
    fn t8_the_source_master_maps_to_the_target_master() {
        let plan = globals_plan(&rds_facts());
        assert_eq!(find(&plan, "CREATE ROLE postgres").rule.as_deref(), Some("role.source-master"));
        assert_eq!(find(&plan, "ALTER ROLE postgres WITH").rule.as_deref(), Some("role.source-master"));
        assert_eq!(find(&plan, "GRANT rds_superuser TO postgres").verdict, Verdict::Skip);
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (_, pre, _) = section_plans(&facts);
        let owner = find(&pre, "ALTER TABLE public.owned_by_master OWNER TO postgres");
        assert_eq!(applied(owner), r#"ALTER TABLE public.owned_by_master OWNER TO "dbadmin""#);
        let grant = find(&pre, r#"GRANT USAGE ON SCHEMA "Tenant A" TO postgres"#);
        assert_eq!(applied(grant), r#"GRANT USAGE ON SCHEMA "Tenant A" TO "dbadmin""#);
    }

    #[test]
    fn t10_psql_meta_commands_are_skipped_by_rule() {
        let plan = globals_plan(&rds_facts());
        assert_eq!(find(&plan, "\\restrict").rule.as_deref(), Some("meta.psql-only"));
        let (_, pre, _) = section_plans(&rds_facts());
        assert_eq!(find(&pre, "\\connect").rule.as_deref(), Some("meta.connect"));
    }

    #[test]
    fn t11_tablespaces_and_tablespace_settings_are_skipped() {
        let plan = globals_plan(&rds_facts());
        assert_eq!(find(&plan, "CREATE TABLESPACE fast").rule.as_deref(), Some("tablespace.skip"));
        assert_eq!(find(&plan, "COMMENT ON TABLESPACE").rule.as_deref(), Some("tablespace.skip"));
        assert_eq!(find(&plan, "temp_tablespaces").rule.as_deref(), Some("setting.tablespace"));
    }

    #[test]
    fn t15_database_statements_are_renamed_to_the_target_database() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (db, pre, _) = section_plans(&facts);
        let create = find(&db, "CREATE DATABASE");
        assert!(applied(create).starts_with(r#"CREATE DATABASE "shop_copy" WITH TEMPLATE = template0"#), "{create:?}");
        assert!(applied(create).contains("ICU_LOCALE = 'de-DE'"), "T14 locale kept");
        let owner = find(&db, "OWNER TO app_owner");
        assert_eq!(owner.apply, ApplyAs::DatabaseOwner { owner: "app_owner".into() });
        assert_eq!(
            applied(find(&db, "GRANT CONNECT ON DATABASE shop TO postgres")),
            r#"GRANT CONNECT ON DATABASE "shop_copy" TO "dbadmin""#
        );
        assert!(applied(find(&db, "COMMENT ON DATABASE")).starts_with(r#"COMMENT ON DATABASE "shop_copy""#));
        assert!(
            pre.statements.iter().all(|s| !s.before.contains("DATABASE shop")),
            "database entries are the globals step's"
        );

        let mut existing = facts.clone();
        existing.target.database = Some(crate::dump::facts::TargetDatabase {
            owner: "dbadmin".into(),
            encoding: "UTF8".into(),
            collate: "C".into(),
            ctype: "C".into(),
        });
        let (db, _, _) = section_plans(&existing);
        let create = find(&db, "CREATE DATABASE");
        assert_eq!((create.verdict, create.rule.as_deref()), (Verdict::Skip, Some("db.exists")));
        assert!(create.notes[0].text.contains("collate C"), "{create:?}");
    }

    #[test]
    fn t17_t21_objects_the_target_refuses_are_skipped_with_their_dependents() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (_, pre, post) = section_plans(&facts);
        let rule = |plan: &Plan, needle: &str| find(plan, needle).rule.clone().unwrap_or_default();
        assert_eq!(rule(&pre, "CREATE EXTENSION IF NOT EXISTS adminpack"), "ext.not-permitted");
        assert_eq!(rule(&pre, "COMMENT ON EXTENSION adminpack"), "dep.skipped");
        assert_eq!(find(&pre, "CREATE EXTENSION IF NOT EXISTS hstore").verdict, Verdict::Keep);
        assert_eq!(rule(&pre, "CREATE FUNCTION public.c_handler"), "routine.untrusted-language");
        assert_eq!(rule(&pre, "ALTER FUNCTION public.c_handler() OWNER"), "dep.skipped");
        assert_eq!(rule(&pre, "CREATE PROCEDURAL LANGUAGE plunsafe"), "dep.skipped");
        assert_eq!(rule(&pre, "CREATE FUNCTION public.unsafe_fn"), "dep.skipped");
        assert_eq!(rule(&pre, "CREATE FUNCTION public.add_int"), "routine.untrusted-language");
        assert!(find(&pre, "CREATE FUNCTION public.unsafe_fn").reason.as_deref().unwrap().contains("c_handler"));
        assert_eq!(find(&pre, "CREATE FUNCTION public.audit_ddl").verdict, Verdict::Keep);
        assert_eq!(rule(&post, "CREATE EVENT TRIGGER audit_ddl"), "evt.needs-superuser");
        assert_eq!(rule(&post, "ALTER EVENT TRIGGER audit_ddl OWNER"), "dep.skipped");
        // Session settings between entries are never taken along by a skipped entry.
        assert_eq!(find(&pre, "SET default_table_access_method").verdict, Verdict::Keep);
        assert_eq!(find(&pre, "SET statement_timeout").rule.as_deref(), Some("session.timeouts"));
    }

    /// Shapes of PostgreSQL's regression database (RDS-CASES T17, T67): what only a superuser
    /// may create is skipped by rule with what follows from it, owners are mapped whatever the
    /// object's name looks like, and publications are part of the schema.
    #[test]
    fn regression_database_shapes_are_skipped_mapped_or_kept_by_rule() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let text = "\
--
-- TOC entry 10 (class 2601 OID 1)
-- Name: heap2; Type: ACCESS METHOD; Schema: -; Owner: -
--

CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler;

SET default_table_access_method = heap2;

--
-- TOC entry 11 (class 1259 OID 2)
-- Name: t_heap2; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.t_heap2 (a integer);

ALTER TABLE public.t_heap2 OWNER TO postgres;

ALTER TABLE public.p_heap2 SET ACCESS METHOD heap2;

SET default_table_access_method = heap;

--
-- TOC entry 12 (class 1255 OID 3)
-- Name: pct(double precision ORDER BY anyelement); Type: AGGREGATE; Schema: public; Owner: postgres
--

CREATE AGGREGATE public.pct(double precision ORDER BY anyelement) (
    SFUNC = ordered_set_transition,
    STYPE = internal,
    FINALFUNC = percentile_disc_final
);

ALTER AGGREGATE public.pct(double precision ORDER BY anyelement) OWNER TO postgres;

--
-- TOC entry 13 (class 1255 OID 4)
-- Name: mysum(integer); Type: AGGREGATE; Schema: public; Owner: postgres
--

CREATE AGGREGATE public.mysum(integer) (
    SFUNC = int4pl,
    STYPE = integer
);

--
-- TOC entry 14 (class 2617 OID 5)
-- Name: !=-; Type: OPERATOR; Schema: public; Owner: postgres
--

CREATE OPERATOR public.!=- (
    FUNCTION = factorial,
    RIGHTARG = bigint
);

ALTER OPERATOR public.!=- (NONE, bigint) OWNER TO postgres;

--
-- TOC entry 15 (class 6104 OID 6)
-- Name: pub1; Type: PUBLICATION; Schema: -; Owner: postgres
--

CREATE PUBLICATION pub1 WITH (publish = 'insert, update, delete, truncate');

ALTER PUBLICATION pub1 OWNER TO postgres;

--
-- TOC entry 16 (class 6104 OID 7)
-- Name: pgferry_abc; Type: PUBLICATION; Schema: -; Owner: postgres
--

CREATE PUBLICATION pgferry_abc FOR TABLE public.t_heap2;

ALTER PUBLICATION pgferry_abc OWNER TO postgres;
";
        let items = split(text);
        let plan = Sanitizer::new(&facts).plan(Phase::PreData, &items);
        let rule = |needle: &str| find(&plan, needle).rule.clone().unwrap_or_default();
        assert_eq!(rule("CREATE ACCESS METHOD heap2"), "am.needs-superuser");
        let set = find(&plan, "SET default_table_access_method = heap2");
        assert_eq!(
            (set.verdict, set.after.as_deref()),
            (Verdict::Rewrite, Some("SET default_table_access_method = DEFAULT"))
        );
        assert_eq!(find(&plan, "CREATE TABLE public.t_heap2").verdict, Verdict::Keep, "the table is created");
        let alter = find(&plan, "SET ACCESS METHOD heap2");
        assert!(alter.verdict == Verdict::Skip && alter.statement_only, "{alter:?}");
        let heap = plan.statements.iter().find(|p| p.before == "SET default_table_access_method = heap").unwrap();
        assert_eq!(heap.verdict, Verdict::Keep);
        assert_eq!(rule("CREATE AGGREGATE public.pct"), "aggregate.internal-state");
        assert_eq!(rule("ALTER AGGREGATE public.pct"), "dep.skipped");
        assert_eq!(find(&plan, "CREATE AGGREGATE public.mysum").verdict, Verdict::Keep);
        let op = find(&plan, "ALTER OPERATOR public.!=-");
        assert_eq!(op.after.as_deref(), Some("ALTER OPERATOR public.!=- (NONE, bigint) OWNER TO \"dbadmin\""), "T8");
        assert_eq!(find(&plan, "CREATE PUBLICATION pub1").verdict, Verdict::Keep, "T67");
        assert_eq!(rule("ALTER PUBLICATION pub1 OWNER"), "owner.map");
        assert_eq!(rule("CREATE PUBLICATION pgferry_abc"), "pubsub.pgferry");
        assert_eq!(rule("ALTER PUBLICATION pgferry_abc OWNER"), "dep.skipped");
        // Dump statements are applied with TOC entry and dependencies at hand.
        assert_eq!(find(&plan, "CREATE TABLE public.t_heap2").toc, Some((11, vec![])));
        assert_eq!(find(&plan, "CREATE TABLE public.t_heap2").entry_schema.as_deref(), Some("public"));
    }

    #[test]
    fn t70_stored_dumps_keep_no_user_mapping_secret() {
        let text = "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'h', password_required 'true');\n\
                    CREATE USER MAPPING FOR app SERVER s OPTIONS (\n    password 'it''s s3cret',\n    \"user\" 'u',\n    sslpassword 'k3y'\n);\n\
                    CREATE TABLE t (password text);\n";
        let out = redact_secrets(text);
        assert!(!out.contains("s3cret") && !out.contains("k3y"), "{out}");
        assert!(out.contains("password '<redacted>'") && out.contains("sslpassword '<redacted>'"), "{out}");
        assert!(out.contains("\"user\" 'u'") && out.contains("password_required 'true'"), "{out}");
        assert!(out.ends_with("CREATE TABLE t (password text);\n"), "{out}");
        assert_eq!(redact_secrets("CREATE TABLE x (a int);"), "CREATE TABLE x (a int);");
    }

    #[test]
    fn t20_comment_on_an_extension_owned_by_another_role_is_skipped() {
        let mut facts = with_roles(rds_facts(), APP_ROLES);
        let (_, pre, _) = section_plans(&facts);
        let hstore = find(&pre, "CREATE EXTENSION IF NOT EXISTS hstore");
        assert_eq!(hstore.notes[0].rule, "ext.owner", "{hstore:?}");
        assert_eq!(find(&pre, "COMMENT ON EXTENSION hstore").verdict, Verdict::Keep);
        facts.target.installed_extensions.insert("hstore".into(), "rdsadmin".into());
        let (_, pre, _) = section_plans(&facts);
        assert_eq!(find(&pre, "COMMENT ON EXTENSION hstore").rule.as_deref(), Some("ext.comment-not-owner"));
    }

    #[test]
    fn t23_owners_are_kept_or_mapped_to_the_master_and_become_acting_roles() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (_, pre, post) = section_plans(&facts);
        let schema = find(&pre, "ALTER SCHEMA app OWNER TO app_owner");
        assert_eq!(schema.apply, ApplyAs::Owner { owner: "app_owner".into(), kind: "SCHEMA".into(), schema: None });
        let table = find(&pre, "ALTER TABLE app.orders OWNER TO app_owner");
        assert_eq!(
            table.apply,
            ApplyAs::Owner { owner: "app_owner".into(), kind: "TABLE".into(), schema: Some("app".into()) }
        );
        let internal = find(&pre, r#"ALTER SCHEMA "Tenant A" OWNER TO rdsadmin"#);
        assert_eq!(
            (internal.rule.as_deref(), applied(internal)),
            (Some("owner.map"), r#"ALTER SCHEMA "Tenant A" OWNER TO "dbadmin""#)
        );
        assert!(pre.acting_roles.contains("app_owner") && pre.acting_roles.contains("reader"));
        assert!(post.acting_roles.contains("app_owner"), "default privileges FOR ROLE app_owner");
        assert!(!pre.acting_roles.contains("rdsadmin"));
    }

    #[test]
    fn t24_grants_by_another_grantor_run_under_set_role_and_missing_grantees_are_skipped() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (_, pre, post) = section_plans(&facts);
        assert_eq!(applied(find(&pre, "SET SESSION AUTHORIZATION asset_reader")), r#"SET ROLE "asset_reader""#);
        assert_eq!(applied(find(&pre, "RESET SESSION AUTHORIZATION")), "RESET ROLE");
        assert_eq!(find(&post, "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner").verdict, Verdict::Keep);
        let ghost = find(&post, "CREATE POLICY ghost_only");
        assert_eq!((ghost.verdict, ghost.rule.as_deref()), (Verdict::Skip, Some("policy.roles")));

        let without_reader = with_roles(rds_facts(), &["app", "app_owner", "asset_reader", "SuperUser Tool", "we;ird"]);
        let (_, pre, _) = section_plans(&without_reader);
        let grant = find(&pre, "GRANT SELECT ON TABLE app.orders TO reader");
        assert_eq!((grant.verdict, grant.rule.as_deref()), (Verdict::Skip, Some("acl.grantee-missing")));
    }

    #[test]
    fn t27_user_mapping_passwords_are_removed_and_redacted() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (_, _, post) = section_plans(&facts);
        let mapping = find(&post, "CREATE USER MAPPING FOR app");
        assert_eq!(mapping.rule.as_deref(), Some("fdw.user-mapping-password"));
        assert!(!applied(mapping).contains("password") && applied(mapping).contains(r#""user" 'app'"#), "{mapping:?}");
        assert!(!mapping.before.contains("hunter2") && !serde_json::to_string(&post).unwrap().contains("hunter2"));
    }

    #[test]
    fn every_verdict_but_keep_names_a_known_rule_and_a_reason() {
        let facts = with_roles(rds_facts(), APP_ROLES);
        let (db, pre, post) = section_plans(&facts);
        for plan in [globals_plan(&facts), db, pre, post] {
            for s in plan.statements.iter().filter(|s| s.verdict != Verdict::Keep) {
                let rule = s.rule.as_deref().unwrap_or_else(|| panic!("{s:?}"));
                assert!(RULES.iter().any(|r| r.id == rule), "{rule}");
                assert!(s.reason.is_some(), "{s:?}");
            }
        }
    }

    #[test]
    fn toc_headers_are_read_even_with_odd_names() {
        let e = TocEntry::parse("--\n-- TOC entry 3490 (class 0 OID 0)\n-- Dependencies: 220 7\n-- Name: TABLE \"a; Type: b\"; Type: ACL; Schema: x; Owner: o\n--\n").unwrap();
        assert_eq!((e.dump_id, e.deps.as_slice(), e.desc.as_str()), (3490, &[220, 7][..], "ACL"));
        assert_eq!(e.name, "TABLE \"a; Type: b\"");
    }

    proptest::proptest! {
        #[test]
        fn the_sanitizer_never_panics_on_arbitrary_statements(sql in "[A-Za-z_ ;,.()'\"=$-]{0,80}") {
            let facts = with_roles(rds_facts(), APP_ROLES);
            let mut s = Sanitizer::new(&facts);
            for phase in [Phase::Globals, Phase::Database, Phase::PreData, Phase::PostData] {
                let _ = s.plan(phase, &split(&sql));
            }
        }
    }
}
