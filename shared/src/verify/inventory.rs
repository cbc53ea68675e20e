//! Schema and globals inventory: what the rows do not show (RDS-CASES T56).
//!
//! Chunk hashes prove the rows equal; they say nothing about a dropped index, a changed default,
//! a lost grant or a role that arrived without `REPLICATION`. Here both sides are read into an
//! inventory of catalog facts — relations, columns, indexes, constraints, triggers, views,
//! functions, types, extensions, sequences' definitions, large objects, owners and ACLs, the
//! roles the database refers to (attributes, memberships, settings) and the database itself —
//! and compared aspect by aspect.
//!
//! A copy through the sanitizer is *meant* to differ where the target refuses what the source
//! has: a superuser attribute dropped, a GUC left to the parameter group, objects of the source
//! master owned by the target master. Each difference is therefore attributed: the schema
//! report of the run that applied the schema is read back, its statements parsed, and a
//! difference is *explained* only when a skipped or rewritten statement about that very object
//! (or role, setting, membership) names the rule that caused it. Everything else is
//! *unexplained*, and makes the run report unequal.
//!
//! Both sides are read with `search_path` empty, so every name in a definition is qualified the
//! same way (and the way `pg_dump` writes its TOC tags). System schemas, objects that belong to
//! an extension, RDS-internal and predefined roles are left out on both sides alike; pgferry's
//! own `pgferry` schema is listed as explained.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::catalog::{FIRST_NORMAL_OBJECT_ID, PGFERRY_SCHEMA, REPLICATION_OBJECT_PREFIX, VERSIONED_PRIVILEGES};
use crate::context::StepContext;
use crate::dump::facts::{is_predefined, is_rds_internal};
use crate::dump::lex::{self, ItemKind, TokenKind};
use crate::dump::parse::{DatabaseAction, Parsed, RoleOption, RoleRef, Statement};
use crate::dump::report::{STEPS, SchemaReport};
use crate::dump::sanitize::{self, Verdict};
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::quote_ident;
use crate::step::{StepInput, keys};

/// Rule of the inventory itself (not of the sanitizer): pgferry's bookkeeping on the target.
pub const PGFERRY_SCHEMA_RULE: &str = "inventory.pgferry-schema";

/// Rule of the inventory itself: a privilege that the older side's server cannot express.
pub const PRIVILEGE_VERSION_RULE: &str = "inventory.privilege-version";

/// Whether a server of `version` (`server_version_num`; 0 when unknown) has `privilege` (an
/// `aclitem` letter): a copy between versions cannot make equal what the older cannot hold.
fn expressible(privilege: char, version: i32) -> bool {
    VERSIONED_PRIVILEGES.iter().all(|&(c, _, since)| c != privilege || version == 0 || version >= since)
}

/// Rule of the inventory itself: a definition two majors print differently (`pg_get_viewdef` of
/// 17 leaves out the table qualifiers 15 writes, say).
pub const DEPARSE_VERSION_RULE: &str = "inventory.deparse-version";

/// A definition as compared between majors: whitespace collapsed and qualifiers (`name.` before
/// another name) left out, so that only what the definition says remains.
fn deparse_normalized(text: &str) -> String {
    let tokens: Vec<_> =
        lex::tokenize(text).into_iter().filter(|t| !matches!(t.kind, TokenKind::Space | TokenKind::Comment)).collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let qualifier = matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
            && tokens.get(i + 1).is_some_and(|d| d.kind == TokenKind::Punct && d.text == ".")
            && tokens.get(i + 2).is_some_and(|n| matches!(n.kind, TokenKind::Word | TokenKind::QuotedIdent));
        if qualifier {
            i += 2;
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t.text);
        i += 1;
    }
    out
}

/// Large objects whose content is hashed per round trip.
const LO_BATCH: usize = 500;

/// Values longer than this are shown as a digest in the report (view and function bodies).
const SHOWN_VALUE_CHARS: usize = 240;

/// One difference between the inventories.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryDifference {
    /// `table "public"."orders"`, `role "app"`, `database`…
    pub object: String,
    /// `object` (present on one side only), `owner`, `acl`, `column "c"`, `SUPERUSER`…
    pub aspect: String,
    /// The source's value; `None` when absent on the source.
    pub source: Option<String>,
    /// The target's value; `None` when absent on the target.
    pub target: Option<String>,
    /// The rules of the schema report that explain the difference (empty when unexplained).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Why, in the schema report's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The inventory section of the run report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReport {
    /// The run whose schema reports were used to explain differences; `None` when none was found
    /// (then nothing can be explained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_run: Option<String>,
    /// Objects inventoried on each side.
    pub source_objects: usize,
    pub target_objects: usize,
    /// Differences a skipped or rewritten statement of the schema report accounts for.
    pub explained: Vec<InventoryDifference>,
    /// Differences nothing accounts for: the target is not what the source is.
    pub unexplained: Vec<InventoryDifference>,
}

impl InventoryReport {
    pub fn equal(&self) -> bool {
        self.unexplained.is_empty()
    }

    /// A few lines for a person: counts, explained differences by rule, every unexplained one.
    pub fn summary(&self) -> String {
        let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &self.explained {
            for r in &d.rules {
                *by_rule.entry(r.as_str()).or_insert(0) += 1;
            }
        }
        let mut out = format!(
            "inventory: {} objects on the source, {} on the target; {} difference(s) explained by the schema report",
            self.source_objects,
            self.target_objects,
            self.explained.len()
        );
        if !by_rule.is_empty() {
            let parts: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
            out += &format!(" ({})", parts.join(", "));
        }
        if self.schema_run.is_none() {
            out += "; no schema report found to explain differences";
        }
        if self.unexplained.is_empty() {
            out += "; none unexplained\n";
            return out;
        }
        out += &format!("; {} UNEXPLAINED:\n", self.unexplained.len());
        for d in &self.unexplained {
            out += &format!("  {}\n", d.describe());
        }
        out
    }
}

impl InventoryDifference {
    /// One line: `index "public"."i": missing on the target`.
    pub fn describe(&self) -> String {
        let show = |v: &Option<String>| v.as_deref().map_or("(none)".to_string(), |s| short(s, 100));
        if self.aspect == "object" {
            let side = if self.target.is_none() { "missing on the target" } else { "extra on the target" };
            return format!("{}: {side}", self.object);
        }
        format!("{}: {}: source {}, target {}", self.object, self.aspect, show(&self.source), show(&self.target))
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

// ---------------------------------------------------------------------------------------------
// Reading one side
// ---------------------------------------------------------------------------------------------

/// One object of an inventory.
#[derive(Debug, Clone, Default)]
struct Object {
    /// `definition` as [`deparse_normalized`] gives it (a digest when long), for comparisons
    /// between majors.
    normalized_definition: Option<String>,
    kind: String,
    /// The object's display name (quoted), unique within its kind.
    ident: String,
    /// The unquoted name, for roles, extensions and the role of default privileges.
    raw: Option<String>,
    /// `TYPE tag` of the pg_dump TOC entry that creates the object.
    label: Option<String>,
    /// The TOC label of the object it belongs to (a table for indexes, constraints, triggers).
    parent: Option<String>,
    aspects: BTreeMap<String, String>,
}

impl Object {
    fn key(&self) -> String {
        if self.ident.is_empty() { self.kind.clone() } else { format!("{} {}", self.kind, self.ident) }
    }
}

/// Catalog facts of one side, by object key.
#[derive(Debug, Default)]
struct Inventory {
    objects: BTreeMap<String, Object>,
}

impl Inventory {
    fn add_rows(&mut self, rows: &[tokio_postgres::Row]) {
        for r in rows {
            let (kind, ident): (String, String) = (r.get(0), r.get(1));
            let value: Option<String> = r.get(6);
            let mut o = Object { kind, ident, raw: r.get(2), label: r.get(3), parent: r.get(4), ..Object::default() };
            if o.kind == "default privileges" {
                // The role is part of the name: `for role "r" in schema "s" on tables`.
                o.ident = format!("for role {} {}", display_ident(o.raw.as_deref().unwrap_or("")), o.ident);
            }
            let entry = self.objects.entry(o.key()).or_insert(o);
            if let Some(v) = value {
                entry.aspects.insert(r.get(5), v);
            }
        }
    }

    /// Role names the objects refer to: owners, grantees and grantors, default-privilege roles.
    fn referenced_roles(&self, into: &mut BTreeSet<String>) {
        for o in self.objects.values() {
            if o.kind == "default privileges"
                && let Some(r) = &o.raw
            {
                into.insert(r.clone());
            }
            for (aspect, value) in &o.aspects {
                if aspect == "owner" {
                    into.insert(value.clone());
                } else if is_acl_aspect(aspect) {
                    for a in acl_atoms(value) {
                        if !a.grantee.is_empty() {
                            into.insert(a.grantee);
                        }
                        into.insert(a.grantor);
                    }
                }
            }
        }
    }
}

/// A name as the server's `quote_ident` shows it (quoted only when needed, keywords aside), so
/// that names built here read like the ones the catalog queries build.
fn display_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain { name.to_string() } else { quote_ident(name) }
}

fn is_acl_aspect(aspect: &str) -> bool {
    aspect == "acl" || aspect.ends_with(" acl")
}

/// SQL: an ACL column as sorted `aclitem` texts, the default ACL when it is NULL (`kind` is the
/// SQL of `acldefault`'s object type).
fn acl(column: &str, kind: &str, owner: &str) -> String {
    format!(
        "array_to_string(ARRAY(SELECT x::text FROM unnest(coalesce({column}, acldefault({kind}, {owner}))) x \
         ORDER BY 1), ' ')"
    )
}

/// SQL: an ACL column without a default (NULL stays NULL).
fn acl_plain(column: &str) -> String {
    format!(
        "CASE WHEN {column} IS NOT NULL THEN array_to_string(ARRAY(SELECT x::text FROM unnest({column}) x ORDER BY 1), ' ') END"
    )
}

/// SQL condition keeping user schemas (`n` is pg_namespace); pgferry's own is left out.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// SQL condition: object `oid` of catalog `catalog` does not belong to an extension.
fn not_extension_member(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} \
         AND e.deptype = 'e')"
    )
}

