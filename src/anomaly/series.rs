//! Change detection on a model's metric series ("dynamic thresholds"): at every interval close
//! (one per `--metric-export-interval`, on the shard's own timer) each series gets one point computed over the interval since the
//! previous close — error rate, latency p95, accuracy (classification) or MAE (regression), the
//! largest drift score of the shortest window, and the anomaly rate — and up to four detectors
//! watch it: Page-Hinkley and ADWIN (river's, [`crate::stats::change`]), a two-sided CUSUM and an
//! EWMA chart.
//!
//! Standardisation: the first `change_warmup` points of a series fix its level (their median)
//! and spread (their MAD as a normal σ), robustly, so a burst inside the warm-up does not become
//! the norm. Every later point is standardised, z = (x − level) / σ, with σ floored per point:
//! for rates by the binomial noise of the interval (√(p(1 − p)/n), the level p at least 0.1 %),
//! for latency and MAE at 5 % of the level, for drift scores at 0.02, so a series that was
//! constant during its warm-up does not alarm on its first move and a quiet interval of few
//! records does not look like a shift. All four detectors see z, so their parameters are in σ
//! (defaults in [`super::settings`], calibrated by `tools/calibrate-change.py`).
//!
//! After a detection the series warms up again from the next point: a lasting shift becomes the
//! new level and is reported once; a burst that ends leaves the robust warm-up unmoved. The
//! detectors are silent while a series warms up.
//!
//! The drift score comes from a sliding window, so successive points share records (the other
//! series are per interval); its warm-up spread absorbs part of that.

