//! What the sidecar knows about each model version: its key, and the declaration (task, classes,
//! feature schema) a client sends once so records can stay positional.

use crate::pb;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// Model name and version: the unit all state is kept and exported by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    pub model: String,
    pub version: String,
    /// Whose records the state holds: typed, so that a client model that happens to be named
    /// like a shared slot (`__other__`) keeps a state of its own.
    pub kind: SlotKind,
}

/// What a model state stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKind {
    /// One (model, version) the records named.
    Own,
    /// The records of model versions beyond `--max-models`, counted together so the totals stay
    /// right while the number of series stays bounded. Exported as model [`OVERFLOW_MODEL`].
    Overflow,
    /// Rejects whose model name itself was unusable. Exported as model [`INVALID_MODEL`].
    Invalid,
}

/// The exported model name and version of the overflow slot.
pub const OVERFLOW_MODEL: &str = "__other__";
/// The exported model name of the slot where rejects with an unusable model name are counted.
pub const INVALID_MODEL: &str = "__invalid__";

impl ModelKey {
    pub fn new(model: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            version: version.into(),
            kind: SlotKind::Own,
        }
    }

    pub fn overflow() -> Self {
        Self {
            kind: SlotKind::Overflow,
            ..Self::new(OVERFLOW_MODEL, OVERFLOW_MODEL)
        }
    }

    pub fn invalid() -> Self {
        Self {
            kind: SlotKind::Invalid,
            ..Self::new(INVALID_MODEL, "")
        }
    }

    /// True for the state of one model version (not a shared slot).
    pub fn is_own(&self) -> bool {
        self.kind == SlotKind::Own
    }

    pub fn matches(&self, model: &str, version: &str) -> bool {
        self.kind == SlotKind::Own && self.model == model && self.version == version
    }
}

/// A validated `ModelDeclaration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    pub task: pb::TaskType,
    pub class_names: Vec<String>,
    pub positive_class: Option<String>,
    pub numeric_features: Vec<String>,
    pub categorical_features: Vec<String>,
    /// `gen_ai.provider.name` for generation models.
    pub gen_ai_provider: Option<String>,
    /// Whether class names outside `class_names` are accepted (as classes of their own) rather
    /// than rejected as `UNDECLARED_CLASS`; only matters when `class_names` is not empty.
    pub allow_undeclared_classes: bool,
}

impl Declaration {
    /// Splits the feature schema by kind; the caller has validated the message.
    pub fn from_pb(decl: &pb::ModelDeclaration) -> Self {
        let by_kind = |kind: pb::FeatureKind| {
            decl.features
                .iter()
                .filter(|f| f.kind() == kind)
                .map(|f| f.name.clone())
                .collect()
        };
        Self {
            task: decl.task(),
            class_names: decl.class_names.clone(),
            positive_class: (!decl.positive_class.is_empty()).then(|| decl.positive_class.clone()),
            numeric_features: by_kind(pb::FeatureKind::Numeric),
            categorical_features: by_kind(pb::FeatureKind::Categorical),
            gen_ai_provider: (!decl.gen_ai_provider.is_empty())
                .then(|| decl.gen_ai_provider.clone()),
            allow_undeclared_classes: decl.allow_undeclared_classes,
        }
    }

    /// Whether a class name must be rejected: the declaration lists classes, does not allow
    /// others, and `name` is not among them. A linear scan: declared class lists are short (a
    /// few names; `--max-classes` gives 32 their own series) and a scan of a few strings costs
    /// less than hashing one.
    pub fn rejects_class(&self, name: &str) -> bool {
        !self.allow_undeclared_classes
            && !self.class_names.is_empty()
            && !self.class_names.iter().any(|n| n == name)
    }
}

/// Declarations by model version, shared by all ingest streams. Read once per batch (not per
/// record) and written only when a declaration arrives, so the lock is uncontended in practice.
///
/// Bounded by `--max-models`: when a new model version is declared into a full registry, the
/// declaration stored longest ago is evicted (version rollouts replace old versions; an evicted
/// model's records only lose the schema checks until it declares again).
#[derive(Debug)]
pub struct DeclarationRegistry {
    inner: RwLock<Declarations>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Declarations {
    /// Each declaration with the sequence number of its last `put`, for eviction order.
    map: HashMap<ModelKey, (Arc<Declaration>, u64)>,
    next: u64,
}

impl DeclarationRegistry {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: RwLock::new(Declarations::default()),
            capacity,
        }
    }

    pub fn get(&self, model: &str, version: &str) -> Option<Arc<Declaration>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.map.is_empty() {
            return None; // spares building a key
        }
        inner
            .map
            .get(&ModelKey::new(model, version))
            .map(|(d, _)| d.clone())
    }

    /// Stores or replaces a declaration; returns the stored one and the key evicted to make room.
    pub fn put(
        &self,
        key: ModelKey,
        declaration: Declaration,
    ) -> (Arc<Declaration>, Option<ModelKey>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut evicted = None;
        if !inner.map.contains_key(&key) && inner.map.len() >= self.capacity {
            evicted = inner
                .map
                .iter()
                .min_by_key(|(_, (_, seq))| *seq)
                .map(|(k, _)| k.clone());
            if let Some(old) = &evicted {
                inner.map.remove(old);
            }
        }
        let declaration = Arc::new(declaration);
        let seq = inner.next;
        inner.next += 1;
        inner.map.insert(key, (declaration.clone(), seq));
        (declaration, evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration() -> Declaration {
        Declaration {
            task: crate::pb::TaskType::Regression,
            class_names: Vec::new(),
            positive_class: None,
            numeric_features: Vec::new(),
            categorical_features: Vec::new(),
            gen_ai_provider: None,
            allow_undeclared_classes: false,
        }
    }

    #[test]
    fn a_full_registry_evicts_the_declaration_stored_longest_ago() {
        let registry = DeclarationRegistry::new(2);
        assert_eq!(registry.put(ModelKey::new("m", "1"), declaration()).1, None);
        assert_eq!(registry.put(ModelKey::new("m", "2"), declaration()).1, None);
        // Re-declaring refreshes: "1" is now newer than "2".
        assert_eq!(registry.put(ModelKey::new("m", "1"), declaration()).1, None);
        let (_, evicted) = registry.put(ModelKey::new("m", "3"), declaration());
        assert_eq!(evicted, Some(ModelKey::new("m", "2")));
        assert!(registry.get("m", "2").is_none());
        assert!(registry.get("m", "1").is_some() && registry.get("m", "3").is_some());
    }
}
