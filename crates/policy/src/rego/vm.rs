//! Rule paths compiled to regorus's bytecode (the RVM), for speed; opt-in
//! with [`PolicySetBuilder::bytecode`](super::PolicySetBuilder::bytecode).
//!
//! regorus's tree-walking interpreter spends most of an evaluation on
//! bookkeeping (rule paths built as strings, hashed and looked up per rule,
//! per-evaluation allocations), not on the policy: callgrind puts
//! `zerotrust.decision` at about 340,000 instructions in the interpreter and
//! 65,000 as a compiled program. So the first evaluation of a rule path
//! compiles it once into a [`Program`], and later ones run that program on
//! a pooled [`RegoVM`].
//!
//! The interpreter stays the reference: a rule the compiler cannot take
//! (it does not know Umbra's extensions, for one) is remembered as such and
//! interpreted, and a program that fails at run time is retried on the
//! interpreter, which gives the answer or the precise error. Only a
//! time-limit error is final: running out of time twice helps no one.
//!
//! It is opt-in because the VM is lenient where OPA is not: a complete rule
//! with two values (two definitions, or one body that loops), two values
//! for one key of a partial object or an object comprehension, and a
//! function with two results are errors in OPA; the VM answers with one of
//! the values, or undefined for a function. The tests pin these cases.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

/// Virtual machines kept per compiled rule; more are made and dropped under
/// load.
const POOL_SIZE: usize = 32;

/// Rule paths remembered per set. The Data API lets a client name any path,
/// so past this many the rest are interpreted rather than compiled and kept.
const MAX_RULES: usize = 256;

/// The compiled rules of one policy set, filled as rule paths are asked for.
#[derive(Default)]
pub(crate) struct Programs {
    /// `None`: the rule path does not compile; interpret it.
    rules: RwLock<HashMap<String, Option<Arc<RuleProgram>>>>,
}

impl fmt::Debug for Programs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let compiled = self.rules.read().map(|r| r.len()).unwrap_or_default();
        f.debug_struct("Programs")
            .field("rules", &compiled)
            .finish()
    }
}

/// One rule's program, with idle machines that have it loaded.
pub(crate) struct RuleProgram {
    program: Arc<Program>,
    data: Value,
    timer: ExecutionTimerConfig,
    strict: bool,
    idle: Mutex<Vec<RegoVM>>,
}

/// Why a program gave no answer.
pub(crate) enum RunError {
    /// Out of time: final.
    Timeout(VmError),
    /// Anything else: ask the interpreter.
    Other,
}

impl Programs {
    /// The program for `path`, compiling it on first use. `engine` is the
    /// set's compiled engine; it is cloned, not changed.
    pub(crate) fn get(
        &self,
        path: &str,
        engine: &Engine,
        timer: ExecutionTimerConfig,
        strict: bool,
    ) -> Option<Arc<RuleProgram>> {
        if let Ok(rules) = self.rules.read()
            && let Some(known) = rules.get(path)
        {
            return known.clone();
        }
        if self.rules.read().map_or(true, |r| r.len() >= MAX_RULES) {
            return None;
        }
        let compiled = compile(path, engine).map(|program| {
            Arc::new(RuleProgram {
                program,
                data: engine.get_data(),
                timer,
                strict,
                idle: Mutex::new(Vec::new()),
            })
        });
        if let Ok(mut rules) = self.rules.write() {
            rules.insert(path.to_owned(), compiled.clone());
        }
        compiled
    }

    /// The rule paths that run as programs, for tests.
    #[cfg(test)]
    pub(crate) fn compiled(&self) -> Vec<String> {
        let rules = self.rules.read().map(|r| {
            r.iter()
                .filter(|(_, p)| p.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        });
        rules.unwrap_or_default()
    }
}

fn compile(path: &str, engine: &Engine) -> Option<Arc<Program>> {
    let mut engine = engine.clone();
    let policy = engine.compile_with_entrypoint(&path.into()).ok()?;
    Compiler::compile_from_policy(&policy, &[path]).ok()
}

impl RuleProgram {
    /// Evaluates the rule for `input` (`Undefined` when there is none).
    pub(crate) fn run(&self, input: Value) -> Result<Value, RunError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.machine().map_err(|_| RunError::Other)?,
        };
        vm.set_input(input);
        let result = vm.execute();
        // Drop the input now rather than keep it alive in the pool.
        vm.set_input(Value::Undefined);
        match result {
            Ok(value) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < POOL_SIZE
                {
                    idle.push(vm);
                }
                Ok(value)
            }
            Err(e @ VmError::TimeLimitExceeded { .. }) => Err(RunError::Timeout(e)),
            Err(_) => Err(RunError::Other),
        }
    }

    fn machine(&self) -> anyhow::Result<RegoVM> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())?;
        vm.set_strict_builtin_errors(self.strict);
        vm.set_execution_timer_config(Some(self.timer));
        // The time limit is the bound; regorus's default instruction budget
        // (25,000) would stop ordinary policies.
        vm.set_max_instructions(usize::MAX);
        Ok(vm)
    }
}

#[cfg(test)]
mod tests;
