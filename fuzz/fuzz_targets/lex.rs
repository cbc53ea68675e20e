//! Fuzz target: the dump lexer, the tokenizer and the statement parser never panic, and items
//! and tokens always rebuild their input byte for byte.
//!
//! The modules are the crate's own source files, compiled in by path.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../shared/src/pg/quote.rs"]
mod quote;

mod pg {
    pub use crate::quote::quote_ident;
}

#[allow(dead_code, unreachable_pub)]
#[path = "../../shared/src/dump/lex.rs"]
mod lex;

#[allow(dead_code, unreachable_pub)]
#[path = "../../shared/src/dump/parse.rs"]
mod parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let items = lex::split(text);
    assert_eq!(items.iter().map(|i| i.text).collect::<String>(), text, "items must rebuild the input");
    let mut offset = 0;
    for item in &items {
        assert_eq!(item.offset, offset);
        offset += item.text.len();
        let _ = (item.sql(), item.leading(), item.head(), item.is_empty());
        let statement = parse::Statement::new(item.sql());
        let _ = statement.parse();
        let _ = statement.keywords(4);
    }
    let tokens = lex::tokenize(text);
    assert_eq!(tokens.iter().map(|t| t.text).collect::<String>(), text, "tokens must rebuild the input");
});
