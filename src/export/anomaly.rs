//! Anomaly instruments: flags raised by kind and flags left out of acks (for every model state,
//! zeros included); per window, the share of records flagged and the rate of each kind; per
//! series and detector, the change detections; per series, its last point.

use super::{
    builder::{model_attributes, model_since, with, MetricsBuilder},
    snapshot::SidecarSnapshot,
};
use crate::anomaly::{
    series::{Detector, Series},
    AnomalyKind,
};

pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    let mut anomalies = Vec::new();
    let mut flags_truncated = Vec::new();
    for key in snapshot.models.keys() {
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        // Shared slots (overflow, invalid) raise no flags: their counters stay at zero.
        let (by_kind, truncated) = snapshot
            .anomaly
            .get(key)
            .map_or(([0; AnomalyKind::ALL.len()], 0), |a| {
                (a.by_kind, a.flags_truncated)
            });
        // Every kind from the model's start, zeros included: a counter first seen at 1 is
        // invisible to increase() and rate().
        for kind in AnomalyKind::ALL {
            let n = by_kind[kind as usize];
            anomalies.push((since, with(base.clone(), "kind", kind.name()), n as i64));
        }
        flags_truncated.push((since, base, truncated as i64));
    }
    b.sum(
        "inferscope.anomalies",
        "{flag}",
        "Anomaly flags raised on records, by kind (also returned in the acks).",
        true,
        anomalies,
    );
    b.sum(
        "inferscope.anomaly.flags_truncated",
        "{flag}",
        "Anomaly flags counted but left out of acks and spans (more than 8 on one record).",
        true,
        flags_truncated,
    );
    let mut rate = Vec::new();
    let mut kind_rate = Vec::new();
    let mut changes = Vec::new();
    let mut points = Vec::new();
    for (key, anomaly) in &snapshot.anomaly {
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        for (window, counts) in &anomaly.windows {
            let at = with(base.clone(), "window", window);
            // Undefined (left out) for a window without records.
            let share = |n: u64| (counts.records > 0).then(|| n as f64 / counts.records as f64);
            rate.push((since, at.clone(), share(counts.flagged)));
            for kind in AnomalyKind::ALL {
                let n = counts.kinds[kind as usize];
                if n > 0 {
                    kind_rate.push((since, with(at.clone(), "kind", kind.name()), share(n)));
                }
            }
        }
        // Zeros included for every series the model has (a counter first seen at 1 is invisible
        // to increase()).
        for series in Series::ALL {
            if !anomaly.active[series as usize] {
                continue;
            }
            for detector in Detector::ALL {
                let n = anomaly.detections[series as usize][detector as usize];
                let attributes = with(
                    with(base.clone(), "series", series.name()),
                    "detector",
                    detector.name(),
                );
                changes.push((since, attributes, n as i64));
            }
        }
        for (series, value) in &anomaly.points {
            points.push((
                since,
                with(base.clone(), "series", series.name()),
                Some(*value),
            ));
        }
    }
    b.gauge_double(
        "inferscope.anomaly.rate",
        "1",
        "Share of the window's records with at least one anomaly flag.",
        rate,
    );
    b.gauge_double(
        "inferscope.anomaly.kind_rate",
        "1",
        "Flags of the kind per record in the window.",
        kind_rate,
    );
    b.sum(
        "inferscope.anomaly.changes",
        "{detection}",
        "Change detections on a model's per-interval series, by series and detector.",
        true,
        changes,
    );
    b.gauge_double(
        "inferscope.anomaly.series",
        "",
        "The last per-interval point of each series the change detectors watch (error_rate, latency_p95 in s, accuracy, mae, drift_score, anomaly_rate).",
        points,
    );
}
