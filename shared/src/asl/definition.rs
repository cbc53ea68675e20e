//! Parsing and validating a definition into a [`StateMachine`].
//!
//! Parsing is strict on purpose. Every field of every state is checked against what ASL allows
//! for that state type (the "Input and Output Processing" table of the specification), every
//! path, template and intrinsic call is parsed, and every `Next` must name a state in the same
//! `States` block. Fields the local runner does not implement are refused with a message naming
//! the state and the field, so a definition either runs locally as it would in AWS or does not
//! run at all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use super::AslError;
use super::choice::ChoiceRule;
use super::path::{Path, ResultPath};
use super::retry::{Catcher, Retrier, parse_catch, parse_retry};
use super::substitute::substitute;
use super::template::{Expr, Template};
use super::time::{UnixNanos, parse_rfc3339};

/// Parsed and validated state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub(crate) timeout: Option<Duration>,
    pub(crate) root: States,
}

/// A `States` block with its `StartAt`: the top level, or a Map's item processor.
#[derive(Debug, Clone)]
pub(crate) struct States {
    pub(crate) start_at: String,
    pub(crate) states: BTreeMap<String, State>,
}

/// One state.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// The name within its `States` block, as Step Functions reports it.
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// What comes after a state that does not choose its successor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Next(String),
    End,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Pass(Pass),
    Task(Task),
    Choice(Choice),
    Wait(Wait),
    Succeed(Succeed),
    Fail(Fail),
    Map(Box<MapState>),
}

/// `InputPath` / `OutputPath`: `None` is an explicit `null` (the state sees `{}`).
pub(crate) type IoPath = Option<Path>;

#[derive(Debug, Clone)]
pub(crate) struct Pass {
    pub(crate) input_path: IoPath,
    pub(crate) parameters: Option<Template>,
    pub(crate) result: Option<Value>,
    pub(crate) result_path: ResultPath,
    pub(crate) output_path: IoPath,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) resource: String,
    pub(crate) input_path: IoPath,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) result_path: ResultPath,
    pub(crate) output_path: IoPath,
    /// `TimeoutSeconds`: an attempt that runs longer fails with `States.Timeout`.
    /// (`HeartbeatSeconds` is validated but not kept: a local task cannot send heartbeats, so
    /// only `TimeoutSeconds` bounds it.)
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
    pub(crate) choices: Vec<ChoiceRule>,
    pub(crate) default: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum WaitFor {
    Seconds(u64),
    SecondsPath(Path),
    Timestamp(UnixNanos),
    TimestampPath(Path),
}

#[derive(Debug, Clone)]
pub(crate) struct Wait {
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
    pub(crate) wait_for: WaitFor,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct Succeed {
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
}

/// `Error`/`Cause` of a Fail state: literal, or computed by `ErrorPath`/`CausePath`.
#[derive(Debug, Clone)]
pub(crate) enum FailText {
    Literal(String),
    Dynamic(Expr),
}

#[derive(Debug, Clone)]
pub(crate) struct Fail {
    pub(crate) error: Option<FailText>,
    pub(crate) cause: Option<FailText>,
}

/// Where a Map gets its items.
#[derive(Debug, Clone)]
pub(crate) enum Items {
    /// `ItemsPath` (default `$`) into the effective input.
    Path(Path),
    /// `ItemReader`, read through the environment.
    Reader(ItemReader),
}

#[derive(Debug, Clone)]
pub(crate) struct ItemReader {
    pub(crate) resource: String,
    /// `ReaderConfig`, or `Null`.
    pub(crate) config: Value,
    pub(crate) parameters: Option<Template>,
}

/// A Distributed Map's `ResultWriter`: where the iterations' results are exported instead of
/// becoming the state's result.
#[derive(Debug, Clone)]
pub(crate) struct ResultWriter {
    /// `Resource`, e.g. `arn:aws:states:::s3:putObject`.
    pub(crate) resource: String,
    /// `Parameters` (`Bucket`, optional `Prefix`), resolved against the Map's effective input.
    pub(crate) parameters: Template,
}

#[derive(Debug, Clone)]
pub(crate) struct MapState {
    pub(crate) input_path: IoPath,
    pub(crate) items: Items,
    /// `ItemSelector`, or the legacy `Parameters`.
    pub(crate) item_selector: Option<Template>,
    /// `ItemProcessor`, or the legacy `Iterator`. Distributed mode runs in-process like inline.
    pub(crate) processor: States,
    /// At most this many iterations in flight; 0 means no limit.
    pub(crate) max_concurrency: usize,
    /// `MaxConcurrencyPath`: the limit read from the state's effective input instead.
    pub(crate) max_concurrency_path: Option<Path>,
    /// `Label`: names the Map Run (`…:mapRun:<state machine>/<label>:<id>`); the state name when
    /// absent.
    pub(crate) label: Option<String>,
    /// `ItemProcessor.ProcessorConfig.Mode` is `DISTRIBUTED`: each iteration is a child
    /// execution with its own history, and a failed iteration fails the Map with
    /// `States.ExceedToleratedFailureThreshold` (no tolerated failures are supported).
    pub(crate) distributed: bool,
    /// `ResultWriter` (Distributed mode only).
    pub(crate) result_writer: Option<ResultWriter>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) result_path: ResultPath,
    pub(crate) output_path: IoPath,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) transition: Transition,
}

const TOP_LEVEL_FIELDS: &[&str] = &["StartAt", "States", "Comment", "TimeoutSeconds", "Version", "QueryLanguage"];

