//! Errors of loading and evaluating Rego.
//!
//! regorus reports a problem as text with a `--> file:line:col` marker and a
//! caret under the offending column. Operators need the position as data
//! (the API returns it, the CLI prints `file:line:col: message` like a
//! compiler), so [`Position::from_regorus`] lifts it out of that text; the
//! full text stays in `detail` for a human.

use std::fmt;

/// Where in a module (or a data file) something went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl Position {
    /// Finds the last `--> file:line:col` marker in a regorus message.
    pub(crate) fn from_regorus(text: &str) -> Option<Self> {
        let at = text.rfind("--> ")?;
        let marker = text[at + 4..].lines().next()?.trim_end();
        let mut parts = marker.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?.to_owned();
        Some(Self { file, line, column })
    }
}

/// The one-line message of a regorus error: the text after the last
/// `error: `, or the whole text when there is no such marker.
pub(crate) fn headline(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text);
    last.strip_prefix("error: ")
        .unwrap_or(last)
        .trim()
        .to_owned()
}

/// Why a policy set could not be built. The set in force is untouched.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A module does not parse (or is too large for the parser's limits).
    #[error("{}: {message}", location(position.as_ref(), file))]
    Parse {
        file: String,
        position: Option<Position>,
        message: String,
        /// regorus's full report, with the source line and a caret.
        detail: String,
    },
    /// The modules parse but do not compile together: unsafe variables,
    /// conflicting rules, recursion, a bad import.
    #[error("{}: {message}", location(position.as_ref(), "policy"))]
    Compile {
        position: Option<Position>,
        message: String,
        detail: String,
    },
    /// A data document is not valid JSON, or is not an object.
    #[error("{file}:{line}:{column}: {message}")]
    Data {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Two data documents disagree at the same path.
    #[error("{file}: data conflicts with data loaded before: {message}")]
    DataConflict { file: String, message: String },
    /// A module or data document is over the configured size.
    #[error("{file}: {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        file: String,
        size: usize,
        max: usize,
    },
    /// A module uses a function that neither Rego, regorus nor Umbra provides.
    #[error("{position}: unknown function {name}")]
    UnknownFunction { name: String, position: Position },
    /// The set holds more modules than the configured limit.
    #[error("{count} modules is over the limit of {max}")]
    TooManyModules { count: usize, max: usize },
    /// Two modules were given the same file name.
    #[error("{file}: a module with this name is already loaded")]
    DuplicateModule { file: String },
}

fn location(position: Option<&Position>, fallback: &str) -> String {
    position.map_or_else(|| fallback.to_owned(), ToString::to_string)
}

impl LoadError {
    /// Where the problem is, when it is known.
    pub fn position(&self) -> Option<Position> {
        match self {
            LoadError::Parse { position, .. } | LoadError::Compile { position, .. } => {
                position.clone()
            }
            LoadError::UnknownFunction { position, .. } => Some(position.clone()),
            LoadError::Data {
                file, line, column, ..
            } => Some(Position {
                file: file.clone(),
                line: u32::try_from(*line).unwrap_or(u32::MAX),
                column: u32::try_from(*column).unwrap_or(u32::MAX),
            }),
            _ => None,
        }
    }

    pub(crate) fn parse(file: &str, err: &dyn fmt::Display) -> Self {
        let detail = format!("{err:#}");
        LoadError::Parse {
            file: file.to_owned(),
            position: Position::from_regorus(&detail),
            message: headline(&detail),
            detail,
        }
    }

    pub(crate) fn compile(err: &dyn fmt::Display) -> Self {
        let detail = format!("{err:#}");
        LoadError::Compile {
            position: Position::from_regorus(&detail),
            message: headline(&detail),
            detail,
        }
    }
}

/// Why an evaluation produced no answer. Callers deny (and audit) on any of
/// these: an error is never "allow".
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The input document is over the configured size.
    #[error("input of {size} bytes is over the limit of {max} bytes")]
    InputTooLarge { size: usize, max: usize },
    /// The input is not valid JSON.
    #[error("input is not valid JSON: line {line}, column {column}: {message}")]
    BadInput {
        line: usize,
        column: usize,
        message: String,
    },
    /// The query is over the configured size.
    #[error("query of {size} bytes is over the limit of {max} bytes")]
    QueryTooLarge { size: usize, max: usize },
    /// Evaluation ran past the configured time limit.
    #[error("evaluation exceeded its time limit: {0}")]
    Timeout(String),
    /// The query does not parse, or evaluation failed: a builtin error in
    /// strict mode, a conflict (a complete rule with two values), a runtime
    /// type error, a call of a function nobody provides (`io.jwt.decode`).
    /// An error located in the query itself has the file `<query>`.
    #[error("evaluation failed: {message}")]
    Eval {
        position: Option<Position>,
        message: String,
        detail: String,
    },
    /// The Umbra decision document is not `{allow, conditions, reasons}`.
    #[error("{query} is not an Umbra decision: {message}")]
    NotADecision { query: String, message: String },
}

impl EvalError {
    pub(crate) fn eval(err: &dyn fmt::Display) -> Self {
        let detail = format!("{err:#}");
        let message = headline(&detail);
        if detail.contains("execution exceeded time limit") || detail.contains("time limit") {
            return EvalError::Timeout(message);
        }
        EvalError::Eval {
            position: Position::from_regorus(&detail),
            message,
            detail,
        }
    }

    /// A stable reason code for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::InputTooLarge { .. } => "rego_input_too_large",
            EvalError::BadInput { .. } => "rego_bad_input",
            EvalError::QueryTooLarge { .. } => "rego_query_too_large",
            EvalError::Timeout(_) => "rego_timeout",
            EvalError::Eval { .. } => "rego_eval_error",
            EvalError::NotADecision { .. } => "rego_not_a_decision",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_out_of_regorus_reports() {
        let text =
            "\n--> policies/a.rego:7:12\n  |\n7 | allow {\n  |       ^\nerror: expecting `if`";
        assert_eq!(
            Position::from_regorus(text),
            Some(Position {
                file: "policies/a.rego".into(),
                line: 7,
                column: 12
            })
        );
        assert_eq!(headline(text), "expecting `if`");
        // A Windows-style path with a drive colon still splits from the right.
        let p = Position::from_regorus("--> C:\\p\\a.rego:1:2\nerror: x");
        assert_eq!(p.map(|p| p.file), Some("C:\\p\\a.rego".to_owned()));
        assert_eq!(Position::from_regorus("no marker"), None);
        assert_eq!(Position::from_regorus("--> a.rego:x:1"), None);
    }
}
