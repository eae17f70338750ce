//! The sidecar's metrics about itself (streams open, batches shed, spans dropped, export
//! failures...), described once in [`SELF_METRICS`]: the counters live in [`SelfStats`], one
//! atomic per row, bumped by the process-wide events of [`crate::events`]; export reads them all
//! with [`SelfStats::load`] and encodes them by walking the same table. Adding a self-metric is a
//! [`SelfCounter`] variant, its row, and the event that bumps it.
//!
//! Per-model counters (records under `__other__`, classes folded into `__other__`...) are not
//! here: they are plain integers in the state a shard owns, exported with their model.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A process-wide counter: its row in [`SELF_METRICS`] and its slot in [`SelfStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfCounter {
    StreamsActive,
    BatchesShed,
    RecordsShed,
    /// Whole batches refused (over the size limit, bad declaration).
    BatchesRejected,
    SpansDropped,
    /// Model versions forgotten after `--model-idle-expiry-seconds` without traffic.
    ModelsExpired,
    /// Declarations evicted from the full declaration registry.
    DeclarationsEvicted,
    ExportFailures,
    /// Record streams ended with an error status by a message that could not be read.
    StreamsFailed,
    /// Connections still open when the shutdown's grace for streams ran out.
    ConnectionsCut,
    /// Anomaly flags left out of an ack so that it fits in a gRPC message.
    AckFlagsDropped,
    /// Connections closed at once because `--max-connections` were open.
    ConnectionsRefused,
    /// Failed accepts (descriptors exhausted).
    AcceptFailures,
    /// Batches refused because the ingest memory budget was full.
    BatchesOverBudget,
    /// Streams ended because their client did not read an ack in time.
    StreamsUnread,
    /// Changes to the state directory not written (queue full, or the write failed).
    StateWritesFailed,
    /// Predictions not written to the shared label store.
    LabelStoreDropped,
    /// Delayed labels whose lookup in the shared label store failed when they arrived.
    LabelStoreLookupFailures,
    /// Fleet-wide quality updates that failed (this sidecar's state not shared, or the merge
    /// not read).
    FleetUpdatesFailed,
    /// Entries of the label stream that did not decode (acknowledged and skipped).
    LabelStreamMalformed,
    /// Spans received by the OTLP traces receivers, GenAI or not.
    OtlpSpansReceived,
    /// Generation records made from received GenAI spans.
    OtlpRecordsCaptured,
    /// OTLP requests refused as bad input (undecodable, wrong content type, too large).
    OtlpRejected,
    /// Received spans not forwarded because the forward queue was full.
    OtlpForwardDropped,
    /// Received spans whose forward request failed.
    OtlpForwardFailed,
    /// Log records received by the OTLP logs receivers, evaluation events or not.
    OtlpLogRecordsReceived,
    /// Received log records that are not evaluation events: taken and dropped.
    OtlpLogRecordsIgnored,
    /// Evaluation events (log records or span events) made into evaluation labels.
    OtlpEvaluationsCaptured,
    /// Evaluation events without a name, failed, or whose generation was not found.
    OtlpEvaluationsUnresolved,
    /// Generations pushed out of the full span-id index of the OTLP receivers.
    OtlpGenerationsEvicted,
    /// CloudEvents taken by the KServe payload-logger endpoint.
    CloudEventsReceived,
    /// CloudEvents refused with a 4xx.
    CloudEventsRejected,
    /// KServe request or response events whose partner did not come within the join TTL.
    CloudEventsExpired,
    /// KServe events pushed out of the full join store.
    CloudEventsEvicted,
    /// KServe events waiting for their partner now.
    CloudEventsPending,
    /// Infer calls through the OIP tap (gRPC `ModelInfer`, `ModelStreamInfer` messages, REST infer)
    /// not recorded because its queue was full.
    TapDropped,
    /// Infer calls through the OIP tap whose tensors could not be made into records.
    TapUnreadable,
    /// Evaluation names and labels the fleet's merge folded into `__other__`.
    FleetEvaluationsFolded,
    /// Models the OIP tap records without a schema: their `ModelMetadata` read failed, or the
    /// schema cache was full.
    TapSchemasUnread,
    /// Records the model server's client dropped before sending, as its batches report them.
    ClientRecordsDropped,
}

