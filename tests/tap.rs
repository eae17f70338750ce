//! The Open Inference Protocol tap (`--tap-listen`, `--tap-upstream`, `src/tap/`) in front of a
//! real model server: MLServer with its scikit-learn runtime serving a model trained by
//! `tests/tap/train.py`, no inferscope code in it.
//! - calls through the tap are answered exactly as the server answers them directly (ServerLive,
//!   ModelMetadata, ModelInfer with typed and raw tensors, and a malformed request's error);
//! - each ModelInfer row becomes a record (one-row calls under the request id, batches under
//!   `<id>/<row>`), a malformed request an error record with the server's gRPC code;
//! - delayed labels join them: accuracy and ROC AUC equal scikit-learn's within 1e-9;
//! - the features shifted halfway are flagged as drifted, the others are not;
//! - exported to VictoriaMetrics, the same quality and drift read back with PromQL.
//!
//! Needs `tools/install-backends.sh mlserver` (the README's test command runs it); fails, never
//! skips, without it.

mod common;

use common::backends::{
    free_port, poll_promql, run_json, start_victoria_metrics, wait_ready, Backend, TempDir,
};
use inferscope::{
    config::{Config, OtlpProtocol},
    models::ModelKey,
    oip::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
        InferTensorContents, ModelInferRequest, ModelMetadataRequest, ServerLiveRequest,
    },
    pb,
    server::{Sidecar, Sinks},
    tap::TapModel,
};
use serde_json::Value;
use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tonic::transport::Channel;

const MODEL: &str = "credit";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Trains the model into a temporary directory; the traffic and scikit-learn's figures.
async fn train(dir: &TempDir, python: &std::path::Path) -> Value {
    let mut command = Command::new(python);
    command.arg(root().join("tests/tap/train.py")).arg(&dir.0);
    run_json(command).await
}

/// `mlserver start DIR` on free loopback ports, ready; its gRPC address.
async fn start_mlserver(dir: TempDir) -> (Backend, String) {
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let mut child = Command::new(root().join(".tools/mlserver-venv/bin/mlserver"))
        .arg("start")
        .arg(&dir.0)
        .env("MLSERVER_HOST", "127.0.0.1")
        .env("MLSERVER_HTTP_PORT", http.to_string())
        .env("MLSERVER_GRPC_PORT", grpc.to_string())
        .env("MLSERVER_METRICS_PORT", metrics.to_string())
        // The model in the server's own process: no worker pool to fork.
        .env("MLSERVER_PARALLEL_WORKERS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mlserver starts");
    wait_ready(
        &format!("http://127.0.0.1:{http}/v2/models/{MODEL}/ready"),
        Duration::from_secs(60),
        &mut child,
    )
    .await;
    (
        Backend { child, _dir: dir },
        format!("http://127.0.0.1:{grpc}"),
    )
}

async fn client(url: String) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(url).await.unwrap()
}

/// Both outputs of the scikit-learn runtime.
fn outputs() -> Vec<InferRequestedOutputTensor> {
    ["predict", "predict_proba"]
        .into_iter()
        .map(|name| InferRequestedOutputTensor {
            name: name.into(),
            ..Default::default()
        })
        .collect()
}

/// Rows as one FP64 input `[rows, 4]`: typed contents, or raw little-endian bytes.
fn infer(id: &str, rows: &[Vec<f64>], raw: bool) -> ModelInferRequest {
    let values: Vec<f64> = rows.iter().flatten().copied().collect();
    let mut input = InferInputTensor {
        name: "input-0".into(),
        datatype: "FP64".into(),
        shape: vec![rows.len() as i64, 4],
        ..Default::default()
    };
    let mut request = ModelInferRequest {
        model_name: MODEL.into(),
        id: id.into(),
        outputs: outputs(),
        ..Default::default()
    };
    if raw {
        request.raw_input_contents = vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()];
    } else {
        input.contents = Some(InferTensorContents {
            fp64_contents: values,
            ..Default::default()
        });
    }
    request.inputs = vec![input];
    request
}

fn mapping() -> HashMap<String, TapModel> {
    HashMap::from([(
        MODEL.to_owned(),
        TapModel {
            class_names: vec!["0".into(), "1".into()],
            prediction_output: Some("predict".into()),
            probabilities_output: Some("predict_proba".into()),
            ..Default::default()
        },
    )])
}

