//! Post-data in parallel: index builds and foreign-key validations as independent work items.
//!
//! Restoring post-data statement by statement builds every index one after the other, which is
//! most of a restore's time after the data. Instead the post-data plan is split:
//! - each `CREATE INDEX`, and each primary key or unique constraint rewritten as the unique index
//!   behind it, becomes an item, planned before the copy: the chunk that completes a table builds
//!   that table's items at once (overlapping with the copy of other tables), and a Map state
//!   builds what is left in parallel;
//! - the section's transaction then attaches those indexes to their constraints (`ADD CONSTRAINT
//!   … PRIMARY KEY USING INDEX`, a catalog change), adds foreign keys `NOT VALID` (no scan), and
//!   applies triggers, rules and the rest in dump order — triggers only after the data, so they
//!   never fire on copied rows (RDS-CASES T29);
//! - the foreign keys of each table are then validated as items of a second Map, in parallel.
//!
//! Left as dumped: indexes on partitioned parents (`ON ONLY`, attached later in the dump's
//! order), keys and foreign keys of partitioned tables (PostgreSQL refuses `USING INDEX` and
//! `NOT VALID` there), constraints that were already `NOT VALID` on the source, and anything whose
//! shape is not recognized with certainty.
//!
//! An item is idempotent and survives Lambda's time limit: it first looks for its result in the
//! catalog (an index that exists and is valid, constraints already validated), then claims the
//! item with a session advisory lock keyed by the run and the item, held by the session that runs
//! its statement until the session ends. Two workers never build one index at once (the chunk
//! that completes a table and the Map, or a retried invocation): the one without the claim waits
//! for the other's result. When the invocation's deadline comes first it returns `done: false`
//! and leaves the statement running: PostgreSQL finishes and commits a statement whose client went
//! away (keeping the claim until then), and the next invocation waits for it. The statement is
//! also tagged with the run and item id, to be recognized in `pg_stat_activity`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::lex::{Token, TokenKind, tokenize};
use super::sanitize::{Plan, Verdict};
use crate::error::{Error, Result};
use crate::pg::{QualifiedName, quote_ident};
use crate::step::{PostDataItem, PostDataItemKind, PostDataItemOutput};

/// Work split off a post-data plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    pub indexes: Vec<PostDataItem>,
    pub validations: Vec<PostDataItem>,
}

/// `maintenance_work_mem` for index builds and validations: pg_dump restores run with the
/// server's default (often 64 MB), which makes the sort of a large key spill to disk.
pub const MAINTENANCE_WORK_MEM: &str = "256MB";

/// Time kept in reserve at the end of an invocation for returning.
const DEADLINE_RESERVE: Duration = Duration::from_secs(20);
/// How often a running item is looked for while waiting for it.
const POLL: Duration = Duration::from_secs(2);