/// The OpenTelemetry instrument a self-metric is exported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// A monotonic cumulative sum.
    Counter,
    /// A non-monotonic cumulative sum: goes down as well as up.
    UpDownCounter,
}

/// How one self-metric is exported.
#[derive(Debug)]
pub struct SelfMetric {
    /// The counter it reads; equal to the row's position in [`SELF_METRICS`].
    pub counter: SelfCounter,
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub instrument: Instrument,
}

/// Every process-wide self-metric, in [`SelfCounter`] order (checked at compile time below) and
/// in the order they are exported.
pub const SELF_METRICS: &[SelfMetric] = &[
    SelfMetric {
        counter: SelfCounter::StreamsActive,
        name: "inferscope.streams.active",
        unit: "{stream}",
        description: "Record streams open now.",
        instrument: Instrument::UpDownCounter,
    },
    SelfMetric {
        counter: SelfCounter::BatchesShed,
        name: "inferscope.batches.shed",
        unit: "{batch}",
        description: "Batches refused with UNAVAILABLE because a shard queue was full.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::RecordsShed,
        name: "inferscope.records.shed",
        unit: "{record}",
        description: "Records in batches refused with UNAVAILABLE.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::BatchesRejected,
        name: "inferscope.batches.rejected",
        unit: "{batch}",
        description: "Whole batches refused with INVALID_ARGUMENT (too large, bad declaration).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::SpansDropped,
        name: "inferscope.spans.dropped",
        unit: "{span}",
        description: "Spans dropped because the span queue was full.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::ModelsExpired,
        name: "inferscope.models.expired",
        unit: "{model}",
        description: "Model versions forgotten after --model-idle-expiry-seconds without traffic.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::DeclarationsEvicted,
        name: "inferscope.declarations.evicted",
        unit: "{declaration}",
        description: "Model declarations evicted because --max-models declarations were stored.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::ExportFailures,
        name: "inferscope.export.failures",
        unit: "{request}",
        description: "Failed OTLP metric export requests.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::StreamsFailed,
        name: "inferscope.streams.failed",
        unit: "{stream}",
        description: "Record streams ended with an error status by a message that could not be read (over --max-message-bytes, undecodable).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::ConnectionsCut,
        name: "inferscope.connections.cut",
        unit: "{connection}",
        description: "Connections still open when the shutdown's grace for streams (half the budget) ran out, closed without waiting for their clients (a client not reading its acks).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::AckFlagsDropped,
        name: "inferscope.ack.flags_dropped",
        unit: "{flag}",
        description: "Anomaly flags left out of acks so that an ack fits in one gRPC message (they are counted in inferscope.anomalies).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::ConnectionsRefused,
        name: "inferscope.connections.refused",
        unit: "{connection}",
        description: "Connections closed at once because --max-connections were open.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::AcceptFailures,
        name: "inferscope.connections.accept_failures",
        unit: "{error}",
        description: "Failed accepts of new connections (descriptors exhausted); retried after a pause of up to 1 s.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::BatchesOverBudget,
        name: "inferscope.batches.over_budget",
        unit: "{batch}",
        description: "Batches refused with RESOURCE_EXHAUSTED because the ingest memory budget (--max-ingest-bytes) was full.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::StreamsUnread,
        name: "inferscope.streams.unread",
        unit: "{stream}",
        description: "Record streams ended because their client left an ack unread for --ack-timeout-seconds.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::StateWritesFailed,
        name: "inferscope.state.writes.failed",
        unit: "{write}",
        description: "Declarations and captured reference profiles not saved to --state-dir (the write failed, or the writer's queue was full); they would not survive a restart.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::LabelStoreDropped,
        name: "inferscope.label_store.dropped",
        unit: "{prediction}",
        description: "Predictions waiting for a delayed label that were not written to the shared label store (--label-store): its queue was full, Redis was not connected, or the write failed or timed out.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::LabelStoreLookupFailures,
        name: "inferscope.label_store.lookup_failures",
        unit: "{label}",
        description: "Delayed labels whose prediction could not be looked up in the shared label store (--label-store) when they arrived: Redis was not connected, failed, or did not answer within --label-store-timeout-ms. They are held in memory and looked up again until their hold ends.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::FleetUpdatesFailed,
        name: "inferscope.fleet.updates.failed",
        unit: "{update}",
        description: "Fleet-wide quality updates that failed (--label-store): this sidecar's window states were not shared, or, on the sidecar holding the fleet lease, the fleet's states could not be read; the inferscope.fleet.quality.* series then go stale.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::LabelStreamMalformed,
        name: "inferscope.label_stream.malformed",
        unit: "{entry}",
        description: "Entries of the label stream (inferscope:labels, written by `inferscope labels`) that were not a ground-truth label this sidecar can read: acknowledged and skipped.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpSpansReceived,
        name: "inferscope.otlp.spans.received",
        unit: "{span}",
        description: "Spans received by the OTLP traces receivers (--otlp-receive-grpc, --otlp-receive-http), GenAI or not, in requests that decoded.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpRecordsCaptured,
        name: "inferscope.otlp.records.captured",
        unit: "{record}",
        description: "Generation records made from received GenAI spans and handed to ingest (each then counted as any record: inferscope.records.received or .rejected).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpRejected,
        name: "inferscope.otlp.rejected",
        unit: "{request}",
        description: "OTLP trace and log requests refused as bad input: undecodable protobuf or OTLP/JSON (INVALID_ARGUMENT, HTTP 400), a content type other than application/x-protobuf or application/json, or a compressed body (HTTP 415), over --max-message-bytes (RESOURCE_EXHAUSTED, HTTP 413).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpForwardDropped,
        name: "inferscope.otlp.forward.dropped",
        unit: "{span}",
        description: "Received spans not forwarded to the traces endpoint because the forward queue (256 requests) was full.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpForwardFailed,
        name: "inferscope.otlp.forward.failed",
        unit: "{span}",
        description: "Received spans whose forward request to the traces endpoint failed (not retried).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpLogRecordsReceived,
        name: "inferscope.otlp.log_records.received",
        unit: "{log_record}",
        description: "Log records received by the OTLP logs receivers (POST /v1/logs, LogsService/Export on the --otlp-receive-* listeners), evaluation events or not, in requests that decoded.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpLogRecordsIgnored,
        name: "inferscope.otlp.log_records.ignored",
        unit: "{log_record}",
        description: "Received log records that are not gen_ai.evaluation.result events: taken (never an error to the sender) and dropped, since the sidecar exports no logs.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpEvaluationsCaptured,
        name: "inferscope.otlp.evaluations.captured",
        unit: "{evaluation}",
        description: "gen_ai.evaluation.result events (log records or span events) made into evaluation labels and handed to ingest (then joined or not as any label: inferscope.labels.*).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpEvaluationsUnresolved,
        name: "inferscope.otlp.evaluations.unresolved",
        unit: "{evaluation}",
        description: "gen_ai.evaluation.result events not taken: no gen_ai.evaluation.name, an error.type (the evaluation failed), or neither gen_ai.response.id nor the span id of a generation the receivers remember.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::OtlpGenerationsEvicted,
        name: "inferscope.otlp.generations.evicted",
        unit: "{generation}",
        description: "Generations pushed out of the OTLP receivers' full span-id index (65 536 generations, 15 minutes each), which resolves evaluation events parented to their span.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::CloudEventsReceived,
        name: "inferscope.cloudevents.received",
        unit: "{event}",
        description: "CloudEvents taken by the KServe payload-logger endpoint (--cloudevents-listen), requests and responses.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::CloudEventsRejected,
        name: "inferscope.cloudevents.rejected",
        unit: "{event}",
        description: "CloudEvents refused with a 4xx (wrong content type, body over --max-message-bytes, malformed JSON, a missing or unknown attribute, tensor shapes that disagree); the answer says why.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::CloudEventsExpired,
        name: "inferscope.cloudevents.expired",
        unit: "{event}",
        description: "KServe request or response events whose partner did not come within the join TTL ([capture.kserve] join_ttl_seconds): recorded alone, a request with error type no_response.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::CloudEventsEvicted,
        name: "inferscope.cloudevents.evicted",
        unit: "{event}",
        description: "KServe events dropped from the full join store ([capture.kserve] join_capacity) before their partner came, or replaced by a later event of the same ce-id and type.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::CloudEventsPending,
        name: "inferscope.cloudevents.pending",
        unit: "{event}",
        description: "KServe events waiting for their partner in the join store now.",
        instrument: Instrument::UpDownCounter,
    },
    SelfMetric {
        counter: SelfCounter::TapDropped,
        name: "inferscope.tap.dropped",
        unit: "{call}",
        description: "Infer calls (gRPC ModelInfer, ModelStreamInfer messages, REST /v2/models/{name}/infer) forwarded by the Open Inference Protocol tap (--tap-listen, --tap-http-listen) but not recorded because its recording queue was full, or whose records ingest refused (its queues full); the call itself was answered as usual.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::TapUnreadable,
        name: "inferscope.tap.unreadable",
        unit: "{call}",
        description: "Infer calls forwarded by the tap whose tensors could not be made into records (a REST body too large to copy, a shape that disagrees with the contents, a datatype it does not read, rows that differ between tensors, a predicted class index past the class names); the call itself was answered as usual.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::FleetEvaluationsFolded,
        name: "inferscope.fleet.evaluations.folded",
        unit: "{occurrence}",
        description: "Evaluation names (past 16 a model version) and label values (past --max-classes a name) that the fleet lease holder's merge counted as __other__, because the sidecars saw more of them between them than one sidecar keeps; added at every merge while it lasts.",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::TapSchemasUnread,
        name: "inferscope.tap.schemas.unread",
        unit: "{model}",
        description: "Model versions the tap records without a schema (their records are made from the tensors alone): the ModelMetadata read failed or timed out (once per model version), or 1024 models were already remembered (once per model).",
        instrument: Instrument::Counter,
    },
    SelfMetric {
        counter: SelfCounter::ClientRecordsDropped,
        name: "inferscope.client.records.dropped",
        unit: "{record}",
        description: "Records the model server's client dropped before they reached the sidecar (its queue full, a record it could not encode, a batch it gave up resending), as its batches report them (RecordBatch.client_dropped_records); counted when a batch is taken, not when it is shed.",
        instrument: Instrument::Counter,
    },
];

