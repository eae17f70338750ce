//! Model quality: predictions joined with ground truth (inline, or delayed through the label RPC
//! and matched by request id), accumulated per model version over sliding windows and since
//! start.
//!
//! A labelled pair enters the windows when it becomes complete: at the record for inline labels,
//! at the label for delayed ones. Windows therefore answer "how good were the predictions whose
//! labels arrived in the last 5 minutes"; the label delay histogram says how old those are.
//!
//! What is kept per model: the class table (declared classes first, then classes seen in
//! predictions and labels up to `--max-classes`; the rest share `__other__`), the windows
//! ([`state::QualityState`]) and the join counters. The pending predictions live in the shard's
//! [`LabelJoin`] ([`label_join`]), shared by the shard's models under one capacity.

pub mod evaluation;
pub mod join;
pub mod label_join;
mod shared;
pub mod state;

pub use label_join::{Departed, LabelJoin};

use crate::{
    events::{ClassesOverflowed, InternalEvent},
    models::Declaration,
    pb,
    quality::evaluation::{EvaluatedNames, EvaluationSnapshot, EvaluationState, ModelEvaluations},
    stats::ExplicitHistogram,
    windows::{WindowSpec, Windows},
};
use state::{CurveLayout, KindMismatch, Prediction, QualityState, Scores, Truth};
use std::time::Duration;

/// Class label of classes past `--max-classes`.
pub const OTHER_CLASS: &str = "__other__";
/// Default `--max-classes`: classes with their own series per model.
pub const DEFAULT_MAX_CLASSES: usize = 32;
/// Default `--windows`.
pub const DEFAULT_WINDOWS: &[Duration] = &[Duration::from_secs(300), Duration::from_secs(3600)];
/// Default `--window-buckets`: each window slides in steps of a tenth of its length.
pub const DEFAULT_WINDOW_BUCKETS: usize = 10;
/// Default `--max-pending-labels`: predictions waiting for a delayed label, in all shards.
pub const DEFAULT_MAX_PENDING: usize = 200_000;
/// Default `--label-ttl-seconds`: how long a prediction waits for its label.
pub const DEFAULT_LABEL_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `--max-early-labels`: labels held waiting for a prediction that has not come yet.
pub const DEFAULT_MAX_EARLY_LABELS: usize = 10_000;
/// Default `--early-label-hold-seconds`.
pub const DEFAULT_EARLY_LABEL_HOLD: Duration = Duration::from_secs(60);
/// Default `--exact-auc-max-pairs`: windows with at most this many scored pairs get exact ROC AUC
/// and average precision; larger ones the histogram estimate with its error bound.
pub const DEFAULT_EXACT_AUC_PAIRS: usize = 2_000;

/// Label delay buckets in seconds: 1 s to 7 days.
pub const LABEL_DELAY_BOUNDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0, 172800.0, 604800.0,
];

/// Why a delayed label did not join a prediction (`reason` attribute of
/// `inferscope.labels.unmatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No prediction with this request id was seen within the early-label hold time.
    UnknownRequest = 0,
    /// The prediction left the pending store (TTL or capacity) before the label came.
    ExpiredRequest = 1,
    /// The prediction already had a label (inline, or an earlier delayed one), or the generation
    /// an evaluation of the same name: ignored.
    Duplicate = 2,
    /// A class label for a regression prediction or the reverse; an evaluation for anything but
    /// a generation, or a class or regression label for a generation.
    KindMismatch = 3,
    /// A class index the model's declaration does not have.
    UnknownClass = 4,
    /// `--max-pending-labels 0`: the delayed-label join is off.
    JoinDisabled = 5,
}

impl Unmatched {
    pub const ALL: [Unmatched; 6] = [
        Self::UnknownRequest,
        Self::ExpiredRequest,
        Self::Duplicate,
        Self::KindMismatch,
        Self::UnknownClass,
        Self::JoinDisabled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownRequest => "unknown_request",
            Self::ExpiredRequest => "expired_request",
            Self::Duplicate => "duplicate",
            Self::KindMismatch => "kind_mismatch",
            Self::UnknownClass => "unknown_class",
            Self::JoinDisabled => "join_disabled",
        }
    }
}

