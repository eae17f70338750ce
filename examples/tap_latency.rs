//! What the Open Inference Protocol tap adds to an inference call: the same calls sent to a model
//! server directly and through a sidecar's tap, at a low load (one call at a time) and a high one
//! (`--concurrency` callers), with the latency percentiles of each and the process's CPU time per
//! call. gRPC `ModelInfer` through `--tap-listen` by default; with `--rest`, REST/JSON
//! `POST /v2/models/{name}/infer` through `--tap-http-listen`.
//!
//! ```text
//! cargo run --release --example tap_latency -- [--calls 5000] [--concurrency 32] [--rows 1]
//!                                              [--rest]
//!                                              [--upstream URL --model NAME]
//! ```
//!
//! Without `--upstream` the model server is an in-process OIP server (gRPC, or REST with `--rest`)
//! that answers at once with a scikit-learn-shaped response (`predict`, `predict_proba`): the
//! difference is then the tap's own cost (one more loopback hop, the copy and the recording). With
//! `--upstream` it is a real server's gRPC port (e.g. MLServer's http://127.0.0.1:8081), or its
//! REST port with `--rest` (http://127.0.0.1:8080). The sidecar records every call (no export);
//! client, tap and echo server share this process, so the CPU per call is the whole process's,
//! the direct run's subtracted from the tap run's.

use inferscope::{
    config::Config,
    oip::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer},
        model_infer_request::InferInputTensor,
        model_infer_response::InferOutputTensor,
        *,
    },
    server::{Sidecar, Sinks},
    tap::TapModel,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tonic::{transport::Channel, Request, Response, Status};

/// A REST/JSON OIP server's infer answer, as the gRPC echo's.
async fn rest_echo(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let rows = request["inputs"][0]["shape"][0].as_u64().unwrap_or(1) as usize;
    let probabilities = [0.3, 0.7].repeat(rows);
    let answer = json!({
        "model_name": "credit",
        "model_version": "v1",
        "id": request["id"],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [rows, 1], "data": vec![1; rows]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [rows, 2], "data": probabilities},
        ],
    });
    (
        [("content-type", "application/json")],
        serde_json::to_vec(&answer).unwrap(),
    )
}

/// Where calls go: a gRPC client, or a REST client and the server's base URL.
#[derive(Clone)]
enum Target {
    Grpc(GrpcInferenceServiceClient<Channel>),
    Rest(reqwest::Client, String),
}

impl Target {
    async fn call(&mut self, model: &str, i: usize, rows: usize) {
        match self {
            Target::Grpc(client) => {
                client
                    .model_infer(request(model, i, rows))
                    .await
                    .expect("the call succeeds");
            }
            Target::Rest(client, base) => {
                let r = request(model, i, rows);
                let body = json!({
                    "id": r.id,
                    "inputs": [{
                        "name": "input-0",
                        "datatype": "FP64",
                        "shape": [rows, 4],
                        "data": r.inputs[0].contents.as_ref().unwrap().fp64_contents,
                    }],
                    "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
                });
                let response = client
                    .post(format!("{base}/v2/models/{model}/infer"))
                    .json(&body)
                    .send()
                    .await
                    .expect("the call succeeds");
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.expect("the answer");
            }
        }
    }
}

/// An OIP server that answers every `ModelInfer` at once.
struct Echo;

