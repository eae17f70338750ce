//! The Open Inference Protocol tap (`--tap-listen`, `--tap-upstream`, `src/tap/`) in front of a
//! real model server: MLServer with its scikit-learn runtime serving a model trained by
//! `tests/tap/train.py`, no inferscope code in it.
//! - calls through the tap are answered exactly as the server answers them directly (ServerLive,
//!   ModelMetadata, ModelInfer with typed and raw tensors, and a malformed request's error);
//! - each ModelInfer row becomes a record (one-row calls under the request id, batches under
//!   `<id>/<row>`), a malformed request an error record with the server's gRPC code;
//! - delayed labels join them: accuracy and ROC AUC equal scikit-learn's within 1e-9;
//! - the features shifted halfway are flagged as drifted, the others are not.
//!
//! Needs `tools/install-backends.sh mlserver` (the README's test command runs it); fails, never
//! skips, without it.

mod common;

use common::backends::{free_port, run_json, wait_ready, Backend, TempDir};
use inferscope::{
    models::ModelKey,
    oip::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
        InferTensorContents, ModelInferRequest, ModelMetadataRequest, ServerLiveRequest,
    },
    pb,
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
async fn train(dir: &TempDir, python: &PathBuf) -> Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_behind_the_tap_is_monitored_without_code_in_it() {
    let python = root().join(".tools/mlserver-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `tools/install-backends.sh mlserver`",
        python.display()
    );
    let dir = TempDir::new("tap-mlserver");
    let traffic = train(&dir, &python).await;
    let (_mlserver, upstream) = start_mlserver(dir).await;

    let mut config = common::config();
    config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.upstream = Some(upstream.clone());
    config.tap.models = mapping();
    let reference = traffic["reference"].as_u64().unwrap() as usize;
    config.drift.reference_records = reference;
    let sidecar = common::start(config).await;
    let mut tap = client(format!("http://{}", sidecar.sidecar.tap_addr.unwrap())).await;
    let mut direct = client(upstream).await;

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

    let rows: Vec<Vec<f64>> = traffic["rows"]
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
        .collect();
    let labels: Vec<u64> = traffic["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The reference rows one per call (typed contents), the shifted ones eight per call (raw
    // bytes; MLServer answers raw outputs then).
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

    // Every call recorded (off the calls' path): 800 predictions and the error.
    let key = ModelKey::new(MODEL, "v1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = sidecar.sidecar.snapshot().await;
        let recorded: u64 = snapshot
            .models
            .get(&key)
            .map_or(0, |m| m.outcomes.iter().map(|o| o.records).sum());
        if recorded == rows.len() as u64 + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{recorded} records after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut ingest = sidecar.client().await;
    let ack = ingest
        .submit_labels(pb::LabelBatch {
            model: MODEL.into(),
            version: "v1".into(),
            labels: ids
                .iter()
                .zip(&labels)
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
    assert_eq!(ack.accepted as usize, rows.len(), "{:?}", ack.rejects);

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
        rows.len() as i64 + 1
    );
    // MLServer answers INTERNAL for it: the record carries the code the caller got.
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &[
                ("inferscope.model.name", MODEL),
                ("error.type", inferscope::tap::code_name(via_tap.code())),
            ]
        ),
        1
    );
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model),
        rows.len() as i64
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