const REL_KIND: &str = "CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'f' THEN 'foreign table' \
     WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' END";
const REL_LABEL: &str = "CASE c.relkind WHEN 'r' THEN 'TABLE ' WHEN 'p' THEN 'TABLE ' WHEN 'f' THEN 'FOREIGN TABLE ' \
     WHEN 'v' THEN 'VIEW ' WHEN 'm' THEN 'MATERIALIZED VIEW ' WHEN 'S' THEN 'SEQUENCE ' END || c.relname";

/// The catalog queries; each returns `(kind, ident, raw, label, parent, aspect, value)`.
fn object_queries() -> Vec<(&'static str, String)> {
    let rel_filter = format!("{USER_SCHEMA} AND {}", not_extension_member("pg_class", "c.oid"));
    vec![
        (
            "schemas",
            format!(
                "SELECT 'schema', quote_ident(n.nspname), n.nspname::text, 'SCHEMA ' || n.nspname, NULL::text, a.k, a.v \
                 FROM pg_namespace n CROSS JOIN LATERAL (VALUES \
                   ('owner', pg_get_userbyid(n.nspowner)::text), ('acl', {}), \
                   ('comment', obj_description(n.oid, 'pg_namespace'))) a(k, v) \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' AND {}",
                acl("n.nspacl", "'n'", "n.nspowner"),
                not_extension_member("pg_namespace", "n.oid")
            ),
        ),
        (
            "relations",
            format!(
                "SELECT {REL_KIND}, format('%I.%I', n.nspname, c.relname), NULL::text, {REL_LABEL}, NULL::text, a.k, a.v \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL (VALUES \
                   ('owner', pg_get_userbyid(c.relowner)::text), \
                   ('acl', {acl}), \
                   ('persistence', CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' \
                                   ELSE 'permanent' END), \
                   ('partition key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END), \
                   ('partition of', CASE WHEN c.relispartition THEN \
                      (SELECT format('%I.%I ', pn.nspname, p.relname) || pg_get_expr(c.relpartbound, c.oid) \
                       FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
                       JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid LIMIT 1) END), \
                   ('tablespace', (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace)), \
                   ('definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END), \
                   ('populated', CASE WHEN c.relkind = 'm' THEN c.relispopulated::text END), \
                   ('row security', CASE WHEN c.relrowsecurity OR c.relforcerowsecurity THEN \
                      concat_ws(' ', CASE WHEN c.relrowsecurity THEN 'enabled' END, \
                                     CASE WHEN c.relforcerowsecurity THEN 'forced' END) END), \
                   ('comment', obj_description(c.oid, 'pg_class')), \
                   ('sequence', CASE WHEN c.relkind = 'S' THEN (SELECT format('%s start %s increment %s min %s max %s cache %s%s', \
                      format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, \
                      CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END) FROM pg_sequence s WHERE s.seqrelid = c.oid) END), \
                   ('owned by', CASE WHEN c.relkind = 'S' THEN (SELECT format('%I.%I.%I', tn.nspname, t.relname, at.attname) \
                      FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
                      JOIN pg_attribute at ON at.attrelid = d.refobjid AND at.attnum = d.refobjsubid \
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass \
                        AND d.deptype IN ('a', 'i') LIMIT 1) END) \
                 ) a(k, v) WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND {rel_filter}",
                acl = acl("c.relacl", "(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\"", "c.relowner"),
            ),
        ),
        (
            "columns",
            format!(
                "SELECT {REL_KIND}, format('%I.%I', n.nspname, c.relname), NULL::text, {REL_LABEL}, NULL::text, a.k, a.v \
                 FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attrdef ad ON ad.adrelid = att.attrelid AND ad.adnum = att.attnum \
                 JOIN pg_type ty ON ty.oid = att.atttypid \
                 CROSS JOIN LATERAL (VALUES \
                   ('column ' || quote_ident(att.attname), concat_ws(' ', format_type(att.atttypid, att.atttypmod), \
                      CASE WHEN att.attnotnull THEN 'NOT NULL' END, \
                      CASE WHEN att.attgenerated = 's' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') STORED' \
                           WHEN att.attgenerated = 'v' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') VIRTUAL' \
                           WHEN ad.adbin IS NOT NULL THEN 'DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid) END, \
                      CASE att.attidentity WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY' \
                                           WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' END, \
                      CASE WHEN att.attcollation <> 0 AND att.attcollation <> ty.typcollation THEN \
                        (SELECT format('COLLATE %I.%I', cn.nspname, co.collname) FROM pg_collation co \
                         JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = att.attcollation) END)), \
                   ('column ' || quote_ident(att.attname) || ' acl', {}), \
                   ('column ' || quote_ident(att.attname) || ' comment', col_description(att.attrelid, att.attnum)) \
                 ) a(k, v) WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND att.attnum > 0 AND NOT att.attisdropped AND {rel_filter}",
                acl_plain("att.attacl")
            ),
        ),
        (
            "indexes",
            format!(
                "SELECT 'index', format('%I.%I', n.nspname, ci.relname), NULL::text, 'INDEX ' || ci.relname, {REL_LABEL}, a.k, a.v \
                 FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = ci.relnamespace CROSS JOIN LATERAL (VALUES \
                   ('definition', pg_get_indexdef(i.indexrelid)), \
                   ('valid', CASE WHEN NOT i.indisvalid THEN 'invalid' END), \
                   ('clustered', CASE WHEN i.indisclustered THEN 'clustered' END), \
                   ('tablespace', (SELECT spcname::text FROM pg_tablespace WHERE oid = ci.reltablespace)), \
                   ('comment', obj_description(ci.oid, 'pg_class')) \
                 ) a(k, v) WHERE {rel_filter}"
            ),
        ),
        // NOT NULL is compared as part of each column (and domain): PostgreSQL 18 also lists it in
        // pg_constraint (contype 'n', as 17 does for domains), older majors do not (T64).
        // Foreign keys cloned from a parent constraint (`conparentid`: one per partition of the
        // referencing table, one per partition of a referenced partitioned table) are the server's
        // own doing, as pg_dump sees them: their names are generated when they are cloned, in an
        // order of its own, and VALIDATE on the parent leaves the referenced side's clones marked
        // NOT VALID. The parent constraint and the partitions are compared; the clones are not.
        (
            "constraints",
            format!(
                "SELECT 'constraint', format('%I.%I.%I', n.nspname, c.relname, co.conname), NULL::text, \
                        CASE co.contype WHEN 'f' THEN 'FK CONSTRAINT ' WHEN 'c' THEN 'CHECK CONSTRAINT ' \
                        ELSE 'CONSTRAINT ' END || c.relname || ' ' || co.conname, {REL_LABEL}, a.k, a.v \
                 FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL (VALUES ('definition', pg_get_constraintdef(co.oid)), \
                   ('comment', obj_description(co.oid, 'pg_constraint'))) a(k, v) \
                 WHERE co.contype <> 'n' AND NOT (co.contype = 'f' AND co.conparentid <> 0) AND {rel_filter}"
            ),
        ),
        (
            "triggers",
            format!(
                "SELECT 'trigger', format('%I.%I.%I', n.nspname, c.relname, t.tgname), NULL::text, \
                        'TRIGGER ' || c.relname || ' ' || t.tgname, {REL_LABEL}, a.k, a.v \
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL (VALUES ('definition', pg_get_triggerdef(t.oid)), \
                   ('enabled', CASE t.tgenabled WHEN 'O' THEN 'origin' WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica' \
                               WHEN 'A' THEN 'always' END)) a(k, v) \
                 WHERE NOT t.tgisinternal AND {rel_filter}"
            ),
        ),
        (
            "functions",
            format!(
                "SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END, \
                        format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), NULL::text, \
                        CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' WHEN 'a' THEN 'AGGREGATE ' ELSE 'FUNCTION ' END \
                          || p.proname || '(' || oidvectortypes(p.proargtypes) || ')', NULL::text, a.k, a.v \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang \
                 CROSS JOIN LATERAL (VALUES \
                   ('owner', pg_get_userbyid(p.proowner)::text), ('acl', {}), \
                   ('arguments', pg_get_function_arguments(p.oid)), ('returns', pg_get_function_result(p.oid)), \
                   ('language', l.lanname::text), \
                   ('volatility', CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END), \
                   ('security', CASE WHEN p.prosecdef THEN 'definer' ELSE 'invoker' END), \
                   ('strict', p.proisstrict::text), ('parallel', p.proparallel::text), \
                   ('config', array_to_string(p.proconfig, ', ')), \
                   ('body', p.prosrc || coalesce(' ' || p.probin, '')), \
                   ('comment', obj_description(p.oid, 'pg_proc')) \
                 ) a(k, v) WHERE {USER_SCHEMA} AND {}",
                acl("p.proacl", "'f'", "p.proowner"),
                not_extension_member("pg_proc", "p.oid")
            ),
        ),
        (
            "types",
            format!(
                "SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'c' THEN 'composite type' \
                        ELSE 'range type' END, format('%I.%I', n.nspname, t.typname), NULL::text, \
                        CASE WHEN t.typtype = 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || t.typname, NULL::text, a.k, a.v \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace CROSS JOIN LATERAL (VALUES \
                   ('owner', pg_get_userbyid(t.typowner)::text), ('acl', {}), \
                   ('labels', CASE WHEN t.typtype = 'e' THEN (SELECT string_agg(quote_literal(e.enumlabel), ', ' \
                      ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END), \
                   ('definition', CASE t.typtype \
                      WHEN 'd' THEN concat_ws(' ', format_type(t.typbasetype, t.typtypmod), \
                        CASE WHEN t.typnotnull THEN 'NOT NULL' END, 'DEFAULT ' || t.typdefault) \
                      WHEN 'c' THEN (SELECT string_agg(format('%I %s', at.attname, format_type(at.atttypid, at.atttypmod)), \
                        ', ' ORDER BY at.attnum) FROM pg_attribute at WHERE at.attrelid = t.typrelid AND at.attnum > 0 \
                        AND NOT at.attisdropped) \
                      WHEN 'r' THEN (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid) END), \
                   ('constraints', CASE WHEN t.typtype = 'd' THEN (SELECT string_agg(format('%I %s', co.conname, \
                      pg_get_constraintdef(co.oid)), ', ' ORDER BY co.conname) FROM pg_constraint co \
                      WHERE co.contypid = t.oid AND co.contype <> 'n') END), \
                   ('comment', obj_description(t.oid, 'pg_type')) \
                 ) a(k, v) WHERE t.typtype IN ('e', 'd', 'c', 'r') \
                   AND (t.typtype <> 'c' OR (SELECT tc.relkind FROM pg_class tc WHERE tc.oid = t.typrelid) = 'c') \
                   AND {USER_SCHEMA} AND {}",
                acl("t.typacl", "'T'", "t.typowner"),
                not_extension_member("pg_type", "t.oid")
            ),
        ),
        (
            "extensions",
            "SELECT 'extension', quote_ident(x.extname), x.extname::text, 'EXTENSION ' || x.extname, NULL::text, a.k, a.v \
             FROM pg_extension x CROSS JOIN LATERAL (VALUES ('version', x.extversion), \
               ('schema', (SELECT quote_ident(nspname) FROM pg_namespace WHERE oid = x.extnamespace)), \
               ('owner', pg_get_userbyid(x.extowner)::text)) a(k, v)"
                .to_string(),
        ),
        (
            "default privileges",
            format!(
                "SELECT 'default privileges', concat_ws(' ', CASE WHEN d.defaclnamespace <> 0 THEN 'in schema ' || \
                          (SELECT quote_ident(nspname) FROM pg_namespace WHERE oid = d.defaclnamespace) END, \
                        'on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' \
                          WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' \
                          ELSE d.defaclobjtype::text END), \
                        pg_get_userbyid(d.defaclrole)::text, NULL::text, NULL::text, 'acl', {} \
                 FROM pg_default_acl d",
                acl_plain("d.defaclacl")
            ),
        ),
        (
            "policies",
            format!(
                "SELECT 'policy', format('%I.%I.%I', n.nspname, c.relname, p.polname), NULL::text, \
                        'POLICY ' || c.relname || ' ' || p.polname, {REL_LABEL}, a.k, a.v \
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL (VALUES ('command', p.polcmd::text), ('permissive', p.polpermissive::text), \
                   ('roles', (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END, ', ' \
                      ORDER BY 1) FROM unnest(p.polroles) r)), \
                   ('using', pg_get_expr(p.polqual, p.polrelid)), ('with check', pg_get_expr(p.polwithcheck, p.polrelid)), \
                   ('comment', obj_description(p.oid, 'pg_policy'))) a(k, v) WHERE {rel_filter}"
            ),
        ),
        (
            "rules",
            format!(
                "SELECT 'rule', format('%I.%I.%I', n.nspname, c.relname, r.rulename), NULL::text, \
                        'RULE ' || r.rulename, {REL_LABEL}, a.k, a.v \
                 FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL (VALUES ('definition', pg_get_ruledef(r.oid)), ('enabled', r.ev_enabled::text), \
                   ('comment', obj_description(r.oid, 'pg_rewrite'))) a(k, v) \
                 WHERE r.rulename <> '_RETURN' AND {rel_filter}"
            ),
        ),
        // Publications: what they publish as the server resolves it (explicit tables, schemas and
        // FOR ALL TABLES alike), row filters (15+) and explicit column lists (15+); pgferry's own
        // (a continuous run's) are not the user's.
        (
            "publications",
            format!(
                "SELECT 'publication', quote_ident(p.pubname), p.pubname::text, 'PUBLICATION ' || p.pubname, NULL::text, a.k, a.v \
                 FROM pg_publication p CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(p.pubowner)::text), \
                   ('options', concat_ws(', ', CASE WHEN p.puballtables THEN 'for all tables' END, \
                      'insert ' || p.pubinsert, 'update ' || p.pubupdate, 'delete ' || p.pubdelete, \
                      'truncate ' || p.pubtruncate, 'via root ' || p.pubviaroot)), \
                   ('tables', (SELECT string_agg(concat_ws(' WHERE ', format('%I.%I', t.schemaname, t.tablename), \
                        to_jsonb(t) ->> 'rowfilter'), ', ' ORDER BY t.schemaname, t.tablename) \
                      FROM pg_publication_tables t WHERE t.pubname = p.pubname)), \
                   ('columns', (SELECT string_agg(format('%I.%I (%s)', rn.nspname, rc.relname, \
                        (SELECT string_agg(quote_ident(at.attname), ', ' ORDER BY at.attnum) FROM pg_attribute at \
                         WHERE at.attrelid = pr.prrelid \
                           AND at.attnum IN (SELECT x::int2 FROM jsonb_array_elements_text(to_jsonb(pr) -> 'prattrs') x))), \
                        ', ' ORDER BY rn.nspname, rc.relname) \
                      FROM pg_publication_rel pr JOIN pg_class rc ON rc.oid = pr.prrelid \
                      JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
                      WHERE pr.prpubid = p.oid AND to_jsonb(pr) ->> 'prattrs' IS NOT NULL)), \
                   ('comment', obj_description(p.oid, 'pg_publication'))) a(k, v) \
                 WHERE NOT starts_with(p.pubname::text, '{REPLICATION_OBJECT_PREFIX}')"
            ),
        ),
        (
            "foreign data wrappers",
            format!(
                "SELECT 'foreign data wrapper', quote_ident(w.fdwname), w.fdwname::text, 'FOREIGN DATA WRAPPER ' || w.fdwname, \
                        NULL::text, a.k, a.v \
                 FROM pg_foreign_data_wrapper w CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(w.fdwowner)::text), \
                   ('handler', nullif(w.fdwhandler, 0)::regproc::text), ('validator', nullif(w.fdwvalidator, 0)::regproc::text), \
                   ('options', array_to_string(w.fdwoptions, ', ')), ('acl', {}), \
                   ('comment', obj_description(w.oid, 'pg_foreign_data_wrapper'))) a(k, v) \
                 WHERE {}",
                acl_plain("w.fdwacl"),
                not_extension_member("pg_foreign_data_wrapper", "w.oid")
            ),
        ),
        // Servers' options are compared by name only: values may hold endpoints a copy changes on
        // purpose, and user mappings' are secrets (RDS-CASES T70).
        (
            "foreign servers",
            format!(
                "SELECT 'server', quote_ident(s.srvname), s.srvname::text, 'SERVER ' || s.srvname, NULL::text, a.k, a.v \
                 FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(s.srvowner)::text), ('wrapper', w.fdwname::text), \
                   ('type', s.srvtype), ('version', s.srvversion), \
                   ('options', (SELECT string_agg(split_part(o, '=', 1), ', ' ORDER BY 1) FROM unnest(s.srvoptions) o)), \
                   ('user mappings', (SELECT string_agg(CASE WHEN um.umuser = 0 THEN 'public' \
                        ELSE um.usename::text END, ', ' ORDER BY 1) FROM pg_user_mappings um \
                      WHERE um.srvid = s.oid)), \
                   ('acl', {}), ('comment', obj_description(s.oid, 'pg_foreign_server'))) a(k, v) \
                 WHERE {}",
                acl_plain("s.srvacl"),
                not_extension_member("pg_foreign_server", "s.oid")
            ),
        ),
        (
            "event triggers",
            "SELECT 'event trigger', quote_ident(e.evtname), e.evtname::text, 'EVENT TRIGGER ' || e.evtname, NULL::text, \
                    a.k, a.v \
             FROM pg_event_trigger e CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(e.evtowner)::text), \
               ('event', e.evtevent::text), ('function', e.evtfoid::regprocedure::text), ('enabled', e.evtenabled::text), \
               ('tags', array_to_string(e.evttags, ', ')), \
               ('comment', obj_description(e.oid, 'pg_event_trigger'))) a(k, v)"
                .to_string(),
        ),
        (
            "statistics objects",
            format!(
                "SELECT 'statistics', format('%I.%I', n.nspname, x.stxname), NULL::text, 'STATISTICS ' || x.stxname, \
                        NULL::text, a.k, a.v \
                 FROM pg_statistic_ext x JOIN pg_namespace n ON n.oid = x.stxnamespace \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(x.stxowner)::text), \
                   ('definition', pg_get_statisticsobjdef(x.oid)), \
                   ('comment', obj_description(x.oid, 'pg_statistic_ext'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_statistic_ext", "x.oid")
            ),
        ),
        (
            "collations",
            format!(
                "SELECT 'collation', format('%I.%I', n.nspname, co.collname), NULL::text, 'COLLATION ' || co.collname, \
                        NULL::text, a.k, a.v \
                 FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(co.collowner)::text), \
                   ('definition', concat_ws(', ', 'provider ' || co.collprovider::text, 'deterministic ' || co.collisdeterministic::text, \
                      'encoding ' || coalesce(pg_encoding_to_char(nullif(co.collencoding, -1))::text, 'any'), \
                      'collate ' || (to_jsonb(co) ->> 'collcollate'), 'ctype ' || (to_jsonb(co) ->> 'collctype'), \
                      'locale ' || coalesce(to_jsonb(co) ->> 'colliculocale', to_jsonb(co) ->> 'colllocale'), \
                      'rules ' || (to_jsonb(co) ->> 'collicurules'))), \
                   ('comment', obj_description(co.oid, 'pg_collation'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_collation", "co.oid")
            ),
        ),
        (
            "operator classes",
            format!(
                "SELECT 'operator class', format('%I.%I using %I', n.nspname, oc.opcname, am.amname), NULL::text, \
                        'OPERATOR CLASS ' || oc.opcname, NULL::text, a.k, a.v \
                 FROM pg_opclass oc JOIN pg_namespace n ON n.oid = oc.opcnamespace JOIN pg_am am ON am.oid = oc.opcmethod \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(oc.opcowner)::text), \
                   ('definition', concat_ws(' ', format_type(oc.opcintype, NULL), CASE WHEN oc.opcdefault THEN 'default' END, \
                      'family ' || (SELECT format('%I.%I', fn.nspname, f.opfname) FROM pg_opfamily f \
                        JOIN pg_namespace fn ON fn.oid = f.opfnamespace WHERE f.oid = oc.opcfamily), \
                      'storage ' || nullif(oc.opckeytype, 0)::regtype::text)), \
                   ('comment', obj_description(oc.oid, 'pg_opclass'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_opclass", "oc.oid")
            ),
        ),
        (
            "operator families",
            format!(
                "SELECT 'operator family', format('%I.%I using %I', n.nspname, f.opfname, am.amname), NULL::text, \
                        'OPERATOR FAMILY ' || f.opfname, NULL::text, a.k, a.v \
                 FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(f.opfowner)::text), \
                   ('operators', (SELECT string_agg(format('%s %s', ao.amopstrategy, ao.amopopr::regoperator), ', ' \
                      ORDER BY 1) FROM pg_amop ao WHERE ao.amopfamily = f.oid)), \
                   ('functions', (SELECT string_agg(format('%s %s', ap.amprocnum, ap.amproc::regprocedure), ', ' \
                      ORDER BY 1) FROM pg_amproc ap WHERE ap.amprocfamily = f.oid)), \
                   ('comment', obj_description(f.oid, 'pg_opfamily'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_opfamily", "f.oid")
            ),
        ),
        // Casts and transforms made by users (OIDs past the initdb range), not by extensions.
        (
            "casts",
            format!(
                "SELECT 'cast', format('(%s AS %s)', format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL)), \
                        NULL::text, format('CAST CAST (%s AS %s)', format_type(ca.castsource, NULL), \
                        format_type(ca.casttarget, NULL)), NULL::text, a.k, a.v \
                 FROM pg_cast ca CROSS JOIN LATERAL (VALUES \
                   ('function', nullif(ca.castfunc, 0)::regprocedure::text), ('context', ca.castcontext::text), \
                   ('method', ca.castmethod::text), ('comment', obj_description(ca.oid, 'pg_cast'))) a(k, v) \
                 WHERE ca.oid >= {FIRST_NORMAL_OBJECT_ID} AND {}",
                not_extension_member("pg_cast", "ca.oid")
            ),
        ),
        (
            "transforms",
            format!(
                "SELECT 'transform', format('for %s language %I', format_type(tr.trftype, NULL), l.lanname), NULL::text, \
                        format('TRANSFORM TRANSFORM FOR %s LANGUAGE %s', format_type(tr.trftype, NULL), l.lanname), NULL::text, a.k, a.v \
                 FROM pg_transform tr JOIN pg_language l ON l.oid = tr.trflang CROSS JOIN LATERAL (VALUES \
                   ('from sql', nullif(tr.trffromsql, 0)::regprocedure::text), \
                   ('to sql', nullif(tr.trftosql, 0)::regprocedure::text)) a(k, v) \
                 WHERE {}",
                not_extension_member("pg_transform", "tr.oid")
            ),
        ),
        (
            "text search configurations",
            format!(
                "SELECT 'text search configuration', format('%I.%I', n.nspname, c.cfgname), NULL::text, \
                        'TEXT SEARCH CONFIGURATION ' || c.cfgname, NULL::text, a.k, a.v \
                 FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(c.cfgowner)::text), \
                   ('parser', c.cfgparser::regproc::text), \
                   ('mappings', (SELECT string_agg(format('%s %s %s', m.maptokentype, m.mapseqno, m.mapdict::regdictionary), \
                      ', ' ORDER BY m.maptokentype, m.mapseqno) FROM pg_ts_config_map m WHERE m.mapcfg = c.oid)), \
                   ('comment', obj_description(c.oid, 'pg_ts_config'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_ts_config", "c.oid")
            ),
        ),
        (
            "text search dictionaries",
            format!(
                "SELECT 'text search dictionary', format('%I.%I', n.nspname, d.dictname), NULL::text, \
                        'TEXT SEARCH DICTIONARY ' || d.dictname, NULL::text, a.k, a.v \
                 FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace \
                 CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(d.dictowner)::text), \
                   ('template', (SELECT format('%I.%I', tn.nspname, t.tmplname) FROM pg_ts_template t \
                      JOIN pg_namespace tn ON tn.oid = t.tmplnamespace WHERE t.oid = d.dicttemplate)), \
                   ('options', d.dictinitoption), ('comment', obj_description(d.oid, 'pg_ts_dict'))) a(k, v) \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_ts_dict", "d.oid")
            ),
        ),
        (
            "text search parsers and templates",
            format!(
                "SELECT 'text search parser', format('%I.%I', n.nspname, p.prsname), NULL::text, \
                        'TEXT SEARCH PARSER ' || p.prsname, NULL::text, 'functions', \
                        concat_ws(', ', p.prsstart::regproc, p.prstoken::regproc, p.prsend::regproc, \
                          nullif(p.prsheadline, 0)::regproc, p.prslextype::regproc) \
                 FROM pg_ts_parser p JOIN pg_namespace n ON n.oid = p.prsnamespace \
                 WHERE {USER_SCHEMA} AND {} \
                 UNION ALL \
                 SELECT 'text search template', format('%I.%I', n.nspname, t.tmplname), NULL::text, \
                        'TEXT SEARCH TEMPLATE ' || t.tmplname, NULL::text, 'functions', \
                        concat_ws(', ', nullif(t.tmplinit, 0)::regproc, t.tmpllexize::regproc) \
                 FROM pg_ts_template t JOIN pg_namespace n ON n.oid = t.tmplnamespace \
                 WHERE {USER_SCHEMA} AND {}",
                not_extension_member("pg_ts_parser", "p.oid"),
                not_extension_member("pg_ts_template", "t.oid")
            ),
        ),
        (
            "database",
            format!(
                "SELECT 'database', '', NULL::text, NULL::text, NULL::text, a.k, a.v \
                 FROM pg_database d CROSS JOIN LATERAL (VALUES \
                   ('owner', pg_get_userbyid(d.datdba)::text), ('acl', {}), \
                   ('encoding', pg_encoding_to_char(d.encoding)::text), ('collate', d.datcollate::text), \
                   ('ctype', d.datctype::text), \
                   ('locale provider', coalesce(to_jsonb(d) ->> 'datlocprovider', /* libc before 15 */ 'c')), \
                   ('icu locale', coalesce(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale')), \
                   ('connection limit', d.datconnlimit::text), \
                   ('comment', shobj_description(d.oid, 'pg_database')) \
                 ) a(k, v) WHERE d.datname = current_database() \
                 UNION ALL \
                 SELECT 'database', '', NULL, NULL, NULL, 'setting ' || split_part(cfg, '=', 1), \
                        substr(cfg, strpos(cfg, '=') + 1) \
                 FROM pg_db_role_setting s CROSS JOIN unnest(s.setconfig) cfg \
                 WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
                acl("d.datacl", "'d'", "d.datdba")
            ),
        ),
    ]
}

