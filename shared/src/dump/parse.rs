//! Reads the statements a dump is made of into the few shapes the sanitizer's rules act on.
//!
//! Rules never look at substrings of SQL (a role named `asset_reader` or the attribute
//! `NOSUPERUSER` must not match a filter for `SUPERUSER`): a statement is tokenized, its leading
//! keywords say what it is, and the names, role lists and options the rules care about are read
//! as tokens with their byte spans. A rule that changes a statement replaces exactly those spans
//! ([`Edits`]) and leaves every other byte alone — function bodies and strings included.
//! Statements this module does not recognise are [`Parsed::Other`] and are kept as they are.

use super::lex::{Token, TokenKind, tokenize};
use crate::pg::quote_ident;

/// Byte range in a statement's text.
pub type Span = (usize, usize);

/// An identifier as the server sees it: unquoted names folded to lower case, quoted ones
/// unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub value: String,
    pub span: Span,
}

/// A role specification: a role name, `PUBLIC`, or `CURRENT_USER` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRef {
    /// The role's name; `None` for `PUBLIC`, `CURRENT_USER`, `CURRENT_ROLE`, `SESSION_USER`.
    pub name: Option<String>,
    /// The span of the name (after an optional `GROUP` keyword).
    pub span: Span,
}

/// One attribute of `CREATE ROLE` / `ALTER ROLE … WITH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleOption {
    /// Canonical upper-case keyword: `LOGIN`, `NOSUPERUSER`, `CONNECTION LIMIT`, `PASSWORD`…
    pub keyword: String,
    /// The option's full text span, value included.
    pub span: Span,
}

