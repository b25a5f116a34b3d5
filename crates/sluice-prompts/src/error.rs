//! What can go wrong: loading the templates (the operator's problem) and rendering one (usually the
//! caller's).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::prompt::VarType;

// === impl Problem ===

/// One problem found in a template file, reported as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as found under the prompts directory.
    pub file: PathBuf,
    /// The 1-based line in the file, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

// === impl LoadError ===

/// Why the prompts directory could not be loaded: every problem found, not just the first, so one edit
/// can fix them all. Displayed as one `file:line: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The problems, in file order, then line order within a file.
    pub problems: Vec<Problem>,
}

impl LoadError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        Self { problems }
    }

    /// The problems found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

// === impl RenderError ===

/// Why a prompt could not be rendered for a request.
///
/// `Missing`, `Unknown`, `WrongType` and `NotAllowed` are the caller's mistakes and name the variable
/// (a 400 with `param = "variables.NAME"`, see [`RenderError::variable`]). `Render` and `TooLarge` come
/// from running the template on the caller's values (a value the template cannot use, a loop the
/// values make too long); their messages cite the template, never server internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A required variable was not given.
    #[error("missing required variable `{name}`")]
    Missing {
        /// The variable.
        name: String,
    },
    /// A variable the prompt does not declare was given.
    #[error("unknown variable `{name}`: this prompt does not declare it")]
    Unknown {
        /// The variable.
        name: String,
    },
    /// A variable's value has the wrong JSON type.
    #[error("variable `{name}` must be of type {expected}, got {got}")]
    WrongType {
        /// The variable.
        name: String,
        /// The declared type.
        expected: VarType,
        /// The JSON type given: `string`, `integer`, `number`, `boolean`, `array`, `object` or `null`.
        got: &'static str,
    },
    /// A string variable with an `enum` got a value outside it.
    #[error("variable `{name}` must be one of {}", .allowed.join(", "))]
    NotAllowed {
        /// The variable.
        name: String,
        /// The values it accepts.
        allowed: Vec<String>,
    },
    /// The template failed while rendering (an undefined attribute, a filter applied to the wrong
    /// type, the fuel bound on its steps exhausted...).
    #[error("the prompt could not be rendered: {message}")]
    Render {
        /// What went wrong, with the message and line of the template.
        message: String,
    },
    /// The rendered messages together exceed the output bound.
    #[error("the rendered prompt exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
}

impl RenderError {
    /// The variable the error is about, if it is about one.
    pub fn variable(&self) -> Option<&str> {
        match self {
            RenderError::Missing { name }
            | RenderError::Unknown { name }
            | RenderError::WrongType { name, .. }
            | RenderError::NotAllowed { name, .. } => Some(name),
            RenderError::Render { .. } | RenderError::TooLarge { .. } => None,
        }
    }
}