/// Roles: attributes, memberships, settings (global and in this database). `$1` is the list of
/// role names.
const ROLE_SQL: &str = "SELECT 'role', quote_ident(r.rolname), r.rolname::text, NULL::text, NULL::text, a.k, a.v \
     FROM pg_roles r CROSS JOIN LATERAL (VALUES \
       ('SUPERUSER', r.rolsuper::text), ('INHERIT', r.rolinherit::text), ('CREATEROLE', r.rolcreaterole::text), \
       ('CREATEDB', r.rolcreatedb::text), ('LOGIN', r.rolcanlogin::text), ('REPLICATION', r.rolreplication::text), \
       ('BYPASSRLS', r.rolbypassrls::text), ('CONNECTION LIMIT', r.rolconnlimit::text), \
       ('VALID UNTIL', coalesce(r.rolvaliduntil::text, 'infinity')), \
       ('comment', shobj_description(r.oid, 'pg_authid'))) a(k, v) \
     WHERE r.rolname = ANY($1) \
     UNION ALL \
     SELECT 'role', quote_ident(m.rolname), m.rolname::text, NULL, NULL, 'member of ' || g.rolname, \
            string_agg(DISTINCT concat_ws(' ', 'member', CASE WHEN am.admin_option THEN 'with admin option' END, \
              CASE WHEN to_jsonb(am) ->> 'inherit_option' = 'false' THEN 'noinherit' END, \
              CASE WHEN to_jsonb(am) ->> 'set_option' = 'false' THEN 'noset' END), '; ') \
     FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
     WHERE m.rolname = ANY($1) GROUP BY m.rolname, g.rolname \
     UNION ALL \
     SELECT 'role', quote_ident(r.rolname), r.rolname::text, NULL, NULL, \
            'setting ' || split_part(cfg, '=', 1) || CASE WHEN s.setdatabase = 0 THEN '' ELSE ' in this database' END, \
            substr(cfg, strpos(cfg, '=') + 1) \
     FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole CROSS JOIN unnest(s.setconfig) cfg \
     WHERE r.rolname = ANY($1) \
       AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// Roles with settings in this database, and every member (direct or not) of the given roles.