/// Splits the post-data plan: statements that become items are taken out of the plan (or
/// rewritten to attach what the items build), each with an outcome saying so in the report.
pub fn split(plan: &mut Plan, partitioned: &HashSet<QualifiedName>) -> Split {
    let mut split = Split::default();
    let mut validations: Vec<(QualifiedName, Vec<String>)> = Vec::new();
    for p in &mut plan.statements {
        if p.verdict == Verdict::Skip {
            continue;
        }
        let Some(sql) = p.sql.clone() else { continue };
        match recognize(&sql) {
            Some(Shape::Index { table, name }) => {
                let id = format!("index-{:04}", split.indexes.len() + 1);
                split.indexes.push(PostDataItem {
                    id: id.clone(),
                    kind: PostDataItemKind::BuildIndex,
                    table,
                    names: vec![name],
                    sql,
                    seal: None,
                });
                p.sql = None;
                p.outcome = Some(format!("built in parallel before this section (post-data item {id})"));
            }
            Some(Shape::Key { table, name, constraint, columns, include, nulls, with, deferrable })
                if !partitioned.contains(&table) =>
            {
                let id = format!("index-{:04}", split.indexes.len() + 1);
                let index_sql = format!(
                    "CREATE UNIQUE INDEX {} ON {table} USING btree {columns}{}{}{}",
                    quote_ident(&name),
                    include.map(|i| format!(" INCLUDE {i}")).unwrap_or_default(),
                    nulls.map(|n| format!(" {n}")).unwrap_or_default(),
                    with.map(|w| format!(" WITH {w}")).unwrap_or_default(),
                );
                let attach = format!(
                    "ALTER TABLE ONLY {table} ADD CONSTRAINT {} {constraint} USING INDEX {}{}",
                    quote_ident(&name),
                    quote_ident(&name),
                    deferrable.map(|d| format!(" {d}")).unwrap_or_default(),
                );
                split.indexes.push(PostDataItem {
                    id: id.clone(),
                    kind: PostDataItemKind::BuildIndex,
                    table,
                    names: vec![name],
                    sql: index_sql,
                    seal: None,
                });
                p.sql = Some(attach.clone());
                p.outcome = Some(format!("index built in parallel (post-data item {id}), then attached: {attach}"));
            }
            Some(Shape::ForeignKey { table, name }) if !partitioned.contains(&table) => {
                p.sql = Some(format!("{sql} NOT VALID"));
                p.outcome = Some("added NOT VALID, then validated in parallel after this section".to_string());
                match validations.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, names)) => names.push(name),
                    None => validations.push((table, vec![name])),
                }
            }
            _ => {}
        }
    }
    for (n, (table, names)) in validations.into_iter().enumerate() {
        let actions: Vec<String> = names.iter().map(|c| format!("VALIDATE CONSTRAINT {}", quote_ident(c))).collect();
        split.validations.push(PostDataItem {
            id: format!("validate-{:04}", n + 1),
            kind: PostDataItemKind::ValidateConstraints,
            sql: format!("ALTER TABLE {table} {}", actions.join(", ")),
            table,
            names,
            seal: None,
        });
    }
    split
}

/// A post-data statement shape that becomes (or feeds) an item.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// `CREATE [UNIQUE] INDEX name ON table …` (not `ON ONLY`, not `CONCURRENTLY`).
    Index { table: QualifiedName, name: String },
    /// `ALTER TABLE [ONLY] table ADD CONSTRAINT name PRIMARY KEY|UNIQUE [NULLS [NOT] DISTINCT]
    /// (cols) [INCLUDE (…)] [WITH (…)] [[NOT] DEFERRABLE] [INITIALLY …]`, pieces kept as dumped.
    Key {
        table: QualifiedName,
        name: String,
        constraint: &'static str,
        columns: String,
        include: Option<String>,
        nulls: Option<String>,
        with: Option<String>,
        deferrable: Option<String>,
    },
    /// `ALTER TABLE [ONLY] table ADD CONSTRAINT name FOREIGN KEY …` not already `NOT VALID`.
    ForeignKey { table: QualifiedName, name: String },
}

