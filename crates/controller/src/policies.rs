//! The Rego policy set this controller serves on the OPA Data API.
//!
//! Modules and data documents live in the store (`PUT /v1/policies/{id}`,
//! `PUT /v1/data/{path}`); the set in force is built from them and held
//! behind an `Arc` that is swapped only once a new set has compiled, so a
//! module that fails to parse or compile never replaces a working set and
//! no evaluation ever sees half an update.
//!
//! Controllers sharing a store converge by polling the store's policy
//! revision (every `api.event_poll_ms`): when it moves, the controller reads
//! everything back and rebuilds. A write checks the new module against
//! what the store holds at that moment, so two controllers accepting
//! conflicting modules at the same instant could store a pair that does not
//! compile together; every controller then keeps its last good set and logs
//! the error until an operator fixes or deletes the module.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use umbra_policy::rego::{LoadError, PolicySet, PolicySetBuilder, RegoVersion};
use umbra_store::{PolicySnapshot, StoreError};

use crate::Controller;

/// A built set and what it was built from.
#[derive(Debug)]
pub struct Loaded {
    /// The store revision the set reflects (0: nothing loaded yet).
    pub revision: i64,
    pub set: Arc<PolicySet>,
    /// Module sources by id, as stored (`GET /v1/policies`).
    pub modules: BTreeMap<String, String>,
}

/// The set in force, and the lock that orders this controller's writes.
#[derive(Debug)]
pub struct Policies {
    current: RwLock<Arc<Loaded>>,
    /// Held from a write's check to its store commit and swap, so two
    /// writes on this controller never check against the same old state.
    pub write: tokio::sync::Mutex<()>,
    /// The last revision that failed to build, not retried until it moves.
    failed: std::sync::atomic::AtomicI64,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            current: RwLock::new(Arc::new(Loaded {
                revision: 0,
                set: Arc::new(PolicySet::empty()),
                modules: BTreeMap::new(),
            })),
            write: tokio::sync::Mutex::new(()),
            failed: std::sync::atomic::AtomicI64::new(-1),
        }
    }
}

impl Policies {
    pub fn current(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete Arc (the swap is one store).
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in `loaded` unless the set in force is already newer.
    pub fn install(&self, loaded: Loaded) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if loaded.revision >= guard.revision {
            *guard = Arc::new(loaded);
        }
    }
}

/// What to change when checking a write against the stored state.
pub enum Change {
    PutModule {
        id: String,
        raw: String,
    },
    DeleteModule {
        id: String,
    },
    PutData {
        path: String,
        value: serde_json::Value,
    },
    DeleteData {
        path: String,
    },
}

