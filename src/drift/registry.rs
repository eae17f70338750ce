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
}

impl ProfileDirectory {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seen: HashMap::new(),
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
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some((_, Some(key))) = self.seen.remove(&path) {
                tracing::info!(file = %path.display(), "reference profile removed");
                registry.remove(&key);
                changed += 1;
            }
        }
        changed
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
