//! Evaluations of generations (`Label.evaluation`, the OpenTelemetry `gen_ai.evaluation.result`
//! event): a judge model's score, a thumbs up, a human rating, joined to the generation like a
//! delayed label and accumulated per model version and evaluation name over the quality windows.
//!
//! A generation can be evaluated several times, under different names ("relevance",
//! "toxicity", ...): joining an evaluation leaves the generation waiting for the others (the
//! pending entry remembers which names evaluated it, [`EvaluatedNames`]). The same name twice for
//! one generation counts once: the second is a `duplicate`, as a second label of a prediction is,
//! so an at-least-once sender retrying cannot double it.
//!
//! Bounds: at most [`MAX_EVALUATION_NAMES`] names per model version and `--max-classes` label
//! values per name; the rest share `__other__` (counted, logged once per table).

use super::{Unmatched, OTHER_CLASS};
use crate::{
    events::{EvaluationLabelsOverflowed, EvaluationNamesOverflowed, InternalEvent},
    pb,
    windows::{WindowState, Windows},
};

/// Evaluation names with their own series per model version; the rest share `__other__`.
pub const MAX_EVALUATION_NAMES: usize = 16;

// Every name slot (the overflow slot included) has its bit in `EvaluatedNames`.
const _: () = assert!(MAX_EVALUATION_NAMES < 32);

/// The evaluation names that evaluated one pending generation: a bit per name slot, kept in the
/// pending entry (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvaluatedNames(u32);

impl EvaluatedNames {
    pub fn contains(self, slot: u32) -> bool {
        self.0 & (1 << slot) != 0
    }

    pub fn insert(&mut self, slot: u32) {
        self.0 |= 1 << slot;
    }

    /// Whether the generation got at least one evaluation.
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// An evaluation resolved against the model's tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluated {
    /// The name's slot.
    pub name: u32,
    pub score: Option<f64>,
    /// The label value's slot in the name's label table.
    pub label: Option<u32>,
}

/// What one window bucket holds of one evaluation name.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NameStats {
    /// Evaluations joined.
    pub count: u64,
    /// Of those, the ones with a score.
    pub scored: u64,
    /// Σ score over them.
    pub score_sum: f64,
    /// Evaluations per label slot.
    pub labels: Vec<u64>,
}

impl NameStats {
    /// Mean score, over the evaluations with a score.
    pub fn mean_score(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum / self.scored as f64)
    }

    /// Evaluations that carried a label.
    pub fn labelled(&self) -> u64 {
        self.labels.iter().sum()
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.scored += other.scored;
        self.score_sum += other.score_sum;
        if self.labels.len() < other.labels.len() {
            self.labels.resize(other.labels.len(), 0);
        }
        for (mine, theirs) in self.labels.iter_mut().zip(&other.labels) {
            *mine += theirs;
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.scored = 0;
        self.score_sum = 0.0;
        self.labels.fill(0);
    }
}

/// The mergeable evaluation state of one window bucket, by name slot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvaluationState {
    pub names: Vec<NameStats>,
}

impl EvaluationState {
    /// Adds one joined evaluation.
    pub fn observe(&mut self, e: Evaluated) {
        let slot = e.name as usize;
        if self.names.len() <= slot {
            self.names.resize_with(slot + 1, NameStats::default);
        }
        let stats = &mut self.names[slot];
        stats.count += 1;
        if let Some(score) = e.score {
            stats.scored += 1;
            stats.score_sum += score;
        }
        if let Some(label) = e.label {
            let label = label as usize;
            if stats.labels.len() <= label {
                stats.labels.resize(label + 1, 0);
            }
            stats.labels[label] += 1;
        }
    }
}

impl EvaluationState {
    /// This state in another sidecar's tables (the fleet's, `src/fleet.rs`): name slot `i`
    /// becomes `names[i]`, label slot `j` of name `i` becomes `labels[i][j]`. `None` when a
    /// counted slot has no place in them (a corrupt shared state).
    pub fn remapped(&self, names: &[u32], labels: &[Vec<u32>]) -> Option<Self> {
        let mut out = Self::default();
        for (i, stats) in self.names.iter().enumerate() {
            if stats.count == 0 && stats.labels.iter().all(|&n| n == 0) {
                continue;
            }
            let slot = *names.get(i)? as usize;
            if out.names.len() <= slot {
                out.names.resize_with(slot + 1, NameStats::default);
            }
            let mut moved = NameStats {
                count: stats.count,
                scored: stats.scored,
                score_sum: stats.score_sum,
                labels: Vec::new(),
            };
            for (j, &n) in stats.labels.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let label = *labels.get(i)?.get(j)? as usize;
                if moved.labels.len() <= label {
                    moved.labels.resize(label + 1, 0);
                }
                moved.labels[label] += n;
            }
            out.names[slot].merge(&moved);
        }
        Some(out)
    }
}

