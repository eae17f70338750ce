//! The Open Inference Protocol tap (`--tap-listen`, `--tap-upstream`, `--tap-http-listen`,
//! `--tap-http-upstream`, `src/tap/`) in front of a real model server: MLServer with its
//! scikit-learn runtime serving a model trained by `tests/tap/train.py`, no inferscope code in it.
//! - calls through the tap are answered exactly as the server answers them directly, over gRPC
//!   (ServerLive, ModelMetadata, ModelInfer with typed and raw tensors, ModelStreamInfer, the model
//!   repository service the tap does not know, a malformed request's error) and over REST
//!   (`/v2/models/{name}/infer` with flat and nested JSON, metadata, health, a malformed request);
//! - each inference row becomes a record, half of the traffic over gRPC and half over REST (one-row
//!   calls under the request id, the `x-request-id` header or the `request_id` parameter, batches
//!   under `<id>/<row>`), a malformed request an error record with the server's gRPC code or HTTP
//!   status;
//! - delayed labels join them: accuracy and ROC AUC equal scikit-learn's within 1e-9;
//! - the features shifted halfway are flagged as drifted, the others are not;
//! - exported to VictoriaMetrics, the same quality and drift read back with PromQL.
//!
//! Without MLServer, against in-process or silent upstreams: the schema read from ModelMetadata
//! once per version (a tensor without a batch dimension is one row, the declared output the
//! prediction), request ids from the header and the parameter, and calls that never end not
//! holding the sidecar's shutdown.
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
        grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer},
        infer_parameter::ParameterChoice,
        model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
        model_metadata_response::TensorMetadata,
        InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
        ModelMetadataRequest, ModelMetadataResponse, ServerLiveRequest,
    },
    pb,
    server::{Sidecar, Sinks},
    tap::TapModel,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tonic::{transport::Channel, Request, Response, Status};

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

/// The model server's two ports, as URLs.
struct Upstream {
    grpc: String,
    rest: String,
}

/// `mlserver start DIR` on free loopback ports, ready; its gRPC and REST addresses.
async fn start_mlserver(dir: TempDir) -> (Backend, Upstream) {
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
        Upstream {
            grpc: format!("http://127.0.0.1:{grpc}"),
            rest: format!("http://127.0.0.1:{http}"),
        },
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

/// MLServer serving the trained model, and the traffic: (server, its URLs, the training
/// script's JSON).
async fn serve_model() -> (Backend, Upstream, Value) {
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

/// The tap in front of both of `upstream`'s ports, its mapping, request ids from the
/// `x-request-id` header and the `request_id` parameter, and a reference of the traffic's first
/// rows.
fn tap_config(mut config: Config, upstream: &Upstream, traffic: &Value) -> Config {
    config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.upstream = Some(upstream.grpc.clone());
    config.tap.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.http_upstream = Some(upstream.rest.clone());
    config.tap.request_id_header = Some("x-request-id".into());
    config.tap.request_id_parameter = Some("request_id".into());
    config.tap.models = mapping();
    config.drift.reference_records = traffic["reference"].as_u64().unwrap() as usize;
    config
}

/// What went through the tap: the request id of each row in traffic order, the code the
/// malformed gRPC request got and the status of the malformed REST one.
struct Sent {
    ids: Vec<String>,
    malformed: tonic::Code,
    malformed_rest: u16,
}

/// Rows as one FP64 REST input `[rows, 4]`, nested or flat.
fn rest_infer(rows: &[Vec<f64>], nested: bool) -> Value {
    let data: Value = if nested {
        json!(rows)
    } else {
        json!(rows.iter().flatten().collect::<Vec<_>>())
    };
    json!({
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [rows.len(), 4], "data": data}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    })
}

/// The model repository service MLServer serves and the tap does not know
/// (`inference.model_repository.ModelRepositoryService`), by hand: the tap must forward it.
mod repository {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IndexRequest {
        #[prost(string, tag = "1")]
        pub repository_name: String,
        #[prost(bool, tag = "2")]
        pub ready: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub state: String,
        #[prost(string, tag = "4")]
        pub reason: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IndexResponse {
        #[prost(message, repeated, tag = "1")]
        pub models: Vec<Model>,
    }
}

/// `RepositoryIndex`, a method of a service the tap has no stub of.
async fn repository_index(url: &str) -> Result<repository::IndexResponse, Status> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(repository::IndexRequest::default()),
        "/inference.model_repository.ModelRepositoryService/RepositoryIndex"
            .parse()
            .unwrap(),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(Response::into_inner)
}

/// A `ModelStreamInfer` stream of one request (MLServer's scikit-learn runtime answers the first
/// request of a stream), its answers (MLServer answers `ModelInferResponse` messages).
async fn stream_infer(
    url: &str,
    request: ModelInferRequest,
) -> Result<Vec<ModelInferResponse>, Status> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let answers = grpc
        .streaming(
            Request::new(tokio_stream::iter([request])),
            "/inference.GRPCInferenceService/ModelStreamInfer"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::<ModelInferRequest, ModelInferResponse>::default(),
        )
        .await?;
    let mut stream = answers.into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.message().await? {
        out.push(message);
    }
    Ok(out)
}