const ROLE_CLOSURE_SQL: &str = "WITH RECURSIVE r(oid) AS ( \
       SELECT oid FROM pg_roles WHERE rolname = ANY($1) \
       UNION SELECT s.setrole FROM pg_db_role_setting s \
         WHERE s.setrole <> 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       UNION SELECT m.member FROM pg_auth_members m JOIN r ON m.roleid = r.oid) \
     SELECT rolname::text FROM pg_roles JOIN r USING (oid)";

/// Reads the database objects of one side (roles are read separately, see [`read_roles`]).
async fn read_objects(client: &Client, borrow_lo_owners: bool) -> Result<Inventory> {
    // Definitions are printed with every name qualified, identically on both sides.
    client
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .map_err(|e| Error::db("inventory: empty search_path", e))?;
    let mut inv = Inventory::default();
    for (what, sql) in object_queries() {
        let rows = client.query(&sql, &[]).await.map_err(|e| Error::db(format!("inventory: read {what}"), e))?;
        inv.add_rows(&rows);
    }
    // pgferry's own schema: listed (so that it is seen and explained), its content is not.
    let own: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&PGFERRY_SCHEMA])
        .await
        .map_err(|e| Error::db("inventory: look for the pgferry schema", e))?
        .get(0);
    if own {
        let o = Object {
            kind: "schema".into(),
            ident: display_ident(PGFERRY_SCHEMA),
            raw: Some(PGFERRY_SCHEMA.into()),
            ..Object::default()
        };
        inv.objects.insert(o.key(), o);
    }
    large_objects(client, borrow_lo_owners, &mut inv).await?;
    for o in inv.objects.values_mut() {
        if let Some(d) = o.aspects.get("definition") {
            let n = deparse_normalized(d);
            o.normalized_definition = Some(if n.chars().count() > SHOWN_VALUE_CHARS {
                format!("sha256 {:032x}", digest(n.as_bytes()))
            } else {
                n
            });
        }
        for (aspect, v) in o.aspects.iter_mut() {
            if matches!(aspect.as_str(), "definition" | "body") && v.chars().count() > SHOWN_VALUE_CHARS {
                *v = format!("{} chars, sha256 {:032x}…", v.chars().count(), digest(v.as_bytes()));
            }
        }
    }
    Ok(inv)
}

