//! Anomalies in a running sidecar: per-record flags in the acks (per-model settings respected),
//! counted per kind and as rates per window, and change detections on the per-interval series
//! (one interval per `close_interval`) as metrics and `inferscope.change` spans.

mod common;

use inferscope::{
    anomaly::{AnomalyConfig, AnomalySettings},
    pb,
};
use opentelemetry::Value;
use std::sync::Arc;

fn settings() -> AnomalySettings {
    AnomalySettings {
        tail_warmup: 200,
        change_warmup: 5,
        change_min_records: 20,
        ..Default::default()
    }
}

/// `n` records of model `model`: latency about 10 ms, `errors` of them failed.
fn records(model: &str, from: usize, n: usize, errors: usize) -> pb::RecordBatch {
    let records = (0..n)
        .map(|i| pb::InferenceRecord {
            request_id: format!("{model}-{}", from + i),
            latency_seconds: Some(0.010 + 0.0001 * ((from + i) % 7) as f64),
            error_type: if i < errors {
                "timeout".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect();
    common::batch(from as u64, model, records)
}

fn flags_of(ack: &pb::BatchAck) -> Vec<(u32, String)> {
    ack.flags
        .iter()
        .flat_map(|r| r.anomalies.iter().map(move |a| (r.index, a.kind.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spikes_are_flagged_in_acks_and_an_error_burst_is_detected_on_the_series() {
    let mut config = common::config();
    config.anomaly = AnomalyConfig {
        defaults: Arc::new(settings()),
        models: [(
            "quiet".to_owned(),
            Arc::new(AnomalySettings {
                latency_factor: 0.0,
                ..settings()
            }),
        )]
        .into(),
    };
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;

    // Ten calm intervals (100 records, 1 error each) for two models; one closed per round.
    let mut sent = 0;
    for _ in 0..10 {
        for model in ["loud", "quiet"] {
            let ack = client
                .submit_records(records(model, sent, 100, 1))
                .await
                .unwrap()
                .into_inner();
            assert!(ack.flags.is_empty(), "{:?}", ack.flags);
        }
        sent += 100;
        sidecar.sidecar.close_interval().await;
    }

    // A latency spike: flagged for "loud", not for "quiet" (its latency detector is off).
    let mut spikes = Vec::new();
    for model in ["loud", "quiet"] {
        let mut batch = records(model, sent, 100, 1);
        batch.records[7].latency_seconds = Some(0.5);
        let ack = client.submit_records(batch).await.unwrap().into_inner();
        spikes.push(flags_of(&ack));
    }
    sent += 100;
    assert_eq!(spikes[0], vec![(7, "latency_outlier".to_owned())]);
    assert_eq!(spikes[1], vec![]);
    sidecar.sidecar.close_interval().await;

    // An error burst: half the records fail.
    client
        .submit_records(records("loud", sent, 100, 50))
        .await
        .unwrap();
    sidecar.sidecar.close_interval().await;
    // The last error-rate point is the burst's (exported as inferscope.anomaly.series.errors until an
    // interval without records clears it, as the final one at stop does).
    let snapshot = sidecar.sidecar.snapshot().await;
    let points = &snapshot.anomaly[&inferscope::models::ModelKey::new("loud", "1")].points;
    assert!(
        points.contains(&(inferscope::anomaly::series::Series::ErrorRate, 0.5)),
        "{points:?}"
    );

    let (request, spans) = sidecar.stop().await;
    let loud = [
        ("inferscope.model.name", "loud"),
        ("inferscope.model.version", "1"),
    ];
    let at = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        loud.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        common::point(
            &request,
            "inferscope.anomalies",
            &at(&[("kind", "latency_outlier")])
        ),
        Some(1.0)
    );
    // Zero series only for kinds the model can raise: a model without generations has none for
    // the generation kinds, nor for feature kinds without features.
    for kind in ["empty_output", "output_tokens_outlier", "missing_feature"] {
        assert_eq!(
            common::point(&request, "inferscope.anomalies", &at(&[("kind", kind)])),
            None,
            "{kind}"
        );
    }
    // One flagged record among all of loud's.
    let total = (sent + 100) as f64;
    assert_eq!(
        common::point(
            &request,
            "inferscope.anomaly.flagged",
            &at(&[("window", "all")])
        ),
        Some(1.0 / total)
    );
    // The burst is an error-rate change for the control charts and Page-Hinkley.
    for detector in ["cusum", "ewma", "page_hinkley"] {
        let n = common::point(
            &request,
            "inferscope.anomaly.changes",
            &at(&[("series", "errors"), ("detector", detector)]),
        );
        assert!(n >= Some(1.0), "{detector}: {n:?}");
    }
    // No change on the calm model.
    let quiet = [
        ("inferscope.model.name", "quiet"),
        ("inferscope.model.version", "1"),
    ];
    let quiet_changes = common::point(
        &request,
        "inferscope.anomaly.changes",
        &[
            quiet[0],
            quiet[1],
            ("series", "errors"),
            ("detector", "cusum"),
        ],
    );
    // Exported at zero (the series has points), so that increase() sees a first detection.
    assert_eq!(quiet_changes, Some(0.0));

    // The detections as span events of an `inferscope.change` span.
    let change = spans
        .iter()
        .find(|s| s.name == "inferscope.change")
        .expect("a change span");
    let detected: Vec<_> = change
        .events
        .iter()
        .filter(|e| e.name == "inferscope.change.detected")
        .collect();
    assert!(!detected.is_empty());
    assert!(detected.iter().all(|e| e
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "series" && kv.value == Value::from("errors"))));
    // The spiked record's span carries its flag.
    let spiked = spans
        .iter()
        .filter(|s| s.name == "inferscope.inference")
        .find(|s| s.events.iter().any(|e| e.name == "inferscope.anomaly"))
        .expect("a span for the flagged record");
    assert!(spiked.events.iter().any(|e| e
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "kind" && kv.value == Value::from("latency_outlier"))));
}
