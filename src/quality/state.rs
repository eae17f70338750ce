//! The mergeable quality state of one window bucket: confusion matrix, score curves,
//! probabilistic losses, regression errors and prediction counts.

use super::evaluation::{Evaluated, EvaluatedNames};
use crate::{
    stats::{ConfusionMatrix, RegressionErrors, ScoreCurve},
    windows::WindowState,
};

/// Per-class probabilities are clipped to `[EPS, 1 − EPS]` before the log, as
/// `sklearn.metrics.log_loss` does with `np.finfo(float64).eps`.
const EPS: f64 = f64::EPSILON;

/// A model's prediction, as kept until its label arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Class {
        slot: u32,
        scores: Scores,
    },
    Value(f64),
    /// A generation: nothing to compare a label with, only the names of the evaluations it got
    /// so far (it waits for more).
    Generation(EvaluatedNames),
}

impl Prediction {
    pub fn is_generation(&self) -> bool {
        matches!(self, Prediction::Generation(_))
    }
}

/// The scores that came with a class prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Scores {
    None,
    /// A binary classifier's probability of the positive class.
    Positive(f64),
    /// Probabilities of a two-class model, kept inline (no allocation per pending prediction).
    Two([f64; 2]),
    /// Probabilities in declared class order.
    Probabilities(Box<[f64]>),
}

impl Scores {
    /// Class probabilities in declared order, if any.
    pub fn probabilities(&self) -> Option<&[f64]> {
        match self {
            Scores::Two(ps) => Some(ps),
            Scores::Probabilities(ps) => Some(ps),
            _ => None,
        }
    }
}

/// Ground truth, resolved against the model's class table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Truth {
    Class {
        slot: u32,
        /// Index in the declared class names, when the class is declared.
        declared: Option<u32>,
    },
    Value(f64),
    /// An evaluation of a generation.
    Evaluation(Evaluated),
}

/// How a model's classes relate to its score curves; fixed per model by its declaration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveLayout<'a> {
    /// Binary: the positive class's slot (and curve 0 is its curve).
    pub positive: Option<u32>,
    /// Declared index → slot; multiclass curves are kept per slot for declared classes.
    pub declared_slots: &'a [u32],
    /// Classes past this slot share `__other__` and get no curve.
    pub max_curves: usize,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QualityState {
    /// Predictions per predicted class slot, labelled or not (for prediction rates).
    pub predictions: Vec<u64>,
    pub confusion: ConfusionMatrix,
    /// Binary: `[positive class]`. Multiclass: one-vs-rest, by class slot.
    pub curves: Vec<ScoreCurve>,
    /// Σ −log p(true class), over the pairs that came with probabilities.
    pub log_loss_sum: f64,
    /// Σ Brier terms (scikit-learn's `brier_score_loss`, halved for fewer than 3 columns).
    pub brier_sum: f64,
    /// Labelled pairs with probabilities.
    pub probabilistic: u64,
    pub regression: RegressionErrors,
}

/// The label and prediction are of different kinds (a class label for a regression, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindMismatch;

fn curve(curves: &mut Vec<ScoreCurve>, i: usize) -> &mut ScoreCurve {
    if curves.len() <= i {
        curves.resize_with(i + 1, ScoreCurve::new);
    }
    &mut curves[i]
}

impl QualityState {
    #[inline]
    pub fn count_prediction(&mut self, slot: u32) {
        let slot = slot as usize;
        if self.predictions.len() <= slot {
            self.predictions.resize(slot + 1, 0);
        }
        self.predictions[slot] += 1;
    }