/// A statement as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `CREATE ROLE name [WITH] options`.
    CreateRole { role: Name, options: Vec<RoleOption> },
    /// `ALTER ROLE name [WITH] options`.
    AlterRoleOptions { role: RoleRef, options: Vec<RoleOption> },
    /// `ALTER ROLE name [IN DATABASE db] SET param … | RESET param`.
    AlterRoleSet { role: RoleRef, database: Option<Name>, param: Name },
    /// `GRANT role [, …] TO role [, …] [WITH …] [GRANTED BY role]` (and `REVOKE … FROM`).
    GrantRole {
        revoke: bool,
        roles: Vec<RoleRef>,
        grantees: Vec<RoleRef>,
        /// `WITH ADMIN OPTION, INHERIT FALSE, SET TRUE` (PG16 syntax), as (option, value, span).
        with_options: Vec<(String, String, Span)>,
        /// Span of the whole `WITH …` clause.
        with_span: Option<Span>,
        granted_by: Option<(RoleRef, Span)>,
    },
    /// `GRANT … ON PARAMETER p TO role` (PG15+).
    GrantParameter { revoke: bool, params: Vec<Name>, grantees: Vec<RoleRef> },
    /// `GRANT privileges ON [kind] objects TO roles` (and `REVOKE … FROM`).
    GrantObject {
        revoke: bool,
        /// Upper-case object kind words, e.g. `TABLE`, `SCHEMA`, `DATABASE`, `FOREIGN SERVER`.
        kind: String,
        /// First name of the object list (enough for databases and tablespaces).
        object: Option<Name>,
        /// The privileges, upper-case, with their spans (a separating comma included, so that
        /// removing one leaves a valid list).
        privileges: Vec<(String, Span)>,
        grantees: Vec<RoleRef>,
        granted_by: Option<(RoleRef, Span)>,
    },
    /// `ALTER DEFAULT PRIVILEGES [FOR ROLE r, …] [IN SCHEMA s] GRANT|REVOKE … TO|FROM roles`.
    AlterDefaultPrivileges { for_roles: Vec<RoleRef>, grantees: Vec<RoleRef> },
    /// `ALTER kind name OWNER TO role`.
    AlterOwner {
        /// Upper-case kind words (`TABLE`, `FUNCTION`, `SCHEMA`, `EVENT TRIGGER`…).
        kind: String,
        /// The object's qualified name parts.
        object: Vec<Name>,
        owner: RoleRef,
    },
    /// `SET SESSION AUTHORIZATION role` / `RESET SESSION AUTHORIZATION` (role `None`).
    SessionAuthorization { role: Option<RoleRef> },
    /// `SET [SESSION|LOCAL] param {TO|=} value`.
    Set { param: Name },
    /// `CREATE DATABASE name [WITH] options`.
    CreateDatabase { name: Name, options: Vec<(String, Span)> },
    /// `ALTER DATABASE name …`.
    AlterDatabase { name: Name, action: DatabaseAction },
    /// `COMMENT ON kind name IS …` (and `SECURITY LABEL … ON kind name IS …`).
    CommentOn { kind: String, name: Option<Name>, security_label: bool },
    /// `CREATE|ALTER|DROP TABLESPACE …`.
    Tablespace,
    /// `CREATE EXTENSION [IF NOT EXISTS] name …`.
    CreateExtension { name: Name },
    /// `CREATE [OR REPLACE] [TRUSTED] [PROCEDURAL] LANGUAGE name …`.
    CreateLanguage { name: Name, trusted: bool },
    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE … LANGUAGE lang …`.
    CreateRoutine { language: Option<Name> },
    /// `CREATE EVENT TRIGGER name …`.
    CreateEventTrigger { name: Name },
    /// `CREATE ACCESS METHOD name TYPE …`.
    CreateAccessMethod { name: Name },
    /// `ALTER TABLE|MATERIALIZED VIEW [ONLY] rel SET ACCESS METHOD am` (alone in the statement,
    /// as pg_dump writes it for a partitioned table).
    SetAccessMethod { method: Name },
    /// `CREATE [OR REPLACE] AGGREGATE name (…) (…)`: whether its state type (`STYPE` or
    /// `MSTYPE`) is `internal`, which only a superuser may declare.
    CreateAggregate { name: Name, internal_state: bool },
    /// `CREATE POLICY name ON table … [TO roles] …` (and `ALTER POLICY`).
    Policy { roles: Vec<RoleRef> },
    /// `CREATE USER MAPPING FOR role SERVER s [OPTIONS (…)]`; spans of `password` options.
    UserMapping { role: RoleRef, password_options: Vec<Span> },
    /// `CREATE SCHEMA name …`.
    CreateSchema { name: Name },
    /// `ALTER TABLE|FOREIGN TABLE|MATERIALIZED VIEW [ONLY] rel ALTER [COLUMN] col SET (options)`:
    /// each option's lower-case name and its span (with one separating comma, so that removing it
    /// leaves a valid list).
    ColumnOptions { options: Vec<(String, Span)> },
    /// `CREATE PUBLICATION name …` and `ALTER PUBLICATION name …` (other than its owner).
    Publication { name: Name },
    /// `CREATE SUBSCRIPTION` (and its `ALTER`s).
    PubSub,
    /// Anything else: kept as it is.
    Other,
}

/// What an `ALTER DATABASE` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseAction {
    Owner(RoleRef),
    Set(Name),
    Other,
}

/// A statement with its tokens.
#[derive(Debug)]
pub struct Statement<'a> {
    pub text: &'a str,
    /// Significant tokens only (no whitespace or comments).
    pub tokens: Vec<Token<'a>>,
}

impl<'a> Statement<'a> {
    pub fn new(text: &'a str) -> Self {
        let tokens = tokenize(text).into_iter().filter(|t| !t.is_trivia()).collect();
        Self { text, tokens }
    }

    /// Reads the statement into a [`Parsed`] shape.
    pub fn parse(&self) -> Parsed {
        let mut c = Cursor { toks: &self.tokens, pos: 0 };
        parse(&mut c).or_else(|| self.owner_clause()).unwrap_or(Parsed::Other)
    }

    /// `ALTER … OWNER TO role` of a shape the parser does not know in detail: the owner is still
    /// seen (and mapped), never passed through unmapped. The kind is the leading keywords.
    fn owner_clause(&self) -> Option<Parsed> {
        let n = self.tokens.len();
        let words = self.keywords(3);
        if n < 5 || words.first().map(String::as_str) != Some("ALTER") {
            return None;
        }
        let mut c = Cursor { toks: &self.tokens, pos: n - 3 };
        if !c.eat_kws(&["OWNER", "TO"]) {
            return None;
        }
        let owner = c.role()?;
        if !c.done() {
            return None;
        }
        let mut k = Cursor { toks: &self.tokens, pos: 1 };
        let kind = eat_kind(&mut k, OWNED_KINDS)?;
        Some(Parsed::AlterOwner { kind, object: vec![], owner })
    }

    /// The upper-case leading keywords (up to `n`), for classification and messages.
    pub fn keywords(&self, n: usize) -> Vec<String> {
        self.tokens
            .iter()
            .take_while(|t| t.kind == TokenKind::Word)
            .take(n)
            .map(|t| t.text.to_ascii_uppercase())
            .collect()
    }

    /// The span of the first token at or after `offset` that is the word `kw`.
    pub fn find_word(&self, kw: &str, from: usize) -> Option<Span> {
        self.tokens
            .iter()
            .find(|t| t.offset >= from && t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(kw))
            .map(|t| (t.offset, t.end()))
    }
}

/// Replacements of byte spans of one statement.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    edits: Vec<(Span, String)>,
}

impl Edits {
    pub fn replace(&mut self, span: Span, with: impl Into<String>) {
        self.edits.push((span, with.into()));
    }

    /// Replaces a role name with another, quoted by the one quoting helper.
    pub fn rename_role(&mut self, role: &RoleRef, to: &str) {
        self.replace(role.span, quote_ident(to));
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The statement text with the replacements made (later edits of an overlapping span lose).
    pub fn apply(&self, text: &str) -> String {
        let mut edits = self.edits.clone();
        edits.sort_by_key(|((start, end), _)| (*start, *end));
        let mut out = String::with_capacity(text.len());
        let mut at = 0usize;
        for ((start, end), with) in edits {
            if start < at || end > text.len() {
                continue;
            }
            out.push_str(&text[at..start]);
            out.push_str(&with);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// Removes the spans `remove` (with the whitespace before each) from `text`.
pub fn remove_spans(text: &str, remove: &[Span]) -> String {
    let mut edits = Edits::default();
    for &(start, end) in remove {
        let ws = text[..start].trim_end().len();
        edits.replace((ws, end), "");
    }
    edits.apply(text)
}

struct Cursor<'t, 'a> {
    toks: &'t [Token<'a>],
    pos: usize,
}

impl<'a> Cursor<'_, 'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Token<'a>> {
        self.toks.get(self.pos + n)
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        self.peek_at(n).is_some_and(|t| t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Eats a sequence of keywords, all or nothing.
    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if kws.iter().enumerate().all(|(n, kw)| self.is_kw_at(n, kw)) {
            self.pos += kws.len();
            true
        } else {
            false
        }
    }

    fn is_punct(&self, p: &str) -> bool {
        self.is_punct_at(0, p)
    }

    fn is_punct_at(&self, n: usize, p: &str) -> bool {
        self.peek_at(n).is_some_and(|t| t.kind == TokenKind::Punct && t.text == p)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.toks.len() || self.is_punct(";")
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.toks.get(self.pos).copied();
        self.pos += 1;
        t
    }

    /// An identifier (unquoted word or quoted identifier).
    fn name(&mut self) -> Option<Name> {
        let t = *self.peek()?;
        let value = ident_value(&t)?;
        self.pos += 1;
        Some(Name { value, span: (t.offset, t.end()) })
    }

    /// `a`, `a.b` or `a.b.c`.
    fn qualified(&mut self) -> Option<Vec<Name>> {
        let mut parts = vec![self.name()?];
        while self.is_punct(".") {
            self.pos += 1;
            parts.push(self.name()?);
        }
        Some(parts)
    }

    /// An operator's name: `op` or `schema.op` (`OPERATOR(schema.op)` is not written by pg_dump
    /// in `ALTER OPERATOR`).
    fn operator_name(&mut self) -> Option<Vec<Name>> {
        let mut parts = Vec::new();
        if self.is_punct_at(1, ".") {
            parts.push(self.name()?);
            self.pos += 1;
        }
        let t = *self.peek()?;
        if t.kind != TokenKind::Operator {
            return None;
        }
        self.pos += 1;
        parts.push(Name { value: t.text.to_string(), span: (t.offset, t.end()) });
        Some(parts)
    }

    /// A role specification, with PostgreSQL's special names.
    fn role(&mut self) -> Option<RoleRef> {
        self.eat_kw("GROUP");
        let t = *self.peek()?;
        let span = (t.offset, t.end());
        if t.kind == TokenKind::Word
            && ["PUBLIC", "CURRENT_USER", "CURRENT_ROLE", "SESSION_USER"].iter().any(|k| t.text.eq_ignore_ascii_case(k))
        {
            self.pos += 1;
            return Some(RoleRef { name: None, span });
        }
        let name = self.name()?;
        Some(RoleRef { name: Some(name.value), span })
    }

    fn role_list(&mut self) -> Vec<RoleRef> {
        let mut roles = Vec::new();
        while let Some(r) = self.role() {
            roles.push(r);
            if !self.eat_punct(",") {
                break;
            }
        }
        roles
    }

    /// Skips to just after the next top-level occurrence of keyword `kw`; false if none.
    fn skip_past_kw(&mut self, kw: &str) -> bool {
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            match (t.kind, t.text) {
                (TokenKind::Punct, "(" | "[") => depth += 1,
                (TokenKind::Punct, ")" | "]") => depth -= 1,
                (TokenKind::Word, w) if depth == 0 && w.eq_ignore_ascii_case(kw) => {
                    self.pos += 1;
                    return true;
                }
                _ => {}
            }
            self.pos += 1;
        }
        false
    }

    /// Skips a balanced parenthesised group if one starts here.
    fn skip_parens(&mut self) {
        if !self.is_punct("(") {
            return;
        }
        let mut depth = 0i32;
        while let Some(t) = self.next() {
            match (t.kind, t.text) {
                (TokenKind::Punct, "(") => depth += 1,
                (TokenKind::Punct, ")") => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn span_from(&self, start: usize) -> Span {
        let first = self.toks.get(start).map_or(0, |t| t.offset);
        let last = self.toks.get(self.pos.saturating_sub(1).max(start)).map_or(first, Token::end);
        (first, last)
    }
}

/// The server's value of an identifier token; `None` if the token is not one.
fn ident_value(t: &Token<'_>) -> Option<String> {
    match t.kind {
        TokenKind::Word => Some(t.text.to_ascii_lowercase()),
        TokenKind::QuotedIdent if t.text.starts_with('"') && t.text.len() >= 2 && t.text.ends_with('"') => {
            Some(t.text[1..t.text.len() - 1].replace("\"\"", "\""))
        }
        // `U&"…"` escapes are not decoded; the raw text still identifies the name in reports.
        TokenKind::QuotedIdent => Some(t.text.to_string()),
        _ => None,
    }
}

/// Role attribute keywords that stand alone.
const ROLE_FLAGS: &[&str] = &[
    "SUPERUSER",
    "NOSUPERUSER",
    "CREATEDB",
    "NOCREATEDB",
    "CREATEROLE",
    "NOCREATEROLE",
    "INHERIT",
    "NOINHERIT",
    "LOGIN",
    "NOLOGIN",
    "REPLICATION",
    "NOREPLICATION",
    "BYPASSRLS",
    "NOBYPASSRLS",
    "CREATEUSER",
    "NOCREATEUSER",
];

fn role_options(c: &mut Cursor<'_, '_>) -> Option<Vec<RoleOption>> {
    c.eat_kw("WITH");
    let mut options = Vec::new();
    while !c.done() {
        let start = c.pos;
        let t = *c.peek()?;
        if t.kind != TokenKind::Word {
            return None;
        }
        let word = t.text.to_ascii_uppercase();
        c.pos += 1;
        let keyword = if ROLE_FLAGS.contains(&word.as_str()) {
            word
        } else {
            match word.as_str() {
                "CONNECTION" => {
                    if !c.eat_kw("LIMIT") {
                        return None;
                    }
                    if c.peek().is_some_and(|t| t.kind == TokenKind::Operator && t.text == "-") {
                        c.pos += 1;
                    }
                    c.next()?;
                    "CONNECTION LIMIT".to_string()
                }
                "ENCRYPTED" | "UNENCRYPTED" | "PASSWORD" => {
                    if word != "PASSWORD" && !c.eat_kw("PASSWORD") {
                        return None;
                    }
                    c.next()?;
                    "PASSWORD".to_string()
                }
                "VALID" => {
                    if !c.eat_kw("UNTIL") {
                        return None;
                    }
                    c.next()?;
                    "VALID UNTIL".to_string()
                }
                "SYSID" => {
                    c.next()?;
                    "SYSID".to_string()
                }
                "IN" => {
                    if !(c.eat_kw("ROLE") || c.eat_kw("GROUP")) {
                        return None;
                    }
                    c.role_list();
                    "IN ROLE".to_string()
                }
                "ROLE" | "USER" | "ADMIN" => {
                    c.role_list();
                    word
                }
                _ => return None,
            }
        };
        options.push(RoleOption { keyword, span: c.span_from(start) });
    }
    Some(options)
}

/// Object kinds of `ALTER … OWNER TO`, longest first.
const OWNED_KINDS: &[&[&str]] = &[
    &["FOREIGN", "DATA", "WRAPPER"],
    &["TEXT", "SEARCH", "CONFIGURATION"],
    &["TEXT", "SEARCH", "DICTIONARY"],
    &["OPERATOR", "CLASS"],
    &["OPERATOR", "FAMILY"],
    &["MATERIALIZED", "VIEW"],
    &["FOREIGN", "TABLE"],
    &["EVENT", "TRIGGER"],
    &["PROCEDURAL", "LANGUAGE"],
    &["LARGE", "OBJECT"],
    &["TABLE"],
    &["VIEW"],
    &["SEQUENCE"],
    &["INDEX"],
    &["FUNCTION"],
    &["PROCEDURE"],
    &["ROUTINE"],
    &["AGGREGATE"],
    &["TYPE"],
    &["DOMAIN"],
    &["SCHEMA"],
    &["DATABASE"],
    &["COLLATION"],
    &["CONVERSION"],
    &["LANGUAGE"],
    &["OPERATOR"],
    &["SERVER"],
    &["STATISTICS"],
    &["TABLESPACE"],
    &["PUBLICATION"],
    &["SUBSCRIPTION"],
];

fn eat_kind(c: &mut Cursor<'_, '_>, kinds: &[&[&str]]) -> Option<String> {
    for kind in kinds {
        if c.eat_kws(kind) {
            return Some(kind.join(" "));
        }
    }
    None
}

/// Object kinds of `GRANT … ON kind`, longest first.
const GRANT_KINDS: &[&[&str]] = &[
    &["ALL", "TABLES", "IN", "SCHEMA"],
    &["ALL", "SEQUENCES", "IN", "SCHEMA"],
    &["ALL", "FUNCTIONS", "IN", "SCHEMA"],
    &["ALL", "PROCEDURES", "IN", "SCHEMA"],
    &["ALL", "ROUTINES", "IN", "SCHEMA"],
    &["FOREIGN", "DATA", "WRAPPER"],
    &["FOREIGN", "SERVER"],
    &["LARGE", "OBJECT"],
    &["TABLE"],
    &["SEQUENCE"],
    &["DATABASE"],
    &["DOMAIN"],
    &["FUNCTION"],
    &["PROCEDURE"],
    &["ROUTINE"],
    &["LANGUAGE"],
    &["SCHEMA"],
    &["TABLESPACE"],
    &["TYPE"],
    &["PARAMETER"],
];

/// Object kinds of `COMMENT ON` / `SECURITY LABEL ON`, longest first.
const COMMENT_KINDS: &[&[&str]] = &[
    &["FOREIGN", "DATA", "WRAPPER"],
    &["TEXT", "SEARCH", "CONFIGURATION"],
    &["TEXT", "SEARCH", "DICTIONARY"],
    &["TEXT", "SEARCH", "PARSER"],
    &["TEXT", "SEARCH", "TEMPLATE"],
    &["ACCESS", "METHOD"],
    &["MATERIALIZED", "VIEW"],
    &["FOREIGN", "TABLE"],
    &["EVENT", "TRIGGER"],
    &["PROCEDURAL", "LANGUAGE"],
    &["LARGE", "OBJECT"],
    &["OPERATOR", "CLASS"],
    &["OPERATOR", "FAMILY"],
    &["DATABASE"],
    &["EXTENSION"],
    &["ROLE"],
    &["TABLESPACE"],
    &["SCHEMA"],
    &["SERVER"],
    &["LANGUAGE"],
    &["PUBLICATION"],
    &["SUBSCRIPTION"],
];

fn parse(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    let first = c.peek()?.text.to_ascii_uppercase();
    match first.as_str() {
        "CREATE" => parse_create(c),
        "ALTER" => parse_alter(c),
        "GRANT" | "REVOKE" => parse_grant(c),
        "SET" | "RESET" => parse_set(c),
        "COMMENT" => {
            c.pos += 1;
            if !c.eat_kw("ON") {
                return None;
            }
            let kind = eat_kind(c, COMMENT_KINDS).unwrap_or_else(|| "OTHER".to_string());
            let name = if kind == "OTHER" { None } else { c.name() };
            Some(Parsed::CommentOn { kind, name, security_label: false })
        }
        "SECURITY" => {
            c.pos += 1;
            if !c.eat_kw("LABEL") {
                return None;
            }
            if c.eat_kw("FOR") {
                c.name()?;
            }
            if !c.eat_kw("ON") {
                return None;
            }
            let kind = eat_kind(c, COMMENT_KINDS).unwrap_or_else(|| "OTHER".to_string());
            let name = if kind == "OTHER" { None } else { c.name() };
            Some(Parsed::CommentOn { kind, name, security_label: true })
        }
        "DROP" if c.is_kw_at(1, "TABLESPACE") => Some(Parsed::Tablespace),
        _ => None,
    }
}

fn parse_create(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    c.pos += 1; // CREATE
    let or_replace = c.eat_kws(&["OR", "REPLACE"]);
    if c.eat_kws(&["USER", "MAPPING"]) {
        return parse_user_mapping(c);
    }
    if c.eat_kw("ROLE") || c.eat_kw("USER") || (!or_replace && c.eat_kw("GROUP")) {
        let role = c.name()?;
        let options = role_options(c).unwrap_or_default();
        return Some(Parsed::CreateRole { role, options });
    }
    if c.eat_kw("DATABASE") {
        let name = c.name()?;
        c.eat_kw("WITH");
        let mut options = Vec::new();
        while !c.done() {
            let start = c.pos;
            let key = c.next()?;
            if key.kind != TokenKind::Word {
                return None;
            }
            let mut keyword = key.text.to_ascii_uppercase();
            if keyword == "CONNECTION" && c.eat_kw("LIMIT") {
                keyword.push_str(" LIMIT");
            }
            if c.peek().is_some_and(|t| t.kind == TokenKind::Operator && t.text == "=") {
                c.pos += 1;
            }
            if !c.done() {
                c.next()?;
            }
            options.push((keyword, c.span_from(start)));
        }
        return Some(Parsed::CreateDatabase { name, options });
    }
    if c.eat_kw("TABLESPACE") {
        return Some(Parsed::Tablespace);
    }
    if c.eat_kw("EXTENSION") {
        c.eat_kws(&["IF", "NOT", "EXISTS"]);
        return Some(Parsed::CreateExtension { name: c.name()? });
    }
    let trusted = c.eat_kw("TRUSTED");
    c.eat_kw("PROCEDURAL");
    if c.eat_kw("LANGUAGE") {
        return Some(Parsed::CreateLanguage { name: c.name()?, trusted });
    }
    if trusted {
        return None;
    }
    if c.eat_kw("FUNCTION") || c.eat_kw("PROCEDURE") {
        c.qualified()?;
        c.skip_parens();
        let language = if c.skip_past_kw("LANGUAGE") { c.name() } else { None };
        return Some(Parsed::CreateRoutine { language });
    }
    if c.eat_kws(&["EVENT", "TRIGGER"]) {
        return Some(Parsed::CreateEventTrigger { name: c.name()? });
    }
    if c.eat_kws(&["ACCESS", "METHOD"]) {
        return Some(Parsed::CreateAccessMethod { name: c.name()? });
    }
    if c.eat_kw("AGGREGATE") {
        let name = c.qualified()?.pop()?;
        let toks = &c.toks[c.pos..];
        let internal_state = toks.iter().enumerate().any(|(i, t)| {
            let state = t.kind == TokenKind::Word
                && (t.text.eq_ignore_ascii_case("stype") || t.text.eq_ignore_ascii_case("mstype"))
                && toks.get(i + 1).is_some_and(|e| e.text == "=");
            // `internal` or `pg_catalog.internal`
            let value = match (toks.get(i + 2), toks.get(i + 3), toks.get(i + 4)) {
                (Some(s), Some(dot), Some(v)) if s.text.eq_ignore_ascii_case("pg_catalog") && dot.text == "." => {
                    Some(v)
                }
                (v, _, _) => v,
            };
            state && value.is_some_and(|v| v.kind == TokenKind::Word && v.text.eq_ignore_ascii_case("internal"))
        });
        return Some(Parsed::CreateAggregate { name, internal_state });
    }
    if c.eat_kw("POLICY") {
        return Some(parse_policy_roles(c));
    }
    if c.eat_kw("SCHEMA") {
        c.eat_kws(&["IF", "NOT", "EXISTS"]);
        if c.is_kw("AUTHORIZATION") {
            return None;
        }
        return Some(Parsed::CreateSchema { name: c.name()? });
    }
    if c.eat_kw("PUBLICATION") {
        return Some(Parsed::Publication { name: c.name()? });
    }
    if c.eat_kw("SUBSCRIPTION") {
        return Some(Parsed::PubSub);
    }
    None
}

fn parse_policy_roles(c: &mut Cursor<'_, '_>) -> Parsed {
    if c.skip_past_kw("TO") { Parsed::Policy { roles: c.role_list() } } else { Parsed::Policy { roles: vec![] } }
}

fn parse_user_mapping(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    c.eat_kws(&["IF", "NOT", "EXISTS"]);
    if !c.eat_kw("FOR") {
        return None;
    }
    let role = if c.eat_kw("USER") { RoleRef { name: None, span: c.span_from(c.pos - 1) } } else { c.role()? };
    let mut password_options = Vec::new();
    if c.skip_past_kw("OPTIONS") && c.eat_punct("(") {
        // `OPTIONS (ADD|SET|DROP key 'value', …)`
        while !c.done() && !c.is_punct(")") {
            let start = c.pos;
            if c.is_kw("ADD") || c.is_kw("SET") || c.is_kw("DROP") {
                c.pos += 1;
            }
            let key = c.name()?;
            if c.peek().is_some_and(|t| t.kind == TokenKind::String) {
                c.pos += 1;
            }
            if key.value == "password" || key.value == "sslpassword" {
                // Include a separating comma, before or after, so the list stays valid.
                let mut span = c.span_from(start);
                if c.is_punct(",") {
                    span.1 = c.peek().map_or(span.1, Token::end);
                } else if let Some(prev) = c.toks.get(start.wrapping_sub(1)).filter(|t| t.text == ",") {
                    span.0 = prev.offset;
                }
                password_options.push(span);
            }
            if !c.eat_punct(",") {
                break;
            }
        }
    }
    Some(Parsed::UserMapping { role, password_options })
}

fn parse_alter(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    c.pos += 1; // ALTER
    if c.is_kw("ROLE") || c.is_kw("USER") || c.is_kw("GROUP") {
        if c.is_kw_at(1, "MAPPING") {
            c.pos += 2;
            return parse_user_mapping(c);
        }
        c.pos += 1;
        let role = if c.eat_kw("ALL") { RoleRef { name: None, span: c.span_from(c.pos - 1) } } else { c.role()? };
        let database = if c.eat_kws(&["IN", "DATABASE"]) { Some(c.name()?) } else { None };
        if c.eat_kw("SET") || c.eat_kw("RESET") {
            let param = c.qualified()?;
            return Some(Parsed::AlterRoleSet { role, database, param: join_name(&param) });
        }
        if database.is_some() || c.is_kw("RENAME") {
            return None;
        }
        return Some(Parsed::AlterRoleOptions { role, options: role_options(c)? });
    }
    if c.eat_kws(&["DEFAULT", "PRIVILEGES"]) {
        let mut for_roles = Vec::new();
        loop {
            if c.eat_kw("FOR") {
                if !(c.eat_kw("ROLE") || c.eat_kw("USER")) {
                    return None;
                }
                for_roles.extend(c.role_list());
            } else if c.eat_kws(&["IN", "SCHEMA"]) {
                while c.name().is_some() && c.eat_punct(",") {}
            } else {
                break;
            }
        }
        let revoke = c.is_kw("REVOKE");
        if !(c.eat_kw("GRANT") || c.eat_kw("REVOKE")) {
            return None;
        }
        if !c.skip_past_kw(if revoke { "FROM" } else { "TO" }) {
            return None;
        }
        return Some(Parsed::AlterDefaultPrivileges { for_roles, grantees: c.role_list() });
    }
    if c.eat_kw("DATABASE") {
        let name = c.name()?;
        let action = if c.eat_kws(&["OWNER", "TO"]) {
            DatabaseAction::Owner(c.role()?)
        } else if c.eat_kw("SET") || c.eat_kw("RESET") {
            match c.qualified() {
                Some(p) => DatabaseAction::Set(join_name(&p)),
                None => DatabaseAction::Other,
            }
        } else {
            DatabaseAction::Other
        };
        return Some(Parsed::AlterDatabase { name, action });
    }
    if c.eat_kw("TABLESPACE") {
        return Some(Parsed::Tablespace);
    }
    if c.eat_kw("POLICY") {
        return Some(parse_policy_roles(c));
    }
    if c.is_kw("PUBLICATION") || c.is_kw("SUBSCRIPTION") {
        let start = c.pos;
        c.pos += 1;
        let name = c.name()?;
        let kind = c.toks[start].text.to_ascii_uppercase();
        if c.eat_kws(&["OWNER", "TO"]) {
            let owner = c.role()?;
            return Some(Parsed::AlterOwner { kind, object: vec![name], owner });
        }
        return Some(if kind == "PUBLICATION" { Parsed::Publication { name } } else { Parsed::PubSub });
    }
    let start = c.pos;
    if let Some(parsed) = parse_column_options(c) {
        return Some(parsed);
    }
    c.pos = start;
    if (c.eat_kw("TABLE") || c.eat_kws(&["MATERIALIZED", "VIEW"]))
        && {
            c.eat_kws(&["IF", "EXISTS"]);
            c.eat_kw("ONLY");
            c.qualified().is_some()
        }
        && c.eat_kws(&["SET", "ACCESS", "METHOD"])
        && let Some(method) = c.name()
        && c.done()
    {
        return Some(Parsed::SetAccessMethod { method });
    }
    c.pos = start;
    let kind = eat_kind(c, OWNED_KINDS)?;
    c.eat_kws(&["IF", "EXISTS"]);
    c.eat_kw("ONLY");
    let object = if kind == "LARGE OBJECT" {
        c.next()?;
        vec![]
    } else if kind == "OPERATOR" {
        c.operator_name()?
    } else {
        c.qualified()?
    };
    if !c.skip_past_kw("OWNER") || !c.eat_kw("TO") {
        return None;
    }
    let owner = c.role()?;
    Some(Parsed::AlterOwner { kind, object, owner })
}

/// After `ALTER`: `TABLE|FOREIGN TABLE|MATERIALIZED VIEW [IF EXISTS] [ONLY] rel ALTER [COLUMN] col
/// SET (key [= value], …)`, the statement `pg_dump` writes for a column's attribute options.
fn parse_column_options(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    if !(c.eat_kw("TABLE") || c.eat_kws(&["FOREIGN", "TABLE"]) || c.eat_kws(&["MATERIALIZED", "VIEW"])) {
        return None;
    }
    c.eat_kws(&["IF", "EXISTS"]);
    c.eat_kw("ONLY");
    c.qualified()?;
    if !c.eat_kw("ALTER") {
        return None;
    }
    c.eat_kw("COLUMN");
    c.name()?;
    if !c.eat_kw("SET") || !c.eat_punct("(") {
        return None;
    }
    let mut options = Vec::new();
    while !c.done() && !c.is_punct(")") {
        let start = c.pos;
        let key = c.name()?;
        // The value: everything up to the next top-level comma or the closing parenthesis.
        while !c.done() && !c.is_punct(",") && !c.is_punct(")") {
            if c.is_punct("(") {
                c.skip_parens();
            } else {
                c.pos += 1;
            }
        }
        let mut span = c.span_from(start);
        if c.is_punct(",") {
            span.1 = c.peek().map_or(span.1, Token::end);
        } else if let Some(prev) = c.toks.get(start.wrapping_sub(1)).filter(|t| t.text == ",") {
            span.0 = prev.offset;
        }
        options.push((key.value.to_ascii_lowercase(), span));
        if !c.eat_punct(",") {
            break;
        }
    }
    if !c.eat_punct(")") || !c.done() {
        return None;
    }
    Some(Parsed::ColumnOptions { options })
}