/// Fields of each state type (besides `Type`, `Comment` and `QueryLanguage`), and the fields ASL
/// has for it that the runner refuses.
fn fields_of(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "Pass" => {
            (&["Next", "End", "InputPath", "Parameters", "Result", "ResultPath", "OutputPath"], &["Assign", "Output"])
        }
        "Task" => (
            &[
                "Next",
                "End",
                "Resource",
                "InputPath",
                "Parameters",
                "ResultSelector",
                "ResultPath",
                "OutputPath",
                "TimeoutSeconds",
                "HeartbeatSeconds",
                "Retry",
                "Catch",
            ],
            &["Credentials", "TimeoutSecondsPath", "HeartbeatSecondsPath", "Arguments", "Assign", "Output"],
        ),
        "Choice" => (&["InputPath", "OutputPath", "Choices", "Default"], &["Assign", "Output"]),
        "Wait" => (
            &["Next", "End", "InputPath", "OutputPath", "Seconds", "SecondsPath", "Timestamp", "TimestampPath"],
            &["Assign", "Output"],
        ),
        "Succeed" => (&["InputPath", "OutputPath"], &["Output"]),
        "Fail" => (&["Error", "Cause", "ErrorPath", "CausePath"], &[]),
        "Map" => (
            &[
                "Next",
                "End",
                "InputPath",
                "ItemsPath",
                "ItemReader",
                "ItemSelector",
                "Parameters",
                "ItemProcessor",
                "Iterator",
                "MaxConcurrency",
                "MaxConcurrencyPath",
                "Label",
                "ResultWriter",
                "ResultSelector",
                "ResultPath",
                "OutputPath",
                "Retry",
                "Catch",
            ],
            &[
                "ItemBatcher",
                "ToleratedFailurePercentage",
                "ToleratedFailurePercentagePath",
                "ToleratedFailureCount",
                "ToleratedFailureCountPath",
                "Items",
                "Arguments",
                "Assign",
                "Output",
            ],
        ),
        _ => return None,
    })
}

impl StateMachine {
    /// Parses and validates a definition.
    ///
    /// `text` is the ASL JSON. `substitutions` replaces every `${Name}` in the text
    /// (DefinitionSubstitutions semantics: textual, before parsing; values are JSON-string-escaped
    /// when inserted inside a string). A `${X}` left without a value is an error naming X.
    pub fn parse(text: &str, substitutions: &BTreeMap<String, String>) -> Result<Self, AslError> {
        let text = substitute(text, substitutions)?;
        let value: Value = serde_json::from_str(&text).map_err(|source| AslError::Json { source })?;
        let Value::Object(top) = value else {
            return Err(AslError::definition("(root)", "must be a JSON object"));
        };
        for key in top.keys() {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                return Err(AslError::definition(key, "is not allowed at the top level of a state machine"));
            }
        }
        match top.get("QueryLanguage") {
            None => {}
            Some(Value::String(language)) if language == "JSONPath" => {}
            Some(other) => {
                return Err(AslError::definition(
                    "QueryLanguage",
                    format!("value {other} is not supported by the local runner; only \"JSONPath\" is"),
                ));
            }
        }
        if let Some(comment) = top.get("Comment") {
            if !comment.is_string() {
                return Err(AslError::definition("Comment", "must be a string"));
            }
        }
        if let Some(version) = top.get("Version") {
            if !version.is_string() {
                return Err(AslError::definition("Version", "must be a string"));
            }
        }
        let timeout = match top.get("TimeoutSeconds") {
            None => None,
            Some(v) => Some(Duration::from_secs(
                v.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| AslError::definition("TimeoutSeconds", "must be a positive integer"))?,
            )),
        };
        let root = parse_states(&top, None)?;
        Ok(Self { timeout, root })
    }

    /// Names of the top-level states, sorted.
    pub fn state_names(&self) -> Vec<String> {
        self.root.states.keys().cloned().collect()
    }

    /// Every Task `Resource` anywhere (including inside Map processors), deduplicated and sorted.
    pub fn resources(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.root.visit(&mut |state| {
            if let Kind::Task(task) = &state.kind {
                out.insert(task.resource.clone());
            }
        });
        out.into_iter().collect()
    }

    /// Every Map `ItemReader` `Resource` anywhere, deduplicated and sorted; these go to
    /// [`Environment::read_items`](super::Environment::read_items), not `invoke`.
    pub fn item_reader_resources(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.root.visit(&mut |state| {
            if let Kind::Map(map) = &state.kind {
                if let Items::Reader(reader) = &map.items {
                    out.insert(reader.resource.clone());
                }
            }
        });
        out.into_iter().collect()
    }

    /// Every `ErrorEquals` entry of every `Retry` and `Catch` anywhere, deduplicated and sorted.
    pub fn error_names(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.root.visit(&mut |state| {
            let (retry, catch) = match &state.kind {
                Kind::Task(task) => (&task.retry, &task.catch),
                Kind::Map(map) => (&map.retry, &map.catch),
                _ => return,
            };
            let lists = retry.iter().map(|r| &r.error_equals).chain(catch.iter().map(|c| &c.error_equals));
            out.extend(lists.flatten().cloned());
        });
        out.into_iter().collect()
    }

    /// The execution's `TimeoutSeconds`, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl States {
    /// Calls `f` for every state, depth first into Map processors.
    fn visit(&self, f: &mut dyn FnMut(&State)) {
        for state in self.states.values() {
            f(state);
            if let Kind::Map(map) = &state.kind {
                map.processor.visit(f);
            }
        }
    }
}

