//! Reference profiles by model version, shared by the shards, with a generation number that
//! changes whenever a profile is added, replaced or removed: shards compare it once per batch
//! (one atomic load) and pick up new profiles without a restart.
//!
//! Profiles come from `--profiles-dir` (every `*.json`, re-read when a file's modification time
//! or size changes, polled every `--profiles-poll-seconds`) and from live capture.

use super::profile::Profile;
use crate::models::ModelKey;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, RwLock,
    },
    time::{Duration, SystemTime},
};

#[derive(Debug, Default)]
pub struct ProfileRegistry {
    profiles: RwLock<HashMap<ModelKey, Arc<Profile>>>,
    generation: AtomicU64,
}

impl ProfileRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn get(&self, model: &str, version: &str) -> Option<Arc<Profile>> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        if profiles.is_empty() {
            return None;
        }
        profiles.get(&ModelKey::new(model, version)).cloned()
    }

    pub fn put(&self, profile: Arc<Profile>) {
        let key = ModelKey::new(&profile.model, &profile.version);
        self.profiles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, profile);
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn remove(&self, key: &ModelKey) {
        let removed = self
            .profiles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if removed.is_some() {
            self.generation.fetch_add(1, Relaxed);
        }
    }

    /// Every profile held now.
    pub fn all(&self) -> Vec<Arc<Profile>> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        profiles.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.profiles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a registry in step with a directory of profile files.
pub struct ProfileDirectory {
    dir: PathBuf,
    /// Per file: (modification time, size) when loaded, and the model version it held.
    seen: HashMap<PathBuf, ((SystemTime, u64), Option<ModelKey>)>,
    /// Model versions whose profile came from this directory.
    loaded: std::collections::HashSet<ModelKey>,
}

impl ProfileDirectory {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seen: HashMap::new(),
            loaded: Default::default(),
        }
    }

    /// Loads new and changed files, forgets removed ones; returns how many profiles changed. A
    /// file that cannot be used is logged (once per version of the file) and skipped.
    pub fn sync(&mut self, registry: &ProfileRegistry) -> usize {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the profiles directory");
                return 0;
            }
        };
        let mut present = Vec::new();
        let mut changed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            present.push(path.clone());
            if self.seen.get(&path).is_some_and(|(s, _)| *s == stamp) {
                continue;
            }
            let key = match Profile::load(&path) {
                Ok(profile) => {
                    let key = ModelKey::new(&profile.model, &profile.version);
                    tracing::info!(
                        file = %path.display(),
                        model = %profile.model,
                        version = %profile.version,
                        features = profile.features.len(),
                        "reference profile loaded"
                    );
                    registry.put(Arc::new(profile));
                    changed += 1;
                    Some(key)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reference profile skipped");
                    None
                }
            };
            self.seen.insert(path, (stamp, key));
        }
        self.seen.retain(|path, _| present.contains(path));
        // A model version no file holds any more (file removed, emptied, broken, or edited to
        // another version) loses its profile.
        let held: std::collections::HashSet<ModelKey> = self
            .seen
            .values()
            .filter_map(|(_, key)| key.clone())
            .collect();
        for key in self.loaded.difference(&held) {
            tracing::info!(model = %key.model, version = %key.version, "reference profile removed");
            registry.remove(key);
            changed += 1;
        }
        self.loaded = held;
        changed
    }

    /// When the file that holds `key`'s profile was last modified, if a file holds it.
    pub fn loaded_at(&self, key: &ModelKey) -> Option<SystemTime> {
        self.seen
            .values()
            .find(|(_, held)| held.as_ref() == Some(key))
            .map(|((modified, _), _)| *modified)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Polls `dir` every `period` until `stop`.
pub async fn watch(
    mut directory: ProfileDirectory,
    registry: Arc<ProfileRegistry>,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                directory.sync(&registry);
            }
            _ = stop.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::profile::{FeatureProfile, NumericColumn, ProfileSettings, FORMAT};

    fn profile(version: &str) -> Profile {
        let mut column = NumericColumn::default();
        for v in 0..20 {
            column.push(Some(f64::from(v)));
        }
        Profile {
            format: FORMAT.into(),
            model: "m".into(),
            version: version.into(),
            source: String::new(),
            created_unix_seconds: 0,
            records: 20,
            features: vec![FeatureProfile::Numeric(column.finish(
                "x",
                ProfileSettings::default(),
                1,
            ))],
        }
    }

    #[test]
    fn a_file_edited_to_another_version_moves_the_profile() {
        let dir = std::env::temp_dir().join(format!("inferscope-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let registry = ProfileRegistry::new();
        let mut directory = ProfileDirectory::new(&dir);
        let file = dir.join("m.json");
        std::fs::write(&file, serde_json::to_string(&profile("1")).unwrap()).unwrap();
        directory.sync(&registry);
        assert!(registry.get("m", "1").is_some());
        // Same file, another version (and a different size, so the change is seen).
        std::fs::write(&file, serde_json::to_string_pretty(&profile("2")).unwrap()).unwrap();
        directory.sync(&registry);
        assert!(registry.get("m", "1").is_none(), "the old version is gone");
        assert!(registry.get("m", "2").is_some());
        // A broken file holds no version.
        std::fs::write(&file, "{ not json").unwrap();
        directory.sync(&registry);
        assert!(registry.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