fn join_name(parts: &[Name]) -> Name {
    let value = parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".");
    let span = (parts.first().map_or(0, |p| p.span.0), parts.last().map_or(0, |p| p.span.1));
    Name { value, span }
}

fn parse_grant(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    let revoke = c.next()?.text.eq_ignore_ascii_case("REVOKE");
    if revoke {
        // `REVOKE ADMIN OPTION FOR role FROM …`, `REVOKE GRANT OPTION FOR priv ON …`
        c.eat_kws(&["ADMIN", "OPTION", "FOR"]);
        c.eat_kws(&["INHERIT", "OPTION", "FOR"]);
        c.eat_kws(&["SET", "OPTION", "FOR"]);
        c.eat_kws(&["GRANT", "OPTION", "FOR"]);
    }
    let list_start = c.pos;
    let to = if revoke { "FROM" } else { "TO" };
    // An object grant has a top-level ON before TO/FROM.
    let mut probe = Cursor { toks: c.toks, pos: c.pos };
    let has_on = {
        let mut depth = 0i32;
        let mut found = false;
        while let Some(t) = probe.next() {
            match (t.kind, t.text) {
                (TokenKind::Punct, "(") => depth += 1,
                (TokenKind::Punct, ")") => depth -= 1,
                (TokenKind::Word, w) if depth == 0 && w.eq_ignore_ascii_case("ON") => {
                    found = true;
                    break;
                }
                (TokenKind::Word, w) if depth == 0 && w.eq_ignore_ascii_case(to) => break,
                _ => {}
            }
        }
        found
    };
    if has_on {
        let mut privileges = Vec::new();
        while !c.done() && !c.is_kw("ON") {
            let start = c.pos;
            let first = c.next()?;
            let mut name = first.text.to_ascii_uppercase();
            while !c.done() && !c.is_kw("ON") && !c.is_punct(",") {
                if c.is_punct("(") {
                    c.skip_parens();
                } else if let Some(t) = c.next() {
                    name.push(' ');
                    name.push_str(&t.text.to_ascii_uppercase());
                }
            }
            let mut span = c.span_from(start);
            if c.is_punct(",") {
                span.1 = c.peek().map_or(span.1, Token::end);
            } else if let Some(prev) = c.toks.get(start.wrapping_sub(1)).filter(|t| t.text == ",") {
                span.0 = prev.offset;
            }
            privileges.push((name, span));
            c.eat_punct(",");
        }
        c.skip_past_kw("ON");
        let kind = eat_kind(c, GRANT_KINDS).unwrap_or_else(|| "TABLE".to_string());
        if kind == "PARAMETER" {
            let mut params = Vec::new();
            while let Some(p) = c.qualified() {
                params.push(join_name(&p));
                if !c.eat_punct(",") {
                    break;
                }
            }
            if !c.eat_kw(to) {
                return None;
            }
            return Some(Parsed::GrantParameter { revoke, params, grantees: c.role_list() });
        }
        let object = c.qualified().map(|p| join_name(&p));
        if !c.skip_past_kw(to) {
            return None;
        }
        let grantees = c.role_list();
        c.eat_kws(&["WITH", "GRANT", "OPTION"]);
        let granted_by = granted_by(c);
        return Some(Parsed::GrantObject { revoke, kind, object, privileges, grantees, granted_by });
    }
    c.pos = list_start;
    let roles = c.role_list();
    if roles.is_empty() || !c.eat_kw(to) {
        return None;
    }
    let grantees = c.role_list();
    let mut with_options = Vec::new();
    let mut with_span = None;
    if c.is_kw("WITH") {
        let start = c.pos;
        c.pos += 1;
        loop {
            let opt_start = c.pos;
            let option = c.next()?.text.to_ascii_uppercase();
            let value = c.next()?.text.to_ascii_uppercase();
            with_options.push((option, value, c.span_from(opt_start)));
            if !c.eat_punct(",") {
                break;
            }
        }
        with_span = Some(c.span_from(start));
    }
    let granted_by = granted_by(c);
    if revoke {
        c.eat_kw("CASCADE");
        c.eat_kw("RESTRICT");
    }
    if !c.done() {
        return None;
    }
    Some(Parsed::GrantRole { revoke, roles, grantees, with_options, with_span, granted_by })
}