/// Parses `StartAt` and `States` of `container`; `owner` is the qualified name of the Map state
/// that holds them and `field` the field they are in (`ItemProcessor` or `Iterator`), if any.
fn parse_states(container: &Map<String, Value>, owner: Option<(&str, &str)>) -> Result<States, AslError> {
    let error = |field: &str, reason: String| match owner {
        None => AslError::definition(field, reason),
        Some((state, container_field)) => AslError::invalid(state, format!("{container_field}.{field}"), reason),
    };
    let start_at = match container.get("StartAt") {
        Some(Value::String(start_at)) => start_at.clone(),
        Some(_) => return Err(error("StartAt", "must be a string".into())),
        None => return Err(error("StartAt", "is required".into())),
    };
    let definitions = match container.get("States") {
        Some(Value::Object(definitions)) if !definitions.is_empty() => definitions,
        Some(_) => return Err(error("States", "must be a non-empty object".into())),
        None => return Err(error("States", "is required".into())),
    };
    let mut states = BTreeMap::new();
    for (name, definition) in definitions {
        let qualified = match owner {
            None => name.clone(),
            Some((owner, _)) => format!("{owner} > {name}"),
        };
        let kind = parse_state(&qualified, definition)?;
        states.insert(name.clone(), State { name: name.clone(), kind });
    }
    if !states.contains_key(&start_at) {
        return Err(error("StartAt", format!("names state `{start_at}`, which does not exist")));
    }
    for state in states.values() {
        for (field, target) in transitions(&state.kind) {
            if !states.contains_key(&target) {
                let qualified = match owner {
                    None => state.name.clone(),
                    Some((owner, _)) => format!("{owner} > {}", state.name),
                };
                let place = if owner.is_some() { "in this Map's processor" } else { "at the top level" };
                return Err(AslError::invalid(
                    &qualified,
                    field,
                    format!("names state `{target}`, which does not exist {place}"),
                ));
            }
        }
    }
    Ok(States { start_at, states })
}

/// Every state name a state can move to, with the field that names it.
fn transitions(kind: &Kind) -> Vec<(String, String)> {
    let next = |transition: &Transition| match transition {
        Transition::Next(next) => vec![("Next".to_owned(), next.clone())],
        Transition::End => Vec::new(),
    };
    fn catches(catch: &[Catcher]) -> Vec<(String, String)> {
        catch.iter().enumerate().map(|(i, c)| (format!("Catch[{i}].Next"), c.next.clone())).collect()
    }
    match kind {
        Kind::Pass(s) => next(&s.transition),
        Kind::Wait(s) => next(&s.transition),
        Kind::Task(s) => next(&s.transition).into_iter().chain(catches(&s.catch)).collect(),
        Kind::Map(s) => next(&s.transition).into_iter().chain(catches(&s.catch)).collect(),
        Kind::Choice(s) => s
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("Choices[{i}].Next"), c.next.clone()))
            .chain(s.default.clone().map(|d| ("Default".to_owned(), d)))
            .collect(),
        Kind::Succeed(_) | Kind::Fail(_) => Vec::new(),
    }
}

/// Reads the fields of one state, turning every problem into an error that names it.
struct Fields<'v> {
    state: &'v str,
    map: &'v Map<String, Value>,
}

impl<'v> Fields<'v> {
    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key)
    }

    fn invalid(&self, field: &str, reason: impl Into<String>) -> AslError {
        AslError::invalid(self.state, field, reason)
    }

    fn string(&self, key: &str) -> Result<Option<String>, AslError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(key, "must be a string")),
        }
    }

    fn required_string(&self, key: &str) -> Result<String, AslError> {
        self.string(key)?.ok_or_else(|| self.invalid(key, "is required"))
    }

    fn positive_integer(&self, key: &str) -> Result<Option<u64>, AslError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| self.invalid(key, "must be a positive integer"))
            }
        }
    }

    /// `InputPath`/`OutputPath`: absent is `$`, `null` is `None`.
    fn io_path(&self, key: &str) -> Result<IoPath, AslError> {
        match self.get(key) {
            None => Ok(Some(Path::root())),
            Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Path::parse(text).map(Some).map_err(|reason| self.invalid(key, reason)),
            Some(_) => Err(self.invalid(key, "must be a path string or null")),
        }
    }

    fn path(&self, key: &str) -> Result<Option<Path>, AslError> {
        match self.string(key)? {
            None => Ok(None),
            Some(text) => Path::parse(&text).map(Some).map_err(|reason| self.invalid(key, reason)),
        }
    }

    fn template(&self, key: &str) -> Result<Option<Template>, AslError> {
        self.template_at(self.get(key), key)
    }

    fn template_at(&self, value: Option<&Value>, field: &str) -> Result<Option<Template>, AslError> {
        match value {
            None => Ok(None),
            Some(v @ Value::Object(_)) => {
                Template::compile(v, field).map(Some).map_err(|(field, reason)| self.invalid(&field, reason))
            }
            Some(_) => Err(self.invalid(field, "must be an object")),
        }
    }

    fn result_path(&self) -> Result<ResultPath, AslError> {
        ResultPath::parse(self.get("ResultPath")).map_err(|reason| self.invalid("ResultPath", reason))
    }

    fn transition(&self) -> Result<Transition, AslError> {
        let next = self.string("Next")?;
        let end = match self.get("End") {
            None => false,
            Some(Value::Bool(end)) => *end,
            Some(_) => return Err(self.invalid("End", "must be true or false")),
        };
        match (next, end) {
            (Some(_), true) => Err(self.invalid("End", "cannot be true when `Next` is set")),
            (Some(next), false) => Ok(Transition::Next(next)),
            (None, true) => Ok(Transition::End),
            (None, false) => Err(self.invalid("Next", "is required unless `End` is true")),
        }
    }
}

