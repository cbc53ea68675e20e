//! Mode `refresh`, in the schema step: which tables changed shape on the source, the dump per
//! table, and the schema of a refresh applied (see [`crate::refresh`] for the mode).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use crate::context::StepContext;
use crate::dump::apply;
use crate::dump::facts::{Facts, TargetFacts};
use crate::dump::lex::{self, Item, ItemKind};
use crate::dump::parse::Statement;
use crate::dump::report::SchemaReport;
use crate::dump::sanitize::{self, Plan, TocEntry};
use crate::dump::tool as dump;
use crate::dump::{PRE_DATA, plan_sections, section_hash};
use crate::error::{Error, Result};
use crate::job::{Mode, Side};
use crate::ledger::marker;
use crate::pg::{QualifiedName, quote_ident};
use crate::refresh::*;
use crate::roles::MembershipLog;
use crate::step::{SchemaOutput, StepInput, keys};
use tokio_postgres::Client;

// ---------------------------------------------------------------------------------------------
// Table shapes

/// A column as far as copying and comparing rows are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) type_name: String,
    pub(crate) not_null: bool,
    /// `stored` with its expression, for a generated column.
    pub(crate) generated: Option<String>,
}

/// A table's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) kind: String,
    pub(crate) columns: BTreeMap<String, Column>,
    pub(crate) primary_key: Vec<String>,
}

pub(crate) async fn shapes(client: &Client) -> Result<BTreeMap<QualifiedName, Shape>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, a.attname::text, \
                format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                (SELECT coalesce(array_agg(pa.attname::text ORDER BY k.ord), '{{}}') FROM pg_constraint co \
                   CROSS JOIN LATERAL unnest(co.conkey) WITH ORDINALITY k(attnum, ord) \
                   JOIN pg_attribute pa ON pa.attrelid = co.conrelid AND pa.attnum = k.attnum \
                  WHERE co.conrelid = c.oid AND co.contype = 'p') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
         WHERE c.relkind IN ('r', 'p') AND {USER_RELATION} ORDER BY 1, 2, a.attnum"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("read table shapes", e))?;
    let mut out: BTreeMap<QualifiedName, Shape> = BTreeMap::new();
    for r in &rows {
        let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let shape = out.entry(name).or_insert_with(|| Shape {
            kind: r.get(2),
            columns: BTreeMap::new(),
            primary_key: r.get(7),
        });
        if let Some(column) = r.get::<_, Option<String>>(3) {
            shape.columns.insert(column, Column { type_name: r.get(4), not_null: r.get(5), generated: r.get(6) });
        }
    }
    Ok(out)
}

pub(crate) fn describe_column(c: &Column) -> String {
    let mut out = c.type_name.clone();
    if c.not_null {
        out.push_str(" NOT NULL");
    }
    if let Some(expr) = &c.generated {
        out.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    }
    out
}