    /// Adds one labelled pair.
    pub fn observe(
        &mut self,
        prediction: &Prediction,
        truth: Truth,
        layout: CurveLayout<'_>,
        exact_cap: usize,
    ) -> Result<(), KindMismatch> {
        match (prediction, truth) {
            (Prediction::Value(p), Truth::Value(y)) => {
                self.regression.update(y, *p);
                Ok(())
            }
            (
                Prediction::Class { slot, scores },
                Truth::Class {
                    slot: truth,
                    declared,
                },
            ) => {
                self.confusion.update(truth as usize, *slot as usize);
                match scores {
                    Scores::None => {}
                    Scores::Positive(p) => {
                        // A true class outside the declaration has no probability: confusion
                        // matrix only, as for probability vectors below.
                        if let (Some(positive), Some(_)) = (layout.positive, declared) {
                            let y = if truth == positive { 1.0 } else { 0.0 };
                            curve(&mut self.curves, 0).update(*p, truth == positive, exact_cap);
                            // As scikit-learn's two-column form [1 − p, p].
                            let p_true = if y == 1.0 { *p } else { 1.0 - p };
                            self.log_loss_sum -= p_true.clamp(EPS, 1.0 - EPS).ln();
                            let (a, b) = ((1.0 - y) - (1.0 - p), y - p);
                            self.brier_sum += 0.5 * (a * a + b * b);
                            self.probabilistic += 1;
                        }
                    }
                    Scores::Two(_) | Scores::Probabilities(_) => {
                        let ps = scores.probabilities().expect("probability variants");
                        // Pairs whose true class is not declared have no column: only the
                        // confusion matrix counts them.
                        let Some(t) = declared.filter(|&d| (d as usize) < ps.len()) else {
                            return Ok(());
                        };
                        let t = t as usize;
                        match layout.positive {
                            Some(positive) => {
                                if let Some(pi) =
                                    layout.declared_slots.iter().position(|&s| s == positive)
                                {
                                    curve(&mut self.curves, 0).update(
                                        ps[pi],
                                        truth == positive,
                                        exact_cap,
                                    );
                                }
                            }
                            None => {
                                for (i, &p) in ps.iter().enumerate() {
                                    let s = layout.declared_slots.get(i).copied();
                                    if let Some(s) = s.filter(|&s| (s as usize) < layout.max_curves)
                                    {
                                        curve(&mut self.curves, s as usize).update(
                                            p,
                                            i == t,
                                            exact_cap,
                                        );
                                    }
                                }
                            }
                        }
                        self.log_loss_sum -= ps[t].clamp(EPS, 1.0 - EPS).ln();
                        let sum: f64 = ps
                            .iter()
                            .enumerate()
                            .map(|(i, &p)| {
                                let y = if i == t { 1.0 } else { 0.0 };
                                (y - p) * (y - p)
                            })
                            .sum();
                        self.brier_sum += if ps.len() < 3 { 0.5 * sum } else { sum };
                        self.probabilistic += 1;
                    }
                }
                Ok(())
            }
            _ => Err(KindMismatch),
        }
    }

    /// Mean log loss over the pairs with probabilities.
    pub fn log_loss(&self) -> Option<f64> {
        (self.probabilistic > 0).then(|| self.log_loss_sum / self.probabilistic as f64)
    }

    pub fn brier_score(&self) -> Option<f64> {
        (self.probabilistic > 0).then(|| self.brier_sum / self.probabilistic as f64)
    }

    /// Labelled pairs of either kind.
    pub fn labelled(&self) -> u64 {
        self.confusion.total() + self.regression.count()
    }

    pub fn predictions_total(&self) -> u64 {
        self.predictions.iter().sum()
    }

    /// This state in another class table: slot `s` becomes `slots[s]` (merging sidecars' states,
    /// whose tables number the same classes differently: `src/fleet.rs`). Multiclass curves are
    /// per slot and move with it; a binary model's one curve (the positive class's) stays first.
    /// `None` if a slot has no place in `slots`.
    pub fn remapped(&self, slots: &[u32], curves_per_slot: bool) -> Option<QualityState> {
        let to = |slot: usize| slots.get(slot).map(|&s| s as usize);
        let mut out = QualityState {
            log_loss_sum: self.log_loss_sum,
            brier_sum: self.brier_sum,
            probabilistic: self.probabilistic,
            regression: self.regression.clone(),
            ..Default::default()
        };
        for (slot, &n) in self.predictions.iter().enumerate() {
            if n > 0 {
                let s = to(slot)?;
                if out.predictions.len() <= s {
                    out.predictions.resize(s + 1, 0);
                }
                out.predictions[s] += n;
            }
        }
        let cm = &self.confusion;
        for t in 0..cm.classes() {
            for p in 0..cm.classes() {
                let n = cm.count(t, p);
                if n > 0 {
                    out.confusion.add(to(t)?, to(p)?, n);
                }
            }
        }
        for (i, c) in self.curves.iter().enumerate() {
            if c.count() > 0 {
                let i = if curves_per_slot { to(i)? } else { i };
                *curve(&mut out.curves, i) = c.clone();
            }
        }
        Some(out)
    }
}

