//! Rego, OPA-compatible, on regorus.
//!
//! A [`PolicySet`] is a set of modules and data documents that has been
//! parsed *and compiled* (regorus's analysis and scheduling) before anyone
//! can query it: a set that exists is a set that loads. Building one never
//! touches the set in force, so the caller switches atomically by swapping an
//! `Arc<PolicySet>` once [`PolicySetBuilder::build`] succeeds; a module that
//! fails to parse or compile leaves the old set serving, and the error names
//! its file, line and column.
//!
//! Evaluation clones the compiled engine (regorus keeps modules, data and
//! the compiled schedule behind `Arc`s, so the clone copies pointers and a
//! few small tables) and evaluates on the clone, so a `PolicySet` is shared
//! by every thread without a lock and no evaluation sees another's input.
//!
//! Results follow OPA: a query yields a list of results, an undefined query
//! yields none (`opa eval` prints `{}`), and a path lookup
//! ([`PolicySet::eval_path`]) yields the value or nothing, as the OPA Data
//! API's `{"result": …}` or `{}`. Builtins behave as in OPA's default
//! (non-strict) mode: a builtin error makes its expression undefined, so a
//! rule with `default allow := false` answers `false`. Anything else that
//! goes wrong is an [`EvalError`], on which callers deny.
//!
//! Layout: [`error`] (load and evaluation errors with positions),
//! [`builtins`] (OPA builtins regorus lacks, added as extensions),
//! [`decision`](mod@decision) (the `data.umbra.authz.decision` contract),
//! [`vm`](mod@vm) (rule paths compiled to bytecode, opt-in).

pub mod builtins;
pub mod decision;
pub mod error;
mod vm;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, PolicyLengthConfig, Value};
use serde::Serialize;

pub use error::{EvalError, LoadError, Position};

/// Which Rego syntax a module is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegoVersion {
    /// Rego v1 (OPA 1.x): `if`, `contains`, `some … in` are keywords.
    V1,
    /// Rego v0 (OPA 0.x without `import rego.v1`), e.g. seed 001's
    /// `allow { … }`; `opa eval --v0-compatible`.
    V0,
    /// v1 if the module parses as v1, else v0; a module that parses as
    /// neither reports its v1 error.
    #[default]
    Auto,
}

/// Size and time limits. The defaults suit access decisions: inputs are a
/// few kilobytes and a decision that takes 100 ms is a broken policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest input document, as JSON bytes.
    pub max_input_bytes: usize,
    /// Largest query string.
    pub max_query_bytes: usize,
    /// Largest module source or data document.
    pub max_file_bytes: usize,
    /// Most modules in one set.
    pub max_modules: usize,
    /// Wall-clock limit of one evaluation.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 1 << 20,
            max_query_bytes: 4096,
            max_file_bytes: 4 << 20,
            max_modules: 1000,
            timeout: Duration::from_millis(100),
        }
    }
}

/// Collects modules and data, then compiles them into a [`PolicySet`].
pub struct PolicySetBuilder {
    engine: Engine,
    strict: bool,
    bytecode: bool,
    limits: Limits,
    modules: Vec<ModuleInfo>,
    data_files: Vec<String>,
}

/// A loaded module, for listings (`GET /v1/policies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// The name it was loaded under (a file name or a policy id).
    pub file: String,
    /// `data.`-prefixed package path, e.g. `data.service_auth`.
    pub package: String,
    /// The syntax it was parsed with.
    pub v0: bool,
}

impl Default for PolicySetBuilder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl PolicySetBuilder {
    pub fn new(limits: Limits) -> Self {
        let mut engine = Engine::new();
        // OPA's default: a builtin error makes the expression undefined.
        engine.set_strict_builtin_errors(false);
        engine.set_policy_length_config(length_config(limits.max_file_bytes));
        engine.set_execution_timer_config(timer_config(&limits));
        Self {
            engine,
            strict: false,
            bytecode: false,
            limits,
            modules: Vec::new(),
            data_files: Vec::new(),
        }
    }