use super::AnomalySettings;
use crate::stats::change::{Adwin, Cusum, Direction, Ewma, PageHinkley};
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
            Self::ErrorRate => "errors",
            Self::LatencyP95 => "latency_p95",
            Self::Accuracy => "accuracy",
            Self::MeanAbsoluteError => "mae",
            Self::DriftScore => "drift_score",
            Self::AnomalyRate => "flagged",
        }
    }

    /// The unit of the series' points: shares are `1`, the latency quantile seconds, the mean
    /// absolute error the label's unit and the drift score (PSI or JS distance) none.
    pub fn unit(self) -> &'static str {
        match self {
            Self::ErrorRate | Self::Accuracy | Self::AnomalyRate => "1",
            Self::LatencyP95 => "s",
            Self::MeanAbsoluteError | Self::DriftScore => "",
        }
    }

    /// The instrument its last point is exported as: one per series, so that each has one unit.
    pub fn instrument(self) -> &'static str {
        match self {
            Self::ErrorRate => "inferscope.anomaly.series.errors",
            Self::LatencyP95 => "inferscope.anomaly.series.latency_p95",
            Self::Accuracy => "inferscope.anomaly.series.accuracy",
            Self::MeanAbsoluteError => "inferscope.anomaly.series.mae",
            Self::DriftScore => "inferscope.anomaly.series.drift_score",
            Self::AnomalyRate => "inferscope.anomaly.series.flagged",
        }
    }

    /// The smallest σ a point of this series is standardised with, given the warm-up `level`
    /// and the point's records (or pairs) `n`.
    fn sigma_floor(self, level: f64, n: u64) -> f64 {
        match self {
            Self::ErrorRate | Self::Accuracy | Self::AnomalyRate => {
                let p = level.clamp(1e-3, 1.0 - 1e-3);
                (p * (1.0 - p) / n.max(1) as f64).sqrt()
            }
            Self::LatencyP95 | Self::MeanAbsoluteError => (0.05 * level.abs()).max(1e-9),
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
    /// The series' level from its warm-up.
    pub level: f64,
}

/// The detectors of one series after its warm-up, on standardised points.
#[derive(Debug, Clone)]
struct Detectors {
    page_hinkley: Option<PageHinkley>,
    adwin: Option<Adwin>,
    cusum: Option<Cusum>,
    ewma: Option<Ewma>,
}

impl Detectors {
    fn new(s: &AnomalySettings) -> Self {
        let on = |name: &str| s.change_detectors.iter().any(|d| d == name);
        Self {
            page_hinkley: on("page_hinkley").then(|| {
                PageHinkley::new(
                    1,
                    s.page_hinkley_delta,
                    s.page_hinkley_threshold,
                    1.0 - 0.0001,
                    Direction::Both,
                )
            }),
            // river's sub-window sizes; checked at every point (clock 1): points are already
            // an interval apart.
            adwin: on("adwin").then(|| Adwin::new(s.adwin_delta, 1, 5, 5, 10)),
            cusum: on("cusum").then(|| Cusum::in_control(0.0, 1.0, s.cusum_k, s.cusum_h)),
            ewma: on("ewma").then(|| Ewma::in_control(0.0, 1.0, s.ewma_lambda, s.ewma_l)),
        }
    }

    /// Feeds `z`; the detectors that fired.
    fn update(&mut self, z: f64) -> Vec<Detector> {
        let mut fired = Vec::new();
        if self.page_hinkley.as_mut().is_some_and(|d| d.update(z)) {
            fired.push(Detector::PageHinkley);
        }
        if self.adwin.as_mut().is_some_and(|d| d.update(z)) {
            fired.push(Detector::Adwin);
        }
        if self.cusum.as_mut().is_some_and(|d| d.update(z)) {
            fired.push(Detector::Cusum);
        }
        if self.ewma.as_mut().is_some_and(|d| d.update(z)) {
            fired.push(Detector::Ewma);
        }
        fired
    }
}

/// Where a series is: fixing its level, or watched against it.
#[derive(Debug, Clone)]
enum Phase {
    Warming(Vec<f64>),
    Watching {
        level: f64,
        /// The robust σ of the warm-up (floored per point).
        sigma: f64,
        detectors: Box<Detectors>,
    },
}

/// Median and MAD-as-σ of a few points.
fn median_and_sigma(points: &[f64]) -> (f64, f64) {
    let mut sorted = points.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (median, mad) = super::robust::median_and_mad(&sorted);
    (median, mad / super::robust::NORMAL_MAD)
}

/// One series and its detectors.
#[derive(Debug, Clone)]
struct Watched {
    series: Series,
    phase: Phase,
    /// The last point, exported as a gauge; cleared by an interval without one.
    last: Option<f64>,
}

impl Watched {
    fn new(series: Series) -> Self {
        Self {
            series,
            phase: Phase::Warming(Vec::new()),
            last: None,
        }
    }

    /// One point `x` over `n` records (or pairs).
    fn update(&mut self, x: f64, n: u64, s: &AnomalySettings, out: &mut Vec<Detection>) {
        self.last = Some(x);
        match &mut self.phase {
            Phase::Warming(points) => {
                points.push(x);
                if points.len() as u64 >= s.change_warmup {
                    let (level, sigma) = median_and_sigma(points);
                    self.phase = Phase::Watching {
                        level,
                        sigma,
                        detectors: Box::new(Detectors::new(s)),
                    };
                }
            }
            Phase::Watching {
                level,
                sigma,
                detectors,
            } => {
                let sigma = sigma.max(self.series.sigma_floor(*level, n));
                let fired = detectors.update((x - *level) / sigma);
                if !fired.is_empty() {
                    out.extend(fired.into_iter().map(|detector| Detection {
                        series: self.series,
                        detector,
                        value: x,
                        level: *level,
                    }));
                    self.phase = Phase::Warming(Vec::new());
                }
            }
        }
    }

    /// Starts over (the series' meaning changed: a new reference profile, say).
    fn restart(&mut self) {
        self.phase = Phase::Warming(Vec::new());
        self.last = None;
    }
}

/// Cumulative counts an interval close reads, from which the interval points are differences.
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

/// What an interval close knows beyond the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Extras {
    /// The interval's latency p95 and its number of latencies.
    pub latency_p95: Option<(f64, u64)>,
    /// The current drift score (largest PSI or JS distance of the first window).
    pub drift_score: Option<f64>,
    /// False while a detector that raises flags is still warming up (the anomaly rate is not
    /// comparable yet); such intervals give no anomaly-rate point.
    pub flags_settled: bool,
}

/// The series and detectors of one model version.
#[derive(Debug, Clone)]
pub struct SeriesWatch {
    settings: Arc<AnomalySettings>,
    previous: Totals,
    watched: Vec<Watched>,
    /// Detections by `[Series as usize][Detector as usize]`.
    pub detections: [[u64; Detector::ALL.len()]; Series::ALL.len()],
    /// Series that have had a point: their detection counters are exported, zeros included.
    pub active: [bool; Series::ALL.len()],
}

impl SeriesWatch {
    pub fn new(settings: Arc<AnomalySettings>) -> Self {
        Self {
            settings,
            previous: Totals::default(),
            watched: Series::ALL.iter().map(|&s| Watched::new(s)).collect(),
            detections: [[0; Detector::ALL.len()]; Series::ALL.len()],
            active: [false; Series::ALL.len()],
        }
    }

