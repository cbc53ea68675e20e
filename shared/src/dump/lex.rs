//! Splits `pg_dump` / `pg_dumpall` plain-text output into statements and psql meta-commands.
//!
//! A real lexer, not a line or substring filter: a `;` inside a string, a dollar-quoted function
//! body, a quoted identifier, a comment or a `BEGIN ATOMIC … END` body does not end a statement,
//! and a backslash line (`\connect`, `\restrict`, `\unrestrict` — RDS-CASES T10) is its own item.
//! Items are contiguous: concatenating their texts gives back the input byte for byte.

/// What an item of a dump is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// SQL ending in `;` (or at end of input), including the comments and blank lines before it.
    Statement,
    /// A psql meta-command line, e.g. `\restrict KEY`.
    MetaCommand,
    /// Only whitespace and comments, at the end of the input.
    Trailing,
}

/// One item of a dump, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub kind: ItemKind,
    pub text: &'a str,
    /// Byte offset of `text` in the input.
    pub offset: usize,
    /// 1-based line of the first significant character.
    pub line: usize,
}

impl<'a> Item<'a> {
    /// The item without leading comments and whitespace, and without the final `;`.
    pub fn sql(&self) -> &'a str {
        let body = skip_insignificant(self.text);
        body.trim_end().strip_suffix(';').unwrap_or(body.trim_end()).trim_end()
    }

    /// True for a statement with no SQL in it (only comments or a lone `;`).
    pub fn is_empty(&self) -> bool {
        self.sql().is_empty()
    }

    /// The comments and whitespace before the SQL (where `pg_dump` writes its TOC entry headers).
    pub fn leading(&self) -> &'a str {
        let body = skip_insignificant(self.text);
        &self.text[..self.text.len() - body.len()]
    }

    /// The first line of the SQL, cut to 120 characters, for messages.
    pub fn head(&self) -> String {
        let first = self.sql().lines().next().unwrap_or("");
        if first.chars().count() > 120 {
            format!("{}…", first.chars().take(120).collect::<String>())
        } else {
            first.to_string()
        }
    }
}

/// Skips whitespace and comments at the start of `s`.
fn skip_insignificant(s: &str) -> &str {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else {
            return &s[i..];
        }
    }
}

/// Returns the index just past a (nested) block comment starting at `i`; end of input if open.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// If a dollar-quote tag (`$$`, `$tag$`) starts at `i`, its length.
fn dollar_tag_len(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && b[j] == b'$' {
        return Some(2);
    }
    if j >= b.len() || !is_ident_start(b[j]) {
        return None;
    }
    while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1 - i)
}

