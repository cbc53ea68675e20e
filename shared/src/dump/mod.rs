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