/// A stable digest of a long text (the report shows it instead of the text): the first half of
/// its SHA-256.
fn digest(bytes: &[u8]) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

/// Large objects: owner, ACL, comment and a hash of the content, computed by the server.
///
/// Content is readable only with the owner's rights (pg_largeobject itself is superuser-only).
/// On the target, pgferry gave the objects to their owners, so the master borrows membership in
/// an owner it cannot read as, for the read only — as the large-object step itself does. The
/// source is never written to: an unreadable object there is reported as such.
async fn large_objects(client: &Client, borrow: bool, inv: &mut Inventory) -> Result<()> {
    let sql = format!(
        "SELECT m.oid, pg_get_userbyid(m.lomowner)::text, {}, obj_description(m.oid, 'pg_largeobject'), \
                pg_has_role(m.lomowner, 'USAGE') OR EXISTS (SELECT 1 FROM aclexplode(m.lomacl) e \
                  WHERE e.privilege_type = 'SELECT' AND (e.grantee = 0 OR pg_has_role(e.grantee, 'USAGE'))) \
         FROM pg_largeobject_metadata m ORDER BY m.oid",
        acl("m.lomacl", "'L'", "m.lomowner")
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("inventory: list large objects", e))?;
    let mut readable = Vec::new();
    let mut unreadable: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &rows {
        let oid: u32 = r.get(0);
        let owner: String = r.get(1);
        let mut o = Object { kind: "large object".into(), ident: oid.to_string(), ..Object::default() };
        o.aspects.insert("owner".into(), owner.clone());
        o.aspects.insert("acl".into(), r.get(2));
        if let Some(c) = r.get::<_, Option<String>>(3) {
            o.aspects.insert("comment".into(), c);
        }
        o.aspects.insert("content".into(), "not readable by the connecting role".into());
        inv.objects.insert(o.key(), o);
        if r.get::<_, bool>(4) {
            readable.push(oid);
        } else {
            unreadable.entry(owner).or_default().push(oid);
        }
    }
    hash_large_objects(client, &readable, inv).await?;
    if !borrow {
        return Ok(());
    }
    for (owner, oids) in unreadable {
        let grant = format!("GRANT {} TO CURRENT_USER", quote_ident(&owner));
        if client.batch_execute(&grant).await.is_err() {
            continue;
        }
        let hashed = hash_large_objects(client, &oids, inv).await;
        let revoke = format!("REVOKE {} FROM CURRENT_USER", quote_ident(&owner));
        client.batch_execute(&revoke).await.map_err(|e| Error::db(revoke.clone(), e))?;
        hashed?;
    }
    Ok(())
}

async fn hash_large_objects(client: &Client, oids: &[u32], inv: &mut Inventory) -> Result<()> {
    for batch in oids.chunks(LO_BATCH) {
        let rows = client
            .query(
                "SELECT o, length(b)::bigint, md5(b) FROM unnest($1::oid[]) o, LATERAL pg_catalog.lo_get(o) b",
                &[&batch],
            )
            .await
            .map_err(|e| Error::db("inventory: hash large objects", e))?;
        for r in rows {
            let oid: u32 = r.get(0);
            if let Some(o) = inv.objects.get_mut(&format!("large object {oid}")) {
                o.aspects
                    .insert("content".into(), format!("{} bytes, md5 {}", r.get::<_, i64>(1), r.get::<_, String>(2)));
            }
        }
    }
    Ok(())
}

/// Reads the roles in `names` and their members; RDS-internal (and pgferry's per-run holder) and
/// predefined roles and the masters are left out (`excluded`).
async fn read_roles(client: &Client, names: &[String], excluded: &BTreeSet<String>, inv: &mut Inventory) -> Result<()> {
    let rows = client.query(ROLE_CLOSURE_SQL, &[&names]).await.map_err(|e| Error::db("inventory: role closure", e))?;
    let all: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|r| !excluded.contains(r) && !is_rds_internal(r) && !is_predefined(r))
        .collect();
    let rows = client.query(ROLE_SQL, &[&all]).await.map_err(|e| Error::db("inventory: read roles", e))?;
    inv.add_rows(&rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ACLs
// ---------------------------------------------------------------------------------------------

/// One privilege of an ACL: `grantee` (empty for PUBLIC) holds `privilege` from `grantor`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Atom {
    grantee: String,
    privilege: char,
    grantable: bool,
    grantor: String,
}

/// Splits `aclitem` texts (`grantee=privs/grantor`, names double-quoted when needed, items
/// separated by spaces) into single privileges.
fn acl_atoms(text: &str) -> BTreeSet<Atom> {
    let mut out = BTreeSet::new();
    for item in acl_items(text) {
        let (grantee, rest) = split_unquoted(&item, '=');
        let (privs, grantor) = split_unquoted(&rest, '/');
        let (grantee, grantor) = (unquote(&grantee), unquote(&grantor));
        let chars: Vec<char> = privs.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if *c == '*' {
                continue;
            }
            let grantable = chars.get(i + 1) == Some(&'*');
            out.insert(Atom { grantee: grantee.clone(), privilege: *c, grantable, grantor: grantor.clone() });
        }
    }
    out
}

/// The `aclitem` texts of an ACL (space-separated, names double-quoted when needed).
fn acl_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ' ' if !quoted => items.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    items.push(cur);
    items.retain(|i| !i.is_empty());
    items
}

