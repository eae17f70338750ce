//! End-to-end against real backends (ARCHITECTURE.md, Testing map): VictoriaMetrics (OTLP/HTTP,
//! queried with PromQL) and Arize Phoenix for traces (OTLP/gRPC, queried over its REST API).
//! Both are installed into `.tools/` by `tools/install-backends.sh`; without them this test fails
//! and says so (it is never skipped).

mod common;

use common::{
    backends::{
        assert_promql, instant_query, phoenix_spans, poll_promql, promql, rand_suffix,
        start_phoenix, start_victoria_metrics, TempDir,
    },
    batch, record,
};
use inferscope::{
    config::{ExportConfig, OtlpProtocol, Sampling},
    export::{metrics::MetricTransport, resource, traces},
    pb,
    server::{Sidecar, Sinks},
};
use serde_json::Value;
use std::time::{Duration, Instant};

fn export_config(endpoint: String, protocol: OtlpProtocol) -> ExportConfig {
    ExportConfig {
        endpoint,
        protocol,
        endpoint_configured: true,
        metrics_endpoint: None,
        traces_endpoint: None,
        metrics_ca: None,
        traces_ca: None,
        headers: Vec::new(),
        metric_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        metrics: true,
        traces: true,
    }
}

/// The real export paths: OTLP/HTTP protobuf to VictoriaMetrics at `vm`, OTLP/gRPC to Phoenix.
/// The sinks, and the metrics export settings for the sidecar's config.
fn both_backends(vm: &str, phoenix_grpc: String) -> (Sinks, ExportConfig) {
    let resource = resource::detect();
    let metrics_export = export_config(format!("{vm}/opentelemetry"), OtlpProtocol::HttpProtobuf);
    let traces_export = export_config(phoenix_grpc, OtlpProtocol::Grpc);
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&metrics_export).unwrap()),
        traces: Some(traces::tracer_provider(
            traces::otlp_exporter(&traces_export).unwrap(),
            resource.clone(),
        )),
        resource,
    };
    (sinks, metrics_export)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_victoria_metrics_and_spans_reach_phoenix() {
    let (_vm, vm) = start_victoria_metrics().await;
    let (_phoenix, phoenix_http, phoenix_grpc) = start_phoenix().await;

    let (sinks, metrics_export) = both_backends(&vm, phoenix_grpc);
    let mut config = common::config();
    config.export = metrics_export;
    // Successful records are traced only when the caller's traceparent says "sampled".
    config.sampling = Sampling {
        ratio: 0.0,
        parent_based: true,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();

    // A unique trace per run: Phoenix keeps a trace in the project of its first span.
    let trace_id = format!("{:032x}", rand_suffix() as u128 * 7919 + 1);
    let parent_span = "b7ad6b7169203331";
    let sampled_parent = format!("00-{trace_id}-{parent_span}-01");
    let unsampled_parent = format!("00-{trace_id}-{parent_span}-00");

    // Classifier: 40 ok, 7 timeouts, 3 OOMs, 2 rejected; latencies spread over the buckets.
    let latencies: Vec<f64> = (0..50).map(|i| 0.001 + 0.004 * i as f64).collect();
    let mut records: Vec<pb::InferenceRecord> = latencies
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let mut r = record(&format!("clf-{i}"), l);
            r.error_type = match i {
                40..=46 => "timeout".into(),
                47..=49 => "oom".into(),
                _ => String::new(),
            };
            r.traceparent = match i {
                0 | 1 => sampled_parent.clone(),     // sampled: 2 spans
                2..=9 => unsampled_parent.clone(),   // not sampled: no span
                40 | 47 => unsampled_parent.clone(), // errors: always a span
                _ => String::new(),
            };
            r
        })
        .collect();
    records.push(pb::InferenceRecord {
        latency_seconds: Some(f64::NAN),
        ..record("bad-1", 0.0)
    });
    records.push(pb::InferenceRecord {
        latency_seconds: Some(f64::INFINITY),
        ..record("bad-2", 0.0)
    });
    let halves = [records[..26].to_vec(), records[26..].to_vec()];
    let acks: Vec<pb::BatchAck> = {
        let batches = vec![
            batch(1, "e2e-clf", halves[0].clone()),
            batch(2, "e2e-clf", halves[1].clone()),
        ];
        let stream = client
            .stream_records(tokio_stream::iter(batches))
            .await
            .unwrap()
            .into_inner();
        use tokio_stream::StreamExt;
        stream.map(|a| a.unwrap()).collect().await
    };
    assert_eq!(acks.iter().map(|a| a.accepted).sum::<u32>(), 50);
    assert_eq!(acks.iter().map(|a| a.rejects.len()).sum::<usize>(), 2);

    // LLM: 5 generations.
    let input_tokens = [120u64, 800, 35, 2048, 400];
    let mut llm = batch(
        3,
        "e2e-llm",
        input_tokens
            .iter()
            .map(|&t| pb::InferenceRecord {
                prediction: Some(pb::inference_record::Prediction::Generation(
                    pb::Generation {
                        input_tokens: t,
                        output_tokens: 64,
                        time_to_first_token_seconds: Some(0.15),
                        ..Default::default()
                    },
                )),
                ..record("gen", 1.4)
            })
            .collect(),
    );
    llm.declarations = vec![pb::ModelDeclaration {
        model: "e2e-llm".into(),
        version: "1".into(),
        task: pb::TaskType::Generation as i32,
        gen_ai_provider: "vllm".into(),
        ..Default::default()
    }];
    assert_eq!(
        client
            .submit_records(llm)
            .await
            .unwrap()
            .into_inner()
            .accepted,
        5
    );

    // Stopping exports the final state and flushes the spans.
    sidecar.stop().await.unwrap();

    let clf = r#"inferscope_model_name="e2e-clf",inferscope_model_version="1""#;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_records_received_total{{{clf}}})"#),
        50.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_records_received_total{{{clf},outcome="ok"}})"#),
        40.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_records_received_total{{{clf},error_type="timeout"}})"#),
        7.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_records_received_total{{{clf},error_type="oom"}})"#),
        3.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_records_rejected_total{{{clf},reason="invalid_value"}})"#),
        2.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(inferscope_inference_duration_seconds_count{{{clf}}})"#),
        50.0,
    )
    .await;
    // Cumulative bucket counts, computed from the latencies sent.
    for le in ["0.005", "0.025", "0.1", "0.25"] {
        let bound: f64 = le.parse().unwrap();
        let want = latencies.iter().filter(|&&l| l <= bound).count() as f64;
        let query =
            format!(r#"sum(inferscope_inference_duration_seconds_bucket{{{clf},le="{le}"}})"#);
        assert_promql(&vm, &query, want).await;
    }
    let want_sum: f64 = latencies.iter().sum();
    let got_sum = promql(
        &vm,
        &format!(r#"sum(inferscope_inference_duration_seconds_sum{{{clf}}})"#),
        want_sum,
    )
    .await
    .unwrap();
    assert!((got_sum - want_sum).abs() < 1e-9, "{got_sum} vs {want_sum}");

    let llm = r#"gen_ai_request_model="e2e-llm",gen_ai_operation_name="chat",gen_ai_provider_name="vllm""#;
    let want_input: u64 = input_tokens.iter().sum();
    assert_promql(
        &vm,
        &format!(r#"sum(gen_ai_client_token_usage_sum{{{llm},gen_ai_token_type="input"}})"#),
        want_input as f64,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(gen_ai_client_token_usage_count{{{llm},gen_ai_token_type="output"}})"#),
        5.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(gen_ai_server_request_duration_seconds_count{{{llm}}})"#),
        5.0,
    )
    .await;
    assert_promql(
        &vm,
        &format!(r#"sum(gen_ai_server_time_to_first_token_seconds_count{{{llm}}})"#),
        5.0,
    )
    .await;
    // (1.4 - 0.15) / 63 ≈ 0.0198 s per token: inside the (0.01, 0.025] bucket.
    assert_promql(&vm, &format!(r#"sum(gen_ai_server_time_per_output_token_seconds_bucket{{{llm},le="0.025"}}) - sum(gen_ai_server_time_per_output_token_seconds_bucket{{{llm},le="0.01"}})"#), 5.0).await;

    // Phoenix: 2 sampled ok spans + 2 error spans, all children of the caller's span.
    let spans = phoenix_spans(&phoenix_http, &trace_id, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    for span in &spans {
        assert_eq!(span["context"]["trace_id"], trace_id.as_str());
        assert_eq!(span["parent_id"], parent_span);
        assert_eq!(span["name"], traces::SPAN_NAME);
        assert_eq!(span["attributes"]["inferscope.model.name"], "e2e-clf");
    }
    let errors: Vec<_> = spans
        .iter()
        .filter(|s| s["status_code"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 2);
    let mut error_types: Vec<_> = errors
        .iter()
        .map(|s| s["attributes"]["error.type"].as_str().unwrap())
        .collect();
    error_types.sort();
    assert_eq!(error_types, ["oom", "timeout"]);
}

/// Polls until the query is within `1e-9` (relative above 1) of `want`.
async fn promql_near(base: &str, query: &str, want: f64) -> Option<f64> {
    poll_promql(base, query, |v| {
        (v - want).abs() <= 1e-9 * want.abs().max(1.0)
    })
    .await
}

/// The issue's acceptance test: a record stream whose labels all arrive later, through
/// SubmitLabels, gives in VictoriaMetrics (PromQL) the values scikit-learn computes on the same
/// records, for the 5-minute window and since start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_from_delayed_labels_matches_scikit_learn_in_victoria_metrics() {
    use common::golden::{datasets, declaration, label, prediction};
    let (_vm, vm) = start_victoria_metrics().await;
    let metrics_export = export_config(format!("{vm}/opentelemetry"), OtlpProtocol::HttpProtobuf);
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&metrics_export).unwrap()),
        traces: None,
        resource: resource::detect(),
    };
    let mut config = common::config();
    config.export = metrics_export;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();

    let wanted = ["binary_imbalanced", "multiclass_3", "regression_outliers"];
    let datasets: Vec<Value> = datasets()
        .into_iter()
        .filter(|d| wanted.contains(&d["name"].as_str().unwrap()))
        .collect();
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let rows = ds["records"].as_array().unwrap();
        let mut first = batch(0, name, Vec::new());
        first.declarations = declaration(ds).into_iter().collect();
        first.records = rows
            .iter()
            .enumerate()
            .map(|(i, row)| pb::InferenceRecord {
                request_id: format!("{name}-{i}"),
                prediction: Some(prediction(row)),
                ..Default::default()
            })
            .collect();
        client.submit_records(first).await.unwrap();
        let labels = rows
            .iter()
            .enumerate()
            .map(|(i, row)| pb::GroundTruth {
                request_id: format!("{name}-{i}"),
                label: Some(label(ds, row)),
                ..Default::default()
            })
            .collect();
        let ack = client
            .submit_labels(pb::LabelBatch {
                sequence: 1,
                model: name.into(),
                version: "1".into(),
                labels,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.accepted as usize, rows.len());
    }

    let mut failures = Vec::new();
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let e = &ds["expected"];
        let sel = |window: &str, extra: &str| {
            format!(
                r#"{{inferscope_model_name="{name}",inferscope_model_version="1",window="{window}"{extra}}}"#
            )
        };
        let mut checks: Vec<(String, f64)> = Vec::new();
        for window in ["5m", "all"] {
            if ds["task"] == "regression" {
                for metric in ["mae", "mse", "rmse", "mape", "r2", "mean_error"] {
                    // MAPE is a fraction: unit 1, so `_ratio` in Prometheus naming.
                    let suffix = if metric == "mape" { "_ratio" } else { "" };
                    checks.push((
                        format!("inferscope_quality_{metric}{suffix}{}", sel(window, "")),
                        e[metric].as_f64().unwrap(),
                    ));
                }
                continue;
            }
            checks.push((
                format!("inferscope_quality_accuracy_ratio{}", sel(window, "")),
                e["accuracy"].as_f64().unwrap(),
            ));
            checks.push((
                format!(
                    "inferscope_quality_balanced_accuracy_ratio{}",
                    sel(window, "")
                ),
                e["balanced_accuracy"].as_f64().unwrap(),
            ));
            checks.push((
                format!(
                    "inferscope_quality_f1_ratio{}",
                    sel(window, r#",average="macro""#)
                ),
                e["averages"]["macro"]["f1"].as_f64().unwrap(),
            ));
            checks.push((
                format!("inferscope_quality_log_loss{}", sel(window, "")),
                e["log_loss"].as_f64().unwrap(),
            ));
            let auc_attrs = if ds["task"] == "multiclass" {
                r#",average="macro""#
            } else {
                ""
            };
            // Under the exact cap: ROC AUC and average precision are exact.
            checks.push((
                format!("inferscope_quality_roc_auc_ratio{}", sel(window, auc_attrs)),
                e["roc_auc"].as_f64().unwrap(),
            ));
            checks.push((
                format!(
                    "inferscope_quality_average_precision_ratio{}",
                    sel(window, auc_attrs)
                ),
                e["average_precision"].as_f64().unwrap(),
            ));
        }
        let n = ds["records"].as_array().unwrap().len() as f64;
        checks.push((
            format!(r#"inferscope_labels_joined_total{{inferscope_model_name="{name}",source="delayed"}}"#),
            n,
        ));
        for (query, want) in checks {
            let got = promql_near(&vm, &query, want).await;
            if !got.is_some_and(|v| (v - want).abs() <= 1e-9 * want.abs().max(1.0)) {
                failures.push(format!(
                    "{query}: VictoriaMetrics {got:?}, scikit-learn {want}"
                ));
            }
        }
    }
    sidecar.stop().await.unwrap();
    if !failures.is_empty() {
        let names: Value = reqwest::get(format!("{vm}/api/v1/label/__name__/values"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        panic!(
            "{} mismatches:\n{}\nmetric names in VictoriaMetrics: {names}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// Drift in the real backend: a profile in `--profiles-dir`, a stream whose feature has shifted,
/// and PromQL in VictoriaMetrics shows SciPy's values for the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_scores_in_victoria_metrics_match_scipy() {
    use inferscope::drift::profile::{FeatureProfile, NumericColumn, Profile, ProfileSettings};
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/drift.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let case = data["numeric"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mean_shift")
        .unwrap();
    let floats = common::golden::floats;
    let dir = TempDir::new("profiles");
    let mut column = NumericColumn::default();
    for v in floats(&case["reference"]) {
        column.push(Some(v));
    }
    let profile = Profile {
        format: inferscope::drift::profile::FORMAT.into(),
        model: "shifted".into(),
        version: "1".into(),
        source: "tests/data/drift.json".into(),
        created_unix_seconds: 0,
        records: 1000,
        features: vec![FeatureProfile::Numeric(column.finish(
            "amount",
            ProfileSettings::default(),
            1,
        ))],
    };
    std::fs::write(
        dir.0.join("shifted.json"),
        serde_json::to_string(&profile).unwrap(),
    )
    .unwrap();

    let (_vm, vm) = start_victoria_metrics().await;
    let metrics_export = export_config(format!("{vm}/opentelemetry"), OtlpProtocol::HttpProtobuf);
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&metrics_export).unwrap()),
        traces: None,
        resource: resource::detect(),
    };
    let mut config = common::config();
    config.export = metrics_export;
    config.profiles_dir = Some(dir.0.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();
    let mut b = batch(0, "shifted", Vec::new());
    b.declarations = vec![pb::ModelDeclaration {
        model: "shifted".into(),
        version: "1".into(),
        features: vec![pb::FeatureSpec {
            name: "amount".into(),
            kind: pb::FeatureKind::Numeric as i32,
        }],
        ..Default::default()
    }];
    b.records = floats(&case["current"])
        .into_iter()
        .map(|v| pb::InferenceRecord {
            numeric_features: vec![v],
            ..Default::default()
        })
        .collect();
    client.submit_records(b).await.unwrap();

    let e = &case["expected"];
    let mut failures = Vec::new();
    for window in ["5m", "all"] {
        let sel = format!(
            r#"{{inferscope_model_name="shifted",inferscope_model_version="1",window="{window}",feature="amount"}}"#
        );
        for (metric, key) in [
            ("inferscope_drift_psi", "psi"),
            ("inferscope_drift_js_distance_ratio", "js_distance"),
            ("inferscope_drift_ks_statistic", "ks_statistic"),
            ("inferscope_drift_wasserstein", "wasserstein"),
        ] {
            let want = e[key].as_f64().unwrap();
            let query = format!("{metric}{sel}");
            let got = promql_near(&vm, &query, want).await;
            if !got.is_some_and(|v| (v - want).abs() <= 1e-9 * want.abs().max(1.0)) {
                failures.push(format!("{query}: VictoriaMetrics {got:?}, SciPy {want}"));
            }
        }
        // PSI 0.18 is under the default 0.2 threshold: not flagged; the count says so.
        let query = format!(
            r#"inferscope_drift_drifted_features{{inferscope_model_name="shifted",window="{window}"}}"#
        );
        if promql_near(&vm, &query, 0.0).await != Some(0.0) {
            failures.push(format!("{query} is not 0"));
        }
    }
    sidecar.stop().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Injected anomalies in a live stream: flagged in the ack of their batch, counted in
/// VictoriaMetrics, and traced in Phoenix as spans of the caller's trace with one
/// `inferscope.anomaly` event per flag, though the caller's traceparent says "not sampled".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_anomalies_come_back_in_acks_victoria_metrics_and_phoenix() {
    let (_vm, vm) = start_victoria_metrics().await;
    let (_phoenix, phoenix_http, phoenix_grpc) = start_phoenix().await;
    let (sinks, metrics_export) = both_backends(&vm, phoenix_grpc);
    let mut config = common::config();
    config.export = metrics_export;
    config.sampling = Sampling {
        ratio: 0.0,
        parent_based: true,
    };
    config.drift.reference_records = 1000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();

    // 1 500 ordinary records (the first 1 000 become the reference), deterministic values.
    let model = "e2e-anomaly";
    let ordinary = |i: usize| pb::InferenceRecord {
        request_id: format!("r{i}"),
        latency_seconds: Some(0.020 + 0.001 * (i % 10) as f64),
        numeric_features: (0..4)
            .map(|j| ((i * 7 + j * 13) % 100) as f64 / 10.0)
            .collect(),
        ..Default::default()
    };
    let mut first = batch(0, model, Vec::new());
    first.declarations = vec![pb::ModelDeclaration {
        model: model.into(),
        version: "1".into(),
        features: (0..4)
            .map(|j| pb::FeatureSpec {
                name: format!("x{j}"),
                kind: pb::FeatureKind::Numeric as i32,
            })
            .collect(),
        ..Default::default()
    }];
    client.submit_records(first).await.unwrap();
    for b in 0..15 {
        let records = (b * 100..(b + 1) * 100).map(ordinary).collect();
        client
            .submit_records(batch(1 + b as u64, model, records))
            .await
            .unwrap();
    }

    // The injected batch: a far outlier, a latency spike, a missing value, in the caller's
    // (unsampled) trace.
    let trace_id = format!("{:032x}", rand_suffix() as u128 * 7919 + 3);
    let parent = "c7ad6b7169203331";
    let mut records: Vec<pb::InferenceRecord> = (2000..2020).map(ordinary).collect();
    for r in &mut records {
        r.traceparent = format!("00-{trace_id}-{parent}-00");
    }
    records[3].numeric_features[0] = 500.0;
    records[8].latency_seconds = Some(5.0);
    records[12].numeric_features[2] = f64::NAN;
    let ack = client
        .submit_records(batch(100, model, records))
        .await
        .unwrap()
        .into_inner();
    let mut flags: Vec<(u32, Vec<String>)> = ack
        .flags
        .iter()
        .map(|r| {
            let mut kinds: Vec<String> = r
                .anomalies
                .iter()
                .map(|a| a.kind.clone())
                // The Half-Space Trees may or may not isolate an ordinary-looking record.
                .filter(|k| k != "multivariate_outlier")
                .collect();
            kinds.sort();
            (r.index, kinds)
        })
        .filter(|(_, kinds)| !kinds.is_empty())
        .collect();
    flags.sort();
    let owned = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        flags,
        vec![
            (3, owned(&["feature_outlier", "out_of_reference_range"])),
            (8, owned(&["latency_outlier"])),
            (12, owned(&["missing_feature"])),
        ]
    );
    sidecar.stop().await.unwrap();

    let m = format!(r#"inferscope_model_name="{model}",inferscope_model_version="1""#);
    for kind in [
        "feature_outlier",
        "out_of_reference_range",
        "latency_outlier",
        "missing_feature",
    ] {
        assert_promql(
            &vm,
            &format!(r#"sum(inferscope_anomalies_total{{{m},kind="{kind}"}})"#),
            1.0,
        )
        .await;
    }
    // The share of flagged records since start, as counted from the acks.
    let flagged_records = ack.flags.len() as f64;
    let want = flagged_records / 1520.0;
    let rate = promql_near(
        &vm,
        &format!(r#"inferscope_anomaly_flagged_ratio{{{m},window="all"}}"#),
        want,
    )
    .await;
    // VictoriaMetrics keeps about 14 significant digits.
    assert!(
        rate.is_some_and(|r| (r - want).abs() <= 1e-12),
        "anomaly rate {rate:?} vs {want}"
    );
    // Flags per record: a curly-brace unit adds no suffix in Prometheus naming.
    let per_record = promql_near(
        &vm,
        &format!(
            r#"inferscope_anomaly_flags_per_record{{{m},window="all",kind="latency_outlier"}}"#
        ),
        1.0 / 1520.0,
    )
    .await;
    assert!(
        per_record.is_some_and(|r| (r - 1.0 / 1520.0).abs() <= 1e-12),
        "latency_outlier flags per record {per_record:?}"
    );

    // Phoenix: one span per flagged record, children of the caller's span, each with its events.
    let spans = phoenix_spans(&phoenix_http, &trace_id, ack.flags.len()).await;
    assert_eq!(spans.len(), ack.flags.len(), "{spans:#?}");
    let mut kinds = Vec::new();
    for span in &spans {
        assert_eq!(span["parent_id"], parent);
        for event in span["events"].as_array().expect("span events") {
            assert_eq!(event["name"], "inferscope.anomaly", "{event}");
            kinds.push(event["attributes"]["kind"].as_str().unwrap().to_owned());
        }
    }
    for kind in [
        "latency_outlier",
        "missing_feature",
        "out_of_reference_range",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

/// The queries of every panel of the shipped Grafana dashboard, as `(panel title, PromQL)`, with
/// the variables set as a user opening it would have them: every model, version and sidecar, the
/// first window, a one-minute rate interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(include_str!("../deploy/grafana/inferscope-dashboard.json")).unwrap();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let query = expr
                        .replace("$__rate_interval", "1m")
                        .replace("$model", ".*")
                        .replace("$version", ".*")
                        .replace("$instance", ".*")
                        .replace("$window", "5m");
                    let title = panel["title"].as_str().unwrap_or("");
                    out.push((format!("{title} (id {})", panel["id"]), query));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// How many series an instant query returns.
async fn series_count(base: &str, query: &str) -> usize {
    let body = instant_query(&reqwest::Client::new(), base, query).await;
    assert_eq!(body["status"], "success", "{query}: {body}");
    body["data"]["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_has_data_from_the_demo() {
    let (_vm, vm) = start_victoria_metrics().await;
    let export = export_config(format!("{vm}/opentelemetry"), OtlpProtocol::HttpProtobuf);
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&export).unwrap()),
        traces: None,
        resource: resource::detect(),
    };
    let mut config = inferscope::config::Config {
        export: ExportConfig {
            traces: false,
            ..export
        },
        ..Default::default()
    };
    // A reference within the run, so that the drift panels have scores.
    config.drift.reference_records = 300;
    inferscope::demo::run(config, sinks, true, Some(Duration::from_secs(20)), 200)
        .await
        .unwrap();
    let _ = reqwest::get(format!("{vm}/internal/force_flush")).await;
    // Every panel shows data: at least one of its queries returns a series (a panel may hold a
    // query for what a healthy demo never produces, such as rejected labels).
    let queries = dashboard_queries();
    assert!(queries.len() > 30, "{} queries", queries.len());
    let mut panels: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (title, query) in &queries {
        let empty = series_count(&vm, query).await == 0;
        let seen = panels.entry(title.as_str()).or_default();
        if empty {
            seen.push(query.as_str());
        } else {
            seen.clear();
            seen.push("");
        }
    }
    let unexpected: Vec<_> = panels
        .iter()
        .filter(|(_, empty)| !empty.contains(&""))
        .collect();
    assert!(
        unexpected.is_empty(),
        "panels without data: {unexpected:#?}"
    );
}

/// Issue 11's fleet test: three sidecars share one redis-server (`--label-store`); each dataset's
/// records are spread over the three and every delayed label goes to another sidecar than most
/// of its predictions, or through the out-of-pod path (`inferscope labels`). The fleet-wide series
/// in VictoriaMetrics equal what scikit-learn computes on all the records, the pods' join counts add up to every label, and no label whose
/// prediction was acked is counted `unknown_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_quality_of_three_sidecars_matches_scikit_learn_on_the_union() {
    use common::golden::{datasets, declaration, label, prediction};
    let (_vm, vm) = start_victoria_metrics().await;
    let redis = common::redis::Redis::start();
    let metrics_export = export_config(format!("{vm}/opentelemetry"), OtlpProtocol::HttpProtobuf);
    let mut sidecars = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let sinks = Sinks {
            metrics: Some(MetricTransport::from_config(&metrics_export).unwrap()),
            traces: None,
            // A random service.instance.id per sidecar, as in three pods.
            resource: resource::detect(),
        };
        let mut config = common::config();
        config.export = metrics_export.clone();
        config.label_store = Some(redis.url());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
        clients.push(
            pb::ingest_service_client::IngestServiceClient::connect(format!(
                "http://{}",
                sidecar.local_addr
            ))
            .await
            .unwrap(),
        );
        sidecars.push(sidecar);
    }

    let wanted = ["binary_imbalanced", "multiclass_3", "regression_outliers"];
    let datasets: Vec<Value> = datasets()
        .into_iter()
        .filter(|d| wanted.contains(&d["name"].as_str().unwrap()))
        .collect();
    let mut predictions = 0;
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let rows = ds["records"].as_array().unwrap();
        for (pod, client) in clients.iter_mut().enumerate() {
            let mut records = batch(0, name, Vec::new());
            records.declarations = declaration(ds).into_iter().collect();
            records.records = (pod..rows.len())
                .step_by(3)
                .map(|i| pb::InferenceRecord {
                    request_id: format!("{name}-{i}"),
                    prediction: Some(prediction(&rows[i])),
                    ..Default::default()
                })
                .collect();
            client.submit_records(records).await.unwrap();
        }
        predictions += rows.len() as i64;
    }
    // Acked predictions are written to Redis by each sidecar's writer shortly after the ack.
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis.predictions() < predictions {
        assert!(Instant::now() < deadline, "predictions never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out_of_pod = String::from("request_id,model,version,class,class_index,value\n");
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let rows = ds["records"].as_array().unwrap();
        // Every fourth label goes through the out-of-pod path (`inferscope labels` → the Redis
        // stream every sidecar reads); label i of the others to sidecar (2i + 1) mod 3, the
        // prediction's own sidecar for one in three.
        for i in (3..rows.len()).step_by(4) {
            let value = match label(ds, &rows[i]).value.unwrap() {
                pb::label::Value::ClassName(c) => format!(",{c},,"),
                pb::label::Value::ClassIndex(c) => format!(",,{c},"),
                pb::label::Value::RegressionValue(v) => format!(",,,{v:?}"),
                other => panic!("{other:?}"),
            };
            out_of_pod.push_str(&format!("{name}-{i},{name},1{value}\n"));
        }
        for (pod, client) in clients.iter_mut().enumerate() {
            let labels: Vec<pb::GroundTruth> = (0..rows.len())
                .filter(|i| i % 4 != 3 && (2 * i + 1) % 3 == pod)
                .map(|i| pb::GroundTruth {
                    request_id: format!("{name}-{i}"),
                    label: Some(label(ds, &rows[i])),
                    ..Default::default()
                })
                .collect();
            let n = labels.len();
            let ack = client
                .submit_labels(pb::LabelBatch {
                    sequence: 1,
                    model: name.into(),
                    version: "1".into(),
                    labels,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(ack.accepted as usize, n);
        }
    }

    let dir = common::tls::temp_dir("fleet-labels");
    let file = dir.join("labels.csv");
    std::fs::write(&file, out_of_pod).unwrap();
    let sent = std::process::Command::new(env!("CARGO_BIN_EXE_inferscope"))
        .arg("labels")
        .arg(&file)
        .args(["--store", &redis.url()])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let mut failures = Vec::new();
    let mut checks: Vec<(String, f64)> = vec![("inferscope_fleet_sidecars".into(), 3.0)];
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let e = &ds["expected"];
        let sel = |extra: &str| {
            format!(
                r#"{{inferscope_model_name="{name}",inferscope_model_version="1",window="5m"{extra}}}"#
            )
        };
        if ds["task"] == "regression" {
            for metric in ["mae", "mse", "rmse", "mape", "r2", "mean_error"] {
                let suffix = if metric == "mape" { "_ratio" } else { "" };
                checks.push((
                    format!("inferscope_fleet_quality_{metric}{suffix}{}", sel("")),
                    e[metric].as_f64().unwrap(),
                ));
            }
        } else {
            let auc = if ds["task"] == "multiclass" {
                r#",average="macro""#
            } else {
                ""
            };
            for (metric, extra, want) in [
                ("accuracy_ratio", "", &e["accuracy"]),
                ("balanced_accuracy_ratio", "", &e["balanced_accuracy"]),
                (
                    "f1_ratio",
                    r#",average="macro""#,
                    &e["averages"]["macro"]["f1"],
                ),
                (
                    "f1_ratio",
                    r#",average="weighted""#,
                    &e["averages"]["weighted"]["f1"],
                ),
                ("log_loss", "", &e["log_loss"]),
                ("brier_score", "", &e["brier_score"]),
                // Under the exact-pair budget: exact.
                ("roc_auc_ratio", auc, &e["roc_auc"]),
                ("average_precision_ratio", auc, &e["average_precision"]),
            ] {
                if let Some(want) = want.as_f64() {
                    checks.push((
                        format!("inferscope_fleet_quality_{metric}{}", sel(extra)),
                        want,
                    ));
                }
            }
        }
        let n = ds["records"].as_array().unwrap().len() as f64;
        let model = format!(r#"inferscope_model_name="{name}""#);
        // Per-pod series add up: every label joined once in the fleet, none unknown.
        checks.push((
            format!(r#"sum(inferscope_labels_joined_total{{{model},source="delayed"}})"#),
            n,
        ));
        checks.push((
            format!(r#"sum(inferscope_labels_unmatched_total{{{model}}})"#),
            0.0,
        ));
        checks.push((
            format!(r#"count(inferscope_labels_joined_total{{{model},source="delayed"}})"#),
            3.0,
        ));
    }
    for (query, want) in checks {
        let got = promql_near(&vm, &query, want).await;
        if !got.is_some_and(|v| (v - want).abs() <= 1e-9 * want.abs().max(1.0)) {
            failures.push(format!(
                "{query}: VictoriaMetrics {got:?}, scikit-learn {want}"
            ));
        }
    }
    for sidecar in sidecars {
        sidecar.stop().await.unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
