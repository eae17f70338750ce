//! Load generator for the KServe payload-logger endpoint (`--cloudevents-listen`): posts
//! request/response CloudEvent pairs as KServe's logger does (binary mode, one POST per event,
//! V2 bodies of `--rows` rows of `--features` FP32 features and an FP64 probabilities output),
//! from `--connections` connections at once, and reports events per second answered 202 and,
//! given the server's pid, events per CPU-second of the server (events/s per core). Every pair
//! becomes `--rows` records through the whole pipeline. See BENCHMARKS.md, "KServe payload
//! logger".
//!
//! inferscope serve --cloudevents-listen 127.0.0.1:8088 --no-traces --no-metrics &
//! cargo run --release --example kserve_load -- --url http://127.0.0.1:8088/ --seconds 10 --pid $!

use serde_json::json;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;
use support::{cpu_seconds, option};

#[tokio::main]
async fn main() {
    let url: String = option("--url", "http://127.0.0.1:8088/".to_owned());
    let seconds: f64 = option("--seconds", 10.0);
    let connections: usize = option("--connections", 8);
    let rows: usize = option("--rows", 1);
    let features: usize = option("--features", 8);
    let pid: u32 = option("--pid", 0);

    let request = json!({"inputs": [{"name": "input-0", "shape": [rows, features],
        "datatype": "FP32", "data": (0..rows * features).map(|i| i as f64 * 0.5).collect::<Vec<_>>()}]})
    .to_string();
    let response = json!({"model_name": "load", "outputs": [{"name": "probabilities",
        "shape": [rows, 2], "datatype": "FP64",
        "data": (0..rows).flat_map(|_| [0.25, 0.75]).collect::<Vec<_>>()}]})
    .to_string();

    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..connections {
        let (url, request, response) = (url.clone(), request.clone(), response.clone());
        tasks.spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut taken, mut refused) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("load-{connection}-{n}");
                n += 1;
                for (kind, body) in [
                    ("org.kubeflow.serving.inference.request", &request),
                    ("org.kubeflow.serving.inference.response", &response),
                ] {
                    let answer = http
                        .post(&url)
                        .header("Ce-Specversion", "1.0")
                        .header("Ce-Id", &id)
                        .header("Ce-Type", kind)
                        .header("Ce-Source", "http://localhost:9081/")
                        .header("Ce-Inferenceservicename", "load")
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    if answer.status() == 202 {
                        taken += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            (taken, refused)
        });
    }
    let (mut taken, mut refused) = (0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        let (t, r) = done.unwrap();
        taken += t;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{taken} events taken, {refused} refused in {elapsed:.2} s: {:.0} events/s, {:.0} records/s ({rows} rows, {features} features a request, {connections} connections)",
        taken as f64 / elapsed,
        taken as f64 / 2.0 * rows as f64 / elapsed
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_seconds(pid)) {
        let cpu = after - before;
        println!(
            "server CPU {cpu:.2} s ({:.2} cores): {:.0} events per CPU-second",
            cpu / elapsed,
            taken as f64 / cpu
        );
    }
}