fn parse_state(name: &str, definition: &Value) -> Result<Kind, AslError> {
    let Value::Object(map) = definition else {
        return Err(AslError::invalid(name, "(state)", "must be an object"));
    };
    let kind = match map.get("Type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(AslError::invalid(name, "Type", "must be a string")),
        None => return Err(AslError::invalid(name, "Type", "is required")),
    };
    if kind == "Parallel" {
        return Err(AslError::UnsupportedStateType { state: name.to_owned(), kind: kind.to_owned() });
    }
    let Some((allowed, unsupported)) = fields_of(kind) else {
        return Err(AslError::invalid(
            name,
            "Type",
            format!("has unknown state type `{kind}`; expected Task, Choice, Map, Pass, Wait, Succeed or Fail"),
        ));
    };
    for key in map.keys() {
        let key = key.as_str();
        if matches!(key, "Type" | "Comment" | "QueryLanguage") || allowed.contains(&key) {
            continue;
        }
        if unsupported.contains(&key) {
            return Err(AslError::unsupported(name, key));
        }
        return Err(AslError::UnknownField { state: name.to_owned(), field: key.to_owned(), kind: kind.to_owned() });
    }
    match map.get("QueryLanguage") {
        None => {}
        Some(Value::String(language)) if language == "JSONPath" => {}
        Some(other) => {
            return Err(AslError::invalid(
                name,
                "QueryLanguage",
                format!("value {other} is not supported by the local runner; only \"JSONPath\" is"),
            ));
        }
    }
    let fields = Fields { state: name, map };
    if let Some(comment) = fields.get("Comment") {
        if !comment.is_string() {
            return Err(fields.invalid("Comment", "must be a string"));
        }
    }
    Ok(match kind {
        "Pass" => Kind::Pass(Pass {
            input_path: fields.io_path("InputPath")?,
            parameters: fields.template("Parameters")?,
            result: fields.get("Result").cloned(),
            result_path: fields.result_path()?,
            output_path: fields.io_path("OutputPath")?,
            transition: fields.transition()?,
        }),
        "Task" => Kind::Task(parse_task(&fields)?),
        "Choice" => Kind::Choice(parse_choice(&fields)?),
        "Wait" => Kind::Wait(parse_wait(&fields)?),
        "Succeed" => Kind::Succeed(Succeed {
            input_path: fields.io_path("InputPath")?,
            output_path: fields.io_path("OutputPath")?,
        }),
        "Fail" => Kind::Fail(Fail {
            error: fail_text(&fields, "Error", "ErrorPath")?,
            cause: fail_text(&fields, "Cause", "CausePath")?,
        }),
        _ => Kind::Map(Box::new(parse_map(&fields)?)),
    })
}

fn parse_task(fields: &Fields<'_>) -> Result<Task, AslError> {
    let timeout_seconds = fields.positive_integer("TimeoutSeconds")?;
    let heartbeat_seconds = fields.positive_integer("HeartbeatSeconds")?;
    if let (Some(timeout), Some(heartbeat)) = (timeout_seconds, heartbeat_seconds) {
        if heartbeat >= timeout {
            return Err(fields.invalid("HeartbeatSeconds", "must be smaller than `TimeoutSeconds`"));
        }
    }
    Ok(Task {
        resource: fields.required_string("Resource")?,
        input_path: fields.io_path("InputPath")?,
        parameters: fields.template("Parameters")?,
        result_selector: fields.template("ResultSelector")?,
        result_path: fields.result_path()?,
        output_path: fields.io_path("OutputPath")?,
        timeout: timeout_seconds.map(Duration::from_secs),
        retry: parse_retry(fields.state, fields.get("Retry"))?,
        catch: parse_catch(fields.state, fields.get("Catch"))?,
        transition: fields.transition()?,
    })
}