/// Splits a dump into items.
pub fn split(input: &str) -> Vec<Item<'_>> {
    let b = input.as_bytes();
    let mut items = Vec::new();
    let mut start = 0usize; // start of the current item
    let mut i = 0usize;
    let mut significant: Option<usize> = None; // first significant byte of the current statement
    let mut words: Vec<String> = Vec::new(); // leading keywords, to detect CREATE FUNCTION bodies
    let mut atomic_depth = 0usize;
    // As psql does, BEGIN/CASE/END count only outside parentheses: `sum(t.begin)` in a body
    // reads a column named `begin` (RDS-CASES T68); unlike psql, `begin` inside a body never
    // counts (see below).
    let mut paren_depth = 0usize;
    // Lines are asked for at increasing positions: count newlines once, incrementally.
    let (mut counted_to, mut line) = (0usize, 1usize);
    let mut line_of = |pos: usize| {
        line += b[counted_to..pos.max(counted_to)].iter().filter(|&&c| c == b'\n').count();
        counted_to = counted_to.max(pos);
        line
    };

    while i < b.len() {
        let c = b[i];
        // A meta-command: a backslash as the first significant character of an item.
        if significant.is_none() && c == b'\\' {
            let end = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1);
            items.push(Item { kind: ItemKind::MetaCommand, text: &input[start..end], offset: start, line: line_of(i) });
            start = end;
            i = end;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
            continue;
        }
        significant.get_or_insert(i);
        match c {
            // As psql does, a `;` inside parentheses does not end the statement: a rule with
            // several actions is `DO ( a; b; )`.
            b';' if atomic_depth == 0 && paren_depth == 0 => {
                let end = i + 1;
                let first = significant.unwrap_or(i);
                items.push(Item {
                    kind: ItemKind::Statement,
                    text: &input[start..end],
                    offset: start,
                    line: line_of(first),
                });
                start = end;
                i = end;
                significant = None;
                words.clear();
                paren_depth = 0;
                continue;
            }
            b'(' => {
                paren_depth += 1;
                i += 1;
                continue;
            }
            b')' => {
                paren_depth = paren_depth.saturating_sub(1);
                i += 1;
                continue;
            }
            b'\'' => {
                let escapes = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e') && (i < 2 || !is_ident_char(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escapes);
                continue;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"', false);
                continue;
            }
            b'$' => {
                if let Some(len) = dollar_tag_len(b, i) {
                    let tag = &b[i..i + len];
                    let body = i + len;
                    i = b[body..].windows(len).position(|w| w == tag).map_or(b.len(), |p| body + p + len);
                    continue;
                }
                i += 1;
                continue;
            }
            _ if is_ident_start(c) => {
                let s = i;
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                let word = input[s..i].to_ascii_uppercase();
                if words.len() < 4 {
                    words.push(word.clone());
                }
                // A word after a dot is a name (`t.begin`), never a keyword.
                let qualified = b[..s].iter().rev().find(|c| !c.is_ascii_whitespace()) == Some(&b'.');
                if defines_routine(&words) && paren_depth == 0 && !qualified {
                    match word.as_str() {
                        // `BEGIN ATOMIC … END` bodies hold `;`. Inside one, only CASE … END
                        // nests: a body cannot open another block, so `begin` there is a column
                        // (an unreserved keyword: `UPDATE t SET begin = …`), while CASE and END
                        // are reserved and always the keywords (RDS-CASES T68).
                        "BEGIN" if atomic_depth == 0 && next_word_is(b, i, b"ATOMIC") => atomic_depth = 1,
                        "CASE" if atomic_depth > 0 => atomic_depth += 1,
                        "END" if atomic_depth > 0 => atomic_depth -= 1,
                        _ => {}
                    }
                }
                continue;
            }
            _ => {
                i += 1;
            }
        }
    }
    if start < b.len() {
        let kind = if significant.is_some() { ItemKind::Statement } else { ItemKind::Trailing };
        let line = line_of(significant.unwrap_or(start));
        items.push(Item { kind, text: &input[start..], offset: start, line });
    }
    items
}

fn defines_routine(words: &[String]) -> bool {
    matches!(
        words.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
        ["CREATE", "FUNCTION" | "PROCEDURE", ..] | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
    )
}

fn next_word_is(b: &[u8], mut i: usize, word: &[u8]) -> bool {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    b.len() >= i + word.len()
        && b[i..i + word.len()].eq_ignore_ascii_case(word)
        && b.get(i + word.len()).is_none_or(|&c| !is_ident_char(c))
}

/// Index just past a quoted token starting at `i` (doubled quotes escape; with `escapes`, so does
/// a backslash). End of input if unterminated.
fn skip_quoted(b: &[u8], i: usize, quote: u8, escapes: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if escapes && b[j] == b'\\' {
            j += 2;
        } else if b[j] == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// What a token of one SQL statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Whitespace.
    Space,
    /// `-- …` (without its newline) or a (nested) `/* … */`.
    Comment,
    /// An unquoted identifier or keyword.
    Word,
    /// `"…"` or `U&"…"`.
    QuotedIdent,
    /// `'…'`, `E'…'`, `U&'…'`, `B'…'`, `X'…'`, `N'…'`.
    String,
    /// `$tag$…$tag$`.
    Dollar,
    /// An integer or decimal literal.
    Number,
    /// A positional parameter, `$1`.
    Param,
    /// One of `( ) [ ] , ; . :` or `::`.
    Punct,
    /// An operator (`=`, `<>`, `||`…) or any other character.
    Operator,
}

/// One token of a statement, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    /// Byte offset of `text` in the tokenized string.
    pub offset: usize,
}

impl Token<'_> {
    /// True for tokens the server ignores (whitespace and comments).
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, TokenKind::Space | TokenKind::Comment)
    }

    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.offset + self.text.len()
    }
}

const OPERATOR_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?";