impl WindowState for EvaluationState {
    fn empty_like(&self) -> Self {
        Self::default()
    }

    fn merge(&mut self, other: &Self, _exact_budget: usize) {
        if self.names.len() < other.names.len() {
            self.names
                .resize_with(other.names.len(), NameStats::default);
        }
        for (mine, theirs) in self.names.iter_mut().zip(&other.names) {
            mine.merge(theirs);
        }
    }

    fn reset(&mut self) {
        self.names.iter_mut().for_each(NameStats::reset);
    }

    fn exact_len(&self) -> usize {
        0
    }
}

/// Strings to dense slots, at most `cap` of them; the rest share a last `__other__` slot. Also
/// the fleet's union of the sidecars' tables (`src/fleet.rs`), under the same caps.
#[derive(Debug, Clone)]
pub(crate) struct NameTable {
    names: Vec<String>,
    cap: usize,
}

impl NameTable {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            names: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// The slot of `name` (`overflowed` is called each time a name does not fit).
    pub(crate) fn slot(&mut self, name: &str, overflowed: impl FnOnce()) -> u32 {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i as u32;
        }
        if self.names.len() < self.cap {
            self.names.push(name.to_owned());
            return (self.names.len() - 1) as u32;
        }
        overflowed();
        match self.names.iter().position(|n| n == OTHER_CLASS) {
            Some(i) => i as u32,
            None => {
                self.names.push(OTHER_CLASS.to_owned());
                (self.names.len() - 1) as u32
            }
        }
    }

    /// The names, by slot.
    pub(crate) fn into_names(self) -> Vec<String> {
        self.names
    }

    /// Whether `slot` is `__other__`, which several names may share.
    fn shared(&self, slot: u32) -> bool {
        self.names[slot as usize] == OTHER_CLASS
    }
}

/// What export needs of a model version's evaluations.
#[derive(Debug, Clone)]
pub struct EvaluationSnapshot {
    /// Name per name slot (the last may be `__other__`).
    pub names: Vec<String>,
    /// Label value per label slot, per name slot.
    pub labels: Vec<Vec<String>>,
    /// `(window name, state)`, the since-start state last.
    pub windows: Vec<(String, EvaluationState)>,
    /// Evaluation names counted as `__other__`.
    pub names_overflowed: u64,
    /// Label values counted as `__other__`.
    pub labels_overflowed: u64,
}

/// The evaluations of one model version: its name and label tables and their windows. Made at
/// the first joined evaluation, so models that get none pay nothing.
pub struct ModelEvaluations {
    names: NameTable,
    /// Per name slot.
    labels: Vec<NameTable>,
    max_labels: usize,
    windows: Windows<EvaluationState>,
    names_overflowed: u64,
    labels_overflowed: u64,
}

impl ModelEvaluations {
    /// `windows`: empty, lined up with the model's quality windows
    /// ([`Windows::beside`]); `max_labels`: label values per name (`--max-classes`).
    pub fn new(windows: Windows<EvaluationState>, max_labels: usize) -> Self {
        Self {
            names: NameTable::new(MAX_EVALUATION_NAMES),
            labels: Vec::new(),
            max_labels,
            windows,
            names_overflowed: 0,
            labels_overflowed: 0,
        }
    }

    /// `evaluation` resolved against the tables (which it may extend), for a generation that
    /// the names `seen` evaluated already: the same name again is a duplicate (found before its
    /// label value can take a slot); names past the cap share `__other__` and always count.
    pub fn resolve(
        &mut self,
        evaluation: &pb::Evaluation,
        seen: EvaluatedNames,
    ) -> Result<Evaluated, Unmatched> {
        let names_overflowed = &mut self.names_overflowed;
        let name = self.names.slot(&evaluation.name, || {
            EvaluationNamesOverflowed {
                name: &evaluation.name,
                cap: MAX_EVALUATION_NAMES,
            }
            .emit(names_overflowed)
        });
        let shared_name = self.names.shared(name);
        if !shared_name && seen.contains(name) {
            return Err(Unmatched::Duplicate);
        }
        let label = (!evaluation.label.is_empty()).then(|| {
            let slot = name as usize;
            if self.labels.len() <= slot {
                self.labels
                    .resize_with(slot + 1, || NameTable::new(self.max_labels));
            }
            let labels_overflowed = &mut self.labels_overflowed;
            let cap = self.labels[slot].cap;
            self.labels[slot].slot(&evaluation.label, || {
                EvaluationLabelsOverflowed {
                    name: &evaluation.name,
                    label: &evaluation.label,
                    cap,
                }
                .emit(labels_overflowed)
            })
        });
        Ok(Evaluated {
            name,
            score: evaluation.score,
            label,
        })
    }