/// An ACL without the items granted to `roles`.
fn without_grantees(text: &str, roles: &BTreeSet<String>) -> String {
    acl_items(text)
        .into_iter()
        .filter(|item| !roles.contains(&unquote(&split_unquoted(item, '=').0)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits at the first `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> (String, String) {
    let mut quoted = false;
    for (i, ch) in s.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            return (s[..i].to_string(), s[i + ch.len_utf8()..].to_string());
        }
    }
    (s.to_string(), String::new())
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// What the schema report explains
// ---------------------------------------------------------------------------------------------

/// A rule and its reason, as the schema report gives them.
type Why = (String, String);

/// Facts read back from the schema reports of the run that applied the schema.
#[derive(Debug, Default)]
struct Evidence {
    /// Source role → target role it was replaced by (owners, grantees, members).
    role_map: BTreeMap<String, (String, Why)>,
    /// The same, by rule: an owner is explained by `owner.map`, a grantee by `acl.grantee-map`
    /// when the report has both for one role.
    role_map_by_rule: BTreeMap<(String, String), (String, Why)>,
    /// Roles whose grants were left out.
    dropped_grantees: BTreeMap<String, Why>,
    /// Roles whose creation was left out (not merely found existing).
    roles_skipped: BTreeMap<String, Why>,
    /// Roles whose attribute statement was left out as a whole.
    role_statements_skipped: BTreeMap<String, Why>,
    /// `(role, ATTRIBUTE)` dropped from a role statement.
    role_attributes: BTreeMap<(String, String), Why>,
    /// `(role or "" for the database, in this database, lower-case parameter)` left out.
    settings: BTreeMap<(String, bool, String), Why>,
    /// `(group, member)` memberships not granted as dumped.
    memberships: BTreeMap<(String, String), Why>,
    /// TOC labels (`TABLE t`, `FUNCTION f(integer)`) of skipped statements.
    entries: BTreeMap<String, Why>,
    /// Extensions whose owner the report says changes.
    extension_owners: BTreeMap<String, Why>,
    /// Tablespaces not created.
    tablespaces: BTreeMap<String, Why>,
    /// The target database existed: its encoding and locale are its own.
    database_existed: Option<Why>,
    /// Grants whose grantor was changed (GRANTED BY dropped, session authorization as SET ROLE).
    grantor_rewrites: Option<Why>,
    /// `server_version_num` of the older side (0 when unknown): privileges it cannot express
    /// are left out of ACL comparisons.
    older_version: i32,
    /// The two sides run different majors: definitions are compared as [`deparse_normalized`].
    majors_differ: bool,
}

fn why(st: &sanitize::Planned) -> Why {
    (st.rule.clone().unwrap_or_default(), st.reason.clone().unwrap_or_default())
}

fn role_name(r: &RoleRef) -> Option<String> {
    r.name.clone()
}

fn option_keywords(p: &Parsed) -> Option<(String, BTreeSet<String>)> {
    let (name, options): (Option<String>, &Vec<RoleOption>) = match p {
        Parsed::CreateRole { role, options } => (Some(role.value.clone()), options),
        Parsed::AlterRoleOptions { role, options } => (role_name(role), options),
        _ => return None,
    };
    Some((name?, options.iter().map(|o| o.keyword.clone()).collect()))
}

/// The statements of a text (a rewrite may have become two statements).
fn parse_all(text: &str) -> Vec<Parsed> {
    lex::split(text)
        .iter()
        .filter(|i| i.kind == ItemKind::Statement && !i.is_empty())
        .map(|i| Statement::new(i.sql()).parse())
        .collect()
}

impl Evidence {
    /// Records that a statement replaced role `from` by `to`. A rewrite names only its first
    /// rule (a database owner statement is first renamed by `db.rename`), so the rule recorded is
    /// the statement's when it is a role-mapping rule, else the one that maps roles in that
    /// position; the reason is the part of the statement's reasons about that role.
    fn map_role(&mut self, from: &RoleRef, to: &RoleRef, w: &Why, position: &sanitize::Rule) {
        let mapping =
            [&sanitize::OWNER_MAP, &sanitize::ACL_GRANTEE_MAP, &sanitize::MEMBERSHIP_MASTER, &sanitize::DEFACL_MAP];
        if let (Some(f), Some(t)) = (&from.name, &to.name)
            && f != t
        {
            let rule = if mapping.iter().any(|r| r.id == w.0) { w.0.clone() } else { position.id.to_string() };
            let reason = w.1.split("; ").find(|part| part.starts_with(f.as_str())).unwrap_or(&w.1).to_string();
            let mapped = (t.clone(), (rule.clone(), reason));
            self.role_map_by_rule.entry((rule, f.clone())).or_insert_with(|| mapped.clone());
            self.role_map.entry(f.clone()).or_insert(mapped);
        }
    }

    fn from_reports(reports: &[SchemaReport]) -> Self {
        let mut ev = Self::default();
        for st in reports.iter().flat_map(|r| r.plans.iter().flat_map(|p| &p.statements)) {
            let w = why(st);
            let before = Statement::new(&st.before).parse();
            if st.verdict == Verdict::Keep {
                if let Parsed::CreateExtension { name } = &before
                    && let Some(n) = st.notes.iter().find(|n| n.rule == sanitize::EXT_OWNER.id)
                {
                    ev.extension_owners.insert(name.value.clone(), (n.rule.clone(), n.text.clone()));
                }
                continue;
            }
            if matches!(w.0.as_str(), "acl.granted-by" | "acl.session-authorization") {
                ev.grantor_rewrites.get_or_insert(w.clone());
            }
            let refused = st.verdict == Verdict::Try && st.outcome.as_deref().is_some_and(|o| o.starts_with("refused"));
            if st.verdict == Verdict::Skip || refused {
                if let Some(label) = st.entry.as_ref().filter(|_| !st.statement_only) {
                    ev.entries.entry(label.clone()).or_insert_with(|| w.clone());
                }
                ev.skipped(&st.before, before, &w);
                continue;
            }
            // Rewritten (or tried and applied): what changed between before and after.
            let after = st.after.as_deref().map(parse_all).unwrap_or_default();
            if let Some((role, kws)) = option_keywords(&before) {
                let kept: BTreeSet<String> = after.iter().filter_map(option_keywords).flat_map(|(_, k)| k).collect();
                for kw in kws.difference(&kept) {
                    ev.role_attributes.insert((role.clone(), kw.clone()), w.clone());
                }
            }
            match (&before, after.first()) {
                (Parsed::AlterOwner { owner: b, .. }, Some(Parsed::AlterOwner { owner: a, .. })) => {
                    ev.map_role(b, a, &w, &sanitize::OWNER_MAP);
                }
                (
                    Parsed::AlterDatabase { action: DatabaseAction::Owner(b), .. },
                    Some(Parsed::AlterDatabase { action: DatabaseAction::Owner(a), .. }),
                ) => ev.map_role(b, a, &w, &sanitize::OWNER_MAP),
                (Parsed::GrantObject { grantees: b, .. }, Some(Parsed::GrantObject { grantees: a, .. }))
                    if a.len() == b.len() =>
                {
                    for (x, y) in b.iter().zip(a) {
                        ev.map_role(x, y, &w, &sanitize::ACL_GRANTEE_MAP);
                    }
                }
                (Parsed::GrantRole { roles, grantees: b, .. }, Some(Parsed::GrantRole { grantees: a, .. })) => {
                    if a.len() == b.len() {
                        for (x, y) in b.iter().zip(a) {
                            ev.map_role(x, y, &w, &sanitize::MEMBERSHIP_MASTER);
                        }
                    }
                    for g in roles.iter().filter_map(role_name) {
                        for m in b.iter().filter_map(role_name) {
                            ev.memberships.insert((g.clone(), m), w.clone());
                        }
                    }
                }
                (Parsed::Policy { roles: b }, Some(Parsed::Policy { roles: a })) if a.len() == b.len() => {
                    for (x, y) in b.iter().zip(a) {
                        ev.map_role(x, y, &w, &sanitize::ACL_GRANTEE_MAP);
                    }
                }
                (
                    Parsed::AlterDefaultPrivileges { for_roles: b, .. },
                    Some(Parsed::AlterDefaultPrivileges { for_roles: a, .. }),
                ) if a.len() == b.len() => {
                    for (x, y) in b.iter().zip(a) {
                        ev.map_role(x, y, &w, &sanitize::DEFACL_MAP);
                    }
                }
                _ => {}
            }
        }
        ev
    }

    /// Records what a skipped (or refused) statement left out.
    fn skipped(&mut self, text: &str, parsed: Parsed, w: &Why) {
        match parsed {
            Parsed::CreateRole { role, .. } if w.0 != sanitize::ROLE_EXISTS.id => {
                self.roles_skipped.insert(role.value, w.clone());
            }
            Parsed::AlterRoleOptions { role, .. } => {
                if let Some(n) = role.name {
                    self.role_statements_skipped.insert(n, w.clone());
                }
            }
            Parsed::AlterRoleSet { role, database, param } => {
                if let Some(n) = role.name {
                    self.settings.insert((n, database.is_some(), param.value.to_lowercase()), w.clone());
                }
            }
            Parsed::AlterDatabase { action: DatabaseAction::Set(param), .. } => {
                self.settings.insert((String::new(), true, param.value.to_lowercase()), w.clone());
            }
            Parsed::GrantRole { roles, grantees, .. } => {
                for g in roles.iter().filter_map(role_name) {
                    for m in grantees.iter().filter_map(role_name) {
                        self.memberships.insert((g.clone(), m), w.clone());
                    }
                }
            }
            Parsed::GrantObject { grantees, .. } => {
                for g in grantees.iter().filter_map(role_name) {
                    self.dropped_grantees.entry(g).or_insert_with(|| w.clone());
                }
            }
            Parsed::AlterDefaultPrivileges { grantees, .. } => {
                for g in grantees.iter().filter_map(role_name) {
                    self.dropped_grantees.entry(g).or_insert_with(|| w.clone());
                }
            }
            Parsed::CreateDatabase { .. } if w.0 == sanitize::DB_EXISTS.id => {
                self.database_existed = Some(w.clone());
            }
            Parsed::Tablespace => {
                // `CREATE TABLESPACE name …`: the third token names it.
                let st = Statement::new(text);
                if st.keywords(2) == ["CREATE", "TABLESPACE"]
                    && let Some(t) = st.tokens.get(2)
                {
                    let name = if t.kind == TokenKind::QuotedIdent { unquote(t.text) } else { t.text.to_lowercase() };
                    self.tablespaces.insert(name, w.clone());
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------------

/// Attributes the difference to the evidence.
struct Explainer<'a> {
    ev: &'a Evidence,
}

impl Explainer<'_> {
    /// The role `role` became on the target, preferably by rule `prefer`; records the rule.
    fn translate(
        &self,
        role: &str,
        prefer: &sanitize::Rule,
        rules: &mut BTreeSet<String>,
        reasons: &mut Vec<String>,
    ) -> String {
        let by_rule = self.ev.role_map_by_rule.get(&(prefer.id.to_string(), role.to_string()));
        match by_rule.or_else(|| self.ev.role_map.get(role)) {
            Some((to, (rule, reason))) => {
                rules.insert(rule.clone());
                if !reasons.contains(reason) {
                    reasons.push(reason.clone());
                }
                to.clone()
            }
            None => role.to_string(),
        }
    }

    fn missing(&self, o: &Object) -> Option<Why> {
        if o.kind == "role" {
            return o.raw.as_ref().and_then(|r| self.ev.roles_skipped.get(r)).cloned();
        }
        [&o.label, &o.parent].into_iter().flatten().find_map(|l| self.ev.entries.get(l)).cloned()
    }

    fn extra(&self, o: &Object) -> Option<Why> {
        (o.kind == "schema" && o.raw.as_deref() == Some(PGFERRY_SCHEMA)).then(|| {
            (
                PGFERRY_SCHEMA_RULE.to_string(),
                "pgferry's bookkeeping (applied sections, chunk and large-object ledgers) lives on the target only"
                    .to_string(),
            )
        })
    }

    /// The rules explaining a differing aspect, with the reasons; `None` when nothing does.
    fn aspect(&self, o: &Object, aspect: &str, s: Option<&str>, t: Option<&str>) -> Option<(Vec<String>, String)> {
        let one = |w: &Why| Some((vec![w.0.clone()], w.1.clone()));
        let raw = o.raw.clone().unwrap_or_default();
        if aspect == "owner" {
            if o.kind == "extension"
                && let Some(w) = self.ev.extension_owners.get(&raw)
            {
                return one(w);
            }
            let (mut rules, mut reasons) = (BTreeSet::new(), Vec::new());
            let mapped = self.translate(s?, &sanitize::OWNER_MAP, &mut rules, &mut reasons);
            return (Some(mapped.as_str()) == t).then(|| (rules.into_iter().collect(), reasons.join("; ")));
        }
        if is_acl_aspect(aspect) {
            return self.acl(s.unwrap_or(""), t.unwrap_or(""));
        }
        // What a publication publishes: its tables and schemas are TOC entries of their own
        // (`PUBLICATION TABLE pub t`, `PUBLICATION TABLES IN SCHEMA pub s`), left out or refused
        // alone (adding a schema needs a superuser).
        if o.kind == "publication" && (aspect == "tables" || aspect == "columns") {
            let prefixes = [format!("PUBLICATION TABLE {raw} "), format!("PUBLICATION TABLES IN SCHEMA {raw} ")];
            let found: Vec<&Why> = self
                .ev
                .entries
                .iter()
                .filter(|(label, _)| prefixes.iter().any(|p| label.starts_with(p.as_str())))
                .map(|(_, w)| w)
                .collect();
            if found.is_empty() {
                return None;
            }
            let rules: BTreeSet<String> = found.iter().map(|w| w.0.clone()).collect();
            let reasons: Vec<String> = found.iter().map(|w| w.1.clone()).collect();
            return Some((rules.into_iter().collect(), reasons.join("; ")));
        }
        // Lists of role names: a policy's roles, the users of a server's mappings.
        if aspect == "roles" || aspect == "user mappings" {
            let (mut rules, mut reasons) = (BTreeSet::new(), Vec::new());
            let mut mapped: Vec<String> = s?
                .split(", ")
                .filter(|r| !self.ev.dropped_grantees.contains_key(*r))
                .map(|r| {
                    if r == "public" {
                        r.to_string()
                    } else {
                        self.translate(r, &sanitize::ACL_GRANTEE_MAP, &mut rules, &mut reasons)
                    }
                })
                .collect();
            for r in s?.split(", ") {
                if let Some((rule, reason)) = self.ev.dropped_grantees.get(r) {
                    rules.insert(rule.clone());
                    reasons.push(reason.clone());
                }
            }
            mapped.sort();
            mapped.dedup();
            let mut target: Vec<&str> = t.map(|t| t.split(", ").collect()).unwrap_or_default();
            target.sort_unstable();
            return (mapped == target).then(|| (rules.into_iter().collect(), reasons.join("; ")));
        }
        if let Some(group) = aspect.strip_prefix("member of ") {
            if let Some(w) = self.ev.memberships.get(&(group.to_string(), raw.clone())) {
                return one(w);
            }
            // Membership in a group that the report mapped to another role (the source master).
            if s.is_none()
                && let Some(w) = self
                    .ev
                    .role_map
                    .iter()
                    .filter(|(_, (to, _))| to == group)
                    .find_map(|(from, _)| self.ev.memberships.get(&(from.clone(), raw.clone())))
            {
                return one(w);
            }
            // REPLICATION became membership in rds_replication (T1).
            if group == "rds_replication"
                && s.is_none()
                && let Some(w) = self.ev.role_attributes.get(&(raw.clone(), "REPLICATION".to_string()))
            {
                return one(w);
            }
            return None;
        }
        if let Some(rest) = aspect.strip_prefix("setting ") {
            let (param, in_db) = match rest.strip_suffix(" in this database") {
                Some(p) => (p, true),
                None => (rest, o.kind == "database"),
            };
            let who = if o.kind == "database" { String::new() } else { raw.clone() };
            return self.ev.settings.get(&(who, in_db, param.to_lowercase())).and_then(one);
        }
        if o.kind == "role" {
            if let Some(w) = self.ev.role_statements_skipped.get(&raw) {
                return one(w);
            }
            let kw = match s {
                Some("false") => format!("NO{aspect}"),
                _ => aspect.to_string(),
            };
            return self.ev.role_attributes.get(&(raw, kw)).and_then(one);
        }
        if o.kind == "database" && matches!(aspect, "encoding" | "collate" | "ctype" | "locale provider" | "icu locale")
        {
            return self.ev.database_existed.as_ref().and_then(one);
        }
        if aspect == "tablespace" && t.is_none() {
            return self.ev.tablespaces.get(s?).and_then(one);
        }
        None
    }

    fn acl(&self, s: &str, t: &str) -> Option<(Vec<String>, String)> {
        let (mut rules, mut reasons) = (BTreeSet::new(), Vec::new());
        let mut mapped = BTreeSet::new();
        for a in acl_atoms(s) {
            if let Some((rule, reason)) = self.ev.dropped_grantees.get(&a.grantee) {
                rules.insert(rule.clone());
                if !reasons.contains(reason) {
                    reasons.push(reason.clone());
                }
                continue;
            }
            let grantee = if a.grantee.is_empty() {
                a.grantee
            } else {
                self.translate(&a.grantee, &sanitize::ACL_GRANTEE_MAP, &mut rules, &mut reasons)
            };
            // A grantor is the object's owner, or the role a grant was made as.
            let grantor = self.translate(&a.grantor, &sanitize::OWNER_MAP, &mut rules, &mut reasons);
            mapped.insert(Atom { grantee, grantor, ..a });
        }
        let mut target = acl_atoms(t);
        let older = self.ev.older_version;
        let before = mapped.len() + target.len();
        mapped.retain(|a| expressible(a.privilege, older));
        target.retain(|a| expressible(a.privilege, older));
        if mapped.len() + target.len() != before {
            rules.insert(PRIVILEGE_VERSION_RULE.to_string());
            let names: Vec<&str> = VERSIONED_PRIVILEGES
                .iter()
                .filter(|(c, _, _)| !expressible(*c, older))
                .map(|(_, name, _)| *name)
                .collect();
            reasons.push(format!(
                "{} does not exist on PostgreSQL {} (the older side)",
                names.join(", "),
                older / 10000
            ));
        }
        if mapped == target {
            return Some((rules.into_iter().collect(), reasons.join("; ")));
        }
        // Grants made under another grantor than dumped: compare who holds what.
        let (rule, reason) = self.ev.grantor_rewrites.as_ref()?;
        let strip = |set: &BTreeSet<Atom>| -> BTreeSet<Atom> {
            set.iter().map(|a| Atom { grantor: String::new(), ..a.clone() }).collect()
        };
        (strip(&mapped) == strip(&target)).then(|| {
            rules.insert(rule.clone());
            reasons.push(reason.clone());
            (rules.into_iter().collect(), reasons.join("; "))
        })
    }
}

fn difference(o: &Object, aspect: &str, s: Option<String>, t: Option<String>) -> InventoryDifference {
    InventoryDifference {
        object: o.key(),
        aspect: aspect.to_string(),
        source: s,
        target: t,
        rules: vec![],
        reason: None,
    }
}

/// Compares the inventories; every difference is explained or not.
fn compare(source: &Inventory, target: &Inventory, ev: &Evidence, report: &mut InventoryReport) {
    let ex = Explainer { ev };
    let mut push = |mut d: InventoryDifference, why: Option<(Vec<String>, String)>| match why {
        Some((rules, reason)) => {
            d.rules = rules;
            d.reason = (!reason.is_empty()).then_some(reason);
            report.explained.push(d);
        }
        None => report.unexplained.push(d),
    };
    let mut renamed: BTreeSet<String> = BTreeSet::new();
    let pairs: Vec<(&Object, &Object)> = {
        let mut pairs = Vec::new();
        for (key, s) in &source.objects {
            if let Some(t) = target.objects.get(key) {
                pairs.push((s, t));
                continue;
            }
            // Default privileges of a role that maps to another (the source master's, T8).
            if s.kind == "default privileges"
                && let Some(role) = &s.raw
                && let Some((to, w)) = ev.role_map.get(role)
            {
                let ident = s.ident.replacen(&display_ident(role), &display_ident(to), 1);
                if let Some(t) = target.objects.get(&format!("{} {ident}", s.kind))
                    && !source.objects.contains_key(&t.key())
                {
                    renamed.insert(t.key());
                    push(
                        difference(s, "role", Some(role.clone()), Some(to.clone())),
                        Some((vec![w.0.clone()], w.1.clone())),
                    );
                    pairs.push((s, t));
                    continue;
                }
            }
            let d = difference(s, "object", Some("present".into()), None);
            push(d, ex.missing(s).map(|w| (vec![w.0], w.1)));
        }
        pairs
    };
    for (key, t) in &target.objects {
        if !source.objects.contains_key(key) && !renamed.contains(key) {
            push(difference(t, "object", None, Some("present".into())), ex.extra(t).map(|w| (vec![w.0], w.1)));
        }
    }
    for (s, t) in pairs {
        let aspects: BTreeSet<&String> = s.aspects.keys().chain(t.aspects.keys()).collect();
        for aspect in aspects {
            let (sv, tv) = (s.aspects.get(aspect), t.aspects.get(aspect));
            if sv == tv {
                continue;
            }
            if is_acl_aspect(aspect) && acl_atoms(sv.map_or("", |v| v)) == acl_atoms(tv.map_or("", |v| v)) {
                continue;
            }
            if aspect == "definition"
                && ev.majors_differ
                && s.normalized_definition.is_some()
                && s.normalized_definition == t.normalized_definition
            {
                let why = format!(
                    "the two majors print this definition differently (qualifiers, spacing); it says the same \
                     (PostgreSQL {})",
                    ev.older_version / 10000
                );
                push(
                    difference(s, aspect, sv.cloned(), tv.cloned()),
                    Some((vec![DEPARSE_VERSION_RULE.to_string()], why)),
                );
                continue;
            }
            let why = ex.aspect(s, aspect, sv.map(String::as_str), tv.map(String::as_str));
            push(difference(s, aspect, sv.cloned(), tv.cloned()), why);
        }
    }
}

/// The run whose schema reports explain the target: this run's, or (for a standalone verify)
/// the run that applied the target's pre-data section, as pgferry's bookkeeping records it.
async fn schema_reports(ctx: &StepContext, run: &str, target: &Client) -> Result<(Option<String>, Vec<SchemaReport>)> {
    let load = |run: String| async move {
        let mut reports = Vec::new();
        for step in STEPS {
            if let Ok(r) = ctx.store.get_json::<SchemaReport>(&keys::schema_report(&run, step)).await {
                reports.push(r);
            }
        }
        (run, reports)
    };
    let (run, reports) = load(run.to_string()).await;
    if !reports.is_empty() {
        return Ok((Some(run), reports));
    }
    // No bookkeeping table: the target was not made by pgferry's schema step.
    let Some(previous) = crate::ledger::pre_data_applied_by(target).await else { return Ok((None, vec![])) };
    let (run, reports) = load(previous).await;
    Ok(if reports.is_empty() { (None, vec![]) } else { (Some(run), reports) })
}

async fn current_user(client: &Client) -> Result<String> {
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| Error::db("inventory: current user", e))?;
    Ok(row.get(0))
}

/// Reads both inventories and compares them, explaining what the schema report accounts for.
pub async fn inventory(ctx: &StepContext, input: &StepInput) -> Result<InventoryReport> {
    let (source, target) = tokio::try_join!(
        ctx.connect(&input.job, Side::Source, "verify", &input.run_id),
        ctx.connect(&input.job, Side::Target, "verify", &input.run_id)
    )?;
    let (schema_run, reports) = schema_reports(ctx, &input.run_id, &target).await?;
    let (source_user, target_master) = tokio::try_join!(current_user(&source), current_user(&target))?;
    let (source_version, target_version) =
        tokio::try_join!(crate::catalog::server_version_num(&source), crate::catalog::server_version_num(&target))?;
    let source_master = input.job.source_master_user.clone().unwrap_or(source_user.clone());

    let (mut s, mut t) = tokio::try_join!(read_objects(&source, false), read_objects(&target, true))?;
    let mut names = BTreeSet::new();
    s.referenced_roles(&mut names);
    t.referenced_roles(&mut names);
    let names: Vec<String> = names.into_iter().collect();
    // The replication user of a running continuous replication exists only on the source, with
    // SELECT on the published tables, until the cutover drops it: not part of the copy.
    let replication_users = crate::replication::replication_users(&target).await?;
    for object in s.objects.values_mut() {
        for (aspect, value) in &mut object.aspects {
            if is_acl_aspect(aspect) && !replication_users.is_empty() {
                *value = without_grantees(value, &replication_users);
            }
        }
    }
    let mut excluded: BTreeSet<String> =
        [source_master.clone(), source_user, target_master.clone()].into_iter().collect();
    excluded.extend(replication_users);
    read_roles(&source, &names, &excluded, &mut s).await?;
    read_roles(&target, &names, &excluded, &mut t).await?;

    let mut ev = Evidence::from_reports(&reports);
    ev.older_version = source_version.min(target_version);
    ev.majors_differ = source_version / 10000 != target_version / 10000;
    if source_master != target_master {
        ev.role_map.entry(source_master.clone()).or_insert_with(|| {
            (
                target_master.clone(),
                (
                    sanitize::ROLE_SOURCE_MASTER.id.to_string(),
                    format!("{source_master} (source master) → {target_master}"),
                ),
            )
        });
    }
    let mut report = InventoryReport {
        schema_run,
        source_objects: s.objects.len(),
        target_objects: t.objects.len(),
        ..InventoryReport::default()
    };
    compare(&s, &t, &ev, &mut report);
    tracing::info!(
        source_objects = report.source_objects,
        target_objects = report.target_objects,
        explained = report.explained.len(),
        unexplained = report.unexplained.len(),
        "inventory compared"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_of_two_majors_compare_without_qualifiers_and_spacing() {
        let v15 = " SELECT typed.m,\n    count(*) AS n\n   FROM public.typed\n  GROUP BY typed.m;";
        let v17 = " SELECT m,\n    count(*) AS n\n   FROM public.typed\n  GROUP BY m;";
        assert_eq!(deparse_normalized(v15), deparse_normalized(v17));
        let changed = " SELECT m,\n    count(*) AS n\n   FROM public.typed\n  GROUP BY m, n;";
        assert_ne!(deparse_normalized(v15), deparse_normalized(changed));
        assert_ne!(deparse_normalized("SELECT a.x FROM a"), deparse_normalized("SELECT a.y FROM a"));
    }

    #[test]
    fn acls_lose_the_items_of_excluded_grantees_only() {
        let roles: BTreeSet<String> = ["pgferry_repl_1".to_string(), "we ird".to_string()].into_iter().collect();
        assert_eq!(
            without_grantees(r#"pgferry_repl_1=r/postgres "we ird"=r/app =U/app postgres=arwdDxt/postgres"#, &roles),
            "=U/app postgres=arwdDxt/postgres"
        );
    }

    #[test]
    fn acl_items_split_into_privileges_with_quoted_names_and_public() {
        let atoms = acl_atoms(r#"=Tc/app "we;ird x"=r*/"a""b" app=arw/app"#);
        assert!(atoms.contains(&Atom {
            grantee: String::new(),
            privilege: 'T',
            grantable: false,
            grantor: "app".into()
        }));
        assert!(atoms.contains(&Atom {
            grantee: "we;ird x".into(),
            privilege: 'r',
            grantable: true,
            grantor: "a\"b".into()
        }));
        assert_eq!(atoms.len(), 6);
    }

    fn planned(verdict: Verdict, rule: &str, before: &str, after: Option<&str>) -> sanitize::Planned {
        serde_json::from_value(serde_json::json!({
            "index": 1, "line": 1, "verdict": verdict, "rule": rule, "reason": "because",
            "before": before, "after": after,
        }))
        .unwrap()
    }

    fn evidence(statements: Vec<sanitize::Planned>) -> Evidence {
        let plan = sanitize::Plan {
            phase: sanitize::Phase::Globals,
            statements,
            login_roles_without_password: vec![],
            acting_roles: BTreeSet::new(),
            older_target: None,
        };
        Evidence::from_reports(&[SchemaReport::new("r", "globals", vec![plan])])
    }

    #[test]
    fn dropped_role_attributes_and_replication_membership_are_explained_by_their_rule() {
        let ev = evidence(vec![
            planned(
                Verdict::Rewrite,
                "role.replication-membership",
                "ALTER ROLE repl WITH NOSUPERUSER INHERIT LOGIN REPLICATION NOBYPASSRLS",
                Some("ALTER ROLE \"repl\" WITH INHERIT LOGIN;\nGRANT rds_replication TO \"repl\""),
            ),
            planned(Verdict::Skip, "setting.context", "ALTER ROLE app SET log_statement TO 'all'", None),
        ]);
        let ex = Explainer { ev: &ev };
        let role =
            Object { kind: "role".into(), ident: "\"repl\"".into(), raw: Some("repl".into()), ..Object::default() };
        let why = ex.aspect(&role, "REPLICATION", Some("true"), Some("false")).unwrap();
        assert_eq!(why.0, vec!["role.replication-membership"]);
        assert!(ex.aspect(&role, "member of rds_replication", None, Some("member")).is_some());
        assert!(ex.aspect(&role, "LOGIN", Some("true"), Some("false")).is_none(), "LOGIN was kept");
        let app = Object { kind: "role".into(), ident: "\"app\"".into(), raw: Some("app".into()), ..Object::default() };
        assert!(ex.aspect(&app, "setting log_statement", Some("all"), None).is_some());
        assert!(ex.aspect(&app, "setting search_path", Some("x"), None).is_none());
    }

    #[test]
    fn owners_and_acls_are_explained_only_through_the_mapping_the_report_made() {
        let ev = evidence(vec![planned(
            Verdict::Rewrite,
            "owner.map",
            "ALTER TABLE public.t OWNER TO postgres",
            Some("ALTER TABLE public.t OWNER TO \"dbadmin\""),
        )]);
        let ex = Explainer { ev: &ev };
        let t = Object { kind: "table".into(), ident: "\"public\".\"t\"".into(), ..Object::default() };
        assert!(ex.aspect(&t, "owner", Some("postgres"), Some("dbadmin")).is_some());
        assert!(ex.aspect(&t, "owner", Some("postgres"), Some("app")).is_none());
        let s_acl = "postgres=arwdDxt/postgres reader=r/postgres";
        assert!(ex.aspect(&t, "acl", Some(s_acl), Some("dbadmin=arwdDxt/dbadmin reader=r/dbadmin")).is_some());
        assert!(ex.aspect(&t, "acl", Some(s_acl), Some("dbadmin=arwdDxt/dbadmin reader=rw/dbadmin")).is_none());
    }

    #[test]
    fn t63_maintain_is_no_difference_when_the_older_side_cannot_express_it() {
        let mut ev = evidence(vec![planned(
            Verdict::Rewrite,
            "owner.map",
            "ALTER TABLE public.t OWNER TO postgres",
            Some("ALTER TABLE public.t OWNER TO \"dbadmin\""),
        )]);
        ev.older_version = 150010;
        let ex = Explainer { ev: &ev };
        let t = Object { kind: "table".into(), ident: "\"public\".\"t\"".into(), ..Object::default() };
        let (source, target) = ("postgres=arwdDxt/postgres", "dbadmin=arwdDxtm/dbadmin");
        let (rules, reason) = ex.aspect(&t, "acl", Some(source), Some(target)).expect("explained");
        assert!(rules.contains(&PRIVILEGE_VERSION_RULE.to_string()), "{rules:?}");
        assert!(reason.contains("MAINTAIN"), "{reason}");
        // Any other privilege still differs.
        assert!(ex.aspect(&t, "acl", Some(source), Some("dbadmin=arwdDm/dbadmin")).is_none());
        // Between two servers that both have MAINTAIN, a missing MAINTAIN is a difference.
        let mut ev17 = Evidence { older_version: 170002, ..Evidence::default() };
        ev17.role_map = ev.role_map.clone();
        ev17.role_map_by_rule = ev.role_map_by_rule.clone();
        let ex = Explainer { ev: &ev17 };
        assert!(ex.aspect(&t, "acl", Some("postgres=arwdDxtm/postgres"), Some("dbadmin=arwdDxt/dbadmin")).is_none());
    }
}
