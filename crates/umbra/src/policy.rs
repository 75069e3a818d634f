//! `umbra policy eval|test|check`: Rego on the command line, as OPA users
//! know it (`opa eval`, `opa test`, `opa check`), on Umbra's own engine, so
//! what passes here is what the controller and gateways will run.
//!
//! Files load as `opa` loads them: `.rego` files are modules (v1 or v0
//! syntax, detected per module), `.json` files are data merged at the root
//! of `data`, and a directory contributes every such file below it, its JSON
//! placed under the file's directory path relative to the directory given
//! (`-d dir` with `dir/a/b/x.json` puts it at `data.a.b`).
//!
//! `test` also runs native-rule tests: each `*_test.toml` below the paths
//! names a native policy file and lists cases
//! (`umbra_policy::ruletest`); this file only finds and reads them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use umbra_policy::decision::{DECISION_QUERY, DecisionPoint};
use umbra_policy::rego::{PolicySet, PolicySetBuilder, RegoVersion};
use umbra_policy::rules::{ConfigError, PolicyConfig};
use umbra_policy::ruletest::TestFile;

/// A command that failed in a way it has already printed; `main` exits
/// with this status without an `error:` line.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Evaluate a query and print what `opa eval` prints (`{}` when undefined).
    Eval(EvalArgs),
    /// Run the `test_*` rules of every `*_test.rego` file, as `opa test`,
    /// and the cases of every native-rule `*_test.toml` file (exit status 2
    /// when a test fails or errs, 1 when a file does not load).
    Test {
        /// Files or directories holding the modules, their tests and data.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print every test, not only the failing ones.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Parse and compile modules; print each error as file:line:col (exit 1).
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Pretty,
}

#[derive(Args)]
struct EvalArgs {
    /// A .rego module, a .json data document, or a directory of them (repeatable).
    #[arg(short = 'd', long = "data", value_name = "FILE")]
    data: Vec<PathBuf>,
    /// The input document (JSON).
    #[arg(short = 'i', long = "input", value_name = "INPUT")]
    input: Option<PathBuf>,
    /// `json`: OPA's result document; `pretty`: the value alone.
    #[arg(short = 'f', long, value_enum, default_value = "json")]
    format: Format,
    /// Read modules as Rego v0 (OPA 0.x) only; by default each is detected.
    #[arg(long)]
    v0_compatible: bool,
    /// Builtin errors fail the evaluation instead of leaving it undefined.
    #[arg(long)]
    strict_builtin_errors: bool,
    query: String,
}

pub fn run(args: PolicyArgs) -> Result<()> {
    match args.command {
        PolicyCommand::Eval(a) => eval(a),
        PolicyCommand::Test { paths, verbose } => test(&paths, verbose),
        PolicyCommand::Check { paths } => check(&paths),
    }
}

/// A file to load, with where its data goes under `data`.
struct Source {
    path: PathBuf,
    /// Directory components below the root given on the command line.
    prefix: Vec<String>,
    kind: Kind,
}

#[derive(PartialEq, Eq)]
enum Kind {
    Module,
    Data,
}

fn collect(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for root in paths {
        let meta =
            std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
        if meta.is_dir() {
            walk(root, &mut Vec::new(), &mut out)?;
        } else {
            let kind = match root.extension().and_then(|e| e.to_str()) {
                Some("json") => Kind::Data,
                // A file named on the command line is a module whatever its
                // extension, as with opa.
                _ => Kind::Module,
            };
            out.push(Source {
                path: root.clone(),
                prefix: Vec::new(),
                kind,
            });
        }
    }
    Ok(out)
}