/// Each row sits at its counter's index, so that a counter finds its row and its slot directly.
const _: () = {
    let mut i = 0;
    while i < SELF_METRICS.len() {
        assert!(SELF_METRICS[i].counter as usize == i);
        i += 1;
    }
};

/// The process-wide counters, shared by ingest, shards and export. Touched per batch or per rare
/// event, never per record.
#[derive(Debug)]
pub struct SelfStats {
    /// One per [`SELF_METRICS`] row. An up-down counter goes down by wrapping subtraction and is
    /// read back as `i64`.
    counters: [AtomicU64; SELF_METRICS.len()],
}

// Written out: `Default` is derived for arrays of at most 32 elements.
impl Default for SelfStats {
    fn default() -> Self {
        Self {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl SelfStats {
    pub fn counter(&self, counter: SelfCounter) -> &AtomicU64 {
        &self.counters[counter as usize]
    }

    /// The current value of one counter.
    pub fn get(&self, counter: SelfCounter) -> i64 {
        self.counter(counter).load(Relaxed) as i64
    }

    /// Every counter's current value.
    pub fn load(&self) -> SelfValues {
        SelfValues(std::array::from_fn(|i| {
            self.counters[i].load(Relaxed) as i64
        }))
    }
}

/// The values of the process-wide counters at one collection, in [`SELF_METRICS`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfValues([i64; SELF_METRICS.len()]);

impl Default for SelfValues {
    fn default() -> Self {
        Self([0; SELF_METRICS.len()])
    }
}

impl SelfValues {
    /// Each self-metric with its value, in export order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static SelfMetric, i64)> + '_ {
        SELF_METRICS.iter().zip(self.0.iter().copied())
    }
}

impl std::ops::Index<SelfCounter> for SelfValues {
    type Output = i64;

    fn index(&self, counter: SelfCounter) -> &i64 {
        &self.0[counter as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_up_down_counter_reads_back_signed() {
        let stats = SelfStats::default();
        stats
            .counter(SelfCounter::StreamsActive)
            .fetch_sub(1, Relaxed);
        stats
            .counter(SelfCounter::ExportFailures)
            .fetch_add(3, Relaxed);
        let values = stats.load();
        assert_eq!(values[SelfCounter::StreamsActive], -1);
        assert_eq!(values[SelfCounter::ExportFailures], 3);
        assert_eq!(stats.get(SelfCounter::ExportFailures), 3);
    }
}