    /// `opa eval --strict-builtin-errors`: builtin errors fail the evaluation
    /// instead of making the expression undefined.
    pub fn strict_builtin_errors(mut self, strict: bool) -> Self {
        self.engine.set_strict_builtin_errors(strict);
        self.strict = strict;
        self
    }

    /// Evaluates rule paths on regorus's bytecode VM, each compiled once on
    /// first use (see [`vm`](mod@vm)), instead of its interpreter: 2–4× fewer
    /// instructions per evaluation on the seeds' policies. Off by default,
    /// because the VM does not report every evaluation error OPA does: where
    /// a complete rule, a partial object or an object comprehension produces
    /// two values for one key, OPA fails the evaluation and the VM answers
    /// with one of them; where a function does, the VM answers undefined. On
    /// policies free of such errors the answers are the same.
    pub fn bytecode(mut self, on: bool) -> Self {
        self.bytecode = on;
        self
    }

    /// Adds a module. `file` names it in errors and listings and must be
    /// unique in the set.
    pub fn add_module(
        &mut self,
        file: &str,
        source: &str,
        version: RegoVersion,
    ) -> Result<&ModuleInfo, LoadError> {
        if source.len() > self.limits.max_file_bytes {
            return Err(LoadError::TooLarge {
                file: file.to_owned(),
                size: source.len(),
                max: self.limits.max_file_bytes,
            });
        }
        if self.modules.len() >= self.limits.max_modules {
            return Err(LoadError::TooManyModules {
                count: self.modules.len() + 1,
                max: self.limits.max_modules,
            });
        }
        if self.modules.iter().any(|m| m.file == file) {
            return Err(LoadError::DuplicateModule {
                file: file.to_owned(),
            });
        }
        let (package, v0) = match version {
            RegoVersion::V1 => (self.parse(file, source, false)?, false),
            RegoVersion::V0 => (self.parse(file, source, true)?, true),
            RegoVersion::Auto => match self.parse(file, source, false) {
                Ok(p) => (p, false),
                Err(v1_err) => match self.parse(file, source, true) {
                    Ok(p) => (p, true),
                    Err(_) => return Err(v1_err),
                },
            },
        };
        self.modules.push(ModuleInfo {
            file: file.to_owned(),
            package,
            v0,
        });
        let added = self.modules.len() - 1;
        Ok(&self.modules[added])
    }

    fn parse(&mut self, file: &str, source: &str, v0: bool) -> Result<String, LoadError> {
        self.engine.set_rego_v0(v0);
        let result = self.engine.add_policy(file.to_owned(), source.to_owned());
        // Queries are always parsed as v1; only modules may be v0.
        self.engine.set_rego_v0(false);
        result.map_err(|e| LoadError::parse(file, &e))
    }