/// Significant tokens of a statement, with a cursor.
struct Cursor<'a> {
    text: &'a str,
    toks: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, toks: tokenize(text).into_iter().filter(|t| !t.is_trivia()).collect(), pos: 0 }
    }

    fn peek_kw(&self, kw: &str) -> bool {
        self.toks.get(self.pos).is_some_and(|t| t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(kw))
    }

    fn kw(&mut self, kw: &str) -> bool {
        let hit = self.peek_kw(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn kws(&mut self, kws: &[&str]) -> bool {
        let start = self.pos;
        if kws.iter().all(|k| self.kw(k)) {
            return true;
        }
        self.pos = start;
        false
    }

    fn punct(&mut self, p: &str) -> bool {
        let hit = self.toks.get(self.pos).is_some_and(|t| t.kind == TokenKind::Punct && t.text == p);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn ident(&mut self) -> Option<String> {
        let t = self.toks.get(self.pos)?;
        let value = match t.kind {
            TokenKind::Word => t.text.to_ascii_lowercase(),
            TokenKind::QuotedIdent if t.text.len() >= 2 && t.text.starts_with('"') && t.text.ends_with('"') => {
                t.text[1..t.text.len() - 1].replace("\"\"", "\"")
            }
            _ => return None,
        };
        self.pos += 1;
        Some(value)
    }

    fn qualified(&mut self) -> Option<QualifiedName> {
        let schema = self.ident()?;
        if !self.punct(".") {
            return None;
        }
        Some(QualifiedName::new(schema, self.ident()?))
    }

    /// A balanced parenthesised group, as written.
    fn group(&mut self) -> Option<String> {
        let open = self.toks.get(self.pos).filter(|t| t.kind == TokenKind::Punct && t.text == "(")?;
        let start = open.offset;
        let mut depth = 0usize;
        while let Some(t) = self.toks.get(self.pos) {
            self.pos += 1;
            if t.kind == TokenKind::Punct && t.text == "(" {
                depth += 1;
            } else if t.kind == TokenKind::Punct && t.text == ")" {
                depth -= 1;
                if depth == 0 {
                    return Some(self.text[start..t.end()].to_string());
                }
            }
        }
        None
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn words_left(&self) -> Vec<String> {
        self.toks[self.pos..].iter().map(|t| t.text.to_ascii_uppercase()).collect()
    }
}

fn recognize(sql: &str) -> Option<Shape> {
    let mut c = Cursor::new(sql);
    if c.kw("CREATE") {
        c.kw("UNIQUE");
        if !c.kw("INDEX") || c.peek_kw("CONCURRENTLY") || c.peek_kw("IF") {
            return None;
        }
        let name = c.ident()?;
        if !c.kw("ON") || c.peek_kw("ONLY") {
            return None;
        }
        return Some(Shape::Index { table: c.qualified()?, name });
    }
    if !c.kws(&["ALTER", "TABLE"]) {
        return None;
    }
    c.kw("ONLY");
    let table = c.qualified()?;
    if !c.kws(&["ADD", "CONSTRAINT"]) {
        return None;
    }
    let name = c.ident()?;
    if c.kws(&["FOREIGN", "KEY"]) {
        let rest = c.words_left();
        let already = rest.len() >= 2 && rest[rest.len() - 2..] == ["NOT", "VALID"];
        return (!already).then_some(Shape::ForeignKey { table, name });
    }
    let constraint = if c.kws(&["PRIMARY", "KEY"]) {
        "PRIMARY KEY"
    } else if c.kw("UNIQUE") {
        "UNIQUE"
    } else {
        return None;
    };
    let nulls = if c.kws(&["NULLS", "NOT", "DISTINCT"]) {
        Some("NULLS NOT DISTINCT".to_string())
    } else if c.kws(&["NULLS", "DISTINCT"]) {
        Some("NULLS DISTINCT".to_string())
    } else {
        None
    };
    let columns = c.group()?;
    let include = if c.kw("INCLUDE") { Some(c.group()?) } else { None };
    let with = if c.kw("WITH") { Some(c.group()?) } else { None };
    let mut deferrable = Vec::new();
    loop {
        if c.kws(&["NOT", "DEFERRABLE"]) {
            deferrable.push("NOT DEFERRABLE");
        } else if c.kw("DEFERRABLE") {
            deferrable.push("DEFERRABLE");
        } else if c.kws(&["INITIALLY", "DEFERRED"]) {
            deferrable.push("INITIALLY DEFERRED");
        } else if c.kws(&["INITIALLY", "IMMEDIATE"]) {
            deferrable.push("INITIALLY IMMEDIATE");
        } else {
            break;
        }
    }
    // Anything else (USING INDEX TABLESPACE, a future option): applied as dumped.
    if !c.at_end() {
        return None;
    }
    let deferrable = (!deferrable.is_empty()).then(|| deferrable.join(" "));
    Some(Shape::Key { table, name, constraint, columns, include, nulls, with, deferrable })
}

/// Partitioned tables of the target (their keys and foreign keys stay as dumped).
pub async fn partitioned_tables(client: &Client) -> Result<HashSet<QualifiedName>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'p'",
            &[],
        )
        .await
        .map_err(|e| Error::db("list partitioned tables", e))?;
    Ok(rows.iter().map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect())
}

/// The statement as sent: tagged so that a later invocation finds it in `pg_stat_activity`.
fn tagged(run: &str, item: &PostDataItem) -> String {
    format!("/* pgferry {} {} */ {}", safe_tag(run), safe_tag(&item.id), item.sql)
}

/// The one statement an item may run, checked against what the item says it is: items travel
/// through S3 (the Map's ItemReader), where anyone allowed to write could put other SQL in. A
/// validation is rebuilt from its table and constraint names; an index must be a single
/// `CREATE [UNIQUE] INDEX name ON table …` of the item's own name and table.
fn checked_sql(run: &str, item: &PostDataItem) -> Result<String> {
    let refuse = |why: &str| {
        Err(Error::Internal(format!(
            "post-data item {} is not what pgferry planned ({why}): refused; its artifact may have been altered",
            item.id
        )))
    };
    match item.kind {
        PostDataItemKind::ValidateConstraints => {
            if item.names.is_empty() {
                return refuse("no constraint");
            }
            let actions: Vec<String> =
                item.names.iter().map(|c| format!("VALIDATE CONSTRAINT {}", quote_ident(c))).collect();
            Ok(format!(
                "/* pgferry {} {} */ ALTER TABLE {} {}",
                safe_tag(run),
                safe_tag(&item.id),
                item.table,
                actions.join(", ")
            ))
        }
        PostDataItemKind::BuildIndex => {
            let statements = crate::dump::lex::split(&item.sql)
                .into_iter()
                .filter(|i| i.kind == crate::dump::lex::ItemKind::Statement && !i.is_empty())
                .count();
            if statements != 1 {
                return refuse("not one statement");
            }
            match recognize(item.sql.trim_end().trim_end_matches(';')) {
                Some(Shape::Index { table, name })
                    if table == item.table && item.names.len() == 1 && item.names[0] == name =>
                {
                    Ok(tagged(run, item))
                }
                _ => refuse("not an index of its table"),
            }
        }
    }
}

/// Run ids come from execution names; anything outside `[A-Za-z0-9_-]` is dropped so a tag can
/// never close its comment.
fn safe_tag(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

/// True when the item's result is in the catalog.
async fn is_done(client: &Client, item: &PostDataItem) -> Result<bool> {
    match item.kind {
        PostDataItemKind::BuildIndex => {
            let index = QualifiedName::new(item.table.schema.clone(), item.names[0].clone()).to_string();
            let row = client
                .query_opt("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", &[&index])
                .await
                .map_err(|e| Error::db(format!("look for index {index}"), e))?;
            match row.map(|r| r.get::<_, bool>(0)) {
                Some(true) => Ok(true),
                // Only a failed concurrent build leaves an invalid index behind: build it again.
                Some(false) => {
                    client
                        .batch_execute(&format!("DROP INDEX {index}"))
                        .await
                        .map_err(|e| Error::db(format!("drop invalid index {index}"), e))?;
                    Ok(false)
                }
                None => Ok(false),
            }
        }
        PostDataItemKind::ValidateConstraints => {
            let table = item.table.to_string();
            let pending: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) \
                     AND conname = ANY($2::text[]) AND NOT convalidated",
                    &[&table, &item.names],
                )
                .await
                .map_err(|e| Error::db(format!("look for constraints of {table}"), e))?
                .get(0);
            Ok(pending == 0)
        }
    }
}