/// The entries of `dir` in name order, hidden ones (`.…`) left out, as
/// `opa` walks a directory.
fn visible_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.retain(|e| !e.file_name().to_string_lossy().starts_with('.'));
    entries.sort_by_key(std::fs::DirEntry::file_name);
    Ok(entries)
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Source>) -> Result<()> {
    for entry in visible_entries(dir)? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            prefix.push(name);
            walk(&path, prefix, out)?;
            prefix.pop();
        } else if name.ends_with(".rego") {
            out.push(Source {
                path,
                prefix: prefix.clone(),
                kind: Kind::Module,
            });
        } else if name.ends_with(".json") {
            out.push(Source {
                path,
                prefix: prefix.clone(),
                kind: Kind::Data,
            });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn builder(strict: bool) -> PolicySetBuilder {
    PolicySetBuilder::default().strict_builtin_errors(strict)
}

/// Loads every source into a builder; the first error is returned with
/// its position (`file:line:col: message`).
fn load(b: &mut PolicySetBuilder, sources: &[Source], version: RegoVersion) -> Result<(), String> {
    for s in sources {
        let file = s.path.display().to_string();
        let text = read(&s.path).map_err(|e| format!("{e:#}"))?;
        match s.kind {
            Kind::Module => {
                b.add_module(&file, &text, version)
                    .map_err(|e| e.to_string())?;
            }
            Kind::Data if s.prefix.is_empty() => {
                b.add_data_json(&file, &text).map_err(|e| e.to_string())?;
            }
            Kind::Data => {
                let mut value: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{file}:{}:{}: {e}", e.line(), e.column()))?;
                for segment in s.prefix.iter().rev() {
                    value = Value::Object([(segment.clone(), value)].into_iter().collect());
                }
                b.add_data(&file, value).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let sources = collect(&a.data)?;
    let version = if a.v0_compatible {
        RegoVersion::V0
    } else {
        RegoVersion::Auto
    };
    let mut b = builder(a.strict_builtin_errors);
    if let Err(e) = load(&mut b, &sources, version) {
        eprintln!("{e}");
        return Err(Exit(1).into());
    }
    let set = match b.build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Err(Exit(1).into());
        }
    };
    let input = match &a.input {
        Some(p) => Some(
            set.input_from_json(&read(p)?)
                .with_context(|| format!("input {}", p.display()))?,
        ),
        None => None,
    };
    let results = match set.eval_query(&a.query, input.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            // As opa eval: the error on stderr, exit 1.
            eprintln!("{e}");
            return Err(Exit(1).into());
        }
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Pretty => match (results.is_undefined(), results.single_value()) {
            (true, _) => println!("undefined"),
            (false, Some(v)) if results.result[0].bindings.is_empty() => {
                println!("{}", serde_json::to_string_pretty(v)?);
            }
            _ => println!("{}", serde_json::to_string_pretty(&results.result)?),
        },
    }
    if a.query.trim() == DECISION_QUERY
        && let Some(input) = &input
    {
        explain(&set, input, a.format);
    }
    Ok(())
}

/// For Umbra's own entry point, what the decision means: on stderr in
/// json format (stdout stays what `opa eval` prints), on stdout in pretty.
fn explain(set: &PolicySet, input: &umbra_policy::rego::Input, format: Format) {
    let text = match set.decide(DECISION_QUERY, input) {
        Ok(d) => {
            let mut text = format!(
                "decision: {}",
                match (d.allow, d.conditions.is_empty()) {
                    (true, true) => "allow",
                    (true, false) => "allow with conditions",
                    (false, _) => "deny",
                }
            );
            if !d.conditions.is_empty() {
                text.push_str(&format!("\nconditions: {}", d.conditions.join(", ")));
            }
            for r in &d.reasons {
                text.push_str(&format!("\n  - {r}"));
            }
            text
        }
        Err(e) => format!("not an Umbra decision (callers deny): {e}"),
    };
    match format {
        Format::Json => eprintln!("{text}"),
        Format::Pretty => println!("{text}"),
    }
}

/// `test_*` rule names declared at the start of a line in a test module.
fn test_names(source: &str) -> Vec<String> {
    let mut names: Vec<String> = source
        .lines()
        .filter(|l| l.starts_with("test_"))
        .map(|l| {
            l.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.dedup();
    names
}

/// Test results across both kinds of test.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    errored: usize,
    /// Files (or a Rego set) that did not load, so their tests did not run.
    invalid: usize,
}

fn test(paths: &[PathBuf], verbose: bool) -> Result<()> {
    let native = native_tests(paths)?;
    // A `_test.toml` file named on the command line is a native test, not
    // a module.
    let rego_paths: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.is_dir() || !is_native_test(p))
        .cloned()
        .collect();
    let mut t = Tally::default();
    if !rego_paths.is_empty() {
        rego_tests(&rego_paths, verbose, &mut t)?;
    }
    for path in &native {
        if let Err(e) = native_test(path, verbose, &mut t) {
            eprintln!("{e}");
            t.invalid += 1;
        }
    }
    let (passed, failed, errored) = (t.passed, t.failed, t.errored);
    let total = passed + failed + errored;
    if total == 0 {
        if t.invalid > 0 {
            return Err(Exit(1).into());
        }
        bail!(
            "no tests found (rules named test_* in *_test.rego files, [[case]] tables in *_test.toml files)"
        );
    }
    if failed + errored > 0 || verbose {
        println!("{}", "-".repeat(80));
    }
    if passed > 0 {
        println!("PASS: {passed}/{total}");
    }
    if failed > 0 {
        println!("FAIL: {failed}/{total}");
    }
    if errored > 0 {
        println!("ERROR: {errored}/{total}");
    }
    if t.invalid > 0 {
        eprintln!(
            "{} file(s) did not load; their tests did not run",
            t.invalid
        );
        return Err(Exit(1).into());
    }
    if failed + errored > 0 {
        return Err(Exit(2).into());
    }
    Ok(())
}

/// The `*_test.rego` modules' `test_*` rules, as `opa test` runs them.
fn rego_tests(paths: &[PathBuf], verbose: bool, t: &mut Tally) -> Result<()> {
    let sources = collect(paths)?;
    let mut b = builder(false);
    let loaded = load(&mut b, &sources, RegoVersion::Auto)
        .and_then(|()| b.build().map_err(|e| e.to_string()));
    let set = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            t.invalid += 1;
            return Ok(());
        }
    };
    for s in sources
        .iter()
        .filter(|s| s.kind == Kind::Module && s.path.to_string_lossy().ends_with("_test.rego"))
    {
        let file = s.path.display().to_string();
        let Some(package) = set
            .modules()
            .iter()
            .find(|m| m.file == file)
            .map(|m| m.package.clone())
        else {
            continue;
        };
        let mut lines = Vec::new();
        for name in test_names(&read(&s.path)?) {
            let query = format!("{package}.{name}");
            let start = Instant::now();
            let outcome = set.eval_query(&query, None);
            let took = format_duration(start.elapsed());
            match outcome {
                Ok(r) if r.single_value() == Some(&Value::Bool(true)) => {
                    t.passed += 1;
                    if verbose {
                        lines.push(format!("{query}: PASS ({took})"));
                    }
                }
                Ok(_) => {
                    t.failed += 1;
                    lines.push(format!("{query}: FAIL ({took})"));
                }
                Err(e) => {
                    t.errored += 1;
                    lines.push(format!("{query}: ERROR ({took})\n  {e}"));
                }
            }
        }
        print_file(&file, &lines);
    }
    Ok(())
}