    /// The last point of each series that had one in the last interval.
    pub fn last_points(&self) -> impl Iterator<Item = (Series, f64)> + '_ {
        self.watched
            .iter()
            .filter_map(|w| Some((w.series, w.last?)))
    }

    /// The series whose meaning changed with the reference profile start over.
    pub fn profile_changed(&mut self) {
        for w in &mut self.watched {
            if matches!(w.series, Series::DriftScore | Series::AnomalyRate) {
                w.restart();
            }
        }
    }

    /// Closes one interval: the new cumulative `totals` and the `extras`. Returns the detections
    /// it completed (also counted).
    pub fn observe(&mut self, totals: Totals, extras: Extras) -> Vec<Detection> {
        let mut out = Vec::new();
        if !self.settings.change_detection {
            return out;
        }
        let min = self.settings.change_min_records.max(1);
        let p = self.previous;
        self.previous = totals;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let records = d(totals.records, p.records);
        let labelled = d(totals.labelled, p.labelled);
        let pairs = d(totals.regression_pairs, p.regression_pairs);
        let mut points: [Option<(f64, u64)>; Series::ALL.len()] = [None; Series::ALL.len()];
        if records >= min {
            points[Series::ErrorRate as usize] =
                Some((d(totals.errors, p.errors) as f64 / records as f64, records));
            if extras.flags_settled {
                points[Series::AnomalyRate as usize] = Some((
                    d(totals.flagged, p.flagged) as f64 / records as f64,
                    records,
                ));
            }
        }
        points[Series::LatencyP95 as usize] = extras.latency_p95.filter(|&(_, n)| n >= min);
        if labelled >= min {
            points[Series::Accuracy as usize] = Some((
                d(totals.correct, p.correct) as f64 / labelled as f64,
                labelled,
            ));
        }
        if pairs >= min {
            points[Series::MeanAbsoluteError as usize] =
                Some(((totals.abs_error - p.abs_error) / pairs as f64, pairs));
        }
        points[Series::DriftScore as usize] = extras.drift_score.map(|x| (x, records));
        let settings = self.settings.clone();
        for ((w, point), active) in self.watched.iter_mut().zip(points).zip(&mut self.active) {
            match point.filter(|(x, _)| x.is_finite()) {
                Some((x, n)) => {
                    *active = true;
                    w.update(x, n, &settings, &mut out);
                }
                None => w.last = None,
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
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn watch() -> SeriesWatch {
        SeriesWatch::new(Arc::new(AnomalySettings::default()))
    }

    /// Intervals of `n` records with `errors[i]` failed; the detections of each.
    fn run(watch: &mut SeriesWatch, n: u64, errors: &[u64]) -> Vec<Vec<Detection>> {
        let mut totals = watch.previous;
        errors
            .iter()
            .map(|&e| {
                totals.records += n;
                totals.errors += e;
                watch.observe(
                    totals,
                    Extras {
                        flags_settled: true,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// Binomial(n, p) draws.
    fn binomial(rng: &mut StdRng, n: u64, p: f64, k: usize) -> Vec<u64> {
        (0..k)
            .map(|_| (0..n).filter(|_| rng.random::<f64>() < p).count() as u64)
            .collect()
    }

    /// The interval at which each detector first fired on an error rate going from 2 % to 20 %
    /// after 60 calm intervals, with only `detectors` on.
    fn first_detections(detectors: &[&str]) -> Vec<(Detector, usize)> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut w = SeriesWatch::new(Arc::new(AnomalySettings {
            change_detectors: detectors.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }));
        let calm = binomial(&mut rng, 1000, 0.02, 60);
        assert!(run(&mut w, 1000, &calm).concat().is_empty());
        let found = run(&mut w, 1000, &binomial(&mut rng, 1000, 0.2, 20));
        assert!(found
            .concat()
            .iter()
            .all(|d| d.series == Series::ErrorRate && (d.level - 0.02).abs() < 0.01));
        Detector::ALL
            .iter()
            .filter_map(|&d| {
                let at = found
                    .iter()
                    .position(|f| f.iter().any(|x| x.detector == d))?;
                Some((d, at))
            })
            .collect()
    }

    #[test]
    fn an_error_burst_is_detected_by_every_detector_within_a_few_intervals() {
        // Together: the charts and Page-Hinkley at once (the series then warms up again, so
        // the slower ADWIN does not report the same change).
        let all = first_detections(&["page_hinkley", "adwin", "cusum", "ewma"]);
        assert_eq!(
            all,
            vec![
                (Detector::PageHinkley, 0),
                (Detector::Cusum, 0),
                (Detector::Ewma, 0)
            ]
        );
        // Alone, each one.
        for (name, detector, within) in [
            ("page_hinkley", Detector::PageHinkley, 1),
            ("adwin", Detector::Adwin, 15),
            ("cusum", Detector::Cusum, 1),
            ("ewma", Detector::Ewma, 1),
        ] {
            let found = first_detections(&[name]);
            assert!(
                matches!(found[..], [(d, at)] if d == detector && at <= within),
                "{name}: {found:?}"
            );
        }
    }

    #[test]
    fn calm_binomial_intervals_raise_almost_no_alarm() {
        // Two weeks of 15 s intervals would be 80 000; 20 000 is a long day and a half.
        let mut rng = StdRng::seed_from_u64(2);
        let mut w = watch();
        let mut totals = Totals::default();
        let mut detections = 0;
        for _ in 0..20_000 {
            let n = 200 + rng.random_range(0..600);
            totals.records += n;
            totals.errors += (0..n).filter(|_| rng.random::<f64>() < 0.03).count() as u64;
            detections += w
                .observe(
                    totals,
                    Extras {
                        flags_settled: true,
                        ..Default::default()
                    },
                )
                .len();
        }
        assert!(
            detections <= 12,
            "{detections} false alarms in 20 000 points"
        );
    }

    #[test]
    fn a_lasting_shift_is_reported_once_and_becomes_the_new_level() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut w = watch();
        run(&mut w, 1000, &binomial(&mut rng, 1000, 0.01, 40));
        let after = run(&mut w, 1000, &binomial(&mut rng, 1000, 0.10, 200)).concat();
        assert!(!after.is_empty());
        // Every detection within the first intervals of the shift, none once it is the norm.
        let detectors: Vec<_> = after.iter().map(|d| d.detector).collect();
        let mut unique = detectors.clone();
        unique.dedup();
        assert_eq!(detectors.len(), unique.len(), "{after:?}");
    }

    #[test]
    fn a_burst_inside_the_warm_up_does_not_become_the_level() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut w = watch();
        let mut errors = binomial(&mut rng, 1000, 0.02, 30);
        errors[10] = 400;
        errors[11] = 380;
        assert!(run(&mut w, 1000, &errors).concat().is_empty());
        let found = run(&mut w, 1000, &binomial(&mut rng, 1000, 0.08, 5)).concat();
        assert!(
            found.iter().any(|d| d.detector == Detector::Cusum),
            "{found:?}"
        );
    }

    #[test]
    fn a_constant_warm_up_does_not_make_the_next_movement_an_alarm() {
        let mut w = watch();
        run(&mut w, 1000, &[0; 30]);
        // One error in a thousand after none: within the binomial floor.
        assert!(run(&mut w, 1000, &[1, 0, 2, 0, 1]).concat().is_empty());
    }

    #[test]
    fn intervals_with_too_few_records_give_no_point_and_clear_the_gauge() {
        let mut w = watch();
        run(&mut w, 1000, &[5]);
        assert!(w.last_points().any(|(s, _)| s == Series::ErrorRate));
        run(&mut w, 10, &[10]);
        assert_eq!(w.last_points().count(), 0);
    }

    #[test]
    fn detectors_can_be_chosen_and_change_detection_turned_off() {
        let only_cusum = AnomalySettings {
            change_detectors: vec!["cusum".into()],
            ..Default::default()
        };
        let mut w = SeriesWatch::new(Arc::new(only_cusum));
        let mut errors = vec![20; 30];
        errors.extend([300; 3]);
        let found = run(&mut w, 1000, &errors).concat();
        assert!(!found.is_empty());
        assert!(found.iter().all(|d| d.detector == Detector::Cusum));

        let off = AnomalySettings {
            change_detection: false,
            ..Default::default()
        };
        let mut w = SeriesWatch::new(Arc::new(off));
        assert!(run(&mut w, 1000, &errors).concat().is_empty());
    }

    #[test]
    fn the_anomaly_rate_waits_for_the_flag_detectors_and_restarts_with_a_profile() {
        let mut w = watch();
        let totals = Totals {
            records: 1000,
            flagged: 10,
            ..Default::default()
        };
        w.observe(totals, Extras::default());
        assert!(w.last_points().all(|(s, _)| s != Series::AnomalyRate));
        w.profile_changed();
        assert!(matches!(
            w.watched[Series::AnomalyRate as usize].phase,
            Phase::Warming(ref p) if p.is_empty()
        ));
    }
}
