//! Quality and label-join instruments, computed from the window states at export time (the
//! shards only count). Undefined values (no pairs in a window, ROC AUC with one class) are left
//! out rather than exported as 0 or 0.5.

use super::{
    builder::{model_attributes, model_since, with, Gauges, MetricsBuilder},
    resource::attribute,
    snapshot::SidecarSnapshot,
};
use crate::{
    quality::{state::QualityState, QualitySnapshot, Task, Unmatched},
    stats::{Average, Estimate},
    windows::SINCE_START,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;

const AVERAGES: [(Average, &str); 3] = [
    (Average::Micro, "micro"),
    (Average::Macro, "macro"),
    (Average::Weighted, "weighted"),
];

/// Gauges of one window of one model.
fn window_gauges(
    g: &mut Gauges,
    since: u64,
    attrs: &[KeyValue],
    q: &QualitySnapshot,
    state: &QualityState,
) {
    let class = |slot: usize| q.classes.get(slot).map_or("__unknown__", String::as_str);
    let at = |extra: &[(&str, &str)]| {
        let mut a = attrs.to_vec();
        for (k, v) in extra {
            a.push(attribute(k, v));
        }
        a
    };
    g.add(
        "inferscope.quality.sample_size",
        "{pair}",
        "Labelled pairs (prediction with its ground truth) in the window.",
        (since, at(&[]), Some(state.labelled() as f64)),
    );
    let predictions = state.predictions_total();
    for (slot, &n) in state.predictions.iter().enumerate() {
        g.add(
            "inferscope.quality.predicted_class",
            "1",
            "Share of predictions of each class in the window, labelled or not (for a binary model, the positive class's is the positive prediction rate).",
            (
                since,
                at(&[("class", class(slot))]),
                (predictions > 0).then(|| n as f64 / predictions as f64),
            ),
        );
    }
    if q.task == Task::Regression || state.regression.count() > 0 {
        let r = &state.regression;
        for (name, description, value) in [
            (
                "inferscope.quality.mae",
                "Mean absolute error (sklearn mean_absolute_error).",
                r.mae(),
            ),
            (
                "inferscope.quality.mse",
                "Mean squared error (sklearn mean_squared_error).",
                r.mse(),
            ),
            (
                "inferscope.quality.rmse",
                "Root mean squared error (sklearn root_mean_squared_error).",
                r.rmse(),
            ),
            (
                "inferscope.quality.r2",
                "Coefficient of determination (sklearn r2_score).",
                r.r2(),
            ),
            (
                "inferscope.quality.mean_error",
                "Mean of prediction minus label (bias; positive means over-prediction).",
                r.mean_error(),
            ),
        ] {
            g.add(name, "", description, (since, at(&[]), value));
        }
        g.add(
            "inferscope.quality.mape",
            "1",
            "Mean absolute percentage error as a fraction (sklearn mean_absolute_percentage_error).",
            (since, at(&[]), r.mape()),
        );
    }
    let cm = &state.confusion;
    if cm.total() == 0 {
        return;
    }
    g.add(
        "inferscope.quality.accuracy",
        "1",
        "Share of labelled predictions that are correct (sklearn accuracy_score).",
        (since, at(&[]), cm.accuracy()),
    );
    g.add(
        "inferscope.quality.balanced_accuracy",
        "1",
        "Mean recall over the classes with true instances (sklearn balanced_accuracy_score).",
        (since, at(&[]), cm.balanced_accuracy()),
    );
    for slot in cm.present() {
        let s = cm.class_scores(slot);
        let a = at(&[("class", class(slot))]);
        g.add(
            "inferscope.quality.precision",
            "1",
            PRECISION,
            (since, a.clone(), Some(s.precision)),
        );
        g.add(
            "inferscope.quality.recall",
            "1",
            RECALL,
            (since, a.clone(), Some(s.recall)),
        );
        g.add("inferscope.quality.f1", "1", F1, (since, a, Some(s.f1)));
    }
    for (average, name) in AVERAGES {
        if let Some(s) = cm.averaged(average) {
            let a = at(&[("average", name)]);
            g.add(
                "inferscope.quality.precision",
                "1",
                PRECISION,
                (since, a.clone(), Some(s.precision)),
            );
            g.add(
                "inferscope.quality.recall",
                "1",
                RECALL,
                (since, a.clone(), Some(s.recall)),
            );
            g.add("inferscope.quality.f1", "1", F1, (since, a, Some(s.f1)));
        }
    }
    g.add(
        "inferscope.quality.log_loss",
        "",
        "Mean cross-entropy of the predicted probabilities (sklearn log_loss), over pairs with probabilities.",
        (since, at(&[]), state.log_loss()),
    );
    g.add(
        "inferscope.quality.brier_score",
        "",
        "Mean Brier score (sklearn brier_score_loss; multiclass: sum over classes, halved for two columns).",
        (since, at(&[]), state.brier_score()),
    );
    let mut curve = |estimates: [Option<Estimate>; 2], extra: &[(&str, &str)]| {
        let [auc, ap] = estimates;
        let a = at(extra);
        g.add(
            "inferscope.quality.roc_auc",
            "1",
            ROC_AUC,
            (since, a.clone(), auc.map(|e| e.value)),
        );
        g.add(
            "inferscope.quality.roc_auc.error_bound",
            "1",
            ROC_AUC_BOUND,
            (since, a.clone(), auc.map(|e| e.error_bound)),
        );
        g.add(
            "inferscope.quality.average_precision",
            "1",
            AP,
            (since, a.clone(), ap.map(|e| e.value)),
        );
        g.add(
            "inferscope.quality.average_precision.error_bound",
            "1",
            AP_BOUND,
            (since, a, ap.map(|e| e.error_bound)),
        );
    };
    match q.task {
        Task::Binary => {
            if let Some(c) = state.curves.first() {
                curve([c.roc_auc(), c.average_precision()], &[]);
            }
        }
        Task::Multiclass => {
            let per_class: Vec<_> = state
                .curves
                .iter()
                .map(|c| [c.roc_auc(), c.average_precision()])
                .collect();
            for (slot, e) in per_class.iter().enumerate() {
                if state.curves[slot].count() > 0 {
                    curve(*e, &[("class", class(slot))]);
                }
            }
            // One-vs-rest macro average over the declared classes, defined only when every one
            // of them has its curve and its value (as sklearn's roc_auc_score(multi_class="ovr")
            // with labels=the declared classes, which is NaN when a class is absent).
            if q.all_curves && !q.declared.is_empty() {
                let macro_of = |i: usize| -> Option<Estimate> {
                    let (mut value, mut bound) = (0.0, 0.0);
                    for &slot in &q.declared {
                        let e = per_class.get(slot as usize)?[i]?;
                        value += e.value;
                        bound += e.error_bound;
                    }
                    let n = q.declared.len() as f64;
                    Some(Estimate {
                        value: value / n,
                        error_bound: bound / n,
                    })
                };
                curve([macro_of(0), macro_of(1)], &[("average", "macro")]);
            }
        }
        _ => {}
    }
}

const PRECISION: &str = "Precision per class, or averaged (micro, macro, weighted) as sklearn precision_score with zero_division=0.";
const RECALL: &str = "Recall per class, or averaged (micro, macro, weighted) as sklearn recall_score with zero_division=0.";
const F1: &str =
    "F1 per class, or averaged (micro, macro, weighted) as sklearn f1_score with zero_division=0.";
const ROC_AUC: &str = "ROC AUC (binary; per class and macro one-vs-rest for multiclass) as sklearn roc_auc_score; absent when only one class is present.";
const ROC_AUC_BOUND: &str = "Largest possible difference between inferscope.quality.roc_auc and the exact value (0 when computed exactly).";
const AP: &str = "Average precision (PR AUC) as sklearn average_precision_score.";
const AP_BOUND: &str = "Largest possible difference between inferscope.quality.average_precision and the exact value (0 when computed exactly).";

/// Adds the fleet's merged quality: the window gauges of every model version, named
/// `inferscope.fleet.quality.*` instead of `inferscope.quality.*`, and how many sidecars the
/// merge covers.
pub(super) fn encode_fleet(b: &mut MetricsBuilder, fleet: &crate::fleet::FleetView) {
    let mut gauges = Gauges::default();
    for (key, q) in &fleet.quality {
        let base = model_attributes(key);
        for (window, state) in &q.windows {
            let attrs = with(base.clone(), "window", window);
            window_gauges(&mut gauges, b.start, &attrs, q, state);
        }
    }
    let mut pod = MetricsBuilder::new(b.start, b.now);
    gauges.flush(&mut pod);
    for mut metric in pod.finish() {
        if let Some(name) = metric.name.strip_prefix("inferscope.quality.") {
            metric.name = format!("inferscope.fleet.quality.{name}");
            metric.description = format!("Fleet-wide: {}", metric.description);
            b.push_metric(metric);
        }
    }
    b.gauge_double(
        "inferscope.fleet.sidecars",
        "{sidecar}",
        "Sidecars whose quality windows the inferscope.fleet.quality.* series merge.",
        vec![(b.start, Vec::new(), Some(fleet.sidecars as f64))],
    );
}

/// Adds the quality and join instruments of every model.
pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    let mut gauges = Gauges::default();
    let mut joined = Vec::new();
    let mut unmatched = Vec::new();
    let mut unlabeled = Vec::new();
    let mut duplicates = Vec::new();
    let mut delay = Vec::new();
    let mut pending = Vec::new();
    let mut early = Vec::new();
    let mut class_overflow = Vec::new();
    let mut confusion = Vec::new();
    let mut outcomes = Vec::new();
    let mut labels = Vec::new();
    let mut predictions = Vec::new();
    let mut pairs = Vec::new();
    let mut abs_error = Vec::new();
    let mut squared_error = Vec::new();

    for (key, q) in &snapshot.quality {
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        let j = &q.join;
        joined.push((
            since,
            with(base.clone(), "source", "inline"),
            j.joined_inline as i64,
        ));
        joined.push((
            since,
            with(base.clone(), "source", "delayed"),
            j.joined_delayed as i64,
        ));
        for reason in Unmatched::ALL {
            unmatched.push((
                since,
                with(base.clone(), "reason", reason.name()),
                j.unmatched[reason as usize] as i64,
            ));
        }
        unlabeled.push((
            since,
            with(base.clone(), "reason", "ttl"),
            j.unlabeled[0] as i64,
        ));
        unlabeled.push((
            since,
            with(base.clone(), "reason", "capacity"),
            j.unlabeled[1] as i64,
        ));
        duplicates.push((since, base.clone(), j.duplicate_predictions as i64));
        if j.delay.count() > 0 {
            delay.push((since, base.clone(), &j.delay));
        }
        pending.push((since, base.clone(), j.pending as i64));
        early.push((since, base.clone(), j.early as i64));
        class_overflow.push((since, base.clone(), q.classes_overflowed as i64));

        let class = |slot: usize| q.classes.get(slot).map_or("__unknown__", String::as_str);
        for (window, state) in &q.windows {
            let attrs = with(base.clone(), "window", window);
            window_gauges(&mut gauges, since, &attrs, q, state);
            if window != SINCE_START {
                continue;
            }
            // Raw counts since start, as counters.
            let cm = &state.confusion;
            for t in 0..cm.classes() {
                for p in 0..cm.classes() {
                    let n = cm.count(t, p);
                    if n > 0 {
                        let a = with(
                            with(base.clone(), "true_class", class(t)),
                            "predicted_class",
                            class(p),
                        );
                        confusion.push((since, a, n as i64));
                    }
                }
            }
            for c in cm.present() {
                let [tp, fp, fn_, tn] = cm.outcomes(c);
                for (outcome, n) in [("tp", tp), ("fp", fp), ("fn", fn_), ("tn", tn)] {
                    let a = with(with(base.clone(), "class", class(c)), "outcome", outcome);
                    outcomes.push((since, a, n as i64));
                }
                labels.push((
                    since,
                    with(base.clone(), "class", class(c)),
                    cm.support(c) as i64,
                ));
            }
            for (slot, &n) in state.predictions.iter().enumerate() {
                if n > 0 {
                    predictions.push((since, with(base.clone(), "class", class(slot)), n as i64));
                }
            }
            pairs.push((since, base.clone(), state.labelled() as i64));
            if state.regression.count() > 0 {
                abs_error.push((since, base.clone(), state.regression.abs_error_sum()));
                squared_error.push((since, base.clone(), state.regression.squared_error_sum()));
            }
        }
    }

    b.sum("inferscope.labels.joined", "{label}", "Labels joined with their prediction: inline with the record, or delayed through SubmitLabels.", true, joined);
    b.sum("inferscope.labels.unmatched", "{label}", "Labels not scored, by reason: delayed labels that joined no prediction (unknown_request, expired_request, duplicate, join_disabled) and labels that do not fit their prediction (kind_mismatch, unknown_class).", true, unmatched);
    b.sum(
        "inferscope.predictions.unlabeled",
        "{prediction}",
        "Predictions that left the pending-label store without a label, by reason (ttl, capacity).",
        true,
        unlabeled,
    );
    b.sum(
        "inferscope.predictions.duplicate_request_id",
        "{prediction}",
        "Predictions whose request id was already waiting for a label (the first is kept).",
        true,
        duplicates,
    );
    b.histogram(
        "inferscope.labels.delay",
        "s",
        "Time from prediction to its delayed label.",
        delay,
    );
    b.sum(
        "inferscope.labels.pending",
        "{prediction}",
        "Predictions waiting for a delayed label now.",
        false,
        pending,
    );
    b.sum(
        "inferscope.labels.early",
        "{label}",
        "Delayed labels held now, waiting for a prediction that has not arrived.",
        false,
        early,
    );
    b.sum(
        "inferscope.classes.overflow",
        "{occurrence}",
        "Class names counted as __other__ because --max-classes was reached.",
        true,
        class_overflow,
    );
    b.sum(
        "inferscope.quality.confusion",
        "{pair}",
        "Confusion-matrix counts since start, by true_class and predicted_class.",
        true,
        confusion,
    );
    b.sum(
        "inferscope.quality.outcomes",
        "{pair}",
        "One-vs-rest outcomes per class since start: tp, fp, fn, tn.",
        true,
        outcomes,
    );
    b.sum(
        "inferscope.quality.labels",
        "{label}",
        "Labelled pairs per true class since start.",
        true,
        labels,
    );
    b.sum(
        "inferscope.quality.predictions",
        "{prediction}",
        "Class predictions per predicted class since start, labelled or not.",
        true,
        predictions,
    );
    b.sum(
        "inferscope.quality.pairs",
        "{pair}",
        "Labelled pairs (classification and regression) since start.",
        true,
        pairs,
    );
    b.sum_double(
        "inferscope.quality.absolute_error",
        "",
        "Sum of |prediction − label| over regression pairs since start.",
        abs_error,
    );
    b.sum_double(
        "inferscope.quality.squared_error",
        "",
        "Sum of (prediction − label)² over regression pairs since start.",
        squared_error,
    );
    gauges.flush(b);
}
