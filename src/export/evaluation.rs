//! Instruments of the evaluations of generations (`quality::evaluation`), per model version and
//! evaluation name, computed from the window states at export time. The join counters they share
//! with labels (`inferscope.labels.joined`, `.unmatched`, `.delay`, …) are the quality
//! encoder's.

use super::{
    builder::{model_attributes, model_since, with, Gauges, MetricsBuilder},
    snapshot::SidecarSnapshot,
};
use crate::{
    quality::evaluation::{EvaluationSnapshot, NameStats},
    windows::SINCE_START,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The OpenTelemetry GenAI attribute of the evaluation's name.
const NAME: &str = "gen_ai.evaluation.name";
/// The OpenTelemetry GenAI attribute of the evaluation's label.
const LABEL: &str = "gen_ai.evaluation.score.label";

/// Adds the evaluation instruments of every model version that has had an evaluation.
pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    let mut gauges = Gauges::default();
    let mut evaluations = Vec::new();
    let mut names_overflow = Vec::new();
    let mut labels_overflow = Vec::new();
    let none = NameStats::default();
    for (key, q) in &snapshot.quality {
        let Some(e) = &q.evaluations else { continue };
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        names_overflow.push((since, base.clone(), e.names_overflowed as i64));
        labels_overflow.push((since, base.clone(), e.labels_overflowed as i64));
        for (slot, name) in e.names.iter().enumerate() {
            if let Some((_, state)) = e.windows.iter().find(|(w, _)| w == SINCE_START) {
                let count = state.names.get(slot).unwrap_or(&none).count;
                evaluations.push((since, with(base.clone(), NAME, name), count as i64));
            }
        }
        window_gauges(&mut gauges, since, &base, e);
    }
    b.sum(
        "inferscope.evaluations",
        "{evaluation}",
        "Evaluations of generations joined since start, per evaluation name.",
        true,
        evaluations,
    );
    b.sum(
        "inferscope.evaluation.names.overflow",
        "{occurrence}",
        "Evaluations whose name was counted as __other__ (16 names per model version).",
        true,
        names_overflow,
    );
    b.sum(
        "inferscope.evaluation.labels.overflow",
        "{occurrence}",
        "Evaluation labels counted as __other__ because --max-classes labels of the name were reached.",
        true,
        labels_overflow,
    );
    gauges.flush(b);
}

/// The window gauges of one model version's evaluations (`base`: its attributes).
fn window_gauges(gauges: &mut Gauges, since: u64, base: &[KeyValue], e: &EvaluationSnapshot) {
    let none = NameStats::default();
    for (window, state) in &e.windows {
        let windowed = with(base.to_vec(), "window", window);
        for (slot, name) in e.names.iter().enumerate() {
            let stats = state.names.get(slot).unwrap_or(&none);
            let attrs = with(windowed.clone(), NAME, name);
            gauges.add(
                "inferscope.evaluation.sample_size",
                "{evaluation}",
                "Evaluations of generations joined in the window, per evaluation name.",
                (since, attrs.clone(), Some(stats.count as f64)),
            );
            gauges.add(
                "inferscope.evaluation.score",
                "",
                "Mean score of the evaluations in the window that have a score, per evaluation name (the evaluator's scale).",
                (since, attrs.clone(), stats.mean_score()),
            );
            let labelled = stats.labelled();
            let labels = e.labels.get(slot).map_or(&[][..], Vec::as_slice);
            for (i, label) in labels.iter().enumerate() {
                let n = stats.labels.get(i).copied().unwrap_or(0);
                gauges.add(
                    "inferscope.evaluation.label",
                    "1",
                    "Share of each label among the evaluations in the window that have a label, per evaluation name.",
                    (
                        since,
                        with(attrs.clone(), LABEL, label),
                        (labelled > 0).then(|| n as f64 / labelled as f64),
                    ),
                );
            }
        }
    }
}

/// Adds the fleet's merged evaluations (`src/fleet.rs`): the window gauges of every model
/// version, named `inferscope.fleet.evaluation.*` instead of `inferscope.evaluation.*`.
pub(super) fn encode_fleet(b: &mut MetricsBuilder, fleet: &crate::fleet::FleetView) {
    let mut gauges = Gauges::default();
    for (key, q) in &fleet.quality {
        if let Some(e) = &q.evaluations {
            window_gauges(&mut gauges, b.start, &model_attributes(key), e);
        }
    }
    let mut pod = MetricsBuilder::new(b.start, b.now);
    gauges.flush(&mut pod);
    for mut metric in pod.finish() {
        if let Some(name) = metric.name.strip_prefix("inferscope.evaluation.") {
            metric.name = format!("inferscope.fleet.evaluation.{name}");
            metric.description = format!("Fleet-wide: {}", metric.description);
            b.push_metric(metric);
        }
    }
}