    /// Merges a JSON data document at the root of `data` (as `opa eval -d
    /// file.json` does). It must be an object.
    pub fn add_data_json(&mut self, file: &str, json: &str) -> Result<(), LoadError> {
        if json.len() > self.limits.max_file_bytes {
            return Err(LoadError::TooLarge {
                file: file.to_owned(),
                size: json.len(),
                max: self.limits.max_file_bytes,
            });
        }
        let value: Value = serde_json::from_str(json).map_err(|e| LoadError::Data {
            file: file.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        self.add_data_value(file, value)
    }

    /// Merges a data document given as a value.
    pub fn add_data(&mut self, file: &str, data: serde_json::Value) -> Result<(), LoadError> {
        let value: Value = serde_json::from_value(data).map_err(|e| LoadError::Data {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        self.add_data_value(file, value)
    }

    fn add_data_value(&mut self, file: &str, value: Value) -> Result<(), LoadError> {
        if !matches!(value, Value::Object(_)) {
            return Err(LoadError::Data {
                file: file.to_owned(),
                line: 1,
                column: 1,
                message: "a data document must be a JSON object".into(),
            });
        }
        self.engine
            .add_data(value)
            .map_err(|e| LoadError::DataConflict {
                file: file.to_owned(),
                message: error::headline(&format!("{e:#}")),
            })?;
        self.data_files.push(file.to_owned());
        Ok(())
    }

    /// Compiles the modules together. Errors here are the ones only the whole
    /// set can show: unsafe variables, conflicting defaults, bad imports.
    pub fn build(mut self) -> Result<PolicySet, LoadError> {
        builtins::register(&mut self.engine, self.strict);
        // Evaluating a constant query runs regorus's analysis and scheduling
        // of every module (what OPA calls compiling) and leaves the engine
        // prepared, so clones start from the compiled state.
        self.engine
            .eval_query("true".to_owned(), false)
            .map_err(|e| LoadError::compile(&e))?;
        Ok(PolicySet {
            engine: self.engine,
            pool: Arc::default(),
            programs: self.bytecode.then(Arc::default),
            strict: self.strict,
            limits: self.limits,
            modules: self.modules,
            data_files: self.data_files,
        })
    }
}

fn timer_config(limits: &Limits) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: limits.timeout,
        // Checked every 64 units of work: cheap, and fine-grained enough
        // that a runaway loop stops within a few microseconds of the limit.
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

fn length_config(max_file_bytes: usize) -> PolicyLengthConfig {
    let defaults = PolicyLengthConfig::default();
    PolicyLengthConfig {
        max_file_bytes: NonZeroUsize::new(max_file_bytes).unwrap_or(defaults.max_file_bytes),
        ..defaults
    }
}

/// Compiled modules and data, ready to evaluate from any thread.
#[derive(Clone, Debug)]
pub struct PolicySet {
    engine: Engine,
    /// Engines that evaluated a rule path and came back clean, for reuse:
    /// regorus resets an engine's evaluation state before each rule, and
    /// reusing one saves the clone. Only the rule-path route uses the pool,
    /// and an engine that failed is dropped, not returned.
    pool: Arc<Mutex<Vec<Engine>>>,
    /// Rule paths compiled to bytecode, tried before the interpreter, when
    /// [`PolicySetBuilder::bytecode`] asked for them.
    programs: Option<Arc<vm::Programs>>,
    /// `--strict-builtin-errors`, for the compiled programs.
    strict: bool,
    limits: Limits,
    modules: Vec<ModuleInfo>,
    data_files: Vec<String>,
}

/// Engines kept per set; more are cloned and dropped under load.
const POOL_SIZE: usize = 32;

/// The results of a query, shaped as `opa eval` prints them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueryResults {
    /// One entry per way the query is satisfied; empty when undefined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub result: Vec<QueryResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult {
    pub expressions: Vec<Expression>,
    /// Variables the query bound, e.g. `x` in `x := data.a.b`.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub bindings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expression {
    pub value: serde_json::Value,
    pub text: String,
    pub location: Location,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub row: u32,
    pub col: u32,
}

impl QueryResults {
    /// No result: OPA's "undefined".
    pub fn is_undefined(&self) -> bool {
        self.result.is_empty()
    }

    /// The value of a single-expression query with exactly one result, the
    /// common case (`data.pkg.rule`).
    pub fn single_value(&self) -> Option<&serde_json::Value> {
        match self.result.as_slice() {
            [only] => only.expressions.first().map(|e| &e.value),
            _ => None,
        }
    }
}

/// An input document checked against the size limit and parsed once, so one
/// input can be evaluated against several queries.
#[derive(Clone, Debug)]
pub struct Input(Value);

impl PolicySet {
    /// An empty set: every query on `data.…` is undefined. The state before
    /// any policy is loaded.
    pub fn empty() -> Self {
        // Nothing to compile in an empty set, so this cannot fail; fall back
        // to an unprepared engine rather than panic if regorus disagrees.
        PolicySetBuilder::default()
            .build()
            .unwrap_or_else(|_| PolicySet {
                engine: Engine::new(),
                pool: Arc::default(),
                programs: None,
                strict: false,
                limits: Limits::default(),
                modules: Vec::new(),
                data_files: Vec::new(),
            })
    }

    pub fn modules(&self) -> &[ModuleInfo] {
        &self.modules
    }

    pub fn data_files(&self) -> &[String] {
        &self.data_files
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The merged data document (`GET /v1/data` without input).
    pub fn data(&self) -> serde_json::Value {
        to_json(&self.engine.get_data())
    }

    /// Parses a JSON input document, refusing it when oversized before
    /// reading a byte of it.
    pub fn input_from_json(&self, json: &str) -> Result<Input, EvalError> {
        self.check_input_size(json.len())?;
        // regorus's own parser stores objects in the compact form its
        // evaluator reads fastest; serde_json only explains a failure.
        Value::from_json_str(json).map(Input).map_err(|_| {
            let (line, column, message) = match serde_json::from_str::<serde_json::Value>(json) {
                Err(e) => (e.line(), e.column(), e.to_string()),
                Ok(_) => (0, 0, "not accepted by the Rego engine".to_owned()),
            };
            EvalError::BadInput {
                line,
                column,
                message,
            }
        })
    }

    /// Converts any serializable input (a [`DecisionInput`], a
    /// `serde_json::Value`), refusing it when its JSON form is oversized.
    ///
    /// [`DecisionInput`]: crate::decision::DecisionInput
    pub fn input_from<T: Serialize + ?Sized>(&self, input: &T) -> Result<Input, EvalError> {
        let json = serde_json::to_string(input).map_err(|e| EvalError::BadInput {
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        self.input_from_json(&json)
    }

    fn check_input_size(&self, size: usize) -> Result<(), EvalError> {
        if size > self.limits.max_input_bytes {
            return Err(EvalError::InputTooLarge {
                size,
                max: self.limits.max_input_bytes,
            });
        }
        Ok(())
    }

    /// Evaluates a query, as `opa eval -d … -i … QUERY` does.
    pub fn eval_query(
        &self,
        query: &str,
        input: Option<&Input>,
    ) -> Result<QueryResults, EvalError> {
        if query.len() > self.limits.max_query_bytes {
            return Err(EvalError::QueryTooLarge {
                size: query.len(),
                max: self.limits.max_query_bytes,
            });
        }
        // A rule path (`data.pkg.rule`, the common case) evaluates without
        // parsing and scheduling a query, several times faster. Anything
        // else (a package, plain data, an expression), or a rule path that
        // fails, goes through the full query, which gives the same answer or
        // the precise error.
        let rule_value = if is_rule_path(query) {
            match self.eval_rule(&canonical_rule_path(query), input) {
                Ok(v) => Some(v),
                // Running out of time again on the full query helps no one.
                Err(e @ EvalError::Timeout(_)) => return Err(e),
                Err(_) => None,
            }
        } else {
            None
        };
        if let Some(value) = rule_value {
            return Ok(QueryResults {
                result: match value {
                    Value::Undefined => Vec::new(),
                    v => vec![QueryResult {
                        expressions: vec![Expression {
                            value: to_json(&v),
                            text: query.to_owned(),
                            location: Location { row: 1, col: 1 },
                        }],
                        bindings: serde_json::Map::new(),
                    }],
                },
            });
        }
        let mut engine = self.engine.clone();
        if let Some(input) = input {
            engine.set_input(input.0.clone());
        }
        let results = engine
            .eval_query(query.to_owned(), false)
            .map_err(|e| query_error(&e))?;
        Ok(QueryResults {
            result: results
                .result
                .into_iter()
                .map(|r| QueryResult {
                    expressions: r
                        .expressions
                        .into_iter()
                        .map(|e| Expression {
                            value: to_json(&e.value),
                            text: e.text.to_string(),
                            location: Location {
                                row: e.location.row,
                                col: e.location.col,
                            },
                        })
                        .collect(),
                    bindings: match to_json(&r.bindings) {
                        serde_json::Value::Object(map) => map,
                        _ => serde_json::Map::new(),
                    },
                })
                .collect(),
        })
    }

    /// Evaluates a rule path: its compiled program when it has one, else (or
    /// when the program fails) on a pooled engine.
    fn eval_rule(&self, path: &str, input: Option<&Input>) -> Result<Value, EvalError> {
        let input_value = || input.map_or(Value::Undefined, |i| i.0.clone());
        let timer = timer_config(&self.limits);
        if let Some(program) = self
            .programs
            .as_ref()
            .and_then(|p| p.get(path, &self.engine, timer, self.strict))
        {
            match program.run(input_value()) {
                Ok(value) => return Ok(value),
                Err(vm::RunError::Timeout(e)) => return Err(EvalError::eval(&e)),
                Err(vm::RunError::Other) => {}
            }
        }
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut engine = pooled.unwrap_or_else(|| self.engine.clone());
        engine.set_input(input_value());
        let value = engine
            .eval_rule(path.to_owned())
            .map_err(|e| EvalError::eval(&e))?;
        // Drop the input now rather than keep it alive in the pool.
        engine.set_input(Value::Undefined);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_SIZE
        {
            pool.push(engine);
        }
        Ok(value)
    }

    /// The document at a `data` path, as the OPA Data API answers
    /// `POST /v1/data/{path}`: `Some(value)` for `{"result": value}`, `None`
    /// for `{}`. `path` is the URL path after `/v1/data/` (`service_auth/allow`),
    /// already percent-decoded; each segment is quoted into the query, so a
    /// segment cannot inject Rego.
    pub fn eval_path(
        &self,
        path: &str,
        input: Option<&Input>,
    ) -> Result<Option<serde_json::Value>, EvalError> {
        let mut results = self.eval_query(&data_query(path), input)?;
        Ok(match results.result.as_mut_slice() {
            [only] => only.expressions.first_mut().map(|e| e.value.take()),
            _ => None,
        })
    }
}

/// `data` followed by `.name` or `["string"]` components, nothing else.
fn is_rule_path(query: &str) -> bool {
    let Some(mut rest) = query.strip_prefix("data") else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let n = r
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if n == 0 || r.as_bytes()[0].is_ascii_digit() {
                return false;
            }
            rest = &r[n..];
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let Some(end) = r.find("\"]") else {
                return false;
            };
            if r[..end].contains(['\\', '"']) {
                return false;
            }
            rest = &r[end + 2..];
        } else {
            return false;
        }
    }
    true
}

/// A path [`is_rule_path`] accepted, in regorus's canonical spelling
/// (`data["a"]["b"]` → `data.a.b`; other segments stay `["…"]`), which
/// regorus looks up directly instead of parsing the path on every
/// evaluation. A segment with a control character, which the canonical
/// form escapes, leaves the path as it was: regorus then parses it.
fn canonical_rule_path(query: &str) -> String {
    let Some(mut rest) = query.strip_prefix("data") else {
        return query.to_owned();
    };
    let mut out = String::from("data");
    while !rest.is_empty() {
        let segment = if let Some(r) = rest.strip_prefix('.') {
            let n = r
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            rest = &r[n..];
            &r[..n]
        } else if let Some(r) = rest.strip_prefix("[\"")
            && let Some(end) = r.find("\"]")
        {
            rest = &r[end + 2..];
            &r[..end]
        } else {
            return query.to_owned();
        };
        let identifier = segment
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if identifier {
            out.push('.');
            out.push_str(segment);
        } else if segment.chars().any(char::is_control) {
            return query.to_owned();
        } else {
            out.push_str("[\"");
            out.push_str(segment);
            out.push_str("\"]");
        }
    }
    out
}

/// `service_auth/allow` → `data["service_auth"]["allow"]`. Each segment is
/// a quoted string, so no segment can inject Rego.
pub fn data_query(path: &str) -> String {
    let mut query = String::from("data");
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        query.push_str("[\"");
        for c in segment.chars() {
            match c {
                '"' => query.push_str("\\\""),
                '\\' => query.push_str("\\\\"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    query.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
                c => query.push(c),
            }
        }
        query.push_str("\"]");
    }
    query
}

fn query_error(err: &dyn std::fmt::Display) -> EvalError {
    let detail = format!("{err:#}");
    let mut error = EvalError::eval(&detail);
    if let EvalError::Eval {
        position: Some(p), ..
    } = &mut error
        && p.file == "<query.rego>"
    {
        "<query>".clone_into(&mut p.file);
    }
    error
}

/// regorus values to JSON as OPA prints them: sets become arrays, and an
/// undefined value (which can only appear nested) becomes `null`.
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null | Value::Undefined => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Number(_) => serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Set(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.to_string(),
                        other => other.to_json_str().unwrap_or_default(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