    /// Moves the windows to `now_ms`.
    pub fn advance(&mut self, now_ms: u64) {
        self.windows.advance(now_ms);
    }

    /// Adds a joined evaluation; call [`advance`](Self::advance) first.
    pub fn observe(&mut self, e: Evaluated) {
        self.windows.live().observe(e);
    }

    pub fn snapshot(&mut self, now_ms: u64) -> EvaluationSnapshot {
        self.windows.advance(now_ms);
        self.windows.flush();
        EvaluationSnapshot {
            names: self.names.names.clone(),
            labels: self.labels.iter().map(|t| t.names.clone()).collect(),
            windows: self.windows.views(),
            names_overflowed: self.names_overflowed,
            labels_overflowed: self.labels_overflowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (name slot, score, label slot) of evaluations.
    fn evaluations() -> impl Strategy<Value = Vec<Evaluated>> {
        proptest::collection::vec(
            (
                0u32..5,
                proptest::option::of(-100i32..100),
                proptest::option::of(0u32..4),
            )
                .prop_map(|(name, score, label)| Evaluated {
                    name,
                    score: score.map(|s| f64::from(s) / 8.0),
                    label,
                }),
            0..60,
        )
    }

    fn state(evaluations: &[Evaluated]) -> EvaluationState {
        let mut s = EvaluationState::default();
        for e in evaluations {
            s.observe(*e);
        }
        s
    }

    /// Stats with trailing empty slots removed (a merge may leave zeroed slots behind).
    fn trimmed(mut s: EvaluationState) -> EvaluationState {
        for n in &mut s.names {
            while n.labels.last() == Some(&0) {
                n.labels.pop();
            }
        }
        while s.names.last() == Some(&NameStats::default()) {
            s.names.pop();
        }
        s
    }

    proptest! {
        /// Merging the states of two sub-windows equals processing their evaluations together
        /// (scores are multiples of 1/8, so their sums are exact in any order).
        #[test]
        fn merge_equals_concatenation(a in evaluations(), b in evaluations()) {
            let mut merged = state(&a);
            merged.merge(&state(&b), 0);
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(trimmed(merged.clone()), trimmed(state(&all)));
            // A reset bucket merged again holds only what it is given.
            let mut reused = merged;
            reused.reset();
            reused.merge(&state(&b), 0);
            prop_assert_eq!(trimmed(reused), trimmed(state(&b)));
        }
    }

    fn evaluation(name: &str, score: Option<f64>, label: &str) -> pb::Evaluation {
        pb::Evaluation {
            name: name.into(),
            score,
            label: label.into(),
        }
    }

    #[test]
    fn names_and_labels_past_their_caps_share_other() {
        let mut m = ModelEvaluations::new(Windows::new(EvaluationState::default(), &[], 0, 0), 2);
        let mut seen = EvaluatedNames::default();
        for i in 0..MAX_EVALUATION_NAMES {
            let e = m.resolve(&evaluation(&format!("n{i}"), Some(1.0), ""), seen);
            assert_eq!(e.unwrap().name, i as u32);
            seen.insert(i as u32);
        }
        assert_eq!(
            m.resolve(&evaluation("n3", None, "x"), seen),
            Err(Unmatched::Duplicate)
        );
        // Names past the cap share __other__, never duplicates of each other.
        let other = MAX_EVALUATION_NAMES as u32;
        seen.insert(other);
        for name in ["late", "later"] {
            let e = m.resolve(&evaluation(name, None, "x"), seen).unwrap();
            assert_eq!(e.name, other);
        }
        assert_eq!(m.names_overflowed, 2);
        // Labels: two per name here, then __other__.
        let labels: Vec<_> = ["up", "down", "meh", "up", "huh"]
            .iter()
            .map(|l| {
                let e = m.resolve(&evaluation("n0", None, l), EvaluatedNames::default());
                e.unwrap().label.unwrap()
            })
            .collect();
        assert_eq!(labels, [0, 1, 2, 0, 2]);
        assert_eq!(m.labels_overflowed, 2);
        // A duplicate's label value takes no slot.
        let _ = m.resolve(&evaluation("n1", None, "new"), seen);
        let s = m.snapshot(0);
        assert_eq!(s.names.len(), MAX_EVALUATION_NAMES + 1);
        assert_eq!(s.names[MAX_EVALUATION_NAMES], OTHER_CLASS);
        assert_eq!(s.labels[0], ["up", "down", OTHER_CLASS]);
        assert!(s.labels[1].is_empty());
        assert_eq!(s.labels[MAX_EVALUATION_NAMES], ["x"]);
    }
}
