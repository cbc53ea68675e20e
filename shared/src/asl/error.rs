//! Errors in a state machine *definition*.
//!
//! Everything that goes wrong while running is a Step Functions failure (an [`Outcome::Failed`]
//! that `Catch` can route), not one of these. Every message names where in the definition the
//! problem is, so that a user can fix the file without reading the runner's code.
//!
//! [`Outcome::Failed`]: super::Outcome::Failed

/// A definition the local runner cannot or will not run.
#[derive(Debug, thiserror::Error)]
pub enum AslError {
    /// The text (after substitutions) is not JSON.
    #[error("state machine definition is not valid json: {source}")]
    Json {
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A `${Name}` placeholder has no value in the substitutions.
    #[error("definition substitution `${{{name}}}` has no value; pass it as a substitution")]
    MissingSubstitution {
        /// The placeholder's name, without `${` and `}`.
        name: String,
    },

    /// A top-level field is missing, malformed or unsupported.
    #[error("state machine: field `{field}` {reason}")]
    Definition {
        /// The top-level field, e.g. `StartAt`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A state type that ASL defines but the local runner does not implement.
    #[error("state `{state}`: state type {kind} is not supported by the local runner")]
    UnsupportedStateType {
        /// The state's name; `Outer > Inner` inside a Map.
        state: String,
        /// The value of `Type`.
        kind: String,
    },

    /// A field that ASL defines for this state but the local runner does not implement.
    #[error("state `{state}`: field `{field}` is not supported by the local runner")]
    UnsupportedField {
        /// The state's name; `Outer > Inner` inside a Map.
        state: String,
        /// The field, e.g. `ResultWriter` or `Retry[0].Foo`.
        field: String,
    },

    /// A field that this kind of state does not have (a typo, or a field of another type).
    #[error("state `{state}`: field `{field}` is not allowed in a {kind} state")]
    UnknownField {
        /// The state's name; `Outer > Inner` inside a Map.
        state: String,
        /// The offending field.
        field: String,
        /// The state's `Type`.
        kind: String,
    },

    /// A field is missing, has the wrong type, or has a value the runner refuses.
    #[error("state `{state}`: field `{field}` {reason}")]
    InvalidField {
        /// The state's name; `Outer > Inner` inside a Map.
        state: String,
        /// The field, possibly nested, e.g. `Parameters.Key.$` or `Choices[1].Next`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl AslError {
    /// Shorthand for [`AslError::InvalidField`].
    pub(crate) fn invalid(state: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField { state: state.to_owned(), field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`AslError::UnsupportedField`].
    pub(crate) fn unsupported(state: &str, field: impl Into<String>) -> Self {
        Self::UnsupportedField { state: state.to_owned(), field: field.into() }
    }

    /// Shorthand for [`AslError::Definition`].
    pub(crate) fn definition(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Definition { field: field.into(), reason: reason.into() }
    }
}