/// Sends the traffic through the tap, half over gRPC and half over REST, comparing answers with
/// direct calls: the reference rows one per call (gRPC typed contents, ids from the request, the
/// `x-request-id` metadata or a ModelStreamInfer stream; REST flat JSON with `x-request-id`, or
/// nested JSON with a `request_id` parameter), the shifted ones eight per call (gRPC raw bytes,
/// MLServer answering raw outputs then; REST nested JSON with an `id`); then a malformed request
/// each way, and the calls the tap forwards without knowing them.
async fn send_through(sidecar: &Sidecar, upstream: &Upstream, traffic: &Value) -> Sent {
    let tap_url = format!("http://{}", sidecar.tap_addr.unwrap());
    let rest_url = format!("http://{}", sidecar.tap_http_addr.unwrap());
    let mut tap = client(tap_url.clone()).await;
    let mut direct = client(upstream.grpc.clone()).await;
    let http = reqwest::Client::new();
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
    // A service the tap has no stub of: forwarded as opaque bytes, not UNIMPLEMENTED.
    let index = repository_index(&tap_url)
        .await
        .expect("RepositoryIndex through the tap");
    assert_eq!(index, repository_index(&upstream.grpc).await.unwrap());
    assert!(index.models.iter().any(|m| m.name == MODEL), "{index:?}");
    // REST calls other than infer: forwarded unchanged.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/credit",
        "/v2/models/credit/ready",
    ] {
        let through = http.get(format!("{rest_url}{path}")).send().await.unwrap();
        let direct = http
            .get(format!("{}{path}", upstream.rest))
            .send()
            .await
            .unwrap();
        assert_eq!(through.status(), direct.status(), "{path}");
        assert_eq!(
            through.bytes().await.unwrap(),
            direct.bytes().await.unwrap(),
            "{path}"
        );
    }

    let post = |url: String, body: Value, header: Option<String>| {
        let mut request = http.post(url).json(&body);
        if let Some(h) = header {
            request = request.header("x-request-id", h);
        }
        request.send()
    };
    let outputs_of = |v: &Value| v["outputs"].clone();
    let infer_path = format!("/v2/models/{MODEL}/infer");
    let mut ids = Vec::new();
    for (i, row) in rows[..reference].iter().enumerate() {
        let one = std::slice::from_ref(row);
        let id = match i % 4 {
            _ if i % 40 == 0 => {
                let request = infer(&format!("s{i}"), one, false);
                let through = stream_infer(&tap_url, request.clone()).await.unwrap();
                assert_eq!(through.len(), 1);
                if i == 0 {
                    assert_eq!(
                        through,
                        stream_infer(&upstream.grpc, request).await.unwrap()
                    );
                }
                format!("s{i}")
            }
            0 => {
                let request = infer(&format!("q{i}"), one, false);
                let through = tap.model_infer(request.clone()).await.unwrap().into_inner();
                if i < 8 {
                    let expected = direct.model_infer(request).await.unwrap().into_inner();
                    assert_eq!(through, expected);
                }
                format!("q{i}")
            }
            1 => {
                // The header names the row, not the request's id.
                let mut request = Request::new(infer(&format!("ignored{i}"), one, false));
                request
                    .metadata_mut()
                    .insert("x-request-id", format!("h{i}").parse().unwrap());
                tap.model_infer(request).await.unwrap();
                format!("h{i}")
            }
            2 => {
                let body = rest_infer(one, false);
                let through: Value = post(
                    format!("{rest_url}{infer_path}"),
                    body.clone(),
                    Some(format!("h{i}")),
                )
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
                if i < 8 {
                    let expected: Value =
                        post(format!("{}{infer_path}", upstream.rest), body, None)
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                    assert_eq!(outputs_of(&through), outputs_of(&expected));
                }
                format!("h{i}")
            }
            _ => {
                let mut body = rest_infer(one, true);
                body["parameters"] = json!({"request_id": format!("p{i}")});
                let response = post(format!("{rest_url}{infer_path}"), body, None)
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                format!("p{i}")
            }
        };
        ids.push(id);
    }
    for (k, chunk) in rows[reference..].chunks(8).enumerate() {
        let id = format!("b{k}");
        if k % 2 == 0 {
            let request = infer(&id, chunk, true);
            let through = tap.model_infer(request.clone()).await.unwrap().into_inner();
            if k < 4 {
                let expected = direct.model_infer(request).await.unwrap().into_inner();
                assert_eq!(through, expected);
                assert!(!through.raw_output_contents.is_empty());
            }
        } else {
            let mut body = rest_infer(chunk, true);
            body["id"] = json!(id);
            // The versioned path, with a query the tap passes on.
            let path = format!("/v2/models/{MODEL}/versions/v1/infer?trace=1");
            let through: Value = post(format!("{rest_url}{path}"), body.clone(), None)
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if k < 4 {
                let expected: Value = post(format!("{}{path}", upstream.rest), body, None)
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(through, expected);
            }
        }
        ids.extend((0..chunk.len()).map(|j| format!("{id}/{j}")));
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
    let mut malformed = rest_infer(&rows[..1], false);
    malformed["id"] = json!("bad-rest");
    malformed["inputs"][0]["data"].as_array_mut().unwrap().pop();
    let through = post(format!("{rest_url}{infer_path}"), malformed.clone(), None)
        .await
        .unwrap();
    let expected = post(format!("{}{infer_path}", upstream.rest), malformed, None)
        .await
        .unwrap();
    let malformed_rest = through.status().as_u16();
    assert!(malformed_rest >= 400, "{malformed_rest}");
    assert_eq!(through.status(), expected.status());
    assert_eq!(
        through.bytes().await.unwrap(),
        expected.bytes().await.unwrap()
    );
    Sent {
        ids,
        malformed: via_tap.code(),
        malformed_rest,
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
    let sent = send_through(&sidecar.sidecar, &upstream, &traffic).await;
    let rows = sent.ids.len() as i64;
    // 800 predictions and the malformed requests' errors.
    label(&sidecar.sidecar, &sent, &traffic, rows as u64 + 2).await;

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
        rows + 2
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
    // MLServer answers a malformed REST request with its HTTP status: the record's error type.
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &[
                ("inferscope.model.name", MODEL),
                ("error.type", sent.malformed_rest.to_string().as_str()),
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
    assert_eq!(common::value(&request, "inferscope.tap.unreadable", &[]), 0);
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
    let sent = send_through(&sidecar, &upstream, &traffic).await;
    label(&sidecar, &sent, &traffic, sent.ids.len() as u64 + 2).await;
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
            sent.ids.len() as f64 + 2.0,
        ),
        (
            format!(
                r#"sum(inferscope_records_received_total{{inferscope_model_name="{MODEL}",error_type="{}"}})"#,
                sent.malformed_rest
            ),
            1.0,
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

/// An OIP server in this process: its model `m` declares (ModelMetadata) an input `x` of shape
/// `[4]` (no batch dimension) and an output `y`, answers `y = sum(x)` under the version it is
/// set to, and counts the metadata calls.
#[derive(Clone, Default)]
struct Declared {
    metadata_calls: Arc<AtomicUsize>,
    version: Arc<std::sync::Mutex<String>>,
}

#[tonic::async_trait]
impl GrpcInferenceService for Declared {
    async fn server_live(
        &self,
        _: Request<inferscope::oip::ServerLiveRequest>,
    ) -> Result<Response<inferscope::oip::ServerLiveResponse>, Status> {
        Ok(Response::new(inferscope::oip::ServerLiveResponse {
            live: true,
        }))
    }
    async fn server_ready(
        &self,
        _: Request<inferscope::oip::ServerReadyRequest>,
    ) -> Result<Response<inferscope::oip::ServerReadyResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn model_ready(
        &self,
        _: Request<inferscope::oip::ModelReadyRequest>,
    ) -> Result<Response<inferscope::oip::ModelReadyResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn server_metadata(
        &self,
        _: Request<inferscope::oip::ServerMetadataRequest>,
    ) -> Result<Response<inferscope::oip::ServerMetadataResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.metadata_calls.fetch_add(1, Ordering::SeqCst);
        let tensor = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: "FP64".into(),
            shape,
        };
        Ok(Response::new(ModelMetadataResponse {
            name: request.into_inner().name,
            versions: vec![self.version.lock().unwrap().clone()],
            platform: "test".into(),
            inputs: vec![tensor("x", vec![4])],
            outputs: vec![tensor("y", vec![1])],
        }))
    }
    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let x = &request.inputs[0].contents.as_ref().unwrap().fp64_contents;
        Ok(Response::new(ModelInferResponse {
            model_name: request.model_name,
            model_version: self.version.lock().unwrap().clone(),
            id: request.id,
            outputs: vec![inferscope::oip::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: "FP64".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    fp64_contents: vec![x.iter().sum()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }))
    }
}

/// Without a mapping, the model's ModelMetadata is the schema: its input of shape `[4]` has no
/// batch dimension (one record per call with features x_0..x_3, not four), its output is the
/// prediction (a regression). The metadata is read once per version, off the calls' path. Request
/// ids come from the `x-request-id` header, then the `request_id` parameter, then the request's
/// `id`. The calls the tap does not record (ServerLive here) go through the opaque proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_comes_from_model_metadata_once_per_version() {
    let declared = Declared::default();
    *declared.version.lock().unwrap() = "1".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(declared.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut config = common::config();
    config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.upstream = Some(upstream);
    config.tap.request_id_header = Some("x-request-id".into());
    config.tap.request_id_parameter = Some("request_id".into());
    let sidecar = common::start(config).await;
    let mut tap = client(format!("http://{}", sidecar.sidecar.tap_addr.unwrap())).await;
    assert!(
        tap.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .get_ref()
            .live
    );

    let mut labels = Vec::new();
    for i in 0..8 {
        if i == 5 {
            *declared.version.lock().unwrap() = "2".into();
        }
        let x: Vec<f64> = (0..4).map(|j| (i * 4 + j) as f64 * 0.5).collect();
        let mut request = ModelInferRequest {
            model_name: "m".into(),
            id: format!("id{i}"),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP64".into(),
                shape: vec![4],
                contents: Some(InferTensorContents {
                    fp64_contents: x.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let id = match i % 3 {
            0 => format!("id{i}"),
            1 => {
                request.parameters.insert(
                    "request_id".into(),
                    InferParameter {
                        parameter_choice: Some(ParameterChoice::StringParam(format!("p{i}"))),
                    },
                );
                format!("p{i}")
            }
            _ => format!("h{i}"),
        };
        let mut request = Request::new(request);
        if i % 3 == 2 {
            request
                .metadata_mut()
                .insert("x-request-id", id.parse().unwrap());
        }
        tap.model_infer(request).await.unwrap();
        labels.push((
            id,
            x.iter().sum::<f64>() + 1.0,
            if i < 5 { "1" } else { "2" },
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = sidecar.sidecar.snapshot().await;
        let recorded: u64 = ["1", "2"]
            .iter()
            .filter_map(|v| snapshot.models.get(&ModelKey::new("m", *v)))
            .map(|m| m.outcomes.iter().map(|o| o.records).sum::<u64>())
            .sum();
        if recorded >= 8 {
            assert_eq!(recorded, 8, "one record per call");
            break;
        }
        assert!(Instant::now() < deadline, "{recorded} records after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(declared.metadata_calls.load(Ordering::SeqCst), 2);
    let mut ingest = sidecar.client().await;
    for version in ["1", "2"] {
        let ack = ingest
            .submit_labels(pb::LabelBatch {
                model: "m".into(),
                version: version.into(),
                labels: labels
                    .iter()
                    .filter(|(_, _, v)| *v == version)
                    .map(|(id, y, _)| pb::GroundTruth {
                        request_id: id.clone(),
                        label: Some(pb::Label {
                            value: Some(pb::label::Value::RegressionValue(*y)),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.rejects, vec![]);
    }
    let (request, _) = sidecar.stop().await;
    assert_eq!(
        common::value(
            &request,
            "inferscope.labels.joined",
            &[("inferscope.model.name", "m")]
        ),
        8
    );
    let mae = common::point(
        &request,
        "inferscope.quality.mae",
        &[
            ("inferscope.model.name", "m"),
            ("inferscope.model.version", "1"),
            ("window", "all"),
        ],
    );
    assert!(mae.is_some_and(|m| (m - 1.0).abs() < 1e-9), "{mae:?}");
}

/// An upstream that accepts connections and never answers: calls through the tap (a
/// `ModelStreamInfer` stream, a REST infer) stay open, and the sidecar still stops (the tap waits
/// 5 s for open calls, then no longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_never_end_do_not_hold_the_shutdown() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            open.push(connection);
        }
    });
    let mut config = common::config();
    config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.upstream = Some(upstream.clone());
    config.tap.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tap.http_upstream = Some(upstream);
    let sidecar = common::start(config).await;
    let tap_url = format!("http://{}", sidecar.sidecar.tap_addr.unwrap());
    let rest_url = format!(
        "http://{}/v2/models/m/infer",
        sidecar.sidecar.tap_http_addr.unwrap()
    );
    let stream =
        tokio::spawn(
            async move { stream_infer(&tap_url, infer("s", &[vec![0.0; 4]], false)).await },
        );
    let rest = tokio::spawn(async move {
        reqwest::Client::new()
            .post(rest_url)
            .json(&rest_infer(&[vec![0.0; 4]], false))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream.is_finished() && !rest.is_finished());
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), sidecar.stop())
        .await
        .expect("the sidecar stops");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    held.abort();
    stream.abort();
    rest.abort();
}