fn print_file(file: &str, lines: &[String]) {
    if !lines.is_empty() {
        println!("{file}:");
        for l in lines {
            println!("{l}");
        }
    }
}

fn is_native_test(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("_test.toml"))
}

/// Every `*_test.toml` under the paths (hidden entries skipped, as for
/// modules), in a stable order.
fn native_tests(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk_tests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in visible_entries(dir)? {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk_tests(&path, out)?;
            } else if is_native_test(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk_tests(p, &mut out)?;
        } else if is_native_test(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `file:line:col: message`, or `file: message` when there is no place.
fn located(file: &str, e: &ConfigError) -> String {
    if e.line == 0 {
        format!("{file}: {}", e.message)
    } else {
        format!("{file}:{}:{}: {}", e.line, e.column, e.message)
    }
}

/// Runs one native test file against the policy it names; `Err` is the
/// located reason it could not run.
fn native_test(path: &Path, verbose: bool, t: &mut Tally) -> Result<(), String> {
    let file = path.display().to_string();
    let text = read(path).map_err(|e| format!("{e:#}"))?;
    let tests = TestFile::from_toml(&text).map_err(|e| located(&file, &e))?;
    // Relative to the test file, wherever that leads (`../` included): the
    // author names the file, and a missing one is an error that says so.
    let policy = path.parent().unwrap_or(Path::new("")).join(&tests.policy);
    let (line, column) = tests.policy_at;
    let policy_text = std::fs::read_to_string(&policy).map_err(|e| {
        format!(
            "{file}:{line}:{column}: policy file {:?} ({}) cannot be read: {e}",
            tests.policy,
            policy.display()
        )
    })?;
    let config = PolicyConfig::from_toml(&policy_text).map_err(|e| {
        format!(
            "{} (the policy {file} tests)",
            located(&policy.display().to_string(), &e)
        )
    })?;
    let point = DecisionPoint::new(config);
    let mut lines = Vec::new();
    for case in &tests.cases {
        let start = Instant::now();
        let result = case.run(&point);
        let took = format_duration(start.elapsed());
        if result.passed() {
            t.passed += 1;
            if verbose {
                lines.push(format!("{}: PASS ({took})", case.name));
            }
        } else {
            t.failed += 1;
            lines.push(format!("{}: FAIL ({took})", case.name));
            lines.push(format!("  at {file}:{}", case.line));
            lines.extend(
                result
                    .explain(&case.expect)
                    .iter()
                    .map(|l| format!("  {l}")),
            );
        }
    }
    print_file(&file, &lines);
    Ok(())
}

fn format_duration(d: std::time::Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

fn check(paths: &[PathBuf]) -> Result<()> {
    let sources = collect(paths)?;
    let mut errors = Vec::new();
    // Each module alone first, so every parse error is reported, not only
    // the first; then all together for what only the set shows.
    for s in sources.iter().filter(|s| s.kind == Kind::Module) {
        let mut b = builder(false);
        if let Err(e) = load(&mut b, std::slice::from_ref(s), RegoVersion::Auto) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        let mut b = builder(false);
        if let Err(e) = load(&mut b, &sources, RegoVersion::Auto)
            .and_then(|()| b.build().map(drop).map_err(|e| e.to_string()))
        {
            errors.push(e);
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        eprintln!("{} error(s)", errors.len());
        Err(Exit(1).into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_rules_are_found_at_line_starts() {
        let src =
            "package p_test\n\ntest_a if { true }\ntest_b {\n  true\n}\n  test_c := 1\n# test_d\n";
        assert_eq!(super::test_names(src), ["test_a", "test_b"]);
    }
}
