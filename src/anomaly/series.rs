//! Change detection on a model's metric series ("dynamic thresholds"): at every snapshot (one
//! per metric export) each series gets one point computed over the interval since the previous
//! snapshot — error rate, latency p95, accuracy (classification) or MAE (regression), the
//! largest drift score of the shortest window, and the anomaly rate — and four detectors watch
//! it: Page-Hinkley and ADWIN (river's, [`crate::stats::change`]), two-sided CUSUM and an EWMA
//! chart. Points are per interval, not sliding-window values, so successive points do not share
//! records (a control chart assumes independent points).
//!
//! Scale: CUSUM and EWMA measure in σ of their warm-up, with a floor per series so a series that
//! was constant during warm-up does not alarm on its first movement; Page-Hinkley gets the same
//! standardised values (δ = 0.5σ, λ = 5σ, CUSUM's textbook k and h); ADWIN sees raw values (its
//! bound adapts to their variance). After a detection, the detector that fired starts over with a
//! new warm-up: the new level becomes the in-control one, so a lasting shift is reported once.

use super::AnomalySettings;
use crate::stats::change::{Adwin, Baseline, Cusum, Direction, Ewma, PageHinkley};
use std::sync::Arc;

/// The watched series, in export order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    ErrorRate = 0,
    LatencyP95 = 1,
    Accuracy = 2,
    MeanAbsoluteError = 3,
    DriftScore = 4,
    AnomalyRate = 5,
}

impl Series {
    pub const ALL: [Series; 6] = [
        Self::ErrorRate,
        Self::LatencyP95,
        Self::Accuracy,
        Self::MeanAbsoluteError,
        Self::DriftScore,
        Self::AnomalyRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::LatencyP95 => "latency_p95",
            Self::Accuracy => "accuracy",
            Self::MeanAbsoluteError => "mae",
            Self::DriftScore => "drift_score",
            Self::AnomalyRate => "anomaly_rate",
        }
    }

    /// Floor of σ: absolute, and relative to the warm-up level. Rates move by at least a
    /// percentage point before it counts; latency and MAE by 5 %; a drift score (PSI or JS) by
    /// 0.02.
    fn sigma_floor(self, level: f64) -> f64 {
        match self {
            Self::ErrorRate | Self::Accuracy | Self::AnomalyRate => 0.01,
            Self::LatencyP95 | Self::MeanAbsoluteError => 0.05 * level.abs(),
            Self::DriftScore => 0.02,
        }
    }
}

/// The detectors, in export order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    PageHinkley = 0,
    Adwin = 1,
    Cusum = 2,
    Ewma = 3,
}

impl Detector {
    pub const ALL: [Detector; 4] = [Self::PageHinkley, Self::Adwin, Self::Cusum, Self::Ewma];

    pub fn name(self) -> &'static str {
        match self {
            Self::PageHinkley => "page_hinkley",
            Self::Adwin => "adwin",
            Self::Cusum => "cusum",
            Self::Ewma => "ewma",
        }
    }
}

/// One detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub series: Series,
    pub detector: Detector,
    /// The point that completed the detection.
    pub value: f64,
    /// The level the detector compared against (its warm-up mean; ADWIN's window mean).
    pub level: f64,
}

/// Page-Hinkley on values standardised by its own warm-up.
#[derive(Debug, Clone)]
struct StandardisedPageHinkley {
    warmup: u64,
    series: Series,
    baseline: Baseline,
    ph: PageHinkley,
}

impl StandardisedPageHinkley {
    fn new(warmup: u64, series: Series) -> Self {
        Self {
            warmup,
            series,
            baseline: Baseline::default(),
            ph: PageHinkley::new(1, 0.5, 5.0, 1.0 - 0.0001, Direction::Both),
        }
    }

    fn update(&mut self, x: f64) -> bool {
        if self.baseline.count() < self.warmup {
            self.baseline.update(x);
            return false;
        }
        let mean = self.baseline.mean();
        let sigma = self.baseline.sigma().max(self.series.sigma_floor(mean));
        self.ph.update((x - mean) / sigma)
    }
}

/// The detectors of one series.
#[derive(Debug, Clone)]
struct Watched {
    series: Series,
    warmup: u64,
    page_hinkley: StandardisedPageHinkley,
    adwin: Adwin,
    cusum: Cusum,
    ewma: Ewma,
    /// The last point, exported as a gauge.
    last: Option<f64>,
}

impl Watched {
    fn new(series: Series, warmup: u64) -> Self {
        Self {
            series,
            warmup,
            page_hinkley: StandardisedPageHinkley::new(warmup, series),
            // river's δ and sub-window sizes; checked at every point (clock 1) since points are
            // already minutes apart.
            adwin: Adwin::new(0.002, 1, 5, 5, 10),
            cusum: Cusum::new(warmup, 0.5, 5.0),
            ewma: Ewma::new(warmup, 0.2, 3.0),
            last: None,
        }
    }

    fn update(&mut self, x: f64, out: &mut Vec<Detection>) {
        self.last = Some(x);
        // The floors follow the warm-up level once known.
        self.cusum.min_sigma = self
            .cusum
            .target()
            .map_or(0.0, |level| self.series.sigma_floor(level));
        self.ewma.min_sigma = self.cusum.min_sigma;
        let level = self.cusum.target().unwrap_or(x);
        let adwin_level = self.adwin.estimation();
        let mut push = |detector, level| {
            out.push(Detection {
                series: self.series,
                detector,
                value: x,
                level,
            })
        };
        let ph_level = self.page_hinkley.baseline.mean();
        if self.page_hinkley.update(x) {
            push(Detector::PageHinkley, ph_level);
            self.page_hinkley = StandardisedPageHinkley::new(self.warmup, self.series);
        }
        if self.adwin.update(x) {
            push(Detector::Adwin, adwin_level);
        }
        if self.cusum.update(x) {
            push(Detector::Cusum, level);
            self.cusum = Cusum::new(self.warmup, 0.5, 5.0);
        }
        if self.ewma.update(x) {
            push(Detector::Ewma, level);
            self.ewma = Ewma::new(self.warmup, 0.2, 3.0);
        }
    }
}