/// MLServer serving the trained model, and the traffic: (server, its gRPC URL, the training
/// script's JSON).
async fn serve_model() -> (Backend, String, Value) {
    let python = root().join(".tools/mlserver-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `tools/install-backends.sh mlserver`",
        python.display()
    );
    let dir = TempDir::new("tap-mlserver");
    let traffic = train(&dir, &python).await;
    let (mlserver, upstream) = start_mlserver(dir).await;
    (mlserver, upstream, traffic)
}

/// The tap in front of `upstream`, its mapping, and a reference of the traffic's first rows.
fn tap_config(mut config: Config, upstream: &str, traffic: &Value) -> Config {
    config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.upstream = Some(upstream.to_owned());
    config.tap.models = mapping();
    config.drift.reference_records = traffic["reference"].as_u64().unwrap() as usize;
    config
}

/// What went through the tap: the request id of each row in traffic order, and the code the
/// malformed request got.
struct Sent {
    ids: Vec<String>,
    malformed: tonic::Code,
}

/// Sends the traffic through the tap, comparing a few answers with direct calls: the reference
/// rows one per call (typed contents), the shifted ones eight per call (raw bytes; MLServer
/// answers raw outputs then); then a malformed request.
async fn send_through(tap_addr: std::net::SocketAddr, upstream: &str, traffic: &Value) -> Sent {
    let mut tap = client(format!("http://{tap_addr}")).await;
    let mut direct = client(upstream.to_owned()).await;
    let reference = traffic["reference"].as_u64().unwrap() as usize;
    let rows = rows(traffic);

    // Calls other than ModelInfer pass through unchanged.
    let live = tap.server_live(ServerLiveRequest {}).await.unwrap();
    assert!(live.get_ref().live);
    let metadata = ModelMetadataRequest {
        name: MODEL.into(),
        version: String::new(),
    };
    assert_eq!(
        tap.model_metadata(metadata.clone())
            .await
            .unwrap()
            .into_inner(),
        direct.model_metadata(metadata).await.unwrap().into_inner()
    );

    let mut ids = Vec::new();
    for (i, row) in rows[..reference].iter().enumerate() {
        let request = infer(&format!("q{i}"), std::slice::from_ref(row), false);
        let through = tap.model_infer(request.clone()).await.unwrap().into_inner();
        if i < 3 {
            let expected = direct.model_infer(request).await.unwrap().into_inner();
            assert_eq!(through, expected);
        }
        ids.push(format!("q{i}"));
    }
    for (k, chunk) in rows[reference..].chunks(8).enumerate() {
        let request = infer(&format!("b{k}"), chunk, true);
        let through = tap.model_infer(request.clone()).await.unwrap().into_inner();
        if k < 2 {
            let expected = direct.model_infer(request).await.unwrap().into_inner();
            assert_eq!(through, expected);
            assert!(!through.raw_output_contents.is_empty());
        }
        ids.extend((0..chunk.len()).map(|j| format!("b{k}/{j}")));
    }
    // Three values for a [1, 4] tensor: the server's own error, unchanged.
    let mut malformed = infer("bad", &rows[..1], false);
    malformed.inputs[0]
        .contents
        .as_mut()
        .unwrap()
        .fp64_contents
        .pop();
    let via_tap = tap.model_infer(malformed.clone()).await.unwrap_err();
    let from_server = direct.model_infer(malformed).await.unwrap_err();
    assert_eq!(
        (via_tap.code(), via_tap.message()),
        (from_server.code(), from_server.message())
    );
    Sent {
        ids,
        malformed: via_tap.code(),
    }
}

