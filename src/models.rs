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
}

/// Where records of models beyond `--max-models` are counted, so the totals stay right while the
/// number of series stays bounded.
pub const OVERFLOW_MODEL: &str = "__other__";

impl ModelKey {
    pub fn new(model: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            version: version.into(),
        }
    }

    pub fn overflow() -> Self {
        Self::new(OVERFLOW_MODEL, OVERFLOW_MODEL)
    }

    pub fn matches(&self, model: &str, version: &str) -> bool {
        self.model == model && self.version == version
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
        }
    }
}

/// Declarations by model version, shared by all ingest streams. Read once per batch (not per
/// record) and written only when a declaration arrives, so the lock is uncontended in practice.
#[derive(Debug)]
pub struct DeclarationRegistry {
    declarations: RwLock<HashMap<ModelKey, Arc<Declaration>>>,
    /// Bound on distinct declared model versions (the same as `--max-models`).
    capacity: usize,
}

/// A new declaration did not fit: the registry is at `--max-models`.
#[derive(Debug, thiserror::Error)]
#[error("{capacity} model versions are declared already (--max-models)")]
pub struct RegistryFull {
    pub capacity: usize,
}

impl DeclarationRegistry {
    pub fn new(capacity: usize) -> Self {
        Self {
            declarations: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, model: &str, version: &str) -> Option<Arc<Declaration>> {
        let map = self.declarations.read().unwrap_or_else(|e| e.into_inner());
        // Building the key allocates; skip it when nothing is declared (the common case).
        if map.is_empty() {
            return None;
        }
        map.get(&ModelKey::new(model, version)).cloned()
    }

    /// Stores or replaces a declaration; returns the stored one.
    pub fn put(
        &self,
        key: ModelKey,
        declaration: Declaration,
    ) -> Result<Arc<Declaration>, RegistryFull> {
        let mut map = self.declarations.write().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= self.capacity {
            return Err(RegistryFull {
                capacity: self.capacity,
            });
        }
        let declaration = Arc::new(declaration);
        map.insert(key, declaration.clone());
        Ok(declaration)
    }
}
