//! Config problems: what is wrong, where (file, route or section, field), all reported at once.
//!
//! Validation never stops at the first mistake; it collects every [`ConfigProblem`] into
//! [`ConfigErrors`], which `shardgate check-config` prints one per line.

use std::fmt;

/// Where in the config a problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemScope {
    /// The file as a whole (it could not be read or is not TOML).
    File,
    /// A top-level section such as `[runtime]` or `[proxy]`.
    Section(String),
    /// A route, by name (or by index when it has no usable name).
    Route(String),
}

/// One thing wrong with a config, precise enough for a user to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the config came from (`<embedded default>` for the built-in one).
    pub file: String,
    /// The section or route the problem is in.
    pub scope: ProblemScope,
    /// The dotted field path inside the scope, e.g. `match.ports` (may be empty).
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        match &self.scope {
            ProblemScope::File => {}
            ProblemScope::Section(s) => write!(f, "[{s}] ")?,
            ProblemScope::Route(r) => write!(f, "route `{r}`: ")?,
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one config; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{n} config problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Collects problems for one file while validating.
#[derive(Debug)]
pub(crate) struct ProblemList {
    file: String,
    problems: Vec<ConfigProblem>,
}

impl ProblemList {
    pub(crate) fn new(file: &str) -> Self {
        ProblemList { file: file.to_string(), problems: Vec::new() }
    }

    pub(crate) fn push(&mut self, scope: ProblemScope, field: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            file: self.file.clone(),
            scope,
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn route(&mut self, route: &str, field: &str, message: impl Into<String>) {
        self.push(ProblemScope::Route(route.to_string()), field, message);
    }

    pub(crate) fn section(&mut self, section: &str, field: &str, message: impl Into<String>) {
        self.push(ProblemScope::Section(section.to_string()), field, message);
    }

    pub(crate) fn len(&self) -> usize {
        self.problems.len()
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors { problems: self.problems })
        }
    }
}
