//! Anomaly instruments: flags raised by kind (zeros included for the kinds the model can raise)
//! and flags left out of acks; per window, the share of records flagged and the flags of each
//! kind per record; per series and detector, the change detections; per series, its last point
//! (one instrument per series, each with its unit).

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
        let Some(a) = snapshot.anomaly.get(key) else {
            flags_truncated.push((since, base, 0));
            continue;
        };
        // Every kind the model can raise from when it can, zeros included (a counter first seen
        // at 1 is invisible to increase() and rate()); none for kinds it never can (generation
        // kinds on a classifier).
        for kind in AnomalyKind::ALL {
            if a.raisable[kind as usize] {
                let n = a.by_kind[kind as usize];
                anomalies.push((since, with(base.clone(), "kind", kind.name()), n as i64));
            }
        }
        let truncated = a.flags_truncated;
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
    let mut flagged = Vec::new();
    let mut per_record = Vec::new();
    let mut changes = Vec::new();
    let mut points: [Vec<_>; Series::ALL.len()] = Default::default();
    for (key, anomaly) in &snapshot.anomaly {
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        for (window, counts) in &anomaly.windows {
            let at = with(base.clone(), "window", window);
            // Undefined (left out) for a window without records.
            let share = |n: u64| (counts.records > 0).then(|| n as f64 / counts.records as f64);
            flagged.push((since, at.clone(), share(counts.flagged)));
            for kind in AnomalyKind::ALL {
                let n = counts.kinds[kind as usize];
                if n > 0 {
                    per_record.push((since, with(at.clone(), "kind", kind.name()), share(n)));
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
            points[*series as usize].push((since, base.clone(), Some(*value)));
        }
    }
    b.gauge_double(
        "inferscope.anomaly.flagged",
        "1",
        "Share of the window's records with at least one anomaly flag.",
        flagged,
    );
    b.gauge_double(
        "inferscope.anomaly.flags_per_record",
        "{flag}/{record}",
        "Flags of the kind per record in the window (above 1 when records raise several).",
        per_record,
    );
    b.sum(
        "inferscope.anomaly.changes",
        "{detection}",
        "Change detections on a model's per-interval series, by series and detector.",
        true,
        changes,
    );
    for (series, points) in Series::ALL.into_iter().zip(points) {
        b.gauge_double(
            series.instrument(),
            series.unit(),
            "The last per-interval point of a series the change detectors watch.",
            points,
        );
    }
}
