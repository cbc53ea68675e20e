//! The context object (`$$`) a state sees: execution, state machine, current state and, while
//! an `ItemSelector` runs, the current Map item.
//!
//! The execution part holds the execution input, which can be large; it is built once per
//! execution and borrowed here, and `$$.Execution...` paths are walked in place rather than by
//! building the whole object for every state.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::path::{Path, Segment, walk};
use super::{STATES_RUNTIME, TaskFailure};

/// Name reported as `$$.StateMachine.Name`: a local run has no deployed state machine.
pub(crate) const LOCAL_STATE_MACHINE_NAME: &str = "local";

/// What `$$` resolves against while one state runs.
#[derive(Debug)]
pub(crate) struct Context<'r> {
    execution: &'r Value,
    state_machine: &'r Value,
    state: Value,
    map: Option<Value>,
}

#[cfg(test)]
static NULL: Value = Value::Null;

impl<'r> Context<'r> {
    /// The context of a state entered at `entered_time` (RFC 3339) after `retry_count` retries.
    pub(crate) fn new(
        execution: &'r Value,
        state_machine: &'r Value,
        state_name: &str,
        entered_time: &str,
        retry_count: u32,
    ) -> Self {
        let state = json!({"Name": state_name, "EnteredTime": entered_time, "RetryCount": retry_count});
        Self { execution, state_machine, state, map: None }
    }

    /// A context with nothing in it, for evaluating paths outside an execution.
    #[cfg(test)]
    pub(crate) fn empty() -> Context<'static> {
        Context { execution: &NULL, state_machine: &NULL, state: Value::Null, map: None }
    }

    /// This context plus `$$.Map.Item.Index` and `$$.Map.Item.Value`.
    pub(crate) fn with_map_item(&self, index: usize, value: &Value) -> Context<'r> {
        Context {
            execution: self.execution,
            state_machine: self.state_machine,
            state: self.state.clone(),
            map: Some(json!({"Item": {"Index": index, "Value": value}})),
        }
    }

    /// The value at `segments` below `$$`.
    pub(crate) fn resolve(&self, segments: &[Segment]) -> Option<Cow<'_, Value>> {
        let Some((first, rest)) = segments.split_first() else {
            return Some(Cow::Owned(self.to_value()));
        };
        let Segment::Field(first) = first else {
            return None;
        };
        let part = match first.as_str() {
            "Execution" => self.execution,
            "StateMachine" => self.state_machine,
            "State" => &self.state,
            "Map" => self.map.as_ref()?,
            _ => return None,
        };
        walk(part, rest).map(Cow::Borrowed)
    }

    /// The whole context object, for a bare `$$`.
    fn to_value(&self) -> Value {
        let mut object = json!({
            "Execution": self.execution,
            "StateMachine": self.state_machine,
            "State": self.state,
        });
        if let Some(map) = &self.map {
            object["Map"] = map.clone();
        }
        object
    }
}

/// Everything a path, template or rule needs to be evaluated: the value `$` means, the context
/// `$$` means, and the state name for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The state being run, named in failure causes.
    pub(crate) state: &'a str,
    /// What `$` resolves against.
    pub(crate) input: &'a Value,
    /// What `$$` resolves against.
    pub(crate) context: &'a Context<'a>,
}

impl<'a> Scope<'a> {
    /// The same scope with a different `$`.
    pub(crate) fn with_input<'b>(&self, input: &'b Value) -> Scope<'b>
    where
        'a: 'b,
    {
        Scope { state: self.state, input, context: self.context }
    }

    /// Resolves `path`, or fails with `States.Runtime` naming the state, the path and `field`.
    pub(crate) fn resolve(&self, path: &Path, field: &str) -> Result<Cow<'a, Value>, TaskFailure> {
        path.resolve(self.input, self.context).ok_or_else(|| self.not_found(path, field))
    }

    /// The `States.Runtime` failure for a path that does not resolve.
    pub(crate) fn not_found(&self, path: &Path, field: &str) -> TaskFailure {
        let place = if path.is_context() { "context object" } else { "input" };
        self.runtime(format!(
            "the JSONPath `{path}` specified for the field `{field}` could not be found in the {place}"
        ))
    }

    /// A `States.Runtime` failure whose cause starts with the state's name.
    pub(crate) fn runtime(&self, detail: impl std::fmt::Display) -> TaskFailure {
        self.failure(STATES_RUNTIME, detail)
    }

    /// A failure named `error` whose cause starts with the state's name.
    pub(crate) fn failure(&self, error: &str, detail: impl std::fmt::Display) -> TaskFailure {
        TaskFailure::new(error, format!("state `{}`: {detail}", self.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asl::path::Path;

    #[test]
    fn context_paths_resolve_execution_state_and_map_item() {
        let execution = json!({"Id": "arn:x", "Name": "run-1", "Input": {"job": 7}});
        let machine = json!({"Name": LOCAL_STATE_MACHINE_NAME});
        let base = Context::new(&execution, &machine, "Copy", "2024-01-01T00:00:00.000Z", 2);
        let context = base.with_map_item(3, &json!("item"));
        let get = |p: &str| Path::parse(p).unwrap().resolve(&Value::Null, &context).map(Cow::into_owned);
        assert_eq!(get("$$.Execution.Input.job"), Some(json!(7)));
        assert_eq!(get("$$.State.Name"), Some(json!("Copy")));
        assert_eq!(get("$$.State.RetryCount"), Some(json!(2)));
        assert_eq!(get("$$.StateMachine.Name"), Some(json!("local")));
        assert_eq!(get("$$.Map.Item.Index"), Some(json!(3)));
        assert_eq!(get("$$.Map.Item.Value"), Some(json!("item")));
        assert_eq!(get("$$.Nope"), None);
        assert_eq!(get("$$").unwrap()["Execution"]["Name"], "run-1");
    }

    #[test]
    fn map_item_is_absent_outside_an_item_selector() {
        let context = Context::empty();
        assert!(Path::parse("$$.Map.Item.Index").unwrap().resolve(&Value::Null, &context).is_none());
    }
}
