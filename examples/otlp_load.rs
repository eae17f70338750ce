//! Load generator for the OTLP traces receiver (`--otlp-receive-grpc`): sends pre-encoded
//! `ExportTraceServiceRequest`s of vLLM-shaped `llm_request` spans (every span GenAI, so every
//! span becomes a record through the whole pipeline) over real gRPC on loopback, from several
//! connections at once, and reports spans per second answered, and, given the server's pid,
//! spans per CPU-second of the server (spans/s per core). See BENCHMARKS.md, "OTLP receiver".
//!
//! inferscope serve --otlp-receive-grpc 127.0.0.1:4317 --no-traces --no-metrics &
//! cargo run --release --example otlp_load -- --addr 127.0.0.1:4317 --seconds 10 --pid $!

use inferscope::capture::otlp::{load_test_request, RawCodec};
use prost::{bytes::Bytes, Message};
use std::time::{Duration, Instant};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[path = "support/mod.rs"]
mod support;
use support::{cpu_seconds, option};

#[tokio::main]
async fn main() {
    let addr: String = option("--addr", "127.0.0.1:4317".to_string());
    let connections: usize = option("--connections", 4);
    let spans: usize = option("--spans", 512);
    let seconds: f64 = option("--seconds", 10.0);
    let pid: u32 = option("--pid", 0);
    // Distinct requests, built before timing and cycled.
    let requests: Vec<Bytes> = (0..64)
        .map(|n| load_test_request(n, spans).encode_to_vec().into())
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let requests = requests.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .expect("connect to the OTLP receiver");
                let mut grpc = tonic::client::Grpc::new(channel);
                let (mut sent, mut refused) = (0u64, 0u64);
                let mut i = c;
                while Instant::now() < deadline {
                    grpc.ready().await.unwrap();
                    let body = requests[i % requests.len()].clone();
                    i += connections;
                    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT);
                    match grpc
                        .unary::<Bytes, Bytes, _>(tonic::Request::new(body), path, RawCodec)
                        .await
                    {
                        Ok(_) => sent += 1,
                        // UNAVAILABLE: the shard queues are full; an exporter would retry.
                        Err(_) => refused += 1,
                    }
                }
                (sent, refused)
            })
        })
        .collect();
    let (mut sent, mut refused) = (0, 0);
    for t in tasks {
        let (s, r) = t.await.unwrap();
        sent += s;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let taken = (sent * spans as u64) as f64;
    println!(
        "{connections} connections, {spans} spans/request: {:.0} spans/s taken ({sent} requests, {refused} refused) in {elapsed:.1} s",
        taken / elapsed
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_seconds(pid)) {
        let cpu = after - before;
        println!(
            "server CPU {cpu:.2} s ({:.2} cores): {:.0} spans per CPU-second",
            cpu / elapsed,
            taken / cpu
        );
    }
}