/// The advisory lock keys of an item: a namespace of pgferry's post-data per run, and the item.
const CLAIM_KEYS: &str = "hashtext('pgferry post-data ' || $1::text), hashtext($2::text)";

/// Claims the item for this session; false while another session holds it (runs its statement).
async fn claim(client: &Client, run: &str, item: &PostDataItem) -> Result<bool> {
    client
        .query_one(&format!("SELECT pg_try_advisory_lock({CLAIM_KEYS})"), &[&run, &item.id])
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::db("claim a post-data item", e))
}

/// Gives the claim back (the session may serve other items).
async fn release(client: &Client, run: &str, item: &PostDataItem) -> Result<()> {
    client
        .query_one(&format!("SELECT pg_advisory_unlock({CLAIM_KEYS})"), &[&run, &item.id])
        .await
        .map(|_| ())
        .map_err(|e| Error::db("release a post-data item", e))
}

/// Runs one item: see the module documentation for how it stays idempotent across invocations.
pub async fn run_item(
    client: &Client,
    run: &str,
    item: &PostDataItem,
    deadline: Option<Instant>,
) -> Result<PostDataItemOutput> {
    let started = Instant::now();
    let stop = deadline.map(|d| d.checked_sub(DEADLINE_RESERVE).unwrap_or(d));
    let output = |done: bool, outcome: &str| PostDataItemOutput {
        id: item.id.clone(),
        done,
        outcome: outcome.to_string(),
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let mut waited = false;
    loop {
        if is_done(client, item).await? {
            return Ok(output(true, if waited { "finished by an earlier invocation" } else { "already done" }));
        }
        if claim(client, run, item).await? {
            // Another session may have finished it between the look and the claim: the one this
            // invocation waited for (an earlier invocation whose build went on), or another.
            if is_done(client, item).await? {
                release(client, run, item).await?;
                let by = if waited { "finished by an earlier invocation" } else { "finished by another invocation" };
                return Ok(output(true, by));
            }
            break;
        }
        waited = true;
        if stop.is_some_and(|s| Instant::now() + POLL >= s) {
            return Ok(output(false, "still running"));
        }
        tokio::time::sleep(POLL).await;
    }
    // Builds and validations may take longer than a pgferry session's statement timeout, and
    // they wait for each other's locks rather than fail.
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'"
        ))
        .await
        .map_err(|e| Error::db("prepare the session for post-data", e))?;
    let sql = checked_sql(run, item)?;
    let what = match item.kind {
        PostDataItemKind::BuildIndex => format!("build index {} on {}", item.names[0], item.table),
        PostDataItemKind::ValidateConstraints => format!("validate {} on {}", item.names.join(", "), item.table),
    };
    // The extended protocol runs exactly one statement.
    let statement = async { client.query_typed(&sql, &[]).await.map(|_| ()) };
    let finished = match stop {
        Some(stop) => tokio::time::timeout_at(stop.into(), statement).await.ok(),
        None => Some(statement.await),
    };
    if finished.is_some() {
        release(client, run, item).await?;
    }
    match finished {
        Some(Ok(())) => Ok(output(
            true,
            match item.kind {
                PostDataItemKind::BuildIndex => "built",
                PostDataItemKind::ValidateConstraints => "validated",
            },
        )),
        Some(Err(e)) => Err(Error::db(what, e)),
        // The statement keeps running on the server after this invocation has gone.
        None => Ok(output(false, "still running")),
    }
}