fn parse_choice(fields: &Fields<'_>) -> Result<Choice, AslError> {
    let choices = match fields.get("Choices") {
        Some(Value::Array(rules)) if !rules.is_empty() => rules
            .iter()
            .enumerate()
            .map(|(i, rule)| ChoiceRule::parse(fields.state, rule, &format!("Choices[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(fields.invalid("Choices", "must be a non-empty array of choice rules")),
        None => return Err(fields.invalid("Choices", "is required")),
    };
    Ok(Choice {
        input_path: fields.io_path("InputPath")?,
        output_path: fields.io_path("OutputPath")?,
        choices,
        default: fields.string("Default")?,
    })
}

fn parse_wait(fields: &Fields<'_>) -> Result<Wait, AslError> {
    let present: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
        .into_iter()
        .filter(|k| fields.get(k).is_some())
        .collect();
    if let [_, second, ..] = present.as_slice() {
        return Err(fields.invalid(second, "cannot be combined with another wait duration field"));
    }
    let wait_for = match present.first().copied() {
        Some("Seconds") => WaitFor::Seconds(
            fields
                .get("Seconds")
                .and_then(Value::as_u64)
                .ok_or_else(|| fields.invalid("Seconds", "must be a non-negative integer"))?,
        ),
        Some("SecondsPath") => WaitFor::SecondsPath(fields.path("SecondsPath")?.unwrap_or_else(Path::root)),
        Some("Timestamp") => {
            let text = fields.required_string("Timestamp")?;
            WaitFor::Timestamp(
                parse_rfc3339(&text).ok_or_else(|| {
                    fields.invalid("Timestamp", format!("must be an RFC 3339 timestamp, got `{text}`"))
                })?,
            )
        }
        Some("TimestampPath") => WaitFor::TimestampPath(fields.path("TimestampPath")?.unwrap_or_else(Path::root)),
        _ => return Err(fields.invalid("Seconds", "or one of `SecondsPath`, `Timestamp`, `TimestampPath` is required")),
    };
    Ok(Wait {
        input_path: fields.io_path("InputPath")?,
        output_path: fields.io_path("OutputPath")?,
        wait_for,
        transition: fields.transition()?,
    })
}

fn fail_text(fields: &Fields<'_>, literal: &str, path: &str) -> Result<Option<FailText>, AslError> {
    match (fields.string(literal)?, fields.string(path)?) {
        (Some(_), Some(_)) => Err(fields.invalid(path, format!("cannot be combined with `{literal}`"))),
        (Some(text), None) => Ok(Some(FailText::Literal(text))),
        (None, Some(text)) => {
            Expr::parse(&text).map(|e| Some(FailText::Dynamic(e))).map_err(|reason| fields.invalid(path, reason))
        }
        (None, None) => Ok(None),
    }
}

fn parse_map(fields: &Fields<'_>) -> Result<MapState, AslError> {
    let items = match (fields.get("ItemReader"), fields.get("ItemsPath")) {
        (Some(_), Some(_)) => return Err(fields.invalid("ItemsPath", "cannot be combined with `ItemReader`")),
        (Some(reader), None) => Items::Reader(parse_item_reader(fields, reader)?),
        (None, _) => Items::Path(fields.path("ItemsPath")?.unwrap_or_else(Path::root)),
    };
    let item_selector = match (fields.get("ItemSelector"), fields.get("Parameters")) {
        (Some(_), Some(_)) => return Err(fields.invalid("Parameters", "cannot be combined with `ItemSelector`")),
        (Some(_), None) => fields.template("ItemSelector")?,
        (None, _) => fields.template("Parameters")?,
    };
    let (processor_field, processor) = match (fields.get("ItemProcessor"), fields.get("Iterator")) {
        (Some(_), Some(_)) => return Err(fields.invalid("Iterator", "cannot be combined with `ItemProcessor`")),
        (Some(p), None) => ("ItemProcessor", p),
        (None, Some(p)) => ("Iterator", p),
        (None, None) => return Err(fields.invalid("ItemProcessor", "is required")),
    };
    let Value::Object(processor) = processor else {
        return Err(fields.invalid(processor_field, "must be an object"));
    };
    for key in processor.keys() {
        match key.as_str() {
            "StartAt" | "States" | "Comment" => {}
            "ProcessorConfig" if processor_field == "ItemProcessor" => {}
            other => return Err(fields.invalid(&format!("{processor_field}.{other}"), "is not a known field")),
        }
    }
    let distributed = match processor.get("ProcessorConfig") {
        Some(config) => parse_processor_config(fields, config)?,
        None => false,
    };
    let processor = parse_states(processor, Some((fields.state, processor_field)))?;
    let max_concurrency = match fields.get("MaxConcurrency") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| fields.invalid("MaxConcurrency", "must be a non-negative integer"))?,
    };
    let max_concurrency_path = fields.path("MaxConcurrencyPath")?;
    if max_concurrency_path.is_some() && fields.get("MaxConcurrency").is_some() {
        return Err(fields.invalid("MaxConcurrencyPath", "cannot be combined with MaxConcurrency"));
    }
    let label = fields.string("Label")?;
    let result_writer = match fields.get("ResultWriter") {
        None => None,
        Some(_) if !distributed => {
            return Err(fields.invalid(
                "ResultWriter",
                "is only allowed in a Distributed Map (`ItemProcessor.ProcessorConfig.Mode` \"DISTRIBUTED\")",
            ));
        }
        Some(writer) => Some(parse_result_writer(fields, writer)?),
    };
    Ok(MapState {
        input_path: fields.io_path("InputPath")?,
        items,
        item_selector,
        processor,
        max_concurrency,
        max_concurrency_path,
        label,
        distributed,
        result_writer,
        result_selector: fields.template("ResultSelector")?,
        result_path: fields.result_path()?,
        output_path: fields.io_path("OutputPath")?,
        retry: parse_retry(fields.state, fields.get("Retry"))?,
        catch: parse_catch(fields.state, fields.get("Catch"))?,
        transition: fields.transition()?,
    })
}

fn parse_item_reader(fields: &Fields<'_>, reader: &Value) -> Result<ItemReader, AslError> {
    let Value::Object(map) = reader else {
        return Err(fields.invalid("ItemReader", "must be an object"));
    };
    for key in map.keys() {
        match key.as_str() {
            "Resource" | "ReaderConfig" | "Parameters" => {}
            "Arguments" => return Err(AslError::unsupported(fields.state, "ItemReader.Arguments")),
            other => return Err(fields.invalid(&format!("ItemReader.{other}"), "is not a known field")),
        }
    }
    let resource = match map.get("Resource") {
        Some(Value::String(resource)) => resource.clone(),
        Some(_) => return Err(fields.invalid("ItemReader.Resource", "must be a string")),
        None => return Err(fields.invalid("ItemReader.Resource", "is required")),
    };
    let config = match map.get("ReaderConfig") {
        None => Value::Null,
        Some(config @ Value::Object(_)) => config.clone(),
        Some(_) => return Err(fields.invalid("ItemReader.ReaderConfig", "must be an object")),
    };
    let parameters = fields.template_at(map.get("Parameters"), "ItemReader.Parameters")?;
    Ok(ItemReader { resource, config, parameters })
}

/// Parses `ResultWriter` with `Resource` and `Parameters`. `WriterConfig` (the output
/// transformations) is refused: without it AWS writes the full child execution records as a JSON
/// array, which is what the runner writes.
fn parse_result_writer(fields: &Fields<'_>, writer: &Value) -> Result<ResultWriter, AslError> {
    let Value::Object(map) = writer else {
        return Err(fields.invalid("ResultWriter", "must be an object"));
    };
    for key in map.keys() {
        match key.as_str() {
            "Resource" | "Parameters" => {}
            "WriterConfig" | "Arguments" => {
                return Err(AslError::unsupported(fields.state, format!("ResultWriter.{key}")));
            }
            other => return Err(fields.invalid(&format!("ResultWriter.{other}"), "is not a known field")),
        }
    }
    let resource = match map.get("Resource") {
        Some(Value::String(resource)) => resource.clone(),
        Some(_) => return Err(fields.invalid("ResultWriter.Resource", "must be a string")),
        None => return Err(fields.invalid("ResultWriter.Resource", "is required")),
    };
    let parameters = fields
        .template_at(map.get("Parameters"), "ResultWriter.Parameters")?
        .ok_or_else(|| fields.invalid("ResultWriter.Parameters", "is required (it names the bucket)"))?;
    Ok(ResultWriter { resource, parameters })
}

/// Checks `ProcessorConfig`; true when it asks for Distributed mode.
fn parse_processor_config(fields: &Fields<'_>, config: &Value) -> Result<bool, AslError> {
    let field = "ItemProcessor.ProcessorConfig";
    let Value::Object(config) = config else {
        return Err(fields.invalid(field, "must be an object"));
    };
    for (key, value) in config {
        let allowed: &[&str] = match key.as_str() {
            "Mode" => &["INLINE", "DISTRIBUTED"],
            "ExecutionType" => &["STANDARD", "EXPRESS"],
            other => return Err(fields.invalid(&format!("{field}.{other}"), "is not a known field")),
        };
        if !value.as_str().is_some_and(|v| allowed.contains(&v)) {
            return Err(fields.invalid(&format!("{field}.{key}"), format!("must be one of {}", allowed.join(", "))));
        }
    }
    Ok(config.get("Mode").and_then(Value::as_str) == Some("DISTRIBUTED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StateMachine, AslError> {
        StateMachine::parse(text, &BTreeMap::new())
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const NESTED: &str = r#"{
        "StartAt": "Plan",
        "States": {
            "Plan": {"Type": "Task", "Resource": "arn:plan", "Next": "Copy",
                     "Retry": [{"ErrorEquals": ["Lambda.ServiceException", "States.TaskFailed"]}]},
            "Copy": {"Type": "Map", "End": true,
                     "Catch": [{"ErrorEquals": ["CopyFailed"], "Next": "Copy"}],
                     "ItemProcessor": {"StartAt": "One", "States": {
                        "One": {"Type": "Task", "Resource": "arn:copy", "End": true,
                                "Retry": [{"ErrorEquals": ["Lambda.ServiceException"]}]},
                        "Again": {"Type": "Task", "Resource": "arn:plan", "End": true}
                     }}}
        }
    }"#;

    #[test]
    fn listings_cover_nested_processors_and_are_deduplicated() {
        let machine = parse(NESTED).unwrap();
        assert_eq!(machine.state_names(), ["Copy", "Plan"]);
        assert_eq!(machine.resources(), ["arn:copy", "arn:plan"]);
        assert_eq!(machine.error_names(), ["CopyFailed", "Lambda.ServiceException", "States.TaskFailed"]);
        assert!(machine.item_reader_resources().is_empty());
    }

    #[test]
    fn parallel_is_refused() {
        let err = parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Parallel", "Branches": [], "End": true}}}"#);
        assert_eq!(err, "state `P`: state type Parallel is not supported by the local runner");
    }

    #[test]
    fn result_writer_is_only_for_distributed_maps_and_without_writer_config() {
        let map = |config: &str, writer: &str| {
            parse(&format!(
                r#"{{"StartAt": "CopyChunks", "States": {{"CopyChunks": {{"Type": "Map", "End": true,
                    "ResultWriter": {writer},
                    "ItemProcessor": {{{config} "StartAt": "A", "States": {{"A": {{"Type": "Succeed"}}}}}}}}}}}}"#
            ))
        };
        let distributed = r#""ProcessorConfig": {"Mode": "DISTRIBUTED"},"#;
        let writer = r#"{"Resource": "arn:aws:states:::s3:putObject",
                         "Parameters": {"Bucket": "b", "Prefix.$": "States.Format('runs/{}', $$.Execution.Name)"}}"#;
        assert!(map(distributed, writer).is_ok());
        assert_eq!(
            map("", writer).unwrap_err().to_string(),
            "state `CopyChunks`: field `ResultWriter` is only allowed in a Distributed Map \
             (`ItemProcessor.ProcessorConfig.Mode` \"DISTRIBUTED\")"
        );
        let with_config = r#"{"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": "b"},
                              "WriterConfig": {"OutputType": "JSONL"}}"#;
        assert_eq!(
            map(distributed, with_config).unwrap_err().to_string(),
            "state `CopyChunks`: field `ResultWriter.WriterConfig` is not supported by the local runner"
        );
        assert_eq!(
            map(distributed, r#"{"Resource": "arn:aws:states:::s3:putObject"}"#).unwrap_err().to_string(),
            "state `CopyChunks`: field `ResultWriter.Parameters` is required (it names the bucket)"
        );
        assert!(
            map(distributed, r#"{"Resource": "r", "Parameters": {"Bucket.$": "$.a[*]"}}"#)
                .unwrap_err()
                .to_string()
                .starts_with("state `CopyChunks`: field `ResultWriter.Parameters.Bucket.$`"),
        );
    }

    #[test]
    fn other_unsupported_map_fields_are_refused() {
        for field in ["ToleratedFailurePercentage", "ToleratedFailureCount", "ItemBatcher"] {
            let text = format!(
                r#"{{"StartAt": "M", "States": {{"M": {{"Type": "Map", "End": true, "{field}": 1,
                    "ItemProcessor": {{"StartAt": "A", "States": {{"A": {{"Type": "Succeed"}}}}}}}}}}}}"#
            );
            assert_eq!(parse_err(&text), format!("state `M`: field `{field}` is not supported by the local runner"));
        }
    }

    #[test]
    fn unknown_field_is_refused_naming_state_and_field() {
        let err =
            parse_err(r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "Foo": 1}}}"#);
        assert_eq!(err, "state `T`: field `Foo` is not allowed in a Task state");
    }

    #[test]
    fn fields_of_other_state_types_are_refused() {
        let err = parse_err(r#"{"StartAt": "S", "States": {"S": {"Type": "Succeed", "ResultPath": "$.x"}}}"#);
        assert_eq!(err, "state `S`: field `ResultPath` is not allowed in a Succeed state");
        let err = parse_err(r#"{"StartAt": "F", "States": {"F": {"Type": "Fail", "InputPath": "$"}}}"#);
        assert_eq!(err, "state `F`: field `InputPath` is not allowed in a Fail state");
        let err = parse_err(
            r#"{"StartAt": "C", "States": {"C": {"Type": "Choice", "ResultPath": "$",
                "Choices": [{"Variable": "$.a", "IsNull": true, "Next": "C"}]}}}"#,
        );
        assert_eq!(err, "state `C`: field `ResultPath` is not allowed in a Choice state");
        let err =
            parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "ResultSelector": {}, "End": true}}}"#);
        assert_eq!(err, "state `P`: field `ResultSelector` is not allowed in a Pass state");
    }

    #[test]
    fn task_credentials_are_refused() {
        let err = parse_err(
            r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "Credentials": {}}}}"#,
        );
        assert_eq!(err, "state `T`: field `Credentials` is not supported by the local runner");
    }

    #[test]
    fn jsonata_query_language_is_refused() {
        let err = parse_err(r#"{"QueryLanguage": "JSONata", "StartAt": "S", "States": {"S": {"Type": "Succeed"}}}"#);
        assert!(err.starts_with("state machine: field `QueryLanguage` value \"JSONata\" is not supported"), "{err}");
        let err = parse_err(r#"{"StartAt": "S", "States": {"S": {"Type": "Succeed", "QueryLanguage": "JSONata"}}}"#);
        assert!(err.starts_with("state `S`: field `QueryLanguage` value \"JSONata\" is not supported"), "{err}");
        assert!(
            parse(r#"{"QueryLanguage": "JSONPath", "StartAt": "S", "States": {"S": {"Type": "Succeed"}}}"#).is_ok()
        );
    }

    #[test]
    fn unknown_top_level_field_and_state_type_are_refused() {
        let err = parse_err(r#"{"StartAt": "S", "Foo": 1, "States": {"S": {"Type": "Succeed"}}}"#);
        assert_eq!(err, "state machine: field `Foo` is not allowed at the top level of a state machine");
        let err = parse_err(r#"{"StartAt": "S", "States": {"S": {"Type": "Sleep"}}}"#);
        assert!(err.starts_with("state `S`: field `Type` has unknown state type `Sleep`"), "{err}");
    }

    #[test]
    fn transitions_must_name_existing_states() {
        let err = parse_err(r#"{"StartAt": "Nope", "States": {"S": {"Type": "Succeed"}}}"#);
        assert_eq!(err, "state machine: field `StartAt` names state `Nope`, which does not exist");
        let err = parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "Next": "Q"}}}"#);
        assert_eq!(err, "state `P`: field `Next` names state `Q`, which does not exist at the top level");
        let err = parse_err(
            r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
                "Catch": [{"ErrorEquals": ["A"], "Next": "Gone"}]}}}"#,
        );
        assert!(err.starts_with("state `T`: field `Catch[0].Next` names state `Gone`"), "{err}");
        let err = parse_err(
            r#"{"StartAt": "C", "States": {"C": {"Type": "Choice", "Default": "Gone",
                "Choices": [{"Variable": "$.a", "IsNull": true, "Next": "C"}]}}}"#,
        );
        assert!(err.starts_with("state `C`: field `Default` names state `Gone`"), "{err}");
    }

    #[test]
    fn processor_states_are_a_separate_namespace() {
        let err = parse_err(
            r#"{"StartAt": "M", "States": {
                "M": {"Type": "Map", "Next": "After",
                      "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "After"}}}},
                "After": {"Type": "Succeed"}}}"#,
        );
        assert_eq!(
            err,
            "state `M > A`: field `Next` names state `After`, which does not exist in this Map's processor"
        );
        let err = parse_err(
            r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
                "Iterator": {"StartAt": "X", "States": {"A": {"Type": "Succeed"}}}}}}"#,
        );
        assert_eq!(err, "state `M`: field `Iterator.StartAt` names state `X`, which does not exist");
        let err = parse_err(
            r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
                "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "r", "End": true, "Foo": 1}}}}}}"#,
        );
        assert_eq!(err, "state `M > A`: field `Foo` is not allowed in a Task state");
    }

    #[test]
    fn next_and_end_are_exclusive_and_one_is_required() {
        let err = parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "Next": "P", "End": true}}}"#);
        assert_eq!(err, "state `P`: field `End` cannot be true when `Next` is set");
        let err = parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass"}}}"#);
        assert_eq!(err, "state `P`: field `Next` is required unless `End` is true");
        let err = parse_err(r#"{"StartAt": "S", "States": {"S": {"Type": "Succeed", "End": true}}}"#);
        assert_eq!(err, "state `S`: field `End` is not allowed in a Succeed state");
    }

    #[test]
    fn unknown_intrinsic_is_refused_naming_the_state() {
        let err = parse_err(
            r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true,
                "Parameters": {"x.$": "States.Nope($.a)"}}}}"#,
        );
        assert_eq!(err, "state `P`: field `Parameters.x.$` calls unknown intrinsic function `States.Nope`");
    }

    #[test]
    fn malformed_paths_are_refused_with_their_field() {
        let err =
            parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true, "InputPath": "$.a[*]"}}}"#);
        assert!(err.starts_with("state `P`: field `InputPath` uses a wildcard"), "{err}");
        let err =
            parse_err(r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true, "ResultPath": "$$.x"}}}"#);
        assert!(err.starts_with("state `P`: field `ResultPath` must be a reference path"), "{err}");
    }

    #[test]
    fn wait_needs_exactly_one_duration() {
        let err = parse_err(r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "End": true}}}"#);
        assert!(err.starts_with("state `W`: field `Seconds` or one of"), "{err}");
        let err = parse_err(
            r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "End": true, "Seconds": 1, "SecondsPath": "$.s"}}}"#,
        );
        assert_eq!(err, "state `W`: field `SecondsPath` cannot be combined with another wait duration field");
        let err =
            parse_err(r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "End": true, "Timestamp": "tomorrow"}}}"#);
        assert!(err.starts_with("state `W`: field `Timestamp` must be an RFC 3339 timestamp"), "{err}");
    }

    #[test]
    fn map_rejects_conflicting_and_malformed_fields() {
        let processor = r#""ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}"#;
        let map = |extra: &str| {
            parse_err(&format!(r#"{{"StartAt": "M", "States": {{"M": {{"Type": "Map", "End": true, {extra}}}}}}}"#))
        };
        assert_eq!(
            map(&format!(r#""ItemsPath": "$.a", "ItemReader": {{"Resource": "r"}}, {processor}"#)),
            "state `M`: field `ItemsPath` cannot be combined with `ItemReader`"
        );
        assert_eq!(
            map(&format!(r#""ItemSelector": {{}}, "Parameters": {{}}, {processor}"#)),
            "state `M`: field `Parameters` cannot be combined with `ItemSelector`"
        );
        assert_eq!(map(r#""ItemsPath": "$.a""#), "state `M`: field `ItemProcessor` is required");
        assert_eq!(
            map(&format!(r#""MaxConcurrency": -1, {processor}"#)),
            "state `M`: field `MaxConcurrency` must be a non-negative integer"
        );
        assert_eq!(
            map(
                r#""ItemProcessor": {"ProcessorConfig": {"Mode": "FAST"}, "StartAt": "A", "States": {"A": {"Type": "Succeed"}}}"#
            ),
            "state `M`: field `ItemProcessor.ProcessorConfig.Mode` must be one of INLINE, DISTRIBUTED"
        );
        assert_eq!(
            map(&format!(r#""ItemReader": {{"Resource": "r", "Arguments": {{}}}}, {processor}"#)),
            "state `M`: field `ItemReader.Arguments` is not supported by the local runner"
        );
    }

    #[test]
    fn distributed_map_with_reader_and_labels_parses() {
        let machine = parse(
            r#"{"StartAt": "M", "TimeoutSeconds": 60, "Version": "1.0", "Comment": "c", "States": {"M": {
                "Type": "Map", "End": true, "Label": "Copy", "MaxConcurrency": 4,
                "ItemReader": {"Resource": "arn:aws:states:::s3:getObject",
                               "ReaderConfig": {"InputType": "JSON"},
                               "Parameters": {"Bucket": "b", "Key.$": "$.key"}},
                "ItemSelector": {"i.$": "$$.Map.Item.Index"},
                "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                                  "StartAt": "A", "States": {"A": {"Type": "Succeed"}}}}}}"#,
        )
        .unwrap();
        assert_eq!(machine.item_reader_resources(), ["arn:aws:states:::s3:getObject"]);
        assert_eq!(machine.timeout(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn heartbeat_must_be_shorter_than_timeout() {
        let err = parse_err(
            r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
                "TimeoutSeconds": 10, "HeartbeatSeconds": 10}}}"#,
        );
        assert_eq!(err, "state `T`: field `HeartbeatSeconds` must be smaller than `TimeoutSeconds`");
    }

    #[test]
    fn fail_refuses_both_literal_and_path() {
        let err = parse_err(r#"{"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}}}"#);
        assert_eq!(err, "state `F`: field `ErrorPath` cannot be combined with `Error`");
    }

    #[test]
    fn invalid_json_is_reported() {
        assert!(parse_err("{").starts_with("state machine definition is not valid json"));
    }
}