/// Splits one statement (or any SQL text) into tokens with PostgreSQL's lexical rules.
///
/// Like [`split`], tokens are contiguous: their texts concatenated give back the input, so a rule
/// can replace exactly the tokens it means and leave every other byte (function bodies, strings,
/// comments) untouched. Unterminated quotes and comments run to the end of the input.
pub fn tokenize(input: &str) -> Vec<Token<'_>> {
    let b = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0usize;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            TokenKind::Space
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            TokenKind::Comment
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
            TokenKind::Comment
        } else if c == b'\'' {
            i = skip_quoted(b, i, b'\'', false);
            TokenKind::String
        } else if c == b'"' {
            i = skip_quoted(b, i, b'"', false);
            TokenKind::QuotedIdent
        } else if (c == b'U' || c == b'u') && b.get(i + 1) == Some(&b'&') && matches!(b.get(i + 2), Some(b'\'' | b'"'))
        {
            let quote = b[i + 2];
            i = skip_quoted(b, i + 2, quote, false);
            if quote == b'"' { TokenKind::QuotedIdent } else { TokenKind::String }
        } else if matches!(c, b'E' | b'e' | b'B' | b'b' | b'X' | b'x' | b'N' | b'n') && b.get(i + 1) == Some(&b'\'') {
            i = skip_quoted(b, i + 1, b'\'', c == b'E' || c == b'e');
            TokenKind::String
        } else if is_ident_start(c) {
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            TokenKind::Word
        } else if c == b'$' {
            if let Some(len) = dollar_tag_len(b, i) {
                let tag = &b[i..i + len];
                let body = i + len;
                i = b[body..].windows(len).position(|w| w == tag).map_or(b.len(), |p| body + p + len);
                TokenKind::Dollar
            } else if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                TokenKind::Param
            } else {
                i += 1;
                TokenKind::Operator
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                // `1..2` is not a number followed by a number; stop before a second dot.
                if b[i] == b'.' && (b[start..i].contains(&b'.') || b.get(i + 1) == Some(&b'.')) {
                    break;
                }
                let exponent_sign = (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'+' | b'-'));
                i += if exponent_sign { 2 } else { 1 };
            }
            TokenKind::Number
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            i += 2;
            TokenKind::Punct
        } else if matches!(c, b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' | b':') {
            i += 1;
            TokenKind::Punct
        } else if OPERATOR_CHARS.contains(&c) {
            i += 1;
            // An operator never contains the start of a comment.
            while i < b.len()
                && OPERATOR_CHARS.contains(&b[i])
                && !b[i..].starts_with(b"--")
                && !b[i..].starts_with(b"/*")
            {
                i += 1;
            }
            TokenKind::Operator
        } else {
            // Any other byte; keep multi-byte characters whole.
            i += 1;
            while i < b.len() && !input.is_char_boundary(i) {
                i += 1;
            }
            TokenKind::Operator
        };
        let i_end = i.min(b.len());
        tokens.push(Token { kind, text: &input[start..i_end], offset: start });
        i = i_end;
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(input: &str) -> Vec<String> {
        let items = split(input);
        assert_eq!(items.iter().map(|i| i.text).collect::<String>(), input, "items must rebuild the input");
        items.iter().filter(|i| i.kind == ItemKind::Statement && !i.is_empty()).map(|i| i.sql().to_string()).collect()
    }

    #[test]
    fn semicolons_inside_strings_comments_and_identifiers_do_not_split() {
        let got = sqls("SELECT 'a;b'; SELECT \"x;y\" FROM t; -- c;d\nSELECT /* e; /* nested; */ f; */ 1;");
        assert_eq!(
            got,
            vec!["SELECT 'a;b'", "SELECT \"x;y\" FROM t", "-- c;d\nSELECT /* e; /* nested; */ f; */ 1"]
                .into_iter()
                .map(|s| skip_insignificant(s).to_string())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn escape_strings_and_doubled_quotes_are_one_token() {
        assert_eq!(sqls(r"SELECT E'it\'s;'; SELECT 'it''s;';"), vec![r"SELECT E'it\'s;'", "SELECT 'it''s;'"]);
        // Without the E prefix a backslash is an ordinary character.
        assert_eq!(sqls(r"SELECT 'a\'; SELECT 1;"), vec![r"SELECT 'a\'", "SELECT 1"]);
    }

    #[test]
    fn dollar_quoted_bodies_with_tags_hold_semicolons() {
        let f = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END; $body$";
        let g = "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT '$x$;' $$";
        let got = sqls(&format!("{f};\n{g};\nSELECT $1;"));
        assert_eq!(got, vec![f, g, "SELECT $1"]);
    }

    #[test]
    fn begin_atomic_bodies_hold_semicolons() {
        let f = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\n    BEGIN ATOMIC\n SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n SELECT 2;\nEND";
        assert_eq!(sqls(&format!("{f};\nSELECT 3;")), vec![f, "SELECT 3"]);
    }

    #[test]
    fn t68_keywords_inside_parentheses_of_an_atomic_body_do_not_nest() {
        // pg_dump prints unreserved keywords used as column names unquoted.
        let f = "CREATE FUNCTION public.total() RETURNS bigint\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT sum(t.begin) AS sum\n    FROM public.t;\nEND";
        let g = "CREATE PROCEDURE public.p() LANGUAGE sql BEGIN ATOMIC SELECT (CASE WHEN t.end > 0 THEN t.begin END) FROM t; END";
        let input = format!("{f};\n{g};\nCREATE TABLE public.after (id integer);\nCREATE TABLE public.more (x int);");
        assert_eq!(
            sqls(&input),
            vec![f, g, "CREATE TABLE public.after (id integer)", "CREATE TABLE public.more (x int)"]
        );
    }

    #[test]
    fn a_rule_with_several_actions_is_one_statement() {
        // As psql: `;` inside parentheses does not end a statement.
        let rule = "CREATE RULE r AS\n    ON DELETE TO public.s DO ( DELETE FROM public.a\n  WHERE (a.k = old.k);\n DELETE FROM public.b\n  WHERE (b.k = old.k);\n)";
        let input = format!("{rule};\nCREATE TABLE public.after (id integer);");
        assert_eq!(sqls(&input), vec![rule, "CREATE TABLE public.after (id integer)"]);
    }

    #[test]
    fn t10_meta_commands_are_their_own_items() {
        let input = "\\restrict abc123\nSET x = 1;\n\\connect shop\nSELECT 1;\n\\unrestrict abc123\n";
        let items = split(input);
        let kinds: Vec<_> = items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ItemKind::MetaCommand,
                ItemKind::Statement,
                ItemKind::MetaCommand,
                ItemKind::Statement,
                ItemKind::MetaCommand
            ]
        );
        assert_eq!(items[0].text, "\\restrict abc123\n");
        assert_eq!(items[3].line, 4);
    }

    #[test]
    fn trailing_comments_are_kept_and_unterminated_sql_is_a_statement() {
        let items = split("SELECT 1;\n-- end\n");
        assert_eq!(items.last().unwrap().kind, ItemKind::Trailing);
        let items = split("SELECT 1");
        assert_eq!(items[0].kind, ItemKind::Statement);
        assert_eq!(items[0].sql(), "SELECT 1");
    }

    #[test]
    fn unterminated_quotes_never_panic_and_rebuild_the_input() {
        for input in ["SELECT 'abc", "SELECT $$abc", "SELECT \"x", "/* open", "E'\\", "$a", "\\", "--"] {
            let items = split(input);
            assert_eq!(items.iter().map(|i| i.text).collect::<String>(), input);
        }
    }

    #[test]
    fn rebuilds_arbitrary_byte_soup_exactly() {
        // A cheap deterministic property test: random strings over SQL's special characters.
        let alphabet = [
            "'",
            "\"",
            "$",
            "$a$",
            ";",
            "--",
            "/*",
            "*/",
            "\n",
            "E'",
            "\\",
            "x",
            " ",
            "BEGIN",
            "ATOMIC",
            "END",
            "CREATE FUNCTION",
            "é",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut s = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let items = split(&s);
            assert_eq!(items.iter().map(|i| i.text).collect::<String>(), s);
            let mut offset = 0;
            for item in &items {
                assert_eq!(item.offset, offset);
                offset += item.text.len();
            }
        }
    }

    /// Pieces that exercise every lexical state: quotes of each kind (terminated or not),
    /// dollar tags, comments (nested, unterminated), meta-commands, `BEGIN ATOMIC` bodies.
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("$$".to_string()),
            Just("$a$".to_string()),
            Just("$1".to_string()),
            Just(";".to_string()),
            Just("--".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just("\n".to_string()),
            Just("E'".to_string()),
            Just("U&'".to_string()),
            Just("\\".to_string()),
            Just("\\connect db\n".to_string()),
            Just(" BEGIN ATOMIC ".to_string()),
            Just(" END".to_string()),
            Just("CREATE FUNCTION f() ".to_string()),
            Just("::".to_string()),
            Just("1.5e-3".to_string()),
            "[a-zA-Z_ ]{0,6}",
            any::<char>().prop_map(|c| c.to_string()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn items_and_tokens_rebuild_any_input_byte_for_byte(
            pieces in proptest::collection::vec(piece(), 0..40)
        ) {
            let input: String = pieces.concat();
            let items = split(&input);
            proptest::prop_assert_eq!(items.iter().map(|i| i.text).collect::<String>(), input.clone());
            let mut offset = 0;
            for item in &items {
                proptest::prop_assert_eq!(item.offset, offset);
                offset += item.text.len();
                let _ = (item.sql(), item.leading(), item.head());
            }
            let tokens = tokenize(&input);
            proptest::prop_assert_eq!(tokens.iter().map(|t| t.text).collect::<String>(), input.clone());
            proptest::prop_assert!(tokens.iter().all(|t| !t.text.is_empty()));
        }

        /// T68: SQL-standard bodies reading columns named like the keywords that delimit them,
        /// in every position (qualified, in parentheses, in CASE, quoted), and rules with several
        /// actions, between ordinary statements: each statement is one item, as psql splits it.
        #[test]
        fn keyword_named_identifiers_never_merge_or_split_statements(
            shapes in proptest::collection::vec((0usize..9, 0usize..6), 1..12)
        ) {
            // As pg_dump prints them: unreserved keywords bare, reserved ones (END, CASE) quoted.
            const NAMES: [&str; 6] = ["begin", "atomic", "\"end\"", "\"case\"", "\"BEGIN\"", "\"end;\""];
            let statements: Vec<String> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(shape, n))| {
                    let c = NAMES[n];
                    match shape {
                        0 => format!("CREATE TABLE t{i} (id integer, {c} integer)"),
                        1 => format!("CREATE FUNCTION f{i}() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT sum(t.{c}) FROM t; END"),
                        2 => format!("CREATE FUNCTION f{i}() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT (CASE WHEN t.{c} > 0 THEN t.{c} ELSE 0 END) FROM t; SELECT 1; END"),
                        3 => format!("CREATE PROCEDURE p{i}() LANGUAGE sql BEGIN ATOMIC INSERT INTO t ({c}) VALUES (1); UPDATE t SET {c} = {c} + 1; END"),
                        4 => format!("CREATE FUNCTION f{i}(x integer) RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT CASE x WHEN 1 THEN (SELECT t.{c} FROM t LIMIT 1) END; END"),
                        5 => format!("CREATE RULE r{i} AS ON DELETE TO t DO ( DELETE FROM a WHERE a.{c} = old.{c}; DELETE FROM b WHERE b.{c} = old.{c}; )"),
                        6 => format!("CREATE VIEW v{i} AS SELECT t.{c} AS {c} FROM t"),
                        7 => format!("CREATE FUNCTION f{i}() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT 'end; begin'::text; END"),
                        _ => format!("COMMENT ON COLUMN t.{c} IS 'begin atomic; end'"),
                    }
                })
                .collect();
            let input = statements.iter().map(|s| format!("{s};\n\n")).collect::<String>();
            let got: Vec<&str> =
                split(&input).iter().filter(|i| i.kind == ItemKind::Statement && !i.is_empty()).map(|i| i.sql()).collect();
            proptest::prop_assert_eq!(got, statements.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn semicolons_inside_quoted_tokens_never_split_statements(
            bodies in proptest::collection::vec("[a-z ;'\"$]{0,12}", 1..8)
        ) {
            // Each body is wrapped in a dollar quote whose tag cannot occur in it.
            let statements: Vec<String> = bodies.iter().map(|b| format!("SELECT $Q${b}$Q$")).collect();
            let input = statements.iter().map(|s| format!("{s};\n")).collect::<String>();
            let got: Vec<&str> = split(&input).iter().filter(|i| i.kind == ItemKind::Statement).map(|i| i.sql()).collect();
            proptest::prop_assert_eq!(got, statements.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
