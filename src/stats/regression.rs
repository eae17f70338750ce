//! Regression errors from mergeable sums, with scikit-learn's definitions:
//! `mean_absolute_error`, `mean_squared_error`, `root_mean_squared_error`,
//! `mean_absolute_percentage_error` (|y − ŷ| / max(|y|, ε), ε = f64 machine epsilon), `r2_score`
//! (with `force_finite=True`: 1 when the labels are constant and the predictions exact, else 0;
//! undefined below two samples), and the mean error ŷ − y (bias: positive means over-prediction).
//!
//! The label variance for R² is kept as mean and sum of squared deviations, merged with Chan et
//! al.'s parallel formula, which stays accurate where Σy² − (Σy)²/n would cancel.

/// Sums over (label, prediction) pairs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegressionErrors {
    count: u64,
    abs_error: f64,
    squared_error: f64,
    abs_percentage_error: f64,
    /// Σ (prediction − label).
    error: f64,
    label_mean: f64,
    /// Σ (label − label_mean)².
    label_m2: f64,
}

impl RegressionErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn abs_error_sum(&self) -> f64 {
        self.abs_error
    }

    pub fn squared_error_sum(&self) -> f64 {
        self.squared_error
    }

    #[inline]
    pub fn update(&mut self, label: f64, prediction: f64) {
        let error = prediction - label;
        self.count += 1;
        self.abs_error += error.abs();
        self.squared_error += error * error;
        self.abs_percentage_error += error.abs() / label.abs().max(f64::EPSILON);
        self.error += error;
        // Welford.
        let delta = label - self.label_mean;
        self.label_mean += delta / self.count as f64;
        self.label_m2 += delta * (label - self.label_mean);
    }

    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.label_mean - self.label_mean;
        self.label_mean += delta * nb / n;
        self.label_m2 += other.label_m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.abs_error += other.abs_error;
        self.squared_error += other.squared_error;
        self.abs_percentage_error += other.abs_percentage_error;
        self.error += other.error;
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn mean(&self, sum: f64) -> Option<f64> {
        (self.count > 0).then(|| sum / self.count as f64)
    }

    pub fn mae(&self) -> Option<f64> {
        self.mean(self.abs_error)
    }

    pub fn mse(&self) -> Option<f64> {
        self.mean(self.squared_error)
    }

    pub fn rmse(&self) -> Option<f64> {
        self.mse().map(f64::sqrt)
    }

    pub fn mape(&self) -> Option<f64> {
        self.mean(self.abs_percentage_error)
    }

    pub fn mean_error(&self) -> Option<f64> {
        self.mean(self.error)
    }

    pub fn r2(&self) -> Option<f64> {
        if self.count < 2 {
            return None;
        }
        if self.label_m2 == 0.0 {
            return Some(if self.squared_error == 0.0 { 1.0 } else { 0.0 });
        }
        Some(1.0 - self.squared_error / self.label_m2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errors(pairs: &[(f64, f64)]) -> RegressionErrors {
        let mut e = RegressionErrors::new();
        for &(y, p) in pairs {
            e.update(y, p);
        }
        e
    }

    proptest! {
        #[test]
        fn merge_equals_concatenation(
            a in proptest::collection::vec((-1e3f64..1e3, -1e3f64..1e3), 0..60),
            b in proptest::collection::vec((-1e3f64..1e3, -1e3f64..1e3), 0..60),
        ) {
            let mut merged = errors(&a);
            merged.merge(&errors(&b));
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            let whole = errors(&all);
            let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (None, None) => true,
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => false,
            };
            prop_assert_eq!(merged.count(), whole.count());
            prop_assert!(close(merged.mae(), whole.mae()));
            prop_assert!(close(merged.mse(), whole.mse()));
            prop_assert!(close(merged.mape(), whole.mape()));
            prop_assert!(close(merged.mean_error(), whole.mean_error()));
            prop_assert!(close(merged.r2(), whole.r2()));
        }
    }
}
