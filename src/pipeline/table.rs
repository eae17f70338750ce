//! The model versions a shard owns: their states, found by key (with a one-entry cache, since
//! consecutive records nearly always share a model) and by label-join id, bounded by
//! `--max-models` across all shards (further versions share the overflow slot; see
//! [`ModelBudget`](super::ModelBudget)) and by the idle expiry.

use super::{model::ModelState, ShardSettings};
use crate::{
    events::{InternalEvent, ModelsOverflowed},
    models::{ModelKey, SlotKind},
    quality::ModelQuality,
};
use std::{collections::HashMap, sync::Arc};
use tokio::time::Instant;

/// A shard's model states.
pub struct ModelTable {
    states: Vec<ModelState>,
    /// Keys to positions in `states`.
    by_key: HashMap<ModelKey, usize>,
    /// Label-join ids (see [`ModelQuality::id`]) to positions in `states`.
    by_id: HashMap<u32, usize>,
    /// The next label-join id: unique within the shard, never reused, so that a late label of
    /// an expired version cannot join a new one.
    next_id: u32,
    /// Position of the last model used: a string comparison is cheaper than hashing.
    last: Option<usize>,
    /// Records counted in the overflow slot because the table was full.
    pub overflowed: u64,
}

impl ModelTable {
    pub fn new() -> Self {
        Self {
            states: Vec::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 0,
            last: None,
            overflowed: 0,
        }
    }

    pub fn get_mut(&mut self, i: usize) -> &mut ModelState {
        &mut self.states[i]
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut ModelState> {
        self.states.iter_mut()
    }

    /// The key of the model with label-join id `id`, if it still exists.
    pub fn key_of(&self, id: u32) -> Option<&ModelKey> {
        let &i = self.by_id.get(&id)?;
        Some(&self.states[i].key)
    }

    /// The quality state of the model with label-join id `id`, if it still exists.
    pub fn quality_of(&mut self, id: u32) -> Option<&mut ModelQuality> {
        let &i = self.by_id.get(&id)?;
        self.states[i].quality_mut()
    }

    /// The position of a model version's state, created on first sight; past the cap, the
    /// overflow slot's. `now` marks it as seen.
    pub fn model(
        &mut self,
        model: &str,
        version: &str,
        settings: &ShardSettings,
        now: Instant,
        now_ms: u64,
    ) -> usize {
        if let Some(i) = self.last {
            if self.states[i].key.matches(model, version) {
                self.states[i].last_seen = now;
                return i;
            }
        }
        let key = ModelKey::new(model, version);
        let i = match self.by_key.get(&key) {
            Some(&i) => i,
            None if settings.max_models.take() => self.insert(key, settings, now, now_ms),
            None => {
                ModelsOverflowed { model, version }.emit(&mut self.overflowed);
                self.shared(SlotKind::Overflow, settings, now, now_ms)
            }
        };
        // Do not cache the overflow slot for an unknown key: the next record of that key must
        // be counted as overflow again.
        if self.states[i].key.matches(model, version) {
            self.last = Some(i);
        }
        self.states[i].last_seen = now;
        i
    }

    /// The position of a shared slot's state, created on first use.
    pub fn shared(
        &mut self,
        kind: SlotKind,
        settings: &ShardSettings,
        now: Instant,
        now_ms: u64,
    ) -> usize {
        let key = match kind {
            SlotKind::Overflow => ModelKey::overflow(),
            SlotKind::Invalid => ModelKey::invalid(),
            SlotKind::Own => unreachable!("own states are found by model()"),
        };
        let i = match self.by_key.get(&key) {
            Some(&i) => i,
            None => self.insert(key, settings, now, now_ms),
        };
        self.states[i].last_seen = now;
        i
    }

    fn insert(
        &mut self,
        key: ModelKey,
        settings: &ShardSettings,
        now: Instant,
        now_ms: u64,
    ) -> usize {
        let i = self.states.len();
        let id = self.next_id;
        let state = ModelState::new(key.clone(), id, settings, now, now_ms);
        if key.is_own() {
            self.next_id = self.next_id.wrapping_add(1);
            self.by_id.insert(id, i);
        }
        self.states.push(state);
        self.by_key.insert(key, i);
        i
    }

    /// Forgets model versions idle for longer than `expiry`, so that version churn over weeks
    /// neither grows memory nor pushes new versions into the overflow slot; returns how many.
    /// A version whose predictions still wait for labels stays until they expire. A profile
    /// captured live goes with its version (and its saved copy in `--state-dir`), so that churn
    /// does not grow the registry either (profiles from files stay with their files).
    pub fn expire_idle(
        &mut self,
        expiry: std::time::Duration,
        now: Instant,
        settings: &ShardSettings,
    ) -> usize {
        let before = self.states.len();
        let profiles = &settings.profiles;
        let mut own_expired = 0;
        self.states.retain(|state| {
            let keep = now.duration_since(state.last_seen) < expiry || state.pending_labels() > 0;
            if !keep && state.key.is_own() {
                own_expired += 1;
            }
            if !keep {
                let captured = state.profile().filter(|p| {
                    p.source.starts_with("live:")
                        && profiles
                            .get(&state.key.model, &state.key.version)
                            .is_some_and(|r| Arc::ptr_eq(&r, p))
                });
                if captured.is_some() {
                    profiles.remove(&state.key);
                    if let Some(saved) = &settings.state {
                        saved.forget_reference(&state.key);
                    }
                }
            }
            keep
        });
        settings.max_models.give_back(own_expired);
        let expired = before - self.states.len();
        if expired > 0 {
            self.by_key = self
                .states
                .iter()
                .enumerate()
                .map(|(i, state)| (state.key.clone(), i))
                .collect();
            self.by_id = self
                .states
                .iter()
                .enumerate()
                .filter_map(|(i, state)| Some((state.quality_id()?, i)))
                .collect();
            self.last = None;
        }
        expired
    }
}
