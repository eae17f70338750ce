//! Integration tests: a real sidecar on 127.0.0.1:0, real gRPC clients, in-memory sinks.

mod common;

use common::{batch, histograms, record, value};
use inferscope::pb::{self, RejectReason};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gets_one_ack_per_batch_in_order_and_every_record_counted() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let batches: Vec<pb::RecordBatch> = (0..20u64)
        .map(|seq| {
            let model = if seq % 2 == 0 { "alpha" } else { "beta" };
            batch(
                seq,
                model,
                (0..50)
                    .map(|i| record(&format!("{seq}-{i}"), 0.02))
                    .collect(),
            )
        })
        .collect();
    let response = client
        .stream_records(tokio_stream::iter(batches))
        .await
        .unwrap();
    let acks: Vec<pb::BatchAck> = response.into_inner().map(|a| a.unwrap()).collect().await;
    assert_eq!(
        acks.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(acks
        .iter()
        .all(|a| a.accepted == 50 && a.rejects.is_empty()));

    let (metrics, _) = s.stop().await;
    for model in ["alpha", "beta"] {
        let attrs = [
            ("inferscope.model.name", model),
            ("inferscope.model.version", "1"),
            ("outcome", "ok"),
        ];
        assert_eq!(value(&metrics, "inferscope.records.received", &attrs), 500);
        let h = histograms(&metrics, "inferscope.inference.duration", &attrs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].count, 500);
        // 0.02 s sits in the (0.01, 0.025] bucket: index 4 of the latency bounds.
        assert_eq!(h[0].bucket_counts[4], 500);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_rejected_alone_with_index_and_field() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let mut records: Vec<pb::InferenceRecord> =
        (0..6).map(|i| record(&format!("r{i}"), 0.1)).collect();
    records[1].latency_seconds = Some(f64::NAN);
    records[3].traceparent = "not-a-traceparent".into();
    records[4].model = "m".repeat(1000);
    records[5].latency_seconds = Some(f64::NEG_INFINITY);
    let ack = client
        .submit_records(batch(7, "gamma", records))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.sequence, 7);
    assert_eq!(ack.accepted, 2);
    let rejects: Vec<(u32, &str, i32)> = ack
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_str(), r.reason))
        .collect();
    assert_eq!(
        rejects,
        vec![
            (1, "latency_seconds", RejectReason::InvalidValue as i32),
            (3, "traceparent", RejectReason::InvalidTraceparent as i32),
            (4, "model", RejectReason::TooLong as i32),
            (5, "latency_seconds", RejectReason::InvalidValue as i32),
        ]
    );
    assert!(
        ack.rejects[0].message.contains("NaN"),
        "{}",
        ack.rejects[0].message
    );

    let (metrics, _) = s.stop().await;
    let gamma = [
        ("inferscope.model.name", "gamma"),
        ("inferscope.model.version", "1"),
    ];
    assert_eq!(value(&metrics, "inferscope.records.received", &gamma), 2);
    let reason = |r| [("inferscope.model.name", "gamma"), ("reason", r)];
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &reason("invalid_value")
        ),
        2
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &reason("invalid_traceparent")
        ),
        1
    );
    // The record whose model name was the problem is counted under __invalid__.
    let invalid = [
        ("inferscope.model.name", "__invalid__"),
        ("reason", "too_long"),
    ];
    assert_eq!(value(&metrics, "inferscope.records.rejected", &invalid), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_batch_is_refused_with_invalid_argument() {
    let mut config = common::config();
    config.limits.max_batch_records = 10;
    let s = common::start(config).await;
    let mut client = s.client().await;
    let records: Vec<_> = (0..11).map(|i| record(&i.to_string(), 0.1)).collect();
    let status = client
        .submit_records(batch(1, "m", records.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("11 records") && status.message().contains("--max-batch-records"),
        "{}",
        status.message()
    );

    // On a stream, earlier batches are acked, then the stream ends with the same error.
    let ok = batch(1, "m", records[..5].to_vec());
    let big = batch(2, "m", records);
    let mut acks = client
        .stream_records(tokio_stream::iter(vec![ok, big]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.next().await.unwrap().unwrap().sequence, 1);
    assert_eq!(
        acks.next().await.unwrap().unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let (metrics, _) = s.stop().await;
    assert_eq!(value(&metrics, "inferscope.batches.rejected", &[]), 2);
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_give_positional_features_a_schema() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let declaration = pb::ModelDeclaration {
        model: "clf".into(),
        version: "1".into(),
        task: pb::TaskType::MulticlassClassification as i32,
        class_names: vec!["a".into(), "b".into(), "c".into()],
        features: vec![
            pb::FeatureSpec {
                name: "x".into(),
                kind: pb::FeatureKind::Numeric as i32,
            },
            pb::FeatureSpec {
                name: "y".into(),
                kind: pb::FeatureKind::Numeric as i32,
            },
        ],
        ..Default::default()
    };
    let good = pb::InferenceRecord {
        numeric_features: vec![1.0, f64::NAN],
        prediction: Some(pb::inference_record::Prediction::Classification(
            pb::Classification {
                predicted_class_index: Some(2),
                class_probabilities: vec![0.1, 0.2, 0.7],
                ..Default::default()
            },
        )),
        ..record("ok", 0.01)
    };
    let wrong_count = pb::InferenceRecord {
        numeric_features: vec![1.0],
        ..good.clone()
    };
    let named = pb::InferenceRecord {
        numeric_features: vec![],
        named_features: vec![pb::NamedFeature {
            name: "x".into(),
            value: Some(pb::named_feature::Value::Number(3.0)),
        }],
        ..good.clone()
    };
    let mut b = batch(1, "clf", vec![good, wrong_count, named]);
    b.declarations = vec![declaration.clone()];
    let ack = client.submit_records(b).await.unwrap().into_inner();
    assert_eq!(ack.accepted, 2);
    assert_eq!(ack.rejects.len(), 1);
    assert_eq!(
        (ack.rejects[0].index, ack.rejects[0].field.as_str()),
        (1, "numeric_features")
    );
    assert_eq!(ack.rejects[0].reason, RejectReason::SchemaMismatch as i32);

    // A broken declaration refuses the batch and names the declaration's field.
    let mut bad = batch(2, "clf", vec![record("x", 0.1)]);
    bad.declarations = vec![pb::ModelDeclaration {
        positive_class: "z".into(),
        ..declaration
    }];
    let status = client.submit_records(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("declarations[0].positive_class"),
        "{}",
        status.message()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_labels_are_validated_and_counted() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let label = |id: &str| pb::GroundTruth {
        request_id: id.into(),
        label: Some(pb::Label {
            value: Some(pb::label::Value::ClassName("fraud".into())),
        }),
        ..Default::default()
    };
    let labels = pb::LabelBatch {
        sequence: 3,
        model: "clf".into(),
        version: "1".into(),
        labels: vec![
            label("a"),
            label(""),
            pb::GroundTruth {
                label: None,
                ..label("c")
            },
            label("d"),
        ],
        ..Default::default()
    };
    let ack = client.submit_labels(labels).await.unwrap().into_inner();
    assert_eq!((ack.sequence, ack.accepted), (3, 2));
    let fields: Vec<_> = ack
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_str()))
        .collect();
    assert_eq!(fields, vec![(1, "request_id"), (2, "label")]);
    let (metrics, _) = s.stop().await;
    assert_eq!(
        value(
            &metrics,
            "inferscope.labels.received",
            &[("inferscope.model.name", "clf")]
        ),
        2
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.labels.rejected",
            &[
                ("inferscope.model.name", "clf"),
                ("reason", "missing_field")
            ]
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shard_queue_answers_unavailable_and_counts_the_shed_batch() {
    // Each batch reports records its client dropped: counted for the batches taken, not for the
    // shed one (its client sends it again, with the same report).
    let mut config = common::config();
    config.shards = 1;
    config.shard_queue_batches = 2;
    let s = common::start(config).await;
    let mut client = s.client().await;
    let hold = s.sidecar.hold_shards().await;
    // The held shard takes nothing: two batches fill its queue, the third is shed.
    let mut pending = Vec::new();
    for seq in 0..2 {
        let mut c = client.clone();
        pending.push(tokio::spawn(async move {
            let reported = pb::RecordBatch {
                client_dropped_records: 5 + seq,
                ..batch(seq, "m", vec![record("r", 0.1)])
            };
            c.submit_records(reported).await
        }));
    }
    // Wait until both are queued (an explicit signal: the queue depth), then overflow it.
    loop {
        if s.sidecar.snapshot_queue_depth() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let status = client
        .submit_records(pb::RecordBatch {
            client_dropped_records: 100,
            ..batch(9, "m", vec![record("r", 0.1), record("s", 0.1)])
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    drop(hold);
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap().into_inner().accepted, 1);
    }
    let (metrics, _) = s.stop().await;
    assert_eq!(value(&metrics, "inferscope.batches.shed", &[]), 1);
    assert_eq!(value(&metrics, "inferscope.records.shed", &[]), 2);
    assert_eq!(
        value(&metrics, "inferscope.client.records.dropped", &[]),
        11
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_exports_everything_acked() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .stream_records(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for seq in 0..3 {
        tx.send(batch(
            seq,
            "m",
            (0..10).map(|i| record(&i.to_string(), 0.3)).collect(),
        ))
        .await
        .unwrap();
        assert_eq!(acks.next().await.unwrap().unwrap().sequence, seq);
    }
    // The stream is still open (tx alive) when shutdown starts.
    let stop = s.sidecar.shutdown_token();
    stop.cancel();
    let end = acks.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(end.message().contains("shutting down"));
    let (metrics, _) = s.stop().await;
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        30
    );
    assert_eq!(value(&metrics, "inferscope.streams.active", &[]), 0);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_records_always_get_a_span_that_joins_the_callers_trace() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut failed = record("boom", 0.5);
    failed.error_type = "timeout".into();
    failed.traceparent = parent.into();
    failed.attributes = vec![pb::Attribute {
        key: "tenant".into(),
        value: "acme".into(),
    }];
    let ok = pb::InferenceRecord {
        traceparent: parent.into(),
        ..record("fine", 0.1)
    };
    let ack = client
        .submit_records(batch(1, "m", vec![failed, ok]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 2);
    let (_, spans) = s.stop().await;
    // Sampling ratio is 0 in tests: only the error record is traced.
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(
        span.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(span.parent_span_id.to_string(), "b7ad6b7169203331");
    assert!(matches!(
        span.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key.as_str() == k)
            .map(|a| a.value.to_string())
    };
    assert_eq!(attr("error.type").as_deref(), Some("timeout"));
    assert_eq!(attr("inferscope.request.id").as_deref(), Some("boom"));
    assert_eq!(attr("tenant").as_deref(), Some("acme"));
    let duration = span.end_time.duration_since(span.start_time).unwrap();
    assert!((duration.as_secs_f64() - 0.5).abs() < 1e-6, "{duration:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_ratio_and_the_parent_flag() {
    let mut config = common::config();
    config.sampling.ratio = 1.0;
    let s = common::start(config).await;
    let mut client = s.client().await;
    let records = (0..5).map(|i| record(&i.to_string(), 0.1)).collect();
    client.submit_records(batch(1, "m", records)).await.unwrap();
    let (_, spans) = s.stop().await;
    assert_eq!(spans.len(), 5);

    let mut config = common::config();
    config.sampling = inferscope::config::Sampling {
        ratio: 0.0,
        parent_based: true,
    };
    let s = common::start(config).await;
    let mut client = s.client().await;
    let sampled = pb::InferenceRecord {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ..record("yes", 0.1)
    };
    let unsampled = pb::InferenceRecord {
        traceparent: "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into(),
        ..record("no", 0.1)
    };
    client
        .submit_records(batch(1, "m", vec![sampled, unsampled]))
        .await
        .unwrap();
    let (_, spans) = s.stop().await;
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_records_produce_the_gen_ai_metrics() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let mut b = batch(
        1,
        "llm",
        (0..4)
            .map(|i| pb::InferenceRecord {
                prediction: Some(pb::inference_record::Prediction::Generation(
                    pb::Generation {
                        input_tokens: 100 * (i + 1),
                        output_tokens: 21,
                        time_to_first_token_seconds: Some(0.2),
                        ..Default::default()
                    },
                )),
                error_type: if i == 3 {
                    "rate_limited".into()
                } else {
                    String::new()
                },
                ..record(&i.to_string(), 1.2)
            })
            .collect(),
    );
    b.declarations = vec![pb::ModelDeclaration {
        model: "llm".into(),
        version: "1".into(),
        task: pb::TaskType::Generation as i32,
        gen_ai_provider: "vllm".into(),
        ..Default::default()
    }];
    client.submit_records(b).await.unwrap();
    let (metrics, _) = s.stop().await;
    let base = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "llm"),
        ("gen_ai.provider.name", "vllm"),
    ];
    let input = histograms(
        &metrics,
        "gen_ai.client.token.usage",
        &[base[0], base[1], base[2], ("gen_ai.token.type", "input")],
    );
    assert_eq!((input[0].count, input[0].sum), (4, Some(1000.0)));
    let durations = histograms(&metrics, "gen_ai.server.request.duration", &base);
    assert_eq!(durations.iter().map(|h| h.count).sum::<u64>(), 4);
    let errors = histograms(
        &metrics,
        "gen_ai.server.request.duration",
        &[("error.type", "rate_limited")],
    );
    assert_eq!(errors[0].count, 1);
    // Successful responses only: 3 of them; (1.2 - 0.2) / (21 - 1) = 0.05 s per token.
    let ttft = histograms(&metrics, "gen_ai.server.time_to_first_token", &base);
    assert_eq!(ttft[0].count, 3);
    let tpot = histograms(&metrics, "gen_ai.server.time_per_output_token", &base);
    assert_eq!(tpot[0].count, 3);
    assert!((tpot[0].sum.unwrap() - 0.15).abs() < 1e-9);
    assert_eq!(tpot[0].explicit_bounds[2], 0.05);
    assert_eq!(tpot[0].bucket_counts[2], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let s = common::start(common::config()).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", s.sidecar.local_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "inferscope.v1.IngestService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_ingest_service() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let s = common::start(common::config()).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", s.sidecar.local_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"inferscope.v1.IngestService"), "{names:?}");
    s.stop().await;
}

fn classification(c: pb::Classification) -> Option<pb::inference_record::Prediction> {
    Some(pb::inference_record::Prediction::Classification(c))
}

fn class_label(name: &str) -> Option<pb::Label> {
    Some(pb::Label {
        value: Some(pb::label::Value::ClassName(name.into())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_but_finite_values_are_rejected_and_the_latency_sum_stays_finite() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let scored = |id: &str, score: f64| pb::InferenceRecord {
        prediction: classification(pb::Classification {
            score: Some(score),
            ..Default::default()
        }),
        ..record(id, 0.5)
    };
    let records = vec![
        record("ok", 0.5),
        record("absurd", 1.7e308),
        scored("five", 5.0),
        scored("minus-three", -3.0),
        pb::InferenceRecord {
            prediction: Some(pb::inference_record::Prediction::Generation(
                pb::Generation {
                    input_tokens: u64::MAX,
                    ..Default::default()
                },
            )),
            ..record("tokens", 0.5)
        },
    ];
    let ack = client
        .submit_records(batch(1, "m", records))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
    let rejects: Vec<(u32, &str, i32)> = ack
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_str(), r.reason))
        .collect();
    let invalid = RejectReason::InvalidValue as i32;
    assert_eq!(
        rejects,
        vec![
            (1, "latency_seconds", invalid),
            (2, "classification.score", invalid),
            (3, "classification.score", invalid),
            (4, "generation.input_tokens", invalid),
        ]
    );
    let (metrics, _) = s.stop().await;
    let m = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
    ];
    let latency = histograms(&metrics, "inferscope.inference.duration", &m);
    assert_eq!(latency.len(), 1);
    assert_eq!((latency[0].count, latency[0].sum), (1, Some(0.5)));
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &[("inferscope.model.name", "m"), ("reason", "invalid_value")]
        ),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_declaration_with_three_class_names_is_refused() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let mut b = batch(1, "clf", vec![record("r", 0.1)]);
    b.declarations = vec![pb::ModelDeclaration {
        model: "clf".into(),
        version: "1".into(),
        task: pb::TaskType::BinaryClassification as i32,
        class_names: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    }];
    let status = client.submit_records(b).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("declarations[0].class_names"),
        "{}",
        status.message()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_names_a_declaration_lacks_are_rejected_unless_the_model_allows_them() {
    let s = common::start(common::config()).await;
    let mut client = s.client().await;
    let declare = |model: &str, allow: bool| pb::ModelDeclaration {
        model: model.into(),
        version: "1".into(),
        task: pb::TaskType::BinaryClassification as i32,
        class_names: vec!["legit".into(), "fraud".into()],
        positive_class: "fraud".into(),
        allow_undeclared_classes: allow,
        ..Default::default()
    };
    let predicted = |id: &str, class: &str, label: Option<&str>| pb::InferenceRecord {
        prediction: classification(pb::Classification {
            predicted_class: class.into(),
            ..Default::default()
        }),
        label: label.and_then(class_label),
        ..record(id, 0.1)
    };
    let records = || {
        vec![
            predicted("a", "fraud", None),
            predicted("b", "fruad", None),
            predicted("c", "legit", Some("legti")),
            predicted("d", "legit", None),
        ]
    };
    for (model, allow, accepted) in [("strict", false, 2), ("lenient", true, 4)] {
        let mut b = batch(1, model, records());
        b.declarations = vec![declare(model, allow)];
        let ack = client.submit_records(b).await.unwrap().into_inner();
        assert_eq!(ack.accepted, accepted, "{model}");
        let rejects: Vec<(u32, &str, i32)> = ack
            .rejects
            .iter()
            .map(|r| (r.index, r.field.as_str(), r.reason))
            .collect();
        let undeclared = RejectReason::UndeclaredClass as i32;
        let expected = if allow {
            vec![]
        } else {
            vec![
                (1, "classification.predicted_class", undeclared),
                (2, "label.class_name", undeclared),
            ]
        };
        assert_eq!(rejects, expected, "{model}");

        // A delayed label with a class the declaration lacks, known at ingest.
        let labels = pb::LabelBatch {
            sequence: 2,
            model: model.into(),
            version: "1".into(),
            labels: [("a", "fraud"), ("d", "legitt")]
                .iter()
                .map(|&(id, class)| pb::GroundTruth {
                    request_id: id.into(),
                    label: class_label(class),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let ack = client.submit_labels(labels).await.unwrap().into_inner();
        let rejects: Vec<(u32, &str, i32)> = ack
            .rejects
            .iter()
            .map(|r| (r.index, r.field.as_str(), r.reason))
            .collect();
        let expected = if allow {
            vec![]
        } else {
            vec![(1, "label.class_name", undeclared)]
        };
        assert_eq!(rejects, expected, "{model}");
    }
    let (metrics, _) = s.stop().await;
    let reason = |model, r| [("inferscope.model.name", model), ("reason", r)];
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &reason("strict", "undeclared_class")
        ),
        2
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.labels.rejected",
            &reason("strict", "undeclared_class")
        ),
        1
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &reason("lenient", "undeclared_class")
        ),
        0
    );
    // The typos never became classes of the strict model; the lenient one counts them.
    assert_eq!(
        value(
            &metrics,
            "inferscope.quality.predictions",
            &[("inferscope.model.name", "lenient"), ("class", "fruad")]
        ),
        1
    );
    let strict = [("inferscope.model.name", "strict")];
    for class in ["fruad", "legti", "legitt"] {
        let mut at = strict.to_vec();
        at.push(("class", class));
        assert_eq!(
            value(&metrics, "inferscope.quality.predictions", &at)
                + value(&metrics, "inferscope.quality.labels", &at),
            0,
            "{class}"
        );
    }
}

/// `--max-models` bounds the whole process, not each shard: with 2 shards and a cap of 64, all
/// 64 versions get their own state however they hash across the shards, and the 65th overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_models_is_a_process_wide_bound_across_shards() {
    let mut config = common::config();
    config.shards = 2;
    config.max_models = 64;
    let s = common::start(config).await;
    let mut client = s.client().await;
    for v in 0..65u64 {
        let mut b = batch(v, "m", vec![record(&v.to_string(), 0.1)]);
        b.version = format!("v{v}");
        client.submit_records(b).await.unwrap();
    }
    let snapshot = s.sidecar.snapshot().await;
    let own = snapshot.models.keys().filter(|k| k.is_own()).count();
    assert_eq!(own, 64);
    assert_eq!(snapshot.models_overflow, 1);
    let (metrics, _) = s.stop().await;
    let tracked = (0..64)
        .filter(|v| {
            let version = format!("v{v}");
            value(
                &metrics,
                "inferscope.records.received",
                &[
                    ("inferscope.model.name", "m"),
                    ("inferscope.model.version", version.as_str()),
                ],
            ) == 1
        })
        .count();
    assert_eq!(tracked, 64);
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "__other__")]
        ),
        1
    );
}