fn rows(traffic: &Value) -> Vec<Vec<f64>> {
    traffic["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Waits until the sidecar has recorded `want` records of the model (recording is off the
/// calls' path), then sends the traffic's labels under the ids the tap gave the rows.
async fn label(sidecar: &Sidecar, sent: &Sent, traffic: &Value, want: u64) {
    let key = ModelKey::new(MODEL, "v1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = sidecar.snapshot().await;
        let recorded: u64 = snapshot
            .models
            .get(&key)
            .map_or(0, |m| m.outcomes.iter().map(|o| o.records).sum());
        if recorded == want {
            break;
        }
        assert!(Instant::now() < deadline, "{recorded} records after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ingest = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();
    let labels = traffic["labels"].as_array().unwrap();
    let ack = ingest
        .submit_labels(pb::LabelBatch {
            model: MODEL.into(),
            version: "v1".into(),
            labels: sent
                .ids
                .iter()
                .zip(labels)
                .map(|(id, y)| pb::GroundTruth {
                    request_id: id.clone(),
                    label: Some(pb::Label {
                        value: Some(pb::label::Value::ClassName(y.to_string())),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted as usize, sent.ids.len(), "{:?}", ack.rejects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_behind_the_tap_is_monitored_without_code_in_it() {
    let (_mlserver, upstream, traffic) = serve_model().await;
    let sidecar = common::start(tap_config(common::config(), &upstream, &traffic)).await;
    let sent = send_through(sidecar.sidecar.tap_addr.unwrap(), &upstream, &traffic).await;
    let rows = sent.ids.len() as i64;
    // 800 predictions and the malformed request's error.
    label(&sidecar.sidecar, &sent, &traffic, rows as u64 + 1).await;

    let key = ModelKey::new(MODEL, "v1");
    let snapshot = sidecar.sidecar.snapshot().await;
    let drift = snapshot.drift[&key].windows.last().unwrap();
    let drifted: Vec<(&str, bool)> = drift
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.drifted))
        .collect();
    assert_eq!(
        drifted,
        [
            ("input-0_0", true),
            ("input-0_1", true),
            ("input-0_2", false),
            ("input-0_3", false),
            // The predictions' distribution moves with the inputs.
            ("__prediction__", true)
        ]
    );

    let (request, _) = sidecar.stop().await;
    let model = [("inferscope.model.name", MODEL)];
    assert_eq!(
        common::value(&request, "inferscope.records.received", &model),
        rows + 1
    );
    // MLServer answers INTERNAL for it: the record carries the code the caller got.
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &[
                ("inferscope.model.name", MODEL),
                ("error.type", inferscope::tap::code_name(sent.malformed)),
            ]
        ),
        1
    );
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model),
        rows
    );
    let all = [
        ("inferscope.model.name", MODEL),
        ("inferscope.model.version", "v1"),
        ("window", "all"),
    ];
    for (metric, key) in [
        ("inferscope.quality.accuracy", "accuracy"),
        ("inferscope.quality.roc_auc", "roc_auc"),
    ] {
        let got = common::point(&request, metric, &all).unwrap_or(f64::NAN);
        let want = traffic[key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "{metric}: {got}, scikit-learn {want}"
        );
    }
    assert_eq!(common::value(&request, "inferscope.tap.dropped", &[]), 0);
}

/// The issue's acceptance: the same traffic, exported over OTLP/HTTP to VictoriaMetrics, reads
/// back with PromQL as scikit-learn computes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_in_victoria_metrics_equals_scikit_learn() {
    let (_mlserver, upstream, traffic) = serve_model().await;
    let (_vm, vm) = start_victoria_metrics().await;
    let mut config = tap_config(common::config(), &upstream, &traffic);
    config.export.endpoint = format!("{vm}/opentelemetry");
    config.export.protocol = OtlpProtocol::HttpProtobuf;
    config.export.traces = false;
    let sinks = Sinks::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let sent = send_through(sidecar.tap_addr.unwrap(), &upstream, &traffic).await;
    label(&sidecar, &sent, &traffic, sent.ids.len() as u64 + 1).await;
    // Stopping exports the final state.
    sidecar.stop().await.unwrap();

    let sel =
        format!(r#"inferscope_model_name="{MODEL}",inferscope_model_version="v1",window="all""#);
    for (query, want) in [
        (
            format!("inferscope_quality_accuracy_ratio{{{sel}}}"),
            traffic["accuracy"].as_f64().unwrap(),
        ),
        (
            format!("inferscope_quality_roc_auc_ratio{{{sel}}}"),
            traffic["roc_auc"].as_f64().unwrap(),
        ),
        (
            format!(r#"sum(inferscope_records_received_total{{inferscope_model_name="{MODEL}"}})"#),
            sent.ids.len() as f64 + 1.0,
        ),
        (
            format!(
                r#"sum(inferscope_records_received_total{{inferscope_model_name="{MODEL}",error_type="{}"}})"#,
                inferscope::tap::code_name(sent.malformed)
            ),
            1.0,
        ),
    ] {
        let got = poll_promql(&vm, &query, |v| (v - want).abs() < 1e-9).await;
        assert!(
            got.is_some_and(|v| (v - want).abs() < 1e-9),
            "{query}: VictoriaMetrics {got:?}, want {want}"
        );
    }
    for (feature, drifted) in [("input-0_0", 1.0), ("input-0_1", 1.0), ("input-0_2", 0.0)] {
        let query = format!(r#"inferscope_drift_detected{{{sel},feature="{feature}"}}"#);
        let got = poll_promql(&vm, &query, |v| v == drifted).await;
        assert_eq!(got, Some(drifted), "{query}");
    }
}
