//! Self-telemetry: the process-wide counters of [`crate::self_metrics::SELF_METRICS`], the
//! model-cap overflow, and the queue and pending-store gauges.

use super::{builder::MetricsBuilder, resource, snapshot::SidecarSnapshot};
use crate::self_metrics::Instrument;

pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    for (metric, value) in snapshot.self_metrics.iter() {
        let monotonic = match metric.instrument {
            Instrument::Counter => true,
            Instrument::UpDownCounter => false,
        };
        b.sum(
            metric.name,
            metric.unit,
            metric.description,
            monotonic,
            vec![(b.start, Vec::new(), value)],
        );
    }
    b.sum(
        "inferscope.models.overflow",
        "{record}",
        "Records counted under model __other__ because --max-models was reached.",
        true,
        vec![(b.start, Vec::new(), snapshot.models_overflow as i64)],
    );
    b.gauge(
        "inferscope.queue.depth",
        "{batch}",
        "Batches waiting in each shard's queue.",
        snapshot
            .queue_depths
            .iter()
            .enumerate()
            .map(|(shard, &depth)| {
                (
                    b.start,
                    vec![resource::attribute("shard", &shard.to_string())],
                    depth as i64,
                )
            })
            .collect(),
    );
    b.gauge(
        "inferscope.labels.pending.capacity",
        "{prediction}",
        "Predictions the pending-label stores hold before the oldest is dropped.",
        vec![(b.start, Vec::new(), snapshot.pending_capacity as i64)],
    );
    b.gauge(
        "inferscope.queue.capacity",
        "{batch}",
        "Batches each shard's queue holds before batches are shed.",
        vec![(b.start, Vec::new(), snapshot.queue_capacity as i64)],
    );
}