#[cfg(test)]
mod tests {
    /// Issue 23: items come back from S3; one that is not what was planned is refused, and a
    /// validation is rebuilt from its names whatever its text says.
    #[test]
    fn an_altered_item_is_refused_and_validations_are_rebuilt() {
        let table = QualifiedName::new("public", "orders");
        let index = |sql: &str| PostDataItem {
            seal: None,
            id: "index-0001".to_string(),
            kind: PostDataItemKind::BuildIndex,
            table: table.clone(),
            names: vec!["orders_note_idx".to_string()],
            sql: sql.to_string(),
        };
        let good = index("CREATE INDEX orders_note_idx ON public.orders USING btree (note)");
        assert!(
            checked_sql("run-1", &good)
                .unwrap()
                .ends_with("CREATE INDEX orders_note_idx ON public.orders USING btree (note)")
        );
        for bad in [
            "CREATE INDEX orders_note_idx ON public.orders USING btree (note); DROP TABLE public.orders",
            "DROP TABLE public.orders",
            "CREATE INDEX orders_note_idx ON public.customers USING btree (note)",
            "CREATE INDEX other_idx ON public.orders USING btree (note)",
        ] {
            assert!(checked_sql("run-1", &index(bad)).is_err(), "{bad}");
        }
        let validate = PostDataItem {
            seal: None,
            id: "validate-0001".to_string(),
            kind: PostDataItemKind::ValidateConstraints,
            table: table.clone(),
            names: vec!["orders_customer_fkey".to_string()],
            sql: "DROP TABLE public.orders".to_string(),
        };
        let sql = checked_sql("run-1", &validate).unwrap();
        assert!(
            sql.ends_with(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", quote_ident("orders_customer_fkey"))),
            "{sql}"
        );
    }

    use super::*;

    fn t(schema: &str, name: &str) -> QualifiedName {
        QualifiedName::new(schema, name)
    }

    #[test]
    fn a_create_index_is_an_item() {
        assert_eq!(
            recognize("CREATE INDEX ix ON public.t USING btree (a)"),
            Some(Shape::Index { table: t("public", "t"), name: "ix".into() })
        );
        assert_eq!(
            recognize("CREATE UNIQUE INDEX \"Ix\" ON \"My\".\"T\" USING btree (lower(a)) WHERE (b > 0)"),
            Some(Shape::Index { table: t("My", "T"), name: "Ix".into() })
        );
        assert_eq!(recognize("CREATE INDEX ix ON ONLY public.parent USING btree (a)"), None);
    }

    #[test]
    fn a_primary_key_keeps_every_option() {
        let shape = recognize(
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a, \"B\") INCLUDE (c) WITH (fillfactor='90') DEFERRABLE INITIALLY DEFERRED",
        );
        assert_eq!(
            shape,
            Some(Shape::Key {
                table: t("public", "t"),
                name: "t_pkey".into(),
                constraint: "PRIMARY KEY",
                columns: "(a, \"B\")".into(),
                include: Some("(c)".into()),
                nulls: None,
                with: Some("(fillfactor='90')".into()),
                deferrable: Some("DEFERRABLE INITIALLY DEFERRED".into()),
            })
        );
        assert!(matches!(
            recognize("ALTER TABLE ONLY s.t ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a)"),
            Some(Shape::Key { nulls: Some(n), .. }) if n == "NULLS NOT DISTINCT"
        ));
    }

    #[test]
    fn unknown_key_options_and_exclusion_constraints_stay_as_dumped() {
        assert_eq!(recognize("ALTER TABLE ONLY s.t ADD CONSTRAINT k PRIMARY KEY (a) USING INDEX TABLESPACE x"), None);
        assert_eq!(recognize("ALTER TABLE ONLY s.t ADD CONSTRAINT e EXCLUDE USING gist (r WITH &&)"), None);
        assert_eq!(recognize("ALTER TABLE ONLY s.t ADD CONSTRAINT c CHECK (a > 0)"), None);
    }

    #[test]
    fn foreign_keys_not_already_not_valid_are_validated_later() {
        assert_eq!(
            recognize("ALTER TABLE ONLY public.c ADD CONSTRAINT c_p_fkey FOREIGN KEY (p) REFERENCES public.p(id)"),
            Some(Shape::ForeignKey { table: t("public", "c"), name: "c_p_fkey".into() })
        );
        assert_eq!(
            recognize("ALTER TABLE ONLY public.c ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES public.p(id) NOT VALID"),
            None
        );
    }

    #[test]
    fn tags_cannot_close_their_comment() {
        assert_eq!(safe_tag("run*/ DROP"), "runDROP");
    }
}