fn granted_by(c: &mut Cursor<'_, '_>) -> Option<(RoleRef, Span)> {
    let start = c.pos;
    if c.eat_kws(&["GRANTED", "BY"]) {
        let role = c.role()?;
        return Some((role, c.span_from(start)));
    }
    None
}

fn parse_set(c: &mut Cursor<'_, '_>) -> Option<Parsed> {
    let reset = c.next()?.text.eq_ignore_ascii_case("RESET");
    if c.eat_kws(&["SESSION", "AUTHORIZATION"]) {
        if reset {
            return Some(Parsed::SessionAuthorization { role: None });
        }
        if c.eat_kw("DEFAULT") {
            return Some(Parsed::SessionAuthorization { role: None });
        }
        // The role may be given as a string literal.
        let t = *c.peek()?;
        if t.kind == TokenKind::String {
            let value = t.text.trim_matches('\'').replace("''", "'");
            return Some(Parsed::SessionAuthorization {
                role: Some(RoleRef { name: Some(value), span: (t.offset, t.end()) }),
            });
        }
        return Some(Parsed::SessionAuthorization { role: Some(c.role()?) });
    }
    if reset {
        return None;
    }
    let _scope = c.eat_kw("SESSION") || c.eat_kw("LOCAL");
    if c.is_kw("ROLE") || c.is_kw("TRANSACTION") || c.is_kw("CONSTRAINTS") || c.is_kw("TIME") {
        return None;
    }
    let param = c.qualified()?;
    Some(Parsed::Set { param: join_name(&param) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Parsed {
        Statement::new(sql).parse()
    }

    #[test]
    fn t1_role_attributes_are_tokens_with_their_values() {
        let sql = "ALTER ROLE app WITH NOSUPERUSER INHERIT CREATEDB LOGIN NOREPLICATION CONNECTION LIMIT 20 \
                   VALID UNTIL '2030-01-01 00:00:00+00'";
        let Parsed::AlterRoleOptions { role, options } = parse(sql) else { panic!("{:?}", parse(sql)) };
        assert_eq!(role.name.as_deref(), Some("app"));
        let kws: Vec<_> = options.iter().map(|o| o.keyword.as_str()).collect();
        assert_eq!(
            kws,
            ["NOSUPERUSER", "INHERIT", "CREATEDB", "LOGIN", "NOREPLICATION", "CONNECTION LIMIT", "VALID UNTIL"]
        );
        assert_eq!(&sql[options[5].span.0..options[5].span.1], "CONNECTION LIMIT 20");
        assert_eq!(&sql[options[6].span.0..options[6].span.1], "VALID UNTIL '2030-01-01 00:00:00+00'");
    }

    #[test]
    fn t2_role_names_are_identifiers_not_substrings() {
        let Parsed::CreateRole { role, .. } = parse(r#"CREATE ROLE "we;ird""x""#) else { panic!() };
        assert_eq!(role.value, "we;ird\"x");
        let Parsed::CreateRole { role, .. } = parse("CREATE ROLE Asset_Reader") else { panic!() };
        assert_eq!(role.value, "asset_reader");
    }

    #[test]
    fn role_grants_read_roles_options_and_grantor() {
        let sql = "GRANT grp TO u WITH ADMIN OPTION, INHERIT FALSE, SET TRUE GRANTED BY owner_role";
        let Parsed::GrantRole { roles, grantees, with_options, granted_by, .. } = parse(sql) else { panic!() };
        assert_eq!(roles[0].name.as_deref(), Some("grp"));
        assert_eq!(grantees[0].name.as_deref(), Some("u"));
        assert_eq!(
            with_options.iter().map(|o| (o.0.as_str(), o.1.as_str())).collect::<Vec<_>>(),
            [("ADMIN", "OPTION"), ("INHERIT", "FALSE"), ("SET", "TRUE")]
        );
        assert_eq!(granted_by.unwrap().0.name.as_deref(), Some("owner_role"));
    }

    #[test]
    fn object_grants_and_owner_changes_name_their_roles() {
        let Parsed::GrantObject { kind, grantees, .. } = parse(r#"GRANT SELECT(id) ON TABLE app.orders TO "we;ird""#)
        else {
            panic!()
        };
        assert_eq!(kind, "TABLE");
        assert_eq!(grantees[0].name.as_deref(), Some("we;ird"));
        let Parsed::AlterOwner { kind, object, owner } = parse("ALTER FUNCTION app.f(integer) OWNER TO app_owner")
        else {
            panic!()
        };
        assert_eq!(
            (kind.as_str(), object[0].value.as_str(), owner.name.as_deref()),
            ("FUNCTION", "app", Some("app_owner"))
        );
        let Parsed::AlterOwner { kind, .. } = parse("ALTER PROCEDURAL LANGUAGE plx OWNER TO r") else { panic!() };
        assert_eq!(kind, "PROCEDURAL LANGUAGE");
    }

    #[test]
    fn routine_language_is_read_outside_the_body() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 'LANGUAGE c' $$";
        let Parsed::CreateRoutine { language } = parse(sql) else { panic!() };
        assert_eq!(language.unwrap().value, "sql");
        let sql = "CREATE FUNCTION public.h() RETURNS language_handler\n LANGUAGE c\n AS '$libdir/x', 'y'";
        let Parsed::CreateRoutine { language } = parse(sql) else { panic!() };
        assert_eq!(language.unwrap().value, "c");
    }

    #[test]
    fn t27_user_mapping_password_options_are_found() {
        let sql = "CREATE USER MAPPING FOR app SERVER s OPTIONS (\n    password 'secret',\n    \"user\" 'x'\n)";
        let Parsed::UserMapping { role, password_options } = parse(sql) else { panic!() };
        assert_eq!(role.name.as_deref(), Some("app"));
        assert_eq!(
            remove_spans(sql, &password_options),
            "CREATE USER MAPPING FOR app SERVER s OPTIONS (\n    \"user\" 'x'\n)"
        );
    }

    #[test]
    fn edits_replace_exact_spans() {
        let sql = "ALTER TABLE public.t OWNER TO postgres";
        let Parsed::AlterOwner { owner, .. } = parse(sql) else { panic!() };
        let mut e = Edits::default();
        e.rename_role(&owner, "dbadmin");
        assert_eq!(e.apply(sql), r#"ALTER TABLE public.t OWNER TO "dbadmin""#);
    }

    #[test]
    fn settings_and_session_authorization_are_recognised() {
        assert!(
            matches!(parse("SET statement_timeout = 0"), Parsed::Set { param } if param.value == "statement_timeout")
        );
        assert!(matches!(parse(r#"SET "TimeZone" TO 'UTC'"#), Parsed::Set { param } if param.value == "TimeZone"));
        assert!(
            matches!(parse("SET SESSION AUTHORIZATION mgr"), Parsed::SessionAuthorization { role: Some(r) } if r.name.as_deref() == Some("mgr"))
        );
        assert!(matches!(parse("RESET SESSION AUTHORIZATION"), Parsed::SessionAuthorization { role: None }));
        let Parsed::AlterRoleSet { role, database, param } =
            parse("ALTER ROLE app IN DATABASE shop SET statement_timeout TO '5s'")
        else {
            panic!()
        };
        assert_eq!(
            (role.name.as_deref(), database.unwrap().value.as_str(), param.value.as_str()),
            (Some("app"), "shop", "statement_timeout")
        );
    }
}