/// Quality settings shared by every model of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct QualitySettings {
    pub windows: Vec<WindowSpec>,
    pub max_classes: usize,
    pub exact_auc_pairs: usize,
    /// Pending predictions per shard.
    pub max_pending: usize,
    pub label_ttl: Duration,
    pub max_early_labels: usize,
    pub early_label_hold: Duration,
    /// Predictions waiting for a delayed label go to the fleet's shared store
    /// (`--label-store`), not to the shard's memory.
    pub shared_store: bool,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            windows: DEFAULT_WINDOWS
                .iter()
                .map(|&d| WindowSpec::new(d, DEFAULT_WINDOW_BUCKETS))
                .collect(),
            max_classes: DEFAULT_MAX_CLASSES,
            exact_auc_pairs: DEFAULT_EXACT_AUC_PAIRS,
            max_pending: DEFAULT_MAX_PENDING,
            label_ttl: DEFAULT_LABEL_TTL,
            max_early_labels: DEFAULT_MAX_EARLY_LABELS,
            early_label_hold: DEFAULT_EARLY_LABEL_HOLD,
            shared_store: false,
        }
    }
}

/// The model's task as far as quality is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Task {
    /// Not declared: classification by class names (no curves), or regression, as records come.
    Undeclared,
    Binary,
    Multiclass,
    Regression,
}

/// Class names to dense slots, bounded.
#[derive(Debug, Clone, Default)]
pub struct ClassTable {
    names: Vec<String>,
    /// Declared class index → slot.
    declared: Vec<u32>,
    /// Declared class names, in declared order (several may share the `__other__` slot).
    declared_names: Vec<String>,
    cap: usize,
    /// Class occurrences folded into `__other__`.
    overflowed: u64,
}