impl WindowState for QualityState {
    fn empty_like(&self) -> Self {
        Self::default()
    }

    fn merge(&mut self, other: &Self, exact_budget: usize) {
        if self.predictions.len() < other.predictions.len() {
            self.predictions.resize(other.predictions.len(), 0);
        }
        for (mine, theirs) in self.predictions.iter_mut().zip(&other.predictions) {
            *mine += theirs;
        }
        self.confusion.merge(&other.confusion);
        for (i, theirs) in other.curves.iter().enumerate() {
            curve(&mut self.curves, i).merge(theirs, exact_budget);
        }
        self.log_loss_sum += other.log_loss_sum;
        self.brier_sum += other.brier_sum;
        self.probabilistic += other.probabilistic;
        self.regression.merge(&other.regression);
    }

    fn seal(&mut self) {
        for c in &mut self.curves {
            c.seal();
        }
    }

    fn reset(&mut self) {
        self.predictions.fill(0);
        self.confusion.reset();
        for c in &mut self.curves {
            c.reset();
        }
        self.log_loss_sum = 0.0;
        self.brier_sum = 0.0;
        self.probabilistic = 0;
        self.regression.reset();
    }

    fn exact_len(&self) -> usize {
        self.curves
            .iter()
            .map(ScoreCurve::exact_len)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Average;
    use proptest::prelude::*;

    const DECLARED: [u32; 3] = [0, 1, 2];

    /// (truth, probabilities) for a 3-class model; the prediction is the argmax.
    fn rows() -> impl Strategy<Value = Vec<(u32, [f64; 3])>> {
        proptest::collection::vec(
            (0u32..3, (1u32..20, 1u32..20, 1u32..20)).prop_map(|(t, (a, b, c))| {
                let s = (a + b + c) as f64;
                (t, [a as f64 / s, b as f64 / s, c as f64 / s])
            }),
            0..80,
        )
    }

    fn state(rows: &[(u32, [f64; 3])], cap: usize) -> QualityState {
        let layout = CurveLayout {
            positive: None,
            declared_slots: &DECLARED,
            max_curves: 8,
        };
        let mut s = QualityState::default();
        for (t, ps) in rows {
            let slot = (0..3).fold(0, |best, i| if ps[i] > ps[best] { i } else { best }) as u32;
            let prediction = Prediction::Class {
                slot,
                scores: Scores::Probabilities(Box::new(*ps)),
            };
            s.count_prediction(slot);
            s.observe(
                &prediction,
                Truth::Class {
                    slot: *t,
                    declared: Some(*t),
                },
                layout,
                cap,
            )
            .unwrap();
        }
        s
    }

    proptest! {
        /// Merging the states of two sub-windows equals processing their records together.
        #[test]
        fn merge_equals_concatenation(a in rows(), b in rows(), cap in 0usize..200) {
            let mut merged = state(&a, cap);
            merged.merge(&state(&b, cap), cap);
            let all: Vec<_> = a.iter().chain(&b).cloned().collect();
            let whole = state(&all, cap);
            prop_assert_eq!(&merged.predictions, &whole.predictions);
            prop_assert_eq!(&merged.confusion, &whole.confusion);
            prop_assert_eq!(merged.probabilistic, whole.probabilistic);
            prop_assert!((merged.log_loss_sum - whole.log_loss_sum).abs() < 1e-9);
            prop_assert!((merged.brier_sum - whole.brier_sum).abs() < 1e-9);
            prop_assert_eq!(
                merged.confusion.averaged(Average::Weighted),
                whole.confusion.averaged(Average::Weighted)
            );
            for (m, w) in merged.curves.iter().zip(&whole.curves) {
                prop_assert_eq!(m.is_exact(), w.is_exact());
                let (ma, wa) = (m.roc_auc(), w.roc_auc());
                prop_assert_eq!(ma.is_some(), wa.is_some());
                if let (Some(ma), Some(wa)) = (ma, wa) {
                    prop_assert!((ma.value - wa.value).abs() < 1e-12);
                }
            }
        }
    }
}