/// The differences between the source's and the target's tables; `rebuild` says whether changed
/// and dropped tables may be rebuilt and dropped.
pub(crate) fn shape_changes(
    source: &BTreeMap<QualifiedName, Shape>,
    target: &BTreeMap<QualifiedName, Shape>,
    rebuild: bool,
) -> Vec<TableChange> {
    let consent = |yes: TableAction| if rebuild { yes } else { TableAction::Refused };
    let mut out = Vec::new();
    for (name, s) in source {
        let Some(t) = target.get(name) else {
            out.push(TableChange {
                table: name.clone(),
                action: TableAction::Created,
                changes: vec!["new on the source".to_string()],
            });
            continue;
        };
        let mut changes = Vec::new();
        if s.kind != t.kind {
            let kind = |k: &str| if k == "p" { "partitioned table" } else { "table" };
            changes.push(format!("{} on the source, {} on the target", kind(&s.kind), kind(&t.kind)));
        }
        for (col, sc) in &s.columns {
            match t.columns.get(col) {
                None => changes.push(format!("column {} added ({})", quote_ident(col), describe_column(sc))),
                Some(tc) if tc != sc => {
                    let mut what = Vec::new();
                    if tc.type_name != sc.type_name {
                        what.push(format!("type {} → {}", tc.type_name, sc.type_name));
                    }
                    if tc.not_null != sc.not_null {
                        what.push(if sc.not_null { "now NOT NULL" } else { "now nullable" }.to_string());
                    }
                    if tc.generated != sc.generated {
                        what.push(match &sc.generated {
                            Some(expr) => format!("now generated as ({expr})"),
                            None => "no longer generated".to_string(),
                        });
                    }
                    changes.push(format!("column {}: {}", quote_ident(col), what.join(", ")));
                }
                Some(_) => {}
            }
        }
        for col in t.columns.keys().filter(|c| !s.columns.contains_key(*c)) {
            changes.push(format!("column {} dropped", quote_ident(col)));
        }
        if s.primary_key != t.primary_key {
            let key = |k: &[String]| {
                if k.is_empty() {
                    "none".to_string()
                } else {
                    format!("({})", k.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "))
                }
            };
            changes.push(format!("primary key {} → {}", key(&t.primary_key), key(&s.primary_key)));
        }
        if !changes.is_empty() {
            out.push(TableChange { table: name.clone(), action: consent(TableAction::Rebuilt), changes });
        }
    }
    for name in target.keys().filter(|n| !source.contains_key(*n)) {
        out.push(TableChange {
            table: name.clone(),
            action: consent(TableAction::Dropped),
            changes: vec!["gone from the source".to_string()],
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The dump, per table

/// A pg_dump TOC entry with the schema of its object.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) toc: TocEntry,
    pub(crate) schema: Option<String>,
}

/// Entry kinds that belong to a table: recreated with it.
pub(crate) const TABLE_BOUND: &[&str] = &[
    "TABLE",
    "TABLE ATTACH",
    "COMMENT",
    "ACL",
    "DEFAULT",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "STATISTICS",
    "SECURITY LABEL",
];

/// `Schema: …` of a TOC header (`-` for objects outside schemas).
pub(crate) fn header_schema(leading: &str) -> Option<String> {
    let line = leading.lines().map(str::trim).find(|l| l.starts_with("-- Name: "))?;
    let (at, sep) = line.rmatch_indices("; Schema: ").next()?;
    let rest = &line[at + sep.len()..];
    let schema = rest.rsplit_once("; Owner: ").map_or(rest, |(s, _)| s);
    (schema != "-").then(|| schema.to_string())
}

/// The entries of a section, and each statement's entry by the statement's line.
pub(crate) fn entries(items: &[Item<'_>], all: &mut BTreeMap<u32, Entry>) -> HashMap<usize, u32> {
    let mut by_line = HashMap::new();
    let mut current: Option<u32> = None;
    for item in items {
        if item.kind != ItemKind::Statement {
            current = None;
            continue;
        }
        if let Some(toc) = TocEntry::parse(item.leading()) {
            current = Some(toc.dump_id);
            all.insert(toc.dump_id, Entry { schema: header_schema(item.leading()), toc });
        } else if matches!(Statement::new(item.sql()).keywords(1).first().map(String::as_str), Some("SET" | "SELECT")) {
            current = None;
        }
        if let Some(id) = current {
            by_line.insert(item.line, id);
        }
    }
    by_line
}

/// Every entry bound to the `roots` tables: their own items, items of those, sequences they own,
/// child tables, and foreign keys of other tables referencing them.
pub(crate) fn closure(all: &BTreeMap<u32, Entry>, roots: &BTreeSet<u32>) -> BTreeSet<u32> {
    let mut set = roots.clone();
    loop {
        let mut added = false;
        for e in all.values() {
            if !set.contains(&e.toc.dump_id)
                && TABLE_BOUND.contains(&e.toc.desc.as_str())
                && e.toc.deps.iter().any(|d| set.contains(d))
            {
                set.insert(e.toc.dump_id);
                added = true;
            }
        }
        // A serial column's sequence goes with its table (`OWNED BY`) but depends on the schema.
        let owned: Vec<u32> = all
            .values()
            .filter(|e| e.toc.desc == "SEQUENCE OWNED BY" && set.contains(&e.toc.dump_id))
            .flat_map(|e| e.toc.deps.iter().copied())
            .filter(|d| all.get(d).is_some_and(|x| x.toc.desc == "SEQUENCE"))
            .collect();
        for id in owned {
            added |= set.insert(id);
        }
        if !added {
            return set;
        }
    }
}

/// The statements of `plan` that belong to `selected` entries, with the session settings
/// (`SET …`) that precede them in the dump.
pub(crate) fn subset(plan: &Plan, by_line: &HashMap<usize, u32>, selected: &BTreeSet<u32>) -> Plan {
    let statements = plan
        .statements
        .iter()
        .filter(|p| match by_line.get(&p.line) {
            Some(id) => selected.contains(id),
            None => p.entry.is_none() && p.before.to_ascii_uppercase().starts_with("SET "),
        })
        .cloned()
        .collect();
    Plan {
        phase: plan.phase,
        statements,
        login_roles_without_password: vec![],
        acting_roles: plan.acting_roles.clone(),
        older_target: plan.older_target,
    }
}

/// For `ALTER TABLE ONLY t ADD CONSTRAINT c FOREIGN KEY …` (a table that may hold rows): the
/// same statement `NOT VALID`, and the statement validating it after the data is in. The names
/// are the dump's own text, quoted as pg_dump quoted them.
pub(crate) fn deferred_foreign_key(sql: &str) -> Option<(String, String)> {
    let st = Statement::new(sql);
    let words = st.keywords(3);
    if words != ["ALTER", "TABLE", "ONLY"] || sql.trim_end().to_ascii_uppercase().ends_with("NOT VALID") {
        return None;
    }
    let only_end = st.tokens.get(2)?.end();
    let add = st.find_word("ADD", only_end)?;
    let constraint = st.find_word("CONSTRAINT", add.1)?;
    let name = st.tokens.iter().find(|t| t.offset >= constraint.1)?;
    st.find_word("FOREIGN", name.end())?;
    let table = sql[only_end..add.0].trim();
    Some((format!("{sql} NOT VALID"), format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", name.text)))
}

// ---------------------------------------------------------------------------------------------
// The schema step of a refresh

/// The pre-data step in mode refresh: refuses a target that is not an earlier copy, compares
/// the tables' shapes, and creates, rebuilds or drops tables in one transaction.
pub async fn pre_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let started = Instant::now();
    let run = &input.run_id;
    let name = PRE_DATA;
    let report_key = keys::schema_report(run, name);
    let dump_key = keys::dump(run, name);
    let mut target = ctx.connect(&input.job, Side::Target, "schema", run).await?;
    // A retry after the transaction committed returns what it did.
    let recorded = runs_table(&target).await?
        && target
            .query_one("SELECT EXISTS (SELECT 1 FROM pgferry.runs WHERE run_id = $1)", &[run])
            .await
            .map_err(|e| Error::db("read pgferry runs", e))?
            .get::<_, bool>(0);
    if recorded && let Ok(done) = ctx.store.get_json::<SchemaOutput>(&keys::schema_output(run, name)).await {
        return Ok(done);
    }
    let source = ctx.connect(&input.job, Side::Source, "schema", run).await?;
    let identity = source_identity(&source, &input.job).await?;
    let earlier = match earlier_copy(&target, &identity).await? {
        Ok(earlier) => earlier,
        Err(reason) => {
            let database = current_database(&target).await?;
            return Err(refusal(&target, &database, &identity, &reason).await);
        }
    };
    let stored: Facts = ctx.store.get_json(&keys::schema_facts(run)).await?;
    let database = stored.target_database.clone();

    let facts = Facts {
        target: TargetFacts::read(&target, &database, true).await?,
        source: stored.source,
        target_database: database.clone(),
    };
    ctx.store.put_json(&keys::schema_facts(run), &facts).await?;
    let dump = dump::stored(ctx, run).await?;
    let pre_items = lex::split(&dump.pre_data);
    let (_, pre_items) = sanitize::database_items(&pre_items);
    let post_items = lex::split(&dump.post_data);
    let (pre_plan, post_plan) = plan_sections(&facts, &pre_items, &post_items);
    let hash = section_hash(&pre_items);
    let previous = marker(&target, None, name).await?;
    let same_schema = previous.as_ref().is_some_and(|(_, h)| h.as_deref() == Some(hash.as_str()));

    let (source_shapes, target_shapes) = tokio::try_join!(shapes(&source), shapes(&target))?;
    let tables = shape_changes(&source_shapes, &target_shapes, input.job.rebuild_changed_tables());
    let mut outcome = SchemaRefresh {
        run_id: run.clone(),
        refresh_of: earlier.run_id.clone(),
        same_schema,
        tables,
        ..SchemaRefresh::default()
    };
    if !same_schema && outcome.tables.is_empty() {
        outcome.notes.push(format!(
            "the pre-data section differs from the one applied by run {}, in objects other than table shapes \
             (functions, views, types, defaults, grants…): a refresh leaves them as they are",
            previous.as_ref().map_or("?", |p| p.0.as_str())
        ));
    }
    match evidence(&source, &target, &identity).await? {
        // The source's schema as of the marks' run: a refresh records it; a snapshot's is the
        // applied pre-data section's when that run applied it.
        Ok((marks, then))
            if then
                .clone()
                .or_else(|| previous.as_ref().filter(|p| p.0 == marks.run_id).and_then(|p| p.1.clone()))
                .as_deref()
                == Some(hash.as_str()) =>
        {
            outcome.watermarks = Some(marks)
        }
        Ok((marks, _)) => outcome.notes.push(format!(
            "rows compared by content, not by transaction ids: the source's schema changed since run {}",
            marks.run_id
        )),
        Err(reason) => outcome.notes.push(format!("rows compared by content, not by transaction ids: {reason}")),
    }
    let refused: Vec<&TableChange> = outcome.tables.iter().filter(|t| t.action == TableAction::Refused).collect();
    if !refused.is_empty() {
        let mut objects: Vec<String> = refused.iter().map(|t| t.describe()).collect();
        objects.push(
            "a refresh rebuilds (drops, recreates and reloads) changed tables and drops tables gone from the source \
             only with consent: set \"refresh\": {\"rebuildChangedTables\": true} in the job"
                .to_string(),
        );
        ctx.store.put_json(&keys::refresh_schema(run), &outcome).await?;
        return Err(Error::TargetNotEmpty { database, objects });
    }

    // Which dump entries to apply: the tables created or rebuilt, and what is bound to them.
    let mut all = BTreeMap::new();
    let pre_lines = entries(&pre_items, &mut all);
    let post_lines = entries(&post_items, &mut all);
    let wanted: BTreeSet<&QualifiedName> = outcome
        .tables
        .iter()
        .filter(|t| matches!(t.action, TableAction::Created | TableAction::Rebuilt))
        .map(|t| &t.table)
        .collect();
    let roots: BTreeSet<u32> = all
        .values()
        .filter(|e| {
            e.toc.desc == "TABLE"
                && e.schema
                    .as_ref()
                    .is_some_and(|s| wanted.contains(&QualifiedName::new(s.clone(), e.toc.name.clone())))
        })
        .map(|e| e.toc.dump_id)
        .collect();
    let mut selected = closure(&all, &roots);
    // A new table in a new schema brings the schema (with its grants and comment).
    let existing_schemas: HashSet<String> = target
        .query("SELECT nspname::text FROM pg_namespace", &[])
        .await
        .map_err(|e| Error::db("list target schemas", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new_schemas: BTreeSet<u32> = all
        .values()
        .filter(|e| e.toc.desc == "SCHEMA" && !existing_schemas.contains(&e.toc.name))
        .filter(|e| selected.iter().any(|id| all.get(id).is_some_and(|x| x.toc.deps.contains(&e.toc.dump_id))))
        .map(|e| e.toc.dump_id)
        .collect();
    for e in all.values() {
        if new_schemas.contains(&e.toc.dump_id)
            || (matches!(e.toc.desc.as_str(), "ACL" | "COMMENT") && e.toc.deps.iter().any(|d| new_schemas.contains(d)))
        {
            selected.insert(e.toc.dump_id);
        }
    }
    // Tables to drop: rebuilt ones, their child tables (in the closure), and those gone from the
    // source; children first (they follow their parents in the dump).
    let mut drop: Vec<QualifiedName> = Vec::new();
    for item in &pre_items {
        if let Some(e) = TocEntry::parse(item.leading()).and_then(|t| all.get(&t.dump_id))
            && e.toc.desc == "TABLE"
            && selected.contains(&e.toc.dump_id)
            && let Some(schema) = &e.schema
        {
            let table = QualifiedName::new(schema.clone(), e.toc.name.clone());
            if target_shapes.contains_key(&table) && !drop.contains(&table) {
                drop.push(table);
            }
        }
    }
    drop.reverse();
    drop.extend(outcome.tables.iter().filter(|t| t.action == TableAction::Dropped).map(|t| t.table.clone()));
    let children: Vec<&QualifiedName> =
        drop.iter().filter(|t| !outcome.tables.iter().any(|c| &c.table == *t)).collect();
    if !children.is_empty() {
        outcome.notes.push(format!(
            "rebuilt with their parent: {}",
            children.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }

    let mut pre_sub = subset(&pre_plan, &pre_lines, &selected);
    let mut post_sub = subset(&post_plan, &post_lines, &selected);
    for p in &mut post_sub.statements {
        let is_fk = post_lines.get(&p.line).and_then(|id| all.get(id)).is_some_and(|e| e.toc.desc == "FK CONSTRAINT");
        if let (true, Some(sql)) = (is_fk, p.sql.as_deref())
            && let Some((deferred, validate)) = deferred_foreign_key(sql)
        {
            p.sql = Some(deferred);
            outcome.validate_after_copy.push(validate);
        }
    }
    let changing = !drop.is_empty() || !roots.is_empty();

    let mut log = MembershipLog::open(&ctx.store, run, name).await?;
    let tx = target.transaction().await.map_err(|e| Error::db("begin refresh schema transaction", e))?;
    for holder in claim(&tx, &database, &input.job, run).await? {
        outcome.notes.push(format!("took the target over from refresh run {holder}, which had not ended"));
    }
    crate::dump::prepare_section(&tx, &mut log, &facts, &pre_plan).await?;
    for table in &drop {
        drop_table(&tx, table).await?;
    }
    let mut statements = 0;
    let mut applied = Ok(0);
    if changing {
        applied = apply::in_transaction(&tx, &mut pre_sub, &[]).await;
        if let Ok(n) = applied {
            statements += n;
            applied = apply::in_transaction(&tx, &mut post_sub, &[]).await;
        }
    }
    let mut report = if changing {
        SchemaReport::new(run, name, vec![pre_sub, post_sub])
    } else {
        let mut r = SchemaReport::new(run, name, vec![pre_plan]);
        r.already_applied_by = Some(previous.as_ref().map_or_else(|| earlier.run_id.clone(), |p| p.0.clone()));
        r.recount();
        r
    };
    report.temporary_memberships = log.roles.clone();
    ctx.store.put_json(&report_key, &report).await?;
    statements += applied?;
    outcome.statements = statements;
    let facts = RunFacts { refresh_of: Some(&earlier.run_id), pre_data_hash: Some(&hash), ..RunFacts::default() };
    record_run(&tx, run, Mode::Refresh, &identity, facts).await?;
    tx.execute("UPDATE pgferry.runs SET active = true WHERE run_id = $1", &[run])
        .await
        .map_err(|e| Error::db("record the refresh as holding the target", e))?;
    ctx.store.put_json(&keys::refresh_schema(run), &outcome).await?;
    let output = SchemaOutput {
        section: name.to_string(),
        statements,
        dump_key,
        report_key,
        rewritten: report.rewritten,
        skipped: report.skipped,
        already_applied_by: report.already_applied_by.clone(),
    };
    ctx.store.put_json(&keys::schema_output(run, name), &output).await?;
    tx.commit().await.map_err(|e| Error::db("commit refresh schema", e))?;
    for t in &outcome.tables {
        tracing::info!(table = %t.table, action = ?t.action, changes = %t.changes.join(", "), "refresh: table definition");
    }
    tracing::info!(
        statements,
        same_schema,
        refresh_of = %earlier.run_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "refresh schema checked"
    );
    Ok(output)
}

/// Drops a target table, after the foreign keys of other tables that reference it.
pub(crate) async fn drop_table(tx: &tokio_postgres::Transaction<'_>, table: &QualifiedName) -> Result<()> {
    let referencing = tx
        .query(
            "SELECT n.nspname::text, c.relname::text, co.conname::text FROM pg_constraint co \
             JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE co.contype = 'f' AND co.conparentid = 0 AND co.confrelid = to_regclass($1) \
               AND co.conrelid <> co.confrelid",
            &[&table.to_string()],
        )
        .await
        .map_err(|e| Error::db(format!("list foreign keys referencing {table}"), e))?;
    for r in &referencing {
        let from = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let sql = format!("ALTER TABLE {from} DROP CONSTRAINT IF EXISTS {}", quote_ident(&r.get::<_, String>(2)));
        tx.batch_execute(&sql).await.map_err(|e| Error::db(sql.clone(), e))?;
    }
    let sql = format!("DROP TABLE IF EXISTS {table}");
    tx.batch_execute(&sql).await.map_err(|e| {
        Error::db(
            format!("{sql} (objects outside the table, such as views, that depend on it must be dropped first)"),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn shape(cols: &[(&str, &str, bool)], key: &[&str]) -> Shape {
        Shape {
            kind: "r".to_string(),
            columns: cols
                .iter()
                .map(|(n, t, nn)| (n.to_string(), Column { type_name: t.to_string(), not_null: *nn, generated: None }))
                .collect(),
            primary_key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn shape_changes_name_each_table_and_change() {
        let t = |n: &str| QualifiedName::new("public", n);
        let source = BTreeMap::from([
            (t("same"), shape(&[("id", "integer", true)], &["id"])),
            (t("typed"), shape(&[("id", "bigint", true), ("v", "text", true)], &["id"])),
            (t("new"), shape(&[("id", "integer", true)], &["id"])),
        ]);
        let target = BTreeMap::from([
            (t("same"), shape(&[("id", "integer", true)], &["id"])),
            (t("typed"), shape(&[("id", "integer", true), ("v", "text", false), ("old", "text", false)], &[])),
            (t("gone"), shape(&[("id", "integer", true)], &["id"])),
        ]);
        let changes = shape_changes(&source, &target, false);
        let described: Vec<String> = changes.iter().map(TableChange::describe).collect();
        assert_eq!(
            described,
            vec![
                "table \"public\".\"new\": new on the source",
                "table \"public\".\"typed\": column \"id\": type integer → bigint, column \"v\": now NOT NULL, \
                 column \"old\" dropped, primary key none → (\"id\")",
                "table \"public\".\"gone\": gone from the source",
            ]
        );
        let actions: Vec<TableAction> = changes.iter().map(|c| c.action).collect();
        assert_eq!(actions, [TableAction::Created, TableAction::Refused, TableAction::Refused]);
        let actions: Vec<TableAction> = shape_changes(&source, &target, true).iter().map(|c| c.action).collect();
        assert_eq!(actions, [TableAction::Created, TableAction::Rebuilt, TableAction::Dropped]);
    }

    #[test]
    fn foreign_keys_on_tables_with_rows_are_deferred_and_validated_later() {
        let sql = "ALTER TABLE ONLY public.\"Order Lines\"\n    ADD CONSTRAINT \"fk x\" FOREIGN KEY (o) REFERENCES public.orders(id)";
        let (deferred, validate) = deferred_foreign_key(sql).unwrap();
        assert_eq!(deferred, format!("{sql} NOT VALID"));
        assert_eq!(validate, "ALTER TABLE public.\"Order Lines\" VALIDATE CONSTRAINT \"fk x\"");
        assert!(deferred_foreign_key(&format!("{sql} NOT VALID")).is_none(), "an invalid source key stays invalid");
        assert!(
            deferred_foreign_key("ALTER TABLE public.p ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES t(a)").is_none()
        );
        assert!(deferred_foreign_key("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id)").is_none());
    }

    #[test]
    fn toc_headers_give_the_schema() {
        assert_eq!(
            header_schema(
                "--\n-- TOC entry 5 (class 1259 OID 1)\n-- Name: t; Type: TABLE; Schema: sales; Owner: app\n--\n"
            ),
            Some("sales".to_string())
        );
        assert_eq!(header_schema("-- Name: x; Type: EXTENSION; Schema: -; Owner: -\n"), None);
    }
}
