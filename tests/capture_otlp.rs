//! OTLP traces in (`--otlp-receive-grpc`, `--otlp-receive-http`, `src/capture/otlp.rs`):
//! - GenAI spans sent by the OpenTelemetry Python SDK's own exporters, shaped as vLLM's
//!   `llm_request` and OpenLLMetry's `openai.chat` (`tests/capture/send_genai_spans.py`), become
//!   generation metrics in VictoriaMetrics (PromQL) equal to what was sent, and every span is
//!   forwarded to Phoenix with its trace id, the records' own spans children of the received ones;
//! - `gen_ai.evaluation.result` events sent by the same SDK, as span events and as log records
//!   (its logs API and OTLP log exporters, parented to the generation's span or naming its
//!   `gen_ai.response.id`), become evaluation statistics in VictoriaMetrics equal to the oracle's
//!   (`tests/oracles/evaluations.py` → `tests/data/evaluations.json`, stream `otlp`);
//! - bad input over both receivers is refused with a clear status, counted, and loses nothing
//!   else.
//!
//! The first test needs `tools/install-backends.sh` (VictoriaMetrics, Phoenix and the `capture`
//! venv); it fails, never skips, without them.

mod common;

use common::backends::{
    phoenix_spans, poll_promql, run_json, start_phoenix, start_victoria_metrics, tool,
};
use inferscope::{
    config::{OtlpProtocol, Sampling},
    self_metrics::SelfCounter,
    server::{Sidecar, Sinks},
};
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value::Value as AnyValue, AnyValue as Any, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use serde_json::Value;
use std::{path::PathBuf, time::Duration};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The oracle's evaluation streams (`tests/oracles/evaluations.py`).
fn evaluation_oracle() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/evaluations.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Polls until the query is within 1e-9 of `want`.
async fn assert_near(base: &str, query: &str, want: f64) {
    let got = poll_promql(base, query, |v| (v - want).abs() < 1e-9).await;
    assert!(
        got.is_some_and(|v| (v - want).abs() < 1e-9),
        "{query}: got {got:?}, want {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_and_openllmetry_spans_become_metrics_and_are_forwarded_to_phoenix() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/capture-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `tools/install-backends.sh capture`",
        python.display()
    );
    let _ = tool("victoria-metrics");
    let (_vm, vm) = start_victoria_metrics().await;
    let (_phoenix, phoenix_http, _) = start_phoenix().await;

    let mut config = common::config();
    config.export.endpoint = format!("{vm}/opentelemetry");
    config.export.protocol = OtlpProtocol::HttpProtobuf;
    config.export.traces_endpoint = Some(format!("{phoenix_http}/v1/traces"));
    config.export.metric_interval = Duration::from_secs(1);
    // Every record gets its span (the parents are sampled too).
    config.sampling = Sampling {
        ratio: 1.0,
        parent_based: true,
    };
    config.otlp_receive.grpc = Some("127.0.0.1:0".parse().unwrap());
    config.otlp_receive.http = Some("127.0.0.1:0".parse().unwrap());
    let sinks = Sinks::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/capture/send_genai_spans.py");
    let oracle_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/evaluations.json");
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--grpc")
        .arg(sidecar.otlp_grpc_addr.unwrap().to_string())
        .arg("--http")
        .arg(format!(
            "http://{}/v1/traces",
            sidecar.otlp_http_addr.unwrap()
        ))
        .arg("--http-logs")
        .arg(format!(
            "http://{}/v1/logs",
            sidecar.otlp_http_addr.unwrap()
        ))
        .arg("--evaluations")
        .arg(&oracle_path);
    let sent = run_json(command).await;
    // Stopping forwards what is queued and exports the final state.
    sidecar.stop().await.unwrap();

    // What the script sent, summed per model: vLLM's from service.name and service.version,
    // OpenLLMetry's from gen_ai.request.model (no version: `unknown`).
    let sum = |key: &str, column: usize| -> f64 {
        sent[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[column].as_f64().unwrap())
            .sum()
    };
    let vllm = r#"gen_ai_request_model="vllm-demo",inferscope_model_version="v1""#;
    let openai = r#"gen_ai_request_model="gpt-4o-mini",inferscope_model_version="unknown",gen_ai_operation_name="chat""#;
    for (model, version, records) in [("vllm-demo", "v1", 3.0), ("gpt-4o-mini", "unknown", 2.0)] {
        assert_near(
            &vm,
            &format!(
                r#"sum(inferscope_records_received_total{{inferscope_model_name="{model}",inferscope_model_version="{version}",outcome="ok"}})"#
            ),
            records,
        )
        .await;
    }
    for (labels, key, input, output) in
        [(vllm, "vllm_tokens", 0, 1), (openai, "openai_tokens", 0, 1)]
    {
        assert_near(
            &vm,
            &format!(r#"sum(gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="input"}})"#),
            sum(key, input),
        )
        .await;
        assert_near(
            &vm,
            &format!(
                r#"sum(gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="output"}})"#
            ),
            sum(key, output),
        )
        .await;
    }
    // Latency: vLLM's gen_ai.latency.e2e; OpenLLMetry's span duration.
    assert_near(
        &vm,
        &format!("sum(gen_ai_server_request_duration_seconds_sum{{{vllm}}})"),
        sum("vllm_tokens", 2),
    )
    .await;
    assert_near(
        &vm,
        &format!("sum(gen_ai_server_request_duration_seconds_count{{{vllm}}})"),
        3.0,
    )
    .await;
    assert_near(
        &vm,
        &format!("sum(gen_ai_server_request_duration_seconds_sum{{{openai}}})"),
        sum("openai_tokens", 2),
    )
    .await;
    // TTFT: vLLM's gen_ai.latency.time_to_first_token (OpenLLMetry sends none without streaming).
    assert_near(
        &vm,
        &format!("sum(gen_ai_server_time_to_first_token_seconds_sum{{{vllm}}})"),
        sum("vllm_tokens", 3),
    )
    .await;
    assert_near(
        &vm,
        &format!("sum(gen_ai_server_time_to_first_token_seconds_count{{{vllm}}})"),
        3.0,
    )
    .await;
    // Evaluations: the oracle's statistics per model and name, in every window.
    let oracle = evaluation_oracle();
    let stream = &oracle["streams"]["otlp"];
    for (key, model, version) in [
        ("vllm", "vllm-demo", "v1"),
        ("openllmetry", "gpt-4o-mini", "unknown"),
    ] {
        let expected = stream["expected"][key].as_object().unwrap();
        assert!(!expected.is_empty());
        for window in ["5m", "1h", "all"] {
            for (name, x) in expected {
                let sel = format!(
                    r#"inferscope_model_name="{model}",inferscope_model_version="{version}",window="{window}",gen_ai_evaluation_name="{name}""#
                );
                assert_near(
                    &vm,
                    &format!("sum(inferscope_evaluation_sample_size{{{sel}}})"),
                    x["count"].as_f64().unwrap(),
                )
                .await;
                if let Some(mean) = x["mean_score"].as_f64() {
                    assert_near(
                        &vm,
                        &format!("sum(inferscope_evaluation_score{{{sel}}})"),
                        mean,
                    )
                    .await;
                }
                for (label, share) in x["labels"].as_object().unwrap() {
                    assert_near(
                        &vm,
                        &format!(
                            r#"sum(inferscope_evaluation_label_ratio{{{sel},gen_ai_evaluation_score_label="{label}"}})"#
                        ),
                        share.as_f64().unwrap(),
                    )
                    .await;
                }
            }
        }
        assert_near(
            &vm,
            &format!(
                r#"sum(inferscope_labels_joined_total{{inferscope_model_name="{model}",inferscope_model_version="{version}"}})"#
            ),
            stream["joined"][key].as_f64().unwrap(),
        )
        .await;
    }
    // Every evaluation sent was taken (the duplicate is the join's to refuse); the log records
    // were all evaluations.
    let plan = stream["evaluations"].as_array().unwrap();
    let logged = plan.iter().filter(|e| e["via"] != "span_event").count();
    assert_near(
        &vm,
        "sum(inferscope_otlp_evaluations_captured_total)",
        plan.len() as f64,
    )
    .await;
    assert_near(
        &vm,
        "sum(inferscope_otlp_log_records_received_total)",
        logged as f64,
    )
    .await;
    assert_near(
        &vm,
        "sum(inferscope_otlp_evaluations_unresolved_total)",
        0.0,
    )
    .await;
    assert_near(&vm, "sum(inferscope_otlp_log_records_ignored_total)", 0.0).await;
    assert_near(&vm, "sum(inferscope_otlp_spans_received_total)", 6.0).await;
    assert_near(&vm, "sum(inferscope_otlp_records_captured_total)", 5.0).await;
    assert_near(&vm, "sum(inferscope_otlp_forward_dropped_total)", 0.0).await;
    assert_near(&vm, "sum(inferscope_otlp_forward_failed_total)", 0.0).await;

    // Phoenix: every received span with its ids, and one record span under each GenAI span.
    let vllm_trace = sent["vllm"]["trace_id"].as_str().unwrap();
    let spans = phoenix_spans(&phoenix_http, vllm_trace, 7).await;
    let ids = |name: &str| -> Vec<(String, String)> {
        spans
            .iter()
            .filter(|s| s["name"] == name)
            .map(|s| {
                (
                    s["context"]["span_id"].as_str().unwrap().to_owned(),
                    s["parent_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let http_span = sent["vllm"]["http_span_id"].as_str().unwrap();
    assert_eq!(ids("POST /v1/chat/completions").len(), 1, "{spans:#?}");
    let llm = ids("llm_request");
    assert_eq!(llm.len(), 3, "{spans:#?}");
    for (span_id, parent) in &llm {
        assert_eq!(parent, http_span);
        assert!(sent["vllm"]["llm"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["span_id"] == span_id.as_str()));
    }
    let mut record_parents: Vec<String> = ids("inferscope.inference")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut llm_ids: Vec<String> = llm.into_iter().map(|(id, _)| id).collect();
    record_parents.sort();
    llm_ids.sort();
    assert_eq!(record_parents, llm_ids, "{spans:#?}");
    for span in &spans {
        assert_eq!(span["context"]["trace_id"], vllm_trace);
    }

    let chat_trace = sent["openllmetry"]["trace_id"].as_str().unwrap();
    let spans = phoenix_spans(&phoenix_http, chat_trace, 4).await;
    let chat: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "openai.chat")
        .collect();
    let records: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "inferscope.inference")
        .collect();
    assert_eq!((chat.len(), records.len()), (2, 2), "{spans:#?}");
    for record in records {
        assert!(chat
            .iter()
            .any(|c| c["context"]["span_id"] == record["parent_id"]));
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(Any {
            value: Some(AnyValue::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A request with one OpenLLMetry-shaped GenAI span and one HTTP span.
fn request(n: u8) -> ExportTraceServiceRequest {
    let span = |name: &str, attributes| Span {
        trace_id: vec![n; 16],
        span_id: vec![n, 1, 2, 3, 4, 5, 6, name.len() as u8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        attributes,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "app")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(
                        "openai.chat",
                        vec![
                            kv("gen_ai.request.model", "bad-input-model"),
                            kv("gen_ai.response.id", &format!("r{n}")),
                        ],
                    ),
                    span("GET /", vec![kv("http.request.method", "GET")]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn grpc_export(addr: std::net::SocketAddr, body: Vec<u8>) -> Result<(), tonic::Status> {
    common::raw_unary(addr, EXPORT, body).await.map(|_| ())
}

#[tokio::test]
async fn bad_requests_are_refused_clearly_counted_and_lose_nothing_else() {
    let mut config = common::config();
    config.max_message_bytes = 4096;
    config.export.traces = false;
    config.otlp_receive.grpc = Some("127.0.0.1:0".parse().unwrap());
    config.otlp_receive.http = Some("127.0.0.1:0".parse().unwrap());
    let sidecar = common::start(config).await;
    let grpc = sidecar.sidecar.otlp_grpc_addr.unwrap();
    let url = format!(
        "http://{}/v1/traces",
        sidecar.sidecar.otlp_http_addr.unwrap()
    );
    let http = reqwest::Client::new();
    let good = |n| request(n).encode_to_vec();
    let truncated = {
        let mut b = good(9);
        b.truncate(b.len() - 7);
        b
    };
    let too_large = {
        let mut r = request(8);
        r.resource_spans[0].scope_spans[0].spans[1]
            .attributes
            .push(kv("padding", &"x".repeat(5000)));
        r.encode_to_vec()
    };

    // gRPC: a good request, a truncated one, one over --max-message-bytes, a good one again.
    grpc_export(grpc, good(1)).await.unwrap();
    let status = grpc_export(grpc, truncated.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("ExportTraceServiceRequest"),
        "{status:?}"
    );
    let status = grpc_export(grpc, too_large.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    grpc_export(grpc, good(2)).await.unwrap();

    // HTTP: the same, plus malformed OTLP/JSON, a wrong type, a compressed body and a GET.
    let post = |body: Vec<u8>, content_type: &'static str| {
        http.post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        post(good(3), "application/x-protobuf")
            .await
            .unwrap()
            .status(),
        200
    );
    let answer = post(truncated, "application/x-protobuf").await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("ExportTraceServiceRequest"));
    let answer = post(br#"{"resourceSpans": 5}"#.to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("OTLP/JSON"));
    assert_eq!(post(good(4), "text/plain").await.unwrap().status(), 415);
    let gzip = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(good(5))
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), 415);
    assert_eq!(
        post(too_large, "application/x-protobuf")
            .await
            .unwrap()
            .status(),
        413
    );
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
    assert_eq!(
        post(good(6), "application/x-protobuf")
            .await
            .unwrap()
            .status(),
        200
    );

    let (last, _) = sidecar.stop().await;
    let counter = |c: SelfCounter| {
        let name = inferscope::self_metrics::SELF_METRICS[c as usize].name;
        common::value(&last, name, &[])
    };
    // Refused: gRPC truncated and too large; HTTP truncated, JSON, text, gzip, too large.
    assert_eq!(counter(SelfCounter::OtlpRejected), 7);
    // Taken: four good requests of two spans each, one GenAI span each.
    assert_eq!(counter(SelfCounter::OtlpSpansReceived), 8);
    assert_eq!(counter(SelfCounter::OtlpRecordsCaptured), 4);
    let model = [("inferscope.model.name", "bad-input-model")];
    assert_eq!(
        common::value(&last, "inferscope.records.received", &model),
        4
    );
}

#[tokio::test]
async fn spans_that_cannot_be_forwarded_are_counted_and_records_still_made() {
    let mut config = common::config();
    // A traces endpoint where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    config.export.protocol = OtlpProtocol::HttpProtobuf;
    config.export.traces_endpoint = Some(format!("http://127.0.0.1:{port}/v1/traces"));
    config.export.timeout = Duration::from_secs(1);
    config.otlp_receive.http = Some("127.0.0.1:0".parse().unwrap());
    let sidecar = common::start(config).await;
    let url = format!(
        "http://{}/v1/traces",
        sidecar.sidecar.otlp_http_addr.unwrap()
    );
    let http = reqwest::Client::new();
    for n in 1..=3 {
        let answer = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request(n).encode_to_vec())
            .send()
            .await
            .unwrap();
        // The sender is answered before (and whatever) the forward does.
        assert_eq!(answer.status(), 200);
    }
    let (last, _) = sidecar.stop().await;
    let name = |c: SelfCounter| inferscope::self_metrics::SELF_METRICS[c as usize].name;
    assert_eq!(
        common::value(&last, name(SelfCounter::OtlpForwardFailed), &[]),
        6
    );
    assert_eq!(
        common::value(&last, name(SelfCounter::OtlpForwardDropped), &[]),
        0
    );
    let model = [("inferscope.model.name", "bad-input-model")];
    assert_eq!(
        common::value(&last, "inferscope.records.received", &model),
        3
    );
}

const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A logs request: an evaluation event parented to `span_id`, one parented to a span never
/// received, and a plain log line.
fn logs_request(span_id: &[u8]) -> ExportLogsServiceRequest {
    let event = |span_id: &[u8], name: &str| LogRecord {
        event_name: "gen_ai.evaluation.result".into(),
        trace_id: vec![1; 16],
        span_id: span_id.to_vec(),
        attributes: vec![
            kv("gen_ai.evaluation.name", name),
            KeyValue {
                key: "gen_ai.evaluation.score.value".into(),
                value: Some(Any {
                    value: Some(AnyValue::DoubleValue(0.5)),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "judge")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    event(span_id, "relevance"),
                    event(&[9; 8], "relevance"),
                    LogRecord {
                        body: Some(Any {
                            value: Some(AnyValue::StringValue("GET / 200".into())),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// OTLP logs on the same listeners: an evaluation event parented to a received GenAI span joins
/// its generation through the span-id index (once: the same over HTTP is a duplicate), one of an
/// unknown span is counted unresolved, a plain log record is counted ignored (never refused), and
/// undecodable bodies are refused naming the logs message.
#[tokio::test]
async fn log_record_evaluations_join_by_span_and_other_log_records_are_counted() {
    let mut config = common::config();
    config.export.traces = false;
    config.otlp_receive.grpc = Some("127.0.0.1:0".parse().unwrap());
    config.otlp_receive.http = Some("127.0.0.1:0".parse().unwrap());
    let sidecar = common::start(config).await;
    let grpc = sidecar.sidecar.otlp_grpc_addr.unwrap();
    let url = format!("http://{}/v1/logs", sidecar.sidecar.otlp_http_addr.unwrap());
    let traces = request(1);
    let span_id = traces.resource_spans[0].scope_spans[0].spans[0]
        .span_id
        .clone();
    grpc_export(grpc, traces.encode_to_vec()).await.unwrap();

    let logs = logs_request(&span_id).encode_to_vec();
    common::raw_unary(grpc, LOGS_EXPORT, logs.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(logs.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let truncated = logs[..logs.len() - 5].to_vec();
    let status = common::raw_unary(grpc, LOGS_EXPORT, truncated.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("ExportLogsServiceRequest"),
        "{status:?}"
    );
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(truncated)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("ExportLogsServiceRequest"));

    let (last, _) = sidecar.stop().await;
    let counter = |c: SelfCounter| {
        let name = inferscope::self_metrics::SELF_METRICS[c as usize].name;
        common::value(&last, name, &[])
    };
    assert_eq!(counter(SelfCounter::OtlpLogRecordsReceived), 6);
    assert_eq!(counter(SelfCounter::OtlpLogRecordsIgnored), 2);
    assert_eq!(counter(SelfCounter::OtlpEvaluationsUnresolved), 2);
    assert_eq!(counter(SelfCounter::OtlpEvaluationsCaptured), 2);
    assert_eq!(counter(SelfCounter::OtlpRejected), 2);
    let model = |extra: &[(&'static str, &'static str)]| {
        let mut a = vec![("inferscope.model.name", "bad-input-model")];
        a.extend_from_slice(extra);
        a
    };
    assert_eq!(
        common::value(
            &last,
            "inferscope.labels.joined",
            &model(&[("source", "delayed")])
        ),
        1
    );
    assert_eq!(
        common::value(
            &last,
            "inferscope.labels.unmatched",
            &model(&[("reason", "duplicate")])
        ),
        1
    );
    assert_eq!(
        common::point(
            &last,
            "inferscope.evaluation.sample_size",
            &model(&[
                ("inferscope.model.version", "unknown"),
                ("window", "all"),
                ("gen_ai.evaluation.name", "relevance")
            ])
        ),
        Some(1.0)
    );
}

/// OTLP/JSON on both HTTP paths: a traces body shaped as the OTLP repository's example
/// (`open-telemetry/opentelemetry-proto` `examples/trace.json`: upper-case hex ids, timestamps as
/// numbers) with GenAI attributes, and a logs body (timestamps and `intValue` as strings, as the
/// JSON Protobuf Encoding writes 64-bit integers) with an evaluation event parented to that span
/// and a plain log record: the span becomes a record, the evaluation joins it, answers are JSON.
#[tokio::test]
async fn otlp_json_bodies_are_taken_on_both_paths() {
    let mut config = common::config();
    config.export.traces = false;
    config.otlp_receive.http = Some("127.0.0.1:0".parse().unwrap());
    let sidecar = common::start(config).await;
    let base = format!("http://{}", sidecar.sidecar.otlp_http_addr.unwrap());
    let traces = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "chat json-model",
            "startTimeUnixNano": 1544712660000000000,
            "endTimeUnixNano": 1544712661000000000,
            "kind": 3,
            "attributes": [
              {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
              {"key": "gen_ai.request.model", "value": {"stringValue": "json-model"}},
              {"key": "gen_ai.response.id", "value": {"stringValue": "chatcmpl-json"}},
              {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
              {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 34}},
              {"key": "gen_ai.response.finish_reasons",
               "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}}
            ],
            "status": {"code": 1}
          }]
        }]
      }]
    }"#;
    let logs = r#"{
      "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "judge"}}]},
        "scopeLogs": [{
          "scope": {"name": "evaluator"},
          "logRecords": [
            {
              "timeUnixNano": "1544712670000000000",
              "eventName": "gen_ai.evaluation.result",
              "traceId": "5b8efff798038103d269b633813fc60c",
              "spanId": "eee19b7ec3c1b174",
              "attributes": [
                {"key": "gen_ai.evaluation.name", "value": {"stringValue": "relevance"}},
                {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": 0.25}},
                {"key": "gen_ai.evaluation.score.label", "value": {"stringValue": "fail"}}
              ]
            },
            {
              "timeUnixNano": "1544712660300000000",
              "severityNumber": 9,
              "body": {"kvlistValue": {"values": [
                {"key": "type", "value": {"intValue": "0"}},
                {"key": "url", "value": {"stringValue": "https://example.com/"}}
              ]}}
            }
          ]
        }]
      }]
    }"#;
    let http = reqwest::Client::new();
    for (path, body) in [("/v1/traces", traces), ("/v1/logs", logs)] {
        let answer = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(answer.headers()["content-type"], "application/json");
        assert_eq!(answer.text().await.unwrap(), "{}");
    }
    let (last, _) = sidecar.stop().await;
    let counter = |c: SelfCounter| {
        let name = inferscope::self_metrics::SELF_METRICS[c as usize].name;
        common::value(&last, name, &[])
    };
    assert_eq!(counter(SelfCounter::OtlpRejected), 0);
    assert_eq!(counter(SelfCounter::OtlpRecordsCaptured), 1);
    assert_eq!(counter(SelfCounter::OtlpLogRecordsIgnored), 1);
    assert_eq!(counter(SelfCounter::OtlpEvaluationsCaptured), 1);
    let model = [
        ("inferscope.model.name", "json-model"),
        ("inferscope.model.version", "unknown"),
    ];
    assert_eq!(
        common::value(&last, "inferscope.records.received", &model[..1]),
        1
    );
    let mut at = model.to_vec();
    at.extend([("window", "all"), ("gen_ai.evaluation.name", "relevance")]);
    assert_eq!(
        common::point(&last, "inferscope.evaluation.score", &at),
        Some(0.25)
    );
    // The int64 attribute as a string and as a number both read.
    for (kind, sent) in [("input", 12.0), ("output", 34.0)] {
        let points = common::histograms(
            &last,
            "gen_ai.client.token.usage",
            &[("gen_ai.token.type", kind)],
        );
        let sum: f64 = points.iter().filter_map(|p| p.sum).sum();
        assert_eq!(sum, sent, "{kind}");
    }
}