/// Builds a set from a snapshot with `change` applied, without storing
/// anything: the check before a write, and the rebuild after a poll.
pub fn build(snapshot: &PolicySnapshot, change: Option<Change>) -> Result<Loaded, BuildError> {
    let mut modules: BTreeMap<String, String> = snapshot
        .policies
        .iter()
        .map(|p| (p.id.clone(), p.raw.clone()))
        .collect();
    let mut data: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for d in &snapshot.data {
        let value = serde_json::from_str(&d.document)
            .map_err(|e| BuildError::Corrupt(format!("stored data at {:?}: {e}", d.path)))?;
        data.insert(d.path.clone(), value);
    }
    match change {
        Some(Change::PutModule { id, raw }) => {
            modules.insert(id, raw);
        }
        Some(Change::DeleteModule { id }) => {
            modules.remove(&id);
        }
        Some(Change::PutData { path, value }) => {
            data.retain(|p, _| !is_at_or_below(p, &path));
            data.insert(path, value);
        }
        Some(Change::DeleteData { path }) => data.retain(|p, _| !is_at_or_below(p, &path)),
        None => {}
    }
    let mut builder = PolicySetBuilder::default();
    for (id, raw) in &modules {
        builder.add_module(id, raw, RegoVersion::Auto)?;
    }
    if !data.is_empty() {
        builder.add_data("data", merge(&data))?;
    }
    let set = builder.build()?;
    Ok(Loaded {
        revision: snapshot.revision,
        set: Arc::new(set),
        modules,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Corrupt(String),
}

fn is_at_or_below(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One data tree from documents at paths, shallower paths first (a
/// document at `a/b` sits inside the one at `a`, replacing its `b`).
fn merge(data: &BTreeMap<String, serde_json::Value>) -> serde_json::Value {
    let mut entries: Vec<_> = data.iter().collect();
    entries.sort_by_key(|(p, _)| p.split('/').count());
    let mut root = serde_json::Value::Object(serde_json::Map::new());
    for (path, value) in entries {
        let segments: Vec<&str> = path.split('/').collect();
        set_at(&mut root, &segments, value.clone());
    }
    root
}

/// Puts `value` at `segments` below `at`, turning what is in the way into
/// objects.
fn set_at(at: &mut serde_json::Value, segments: &[&str], value: serde_json::Value) {
    let Some((first, rest)) = segments.split_first() else {
        *at = value;
        return;
    };
    if !at.is_object() {
        *at = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(map) = at {
        let child = map
            .entry((*first).to_owned())
            .or_insert(serde_json::Value::Null);
        set_at(child, rest, value);
    }
}

/// Whether a module belongs to Umbra's own packages (`umbra.authz` and
/// anything under `umbra.`): the modules the gateways decide with. Reads
/// the `package` line, the first statement of every Rego module.
pub fn is_umbra_module(raw: &str) -> bool {
    raw.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.strip_prefix("package"))
        .is_some_and(|rest| {
            if !rest.starts_with(char::is_whitespace) {
                return false;
            }
            let name = rest.trim();
            name == "umbra" || name.starts_with("umbra.")
        })
}

/// The policy a gateway is sent: the native file, and the stored Rego
/// modules with their data when Umbra's own package is among them.
pub fn gateway_bundle(
    snapshot: &PolicySnapshot,
    native: &str,
) -> Result<umbra_proto::control::PolicyBundle, BuildError> {
    let mut bundle = umbra_proto::control::PolicyBundle {
        revision: snapshot.revision,
        native: native.to_owned(),
        ..Default::default()
    };
    if !snapshot.policies.iter().any(|p| is_umbra_module(&p.raw)) {
        return Ok(bundle);
    }
    bundle.modules = snapshot
        .policies
        .iter()
        .map(|p| (p.id.clone(), p.raw.clone()))
        .collect();
    let mut data = BTreeMap::new();
    for d in &snapshot.data {
        let value = serde_json::from_str(&d.document)
            .map_err(|e| BuildError::Corrupt(format!("stored data at {:?}: {e}", d.path)))?;
        data.insert(d.path.clone(), value);
    }
    bundle.data = merge(&data);
    Ok(bundle)
}

impl Controller {
    /// Rebuilds the set in force if the store's revision moved. A set that
    /// does not build is logged and skipped; the one in force stays.
    pub async fn reload_policies(&self) -> Result<bool, StoreError> {
        let revision = self.store.policy_revision().await?;
        if revision == self.policies.current().revision
            || revision
                == self
                    .policies
                    .failed
                    .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(false);
        }
        let snapshot = self.store.policy_snapshot().await?;
        let built = tokio::task::spawn_blocking(move || build(&snapshot, None))
            .await
            .map_err(|e| StoreError::Corrupt(format!("policy build task: {e}")))?;
        match built {
            Ok(loaded) => {
                tracing::info!(
                    revision = loaded.revision,
                    modules = loaded.modules.len(),
                    "policy set loaded"
                );
                self.policies.install(loaded);
                Ok(true)
            }
            Err(e) => {
                self.policies
                    .failed
                    .store(revision, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    revision,
                    error = %e,
                    "the stored policies do not build; the set in force stays"
                );
                Ok(false)
            }
        }
    }
}

/// Keeps the set in force at the store's revision: what other controllers
/// sharing the store changed arrives within one `poll`.
pub async fn watch(c: Arc<Controller>, poll: Duration) {
    loop {
        tokio::select! {
            () = c.events.stopped() => return,
            () = tokio::time::sleep(poll) => {}
        }
        if let Err(e) = c.reload_policies().await {
            tracing::warn!(error = %e, "policy revision unavailable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_store::{PolicyDataRecord, PolicyRecord};

    #[test]
    fn umbra_modules_are_told_by_their_package() {
        assert!(is_umbra_module("package umbra.authz\n"));
        assert!(is_umbra_module(
            "# Umbra's decision\n\n  package umbra.authz.lib # helpers\n"
        ));
        assert!(is_umbra_module("package umbra"));
        assert!(!is_umbra_module("package umbrella.authz"));
        assert!(!is_umbra_module("package authz\n# package umbra.authz"));
        assert!(!is_umbra_module("import rego.v1\npackage umbra.authz"));
        assert!(!is_umbra_module(""));
    }

    #[test]
    fn gateways_get_rego_only_with_umbras_package() {
        let apps = snapshot(&[("app", "package app\nallow := true")], &[("x", "1")]);
        let b = gateway_bundle(&apps, "").expect("bundle");
        assert!(b.modules.is_empty());
        assert_eq!(b.data, serde_json::Value::Null);
        let ours = snapshot(
            &[
                ("app", "package app\nallow := true"),
                ("umbra", "package umbra.authz\ndecision := {}"),
            ],
            &[("a/b", "{\"c\": 1}")],
        );
        let b = gateway_bundle(&ours, "[[rule]]").expect("bundle");
        assert_eq!(b.modules.len(), 2, "its imports may be anywhere");
        assert_eq!(b.data, serde_json::json!({"a": {"b": {"c": 1}}}));
        assert_eq!(b.native, "[[rule]]");
    }

    fn snapshot(modules: &[(&str, &str)], data: &[(&str, &str)]) -> PolicySnapshot {
        PolicySnapshot {
            revision: 7,
            policies: modules
                .iter()
                .map(|(id, raw)| PolicyRecord {
                    id: (*id).into(),
                    raw: (*raw).into(),
                    created_at: 0,
                    updated_at: 0,
                })
                .collect(),
            data: data
                .iter()
                .map(|(path, doc)| PolicyDataRecord {
                    path: (*path).into(),
                    document: (*doc).into(),
                    updated_at: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn data_documents_nest_by_path() {
        let snap = snapshot(
            &[("p", "package p\nx := data.a.b.c")],
            &[
                ("a", r#"{"b":{"c":1,"d":2}}"#),
                ("a/b/c", "3"),
                ("z", "true"),
            ],
        );
        let loaded = build(&snap, None).expect("builds");
        assert_eq!(loaded.revision, 7);
        let set = &loaded.set;
        assert_eq!(set.eval_path("p/x", None).expect("eval"), Some(3.into()));
        assert_eq!(set.eval_path("a/b/d", None).expect("eval"), Some(2.into()));
        assert_eq!(set.eval_path("z", None).expect("eval"), Some(true.into()));
        let put = Change::PutData {
            path: "a".into(),
            value: serde_json::json!({"b": {"c": 9}}),
        };
        let changed = build(&snap, Some(put)).expect("builds");
        assert_eq!(
            changed.set.eval_path("p/x", None).expect("eval"),
            Some(9.into())
        );
        assert_eq!(changed.set.eval_path("a/b/d", None).expect("eval"), None);
    }

    #[test]
    fn a_broken_module_names_its_position_and_builds_nothing() {
        let snap = snapshot(&[("good", "package good\nallow := true")], &[]);
        let err = build(
            &snap,
            Some(Change::PutModule {
                id: "bad".into(),
                raw: "package bad\n\nallow if {\n  input.x ==\n}\n".into(),
            }),
        )
        .expect_err("refused");
        let BuildError::Load(load) = err else {
            panic!("not a load error: {err}");
        };
        let pos = load.position().expect("position");
        assert_eq!(pos.file, "bad");
        assert!(pos.line >= 4, "{pos}");
        assert!(is_at_or_below("a/b", "a") && !is_at_or_below("ab", "a"));
    }
}