#[tonic::async_trait]
impl GrpcInferenceService for Echo {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse::default()))
    }
    async fn model_metadata(
        &self,
        _: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Ok(Response::new(ModelMetadataResponse::default()))
    }
    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let rows = request.inputs.first().map_or(1, |i| i.shape[0]);
        let tensor =
            |name: &str, shape: Vec<i64>, contents: InferTensorContents| InferOutputTensor {
                name: name.into(),
                datatype: if name == "predict" { "INT64" } else { "FP64" }.into(),
                shape,
                contents: Some(contents),
                ..Default::default()
            };
        Ok(Response::new(ModelInferResponse {
            model_name: request.model_name,
            model_version: "v1".into(),
            id: request.id,
            outputs: vec![
                tensor(
                    "predict",
                    vec![rows, 1],
                    InferTensorContents {
                        int64_contents: vec![1; rows as usize],
                        ..Default::default()
                    },
                ),
                tensor(
                    "predict_proba",
                    vec![rows, 2],
                    InferTensorContents {
                        fp64_contents: [0.3, 0.7].repeat(rows as usize),
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        }))
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

fn request(model: &str, i: usize, rows: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: format!("r{i}"),
        inputs: vec![InferInputTensor {
            name: "input-0".into(),
            datatype: "FP64".into(),
            shape: vec![rows as i64, 4],
            contents: Some(InferTensorContents {
                fp64_contents: (0..rows * 4).map(|j| (i + j) as f64 * 0.01).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// `calls` calls spread over `concurrency` callers; each call's latency, and the CPU time used.
async fn run(
    client: &Target,
    model: &str,
    calls: usize,
    concurrency: usize,
    rows: usize,
) -> (Vec<Duration>, Duration) {
    let cpu_before = cpu();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let mut client = client.clone();
            let model = model.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (c..calls).step_by(concurrency) {
                    let start = Instant::now();
                    client.call(&model, i, rows).await;
                    latencies.push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    (all, cpu() - cpu_before)
}

#[tokio::main]
async fn main() {
    let calls: usize = arg("--calls").map_or(5000, |v| v.parse().unwrap());
    let concurrency: usize = arg("--concurrency").map_or(32, |v| v.parse().unwrap());
    let rows: usize = arg("--rows").map_or(1, |v| v.parse().unwrap());
    let model = arg("--model").unwrap_or_else(|| "credit".into());
    let rest = std::env::args().any(|a| a == "--rest");
    let upstream = match arg("--upstream") {
        Some(url) => url,
        None if rest => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(axum::routing::post(rest_echo));
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(GrpcInferenceServiceServer::new(Echo))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            format!("http://{addr}")
        }
    };

    let mut config = Config::default();
    if rest {
        config.tap.http_listen = Some("127.0.0.1:0".parse().unwrap());
        config.tap.http_upstream = Some(upstream.clone());
    } else {
        config.tap.listen = Some("127.0.0.1:0".parse().unwrap());
        config.tap.upstream = Some(upstream.clone());
    }
    config.tap.models.insert(
        model.clone(),
        TapModel {
            class_names: vec!["0".into(), "1".into()],
            prediction_output: Some("predict".into()),
            probabilities_output: Some("predict_proba".into()),
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, Sinks::none())
        .await
        .unwrap();
    let (tap, direct) = if rest {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .unwrap();
        (
            Target::Rest(
                http.clone(),
                format!("http://{}", sidecar.tap_http_addr.unwrap()),
            ),
            Target::Rest(http, upstream),
        )
    } else {
        (
            Target::Grpc(
                GrpcInferenceServiceClient::connect(format!(
                    "http://{}",
                    sidecar.tap_addr.unwrap()
                ))
                .await
                .unwrap(),
            ),
            Target::Grpc(GrpcInferenceServiceClient::connect(upstream).await.unwrap()),
        )
    };

    // Warm both paths (connections, allocator, the model's state in the sidecar).
    run(&direct, &model, 200, 4, rows).await;
    run(&tap, &model, 200, 4, rows).await;

    let what = if rest { "REST infer" } else { "ModelInfer" };
    println!("{calls} {what} calls of {rows} row(s) each; latency in µs");
    println!("| load | path | p50 | p99 | max | CPU µs/call |");
    println!("|---|---|---|---|---|---|");
    for (load, callers) in [("low (1 caller)", 1), ("high", concurrency)] {
        let (d, d_cpu) = run(&direct, &model, calls, callers, rows).await;
        let (t, t_cpu) = run(&tap, &model, calls, callers, rows).await;
        for (path, lat, cpu) in [("direct", &d, d_cpu), ("tap", &t, t_cpu)] {
            println!(
                "| {load}{} | {path} | {:.0} | {:.0} | {:.0} | {:.1} |",
                if callers > 1 {
                    format!(" ({callers} callers)")
                } else {
                    String::new()
                },
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                percentile(lat, 1.0),
                cpu.as_secs_f64() * 1e6 / calls as f64,
            );
        }
        println!(
            "| {load} | tap − direct | {:.0} | {:.0} | | {:.1} |",
            percentile(&t, 0.5) - percentile(&d, 0.5),
            percentile(&t, 0.99) - percentile(&d, 0.99),
            (t_cpu.as_secs_f64() - d_cpu.as_secs_f64()) * 1e6 / calls as f64,
        );
    }
    // Recording is off the calls' path: wait (5 s at most) for the last calls' records.
    let expected = (200 + 2 * calls) * rows;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (recorded, dropped, unreadable) = loop {
        let snapshot = sidecar.snapshot().await;
        let recorded: u64 = snapshot
            .models
            .values()
            .map(|m| m.outcomes.iter().map(|o| o.records).sum::<u64>())
            .sum();
        let dropped = snapshot.self_metrics[inferscope::self_metrics::SelfCounter::TapDropped];
        let unreadable =
            snapshot.self_metrics[inferscope::self_metrics::SelfCounter::TapUnreadable];
        if recorded as usize + (dropped + unreadable) as usize * rows >= expected
            || Instant::now() > deadline
        {
            break (recorded, dropped, unreadable);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "recorded {recorded} records, {dropped} calls not recorded (queue full), {unreadable} unreadable"
    );
    sidecar.stop().await.unwrap();
}