impl ClassTable {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ..Default::default()
        }
    }

    #[inline]
    fn slot(&mut self, name: &str) -> u32 {
        self.slot_counted(name, true)
    }

    /// The slot of `name`, created if there is room; `count` says whether folding into
    /// `__other__` is counted (not for re-sent declarations).
    fn slot_counted(&mut self, name: &str, count: bool) -> u32 {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i as u32;
        }
        if self.names.len() < self.cap {
            self.names.push(name.to_owned());
            return (self.names.len() - 1) as u32;
        }
        if !count {
            return self.other();
        }
        ClassesOverflowed {
            class: name,
            cap: self.cap,
        }
        .emit(&mut self.overflowed);
        self.other()
    }

    fn other(&mut self) -> u32 {
        match self.names.iter().position(|n| n == OTHER_CLASS) {
            Some(i) => i as u32,
            None => {
                self.names.push(OTHER_CLASS.to_owned());
                (self.names.len() - 1) as u32
            }
        }
    }

    fn declared_slot(&self, index: u32) -> Option<u32> {
        self.declared.get(index as usize).copied()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Join counters of one model version, cumulative.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinStats {
    pub joined_inline: u64,
    pub joined_delayed: u64,
    pub unmatched: [u64; 6],
    /// Predictions that left the pending store without a label: `[ttl, capacity]`.
    pub unlabeled: [u64; 2],
    /// Predictions whose request id was already pending (the first one is kept).
    pub duplicate_predictions: u64,
    /// Seconds from prediction to label, for delayed labels.
    pub delay: ExplicitHistogram,
    /// Predictions of this model waiting for a label now.
    pub pending: u64,
    /// Labels of this model waiting for their prediction now.
    pub early: u64,
}

impl Default for JoinStats {
    fn default() -> Self {
        Self {
            joined_inline: 0,
            joined_delayed: 0,
            unmatched: [0; 6],
            unlabeled: [0; 2],
            duplicate_predictions: 0,
            delay: ExplicitHistogram::new(LABEL_DELAY_BOUNDS),
            pending: 0,
            early: 0,
        }
    }
}

/// What export needs of a model's quality.
#[derive(Debug, Clone)]
pub struct QualitySnapshot {
    pub task: Task,
    pub classes: Vec<String>,
    /// Binary models: the positive class's slot.
    pub positive: Option<u32>,
    /// Multiclass: whether every declared class has its own score curve (else no macro AUC).
    pub all_curves: bool,
    /// Slots of the declared classes, in declared order.
    pub declared: Vec<u32>,
    /// `(window name, state)`, the since-start state last.
    pub windows: Vec<(String, QualityState)>,
    pub join: JoinStats,
    pub classes_overflowed: u64,
    /// Evaluations of generations, once the model has had one.
    pub evaluations: Option<EvaluationSnapshot>,
}

/// Quality state of one model version.
pub struct ModelQuality {
    /// Unique within the shard, never reused: part of the join keys.
    pub id: u32,
    task: Task,
    classes: ClassTable,
    positive: Option<u32>,
    windows: Windows<QualityState>,
    pub join: JoinStats,
    /// Made at the model's first evaluation (boxed: classifiers carry one pointer).
    evaluations: Option<Box<ModelEvaluations>>,
}

impl ModelQuality {
    pub fn new(id: u32, settings: &QualitySettings, now_ms: u64) -> Self {
        Self {
            id,
            task: Task::Undeclared,
            classes: ClassTable::new(settings.max_classes),
            positive: None,
            windows: Windows::new(
                QualityState::default(),
                &settings.windows,
                settings.exact_auc_pairs,
                now_ms,
            ),
            join: JoinStats::default(),
            evaluations: None,
        }
    }

    /// Takes the task, class list and positive class of a declaration.
    pub fn declare(&mut self, declaration: &Declaration) {
        self.task = match declaration.task {
            pb::TaskType::BinaryClassification => Task::Binary,
            pb::TaskType::MulticlassClassification => Task::Multiclass,
            pb::TaskType::Regression => Task::Regression,
            _ if declaration.class_names.len() == 2 => Task::Binary,
            _ if declaration.class_names.len() > 2 => Task::Multiclass,
            _ => self.task,
        };
        let first = self.classes.declared_names != declaration.class_names;
        self.classes.declared = declaration
            .class_names
            .iter()
            .map(|name| self.classes.slot_counted(name, first))
            .collect();
        self.classes.declared_names = declaration.class_names.clone();
        self.positive = match self.task {
            Task::Binary => declaration
                .positive_class
                .as_deref()
                .or(declaration.class_names.get(1).map(String::as_str))
                .map(|name| self.classes.slot(name)),
            _ => None,
        };
    }

    fn layout(&self) -> CurveLayout<'_> {
        CurveLayout {
            positive: self.positive,
            declared_slots: &self.classes.declared,
            max_curves: self.classes.cap,
        }
    }

    /// The prediction a record makes, if it makes one that can be scored: a class (by index,
    /// by name, as the argmax of its probabilities, or for a declared binary model as
    /// `score > 0.5`, scikit-learn's `predict`), or a regression value.
    pub fn prediction(&mut self, record: &pb::InferenceRecord) -> Option<Prediction> {
        use pb::inference_record::Prediction as P;
        match record.prediction.as_ref()? {
            P::Regression(r) => Some(Prediction::Value(r.value)),
            P::Generation(_) => Some(Prediction::Generation(EvaluatedNames::default())),
            P::Classification(c) => {
                let declared = !self.classes.declared.is_empty();
                let scores = if declared && c.class_probabilities.len() == 2 {
                    Scores::Two([c.class_probabilities[0], c.class_probabilities[1]])
                } else if declared && !c.class_probabilities.is_empty() {
                    Scores::Probabilities(c.class_probabilities.clone().into_boxed_slice())
                } else if let (Some(score), Some(_)) = (c.score, self.positive) {
                    Scores::Positive(score)
                } else {
                    Scores::None
                };
                let slot = if let Some(i) = c.predicted_class_index {
                    self.classes.declared_slot(i)?
                } else if !c.predicted_class.is_empty() {
                    self.classes.slot(&c.predicted_class)
                } else {
                    match &scores {
                        Scores::Two(_) | Scores::Probabilities(_) => {
                            let ps = scores.probabilities().expect("probability variants");
                            // First maximum, as numpy's argmax.
                            let mut best = 0;
                            for (i, p) in ps.iter().enumerate() {
                                if *p > ps[best] {
                                    best = i;
                                }
                            }
                            self.classes.declared_slot(best as u32)?
                        }
                        Scores::Positive(p) => {
                            let positive = self.positive?;
                            if *p > 0.5 {
                                positive
                            } else {
                                let negative = self
                                    .classes
                                    .declared
                                    .iter()
                                    .copied()
                                    .find(|&s| s != positive)?;
                                negative
                            }
                        }
                        Scores::None => return None,
                    }
                };
                Some(Prediction::Class { slot, scores })
            }
        }
    }

    /// The label of `prediction`, resolved against the class table. Called only when the pair
    /// is complete, so labels that join nothing never add classes.
    pub fn truth(
        &mut self,
        prediction: &Prediction,
        label: &pb::Label,
    ) -> Result<Truth, Unmatched> {
        use pb::label::Value;
        match (prediction, label.value.as_ref()) {
            (Prediction::Value(_), Some(Value::RegressionValue(v))) => Ok(Truth::Value(*v)),
            (Prediction::Class { .. }, Some(Value::ClassIndex(i))) => Ok(Truth::Class {
                slot: self
                    .classes
                    .declared_slot(*i)
                    .ok_or(Unmatched::UnknownClass)?,
                declared: Some(*i),
            }),
            (Prediction::Class { .. }, Some(Value::ClassName(name))) => {
                let slot = self.classes.slot(name);
                let declared = self
                    .classes
                    .declared_names
                    .iter()
                    .position(|n| n == name)
                    .map(|i| i as u32);
                Ok(Truth::Class { slot, declared })
            }
            (Prediction::Generation(seen), Some(Value::Evaluation(e))) => {
                let (windows, max_labels) = (&self.windows, self.classes.cap);
                let evaluations = self.evaluations.get_or_insert_with(|| {
                    Box::new(ModelEvaluations::new(
                        windows.beside(EvaluationState::default(), 0),
                        max_labels,
                    ))
                });
                evaluations.resolve(e, *seen).map(Truth::Evaluation)
            }
            _ => Err(Unmatched::KindMismatch),
        }
    }

    /// Moves the windows to `now_ms`; call once per batch before updating.
    #[inline]
    pub fn advance(&mut self, now_ms: u64) {
        self.windows.advance(now_ms);
        if let Some(evaluations) = &mut self.evaluations {
            evaluations.advance(now_ms);
        }
    }

    /// Counts a prediction (labelled or not) for the prediction rates.
    #[inline]
    pub fn count_prediction(&mut self, prediction: &Prediction) {
        if let Prediction::Class { slot, .. } = prediction {
            self.windows.live().count_prediction(*slot);
        }
    }

    /// Adds an evaluation [`Self::truth`] resolved (and made the evaluation state for).
    pub fn observe_evaluation(&mut self, evaluation: evaluation::Evaluated) {
        if let Some(evaluations) = &mut self.evaluations {
            evaluations.observe(evaluation);
        }
    }

    /// Adds a complete (prediction, truth) pair to the windows.
    pub fn observe(&mut self, prediction: &Prediction, truth: Truth) -> Result<(), KindMismatch> {
        let cap = self.windows.exact_cap();
        let layout = CurveLayout {
            positive: self.positive,
            declared_slots: &self.classes.declared,
            max_curves: self.classes.cap,
        };
        self.windows.live().observe(prediction, truth, layout, cap)
    }

    /// The since-start state, up to `now_ms`.
    pub fn since_start(&mut self, now_ms: u64) -> &QualityState {
        self.windows.advance(now_ms);
        self.windows.flush();
        self.windows.total()
    }

    pub fn snapshot(&mut self, now_ms: u64) -> QualitySnapshot {
        self.windows.advance(now_ms);
        self.windows.flush();
        let layout = self.layout();
        let all_curves = layout
            .declared_slots
            .iter()
            .all(|&s| (s as usize) < layout.max_curves);
        QualitySnapshot {
            task: self.task,
            classes: self.classes.names.clone(),
            positive: self.positive,
            all_curves,
            declared: self.classes.declared.clone(),
            windows: self.windows.views(),
            join: self.join.clone(),
            classes_overflowed: self.classes.overflowed,
            evaluations: self.evaluations.as_mut().map(|e| e.snapshot(now_ms)),
        }
    }
}

/// Seconds from `from` to `to` (Unix ns), 0 if `to` is earlier.
pub fn delay_seconds(from_unix_ns: u64, to_unix_ns: u64) -> f64 {
    to_unix_ns.saturating_sub(from_unix_ns) as f64 / 1e9
}