/// Cumulative counts a snapshot reads, from which the interval points are differences.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub records: u64,
    pub errors: u64,
    pub flagged: u64,
    pub labelled: u64,
    pub correct: u64,
    pub regression_pairs: u64,
    pub abs_error: f64,
}

/// The series and detectors of one model version.
#[derive(Debug, Clone)]
pub struct SeriesWatch {
    settings: Arc<AnomalySettings>,
    previous: Totals,
    watched: Vec<Watched>,
    /// Detections by `[Series as usize][Detector as usize]`.
    pub detections: [[u64; 4]; 6],
}

impl SeriesWatch {
    pub fn new(settings: Arc<AnomalySettings>) -> Self {
        let warmup = settings.change_warmup;
        Self {
            settings,
            previous: Totals::default(),
            watched: Series::ALL
                .iter()
                .map(|&s| Watched::new(s, warmup))
                .collect(),
            detections: [[0; 4]; 6],
        }
    }

    /// The last point of each series that has one.
    pub fn last_points(&self) -> impl Iterator<Item = (Series, f64)> + '_ {
        self.watched
            .iter()
            .filter_map(|w| Some((w.series, w.last?)))
    }

    /// One interval: the new cumulative `totals`, the interval's latency p95 and the current
    /// drift score. Returns the detections it completed (also counted).
    pub fn observe(
        &mut self,
        totals: Totals,
        latency_p95: Option<f64>,
        drift_score: Option<f64>,
    ) -> Vec<Detection> {
        let mut out = Vec::new();
        if !self.settings.change_detection {
            return out;
        }
        let min = self.settings.change_min_records.max(1);
        let p = self.previous;
        // A state recreated from zero (never happens within one watch) would underflow.
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let records = d(totals.records, p.records);
        let mut points: [Option<f64>; 6] = [None; 6];
        if records >= min {
            points[Series::ErrorRate as usize] =
                Some(d(totals.errors, p.errors) as f64 / records as f64);
            points[Series::AnomalyRate as usize] =
                Some(d(totals.flagged, p.flagged) as f64 / records as f64);
        }
        points[Series::LatencyP95 as usize] = latency_p95;
        let labelled = d(totals.labelled, p.labelled);
        if labelled >= min {
            points[Series::Accuracy as usize] =
                Some(d(totals.correct, p.correct) as f64 / labelled as f64);
        }
        let pairs = d(totals.regression_pairs, p.regression_pairs);
        if pairs >= min {
            points[Series::MeanAbsoluteError as usize] =
                Some((totals.abs_error - p.abs_error) / pairs as f64);
        }
        points[Series::DriftScore as usize] = drift_score;
        self.previous = totals;
        for (w, point) in self.watched.iter_mut().zip(points) {
            if let Some(x) = point.filter(|x| x.is_finite()) {
                w.update(x, &mut out);
            }
        }
        for det in &out {
            self.detections[det.series as usize][det.detector as usize] += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> SeriesWatch {
        SeriesWatch::new(Arc::new(AnomalySettings::default()))
    }

    /// Feeds error rates (1000 records per interval) and returns the detections per interval.
    fn run(watch: &mut SeriesWatch, rates: &[f64]) -> Vec<Vec<Detection>> {
        let mut totals = watch.previous;
        rates
            .iter()
            .map(|&r| {
                totals.records += 1000;
                totals.errors += (r * 1000.0).round() as u64;
                watch.observe(totals, None, None)
            })
            .collect()
    }

    #[test]
    fn an_error_burst_is_detected_by_the_control_charts_within_two_intervals() {
        let mut w = watch();
        let calm: Vec<f64> = (0..30).map(|i| 0.01 + 0.002 * (i % 3) as f64).collect();
        let found = run(&mut w, &calm);
        assert!(found.iter().all(|d| d.is_empty()), "{found:?}");
        let burst = run(&mut w, &[0.2, 0.2]);
        let first: Vec<_> = burst.concat().iter().map(|d| d.detector).collect();
        for detector in [Detector::Cusum, Detector::Ewma, Detector::PageHinkley] {
            assert!(first.contains(&detector), "{detector:?} in {first:?}");
        }
        assert!(burst.concat().iter().all(|d| d.series == Series::ErrorRate));
        assert!(w.detections[0][Detector::Cusum as usize] >= 1);
    }

    #[test]
    fn a_lasting_shift_is_reported_once_by_the_charts_that_restart_on_it() {
        let mut w = watch();
        run(&mut w, &[0.01; 20]);
        let after: Vec<Detection> = run(&mut w, &[0.10; 40]).concat();
        let cusum = after
            .iter()
            .filter(|d| d.detector == Detector::Cusum)
            .count();
        assert_eq!(cusum, 1, "{after:?}");
    }

    #[test]
    fn intervals_with_too_few_records_give_no_point() {
        let mut w = watch();
        let totals = Totals {
            records: 10,
            errors: 10,
            ..Default::default()
        };
        assert!(w.observe(totals, None, None).is_empty());
        assert_eq!(w.last_points().count(), 0);
    }

    #[test]
    fn change_detection_can_be_turned_off() {
        let settings = AnomalySettings {
            change_detection: false,
            ..Default::default()
        };
        let mut w = SeriesWatch::new(Arc::new(settings));
        let found = run(
            &mut w,
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9],
        );
        assert!(found.concat().is_empty());
    }
}
