//! KServe's payload logger in (`--cloudevents-listen`, `src/capture/kserve.rs`): CloudEvents
//! posted as KServe's InferenceLogger posts them (binary mode, Go-canonical `Ce-*` headers,
//! `kserve/kserve pkg/logger/worker.go`; `docs/no-code-capture-sources.md` F.2) and in
//! structured mode, against a real sidecar on 127.0.0.1:0.

mod common;

use inferscope::{
    capture::kserve::{
        tensors::{MappedTask, ModelMapping},
        KserveSettings, REQUEST_TYPE, RESPONSE_TYPE,
    },
    config::Config,
    pb,
    self_metrics::SelfCounter,
};
use serde_json::{json, Value};
use std::{collections::HashMap, time::Duration};

/// A test configuration with the endpoint on an ephemeral loopback port.
fn config(models: HashMap<String, ModelMapping>, ttl: Duration, capacity: usize) -> Config {
    let mut config = common::config();
    config.kserve = KserveSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        join_capacity: capacity,
        join_ttl: ttl,
        models,
    };
    config
}

fn url(sidecar: &common::TestSidecar, path: &str) -> String {
    format!(
        "http://{}{path}",
        sidecar
            .sidecar
            .cloudevents_addr
            .expect("the endpoint is on")
    )
}

/// Posts one event in binary mode with the headers KServe's logger sets.
async fn post_binary(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    kind: &str,
    model: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(url)
        .header("Ce-Specversion", "1.0")
        .header("Ce-Id", id)
        .header("Ce-Type", kind)
        .header("Ce-Source", "http://localhost:9081/")
        .header("Ce-Time", "2026-12-01T21:59:08.123456789Z")
        .header("Ce-Inferenceservicename", model)
        .header("Ce-Namespace", "default")
        .header("Ce-Component", "predictor")
        .header("Ce-Endpoint", "")
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// The reference profile `ExportReference` gives for a model version, as JSON text.
async fn profile_of(client: &mut common::TestClient, model: &str, version: &str) -> String {
    client
        .export_reference(pb::ExportReferenceRequest {
            model: model.into(),
            version: version.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .profile_json
}

/// Sends delayed labels, each a request id and a class name, for a model version; returns how
/// many were accepted.
async fn send_labels(
    client: &mut common::TestClient,
    model: &str,
    version: &str,
    labels: impl IntoIterator<Item = (String, String)>,
) -> u32 {
    let labels = labels
        .into_iter()
        .map(|(request_id, class)| pb::GroundTruth {
            request_id,
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName(class)),
            }),
            ..Default::default()
        })
        .collect();
    let batch = pb::LabelBatch {
        model: model.into(),
        version: version.into(),
        labels,
        ..Default::default()
    };
    client
        .submit_labels(batch)
        .await
        .unwrap()
        .into_inner()
        .accepted
}

fn model_attr(model: &str) -> [(&str, &str); 1] {
    [("inferscope.model.name", model)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_instances_and_predictions_become_records_joined_by_later_labels() {
    let mut config = config(HashMap::new(), Duration::from_secs(60), 100);
    config.drift.reference_records = 6;
    let sidecar = common::start(config).await;
    let http = reqwest::Client::new();
    let endpoint = url(&sidecar, "/");
    // Three requests of two rows (KServe's sklearn iris example); the second response comes
    // before its request, as the logger's racing workers allow.
    let instances = [
        [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]],
        [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2]],
        [[6.3, 3.3, 6.0, 2.5], [5.8, 2.7, 5.1, 1.9]],
    ];
    let predictions = [[1, 1], [0, 0], [2, 2]];
    for (i, (rows, predicted)) in instances.iter().zip(predictions).enumerate() {
        let id = format!("iris-{i}");
        let request = json!({ "instances": rows });
        let response = json!({ "predictions": predicted });
        let order = if i == 1 {
            [(RESPONSE_TYPE, &response), (REQUEST_TYPE, &request)]
        } else {
            [(REQUEST_TYPE, &request), (RESPONSE_TYPE, &response)]
        };
        for (kind, body) in order {
            let answer = post_binary(&http, &endpoint, &id, kind, "sklearn-iris", body).await;
            assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
        }
    }
    // Objects: named features, a string value is a category; named by the path's last segment.
    let request = json!({"instances": [{"petal": 1.5, "garden": "kew"}]});
    let response = json!({"predictions": ["setosa"]});
    for (kind, body) in [(REQUEST_TYPE, &request), (RESPONSE_TYPE, &response)] {
        let answer = http
            .post(url(&sidecar, "/log/iris-by-name"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "named-0")
            .header("ce-type", kind)
            .header("ce-source", "test")
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
    }

    let mut client = sidecar.client().await;
    // Labels follow the documented ids: `<ce-id>/<row>`; the last one is wrong on purpose.
    let labels = (0..3)
        .flat_map(|i| (0..2).map(move |row| (i, row)))
        .map(|(i, row)| {
            let class = if (i, row) == (2, 1) {
                1
            } else {
                predictions[i][row]
            };
            (format!("iris-{i}/{row}"), class.to_string())
        });
    assert_eq!(
        send_labels(&mut client, "sklearn-iris", "1", labels).await,
        6
    );
    let profile = profile_of(&mut client, "sklearn-iris", "1").await;
    let profile: Value = serde_json::from_str(&profile).unwrap();
    let names: Vec<&str> = profile["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for j in 0..4 {
        assert!(
            names.contains(&format!("instances_{j}").as_str()),
            "{names:?}"
        );
    }
    let snapshot = sidecar.sidecar.snapshot().await;
    assert_eq!(snapshot.self_metrics[SelfCounter::CloudEventsPending], 0);
    let (request, _) = sidecar.stop().await;
    let model = model_attr("sklearn-iris");
    assert_eq!(
        common::value(&request, "inferscope.records.received", &model),
        6
    );
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model),
        6
    );
    let accuracy = common::point(
        &request,
        "inferscope.quality.accuracy",
        &[
            ("inferscope.model.name", "sklearn-iris"),
            ("inferscope.model.version", "1"),
            ("window", "all"),
        ],
    );
    assert_eq!(accuracy, Some(5.0 / 6.0));
    let named = model_attr("iris-by-name");
    assert_eq!(
        common::value(&request, "inferscope.records.received", &named),
        1
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.received", &[]),
        8
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.rejected", &[]),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_tensors_in_binary_and_structured_mode_with_a_config_mapping() {
    let models = HashMap::from([(
        "fraud".to_owned(),
        ModelMapping {
            task: Some(MappedTask::Binary),
            class_names: vec!["legit".into(), "fraud".into()],
            positive_class: Some("fraud".into()),
            probabilities_output: Some("proba".into()),
            categorical_inputs: vec!["country".into()],
            version: Some("7".into()),
            ..Default::default()
        },
    )]);
    let mut config = config(models, Duration::from_secs(60), 100);
    config.drift.reference_records = 3;
    let sidecar = common::start(config).await;
    let http = reqwest::Client::new();
    let endpoint = url(&sidecar, "/");
    let request = json!({"id": "tx-1", "inputs": [
        {"name": "amount", "shape": [3], "datatype": "FP32", "data": [12.5, 900.0, 3.0]},
        {"name": "country", "shape": [3, 1], "datatype": "BYTES", "data": ["fr", "us", "fr"]}]});
    let response = json!({"model_name": "fraud", "id": "tx-1", "outputs": [
        {"name": "proba", "shape": [3, 2], "datatype": "FP64",
         "data": [0.9, 0.1, 0.2, 0.8, 0.7, 0.3]}]});
    // Binary-mode request, structured-mode response (data as JSON).
    let answer = post_binary(&http, &endpoint, "ce-1", REQUEST_TYPE, "fraud", &request).await;
    assert_eq!(answer.status(), 202);
    let structured = json!({
        "specversion": "1.0", "id": "ce-1", "type": RESPONSE_TYPE, "source": "test",
        "inferenceservicename": "fraud", "datacontenttype": "application/json",
        "data": response,
    });
    let answer = http
        .post(&endpoint)
        .header("content-type", "application/cloudevents+json")
        .body(structured.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());

    let mut client = sidecar.client().await;
    // The V2 request's own id names the records: tx-1/0 … tx-1/2.
    let labels = ["legit", "fraud", "fraud"]
        .iter()
        .enumerate()
        .map(|(row, class)| (format!("tx-1/{row}"), class.to_string()));
    assert_eq!(send_labels(&mut client, "fraud", "7", labels).await, 3);
    let profile = profile_of(&mut client, "fraud", "7").await;
    assert!(profile.contains("\"country\"") && profile.contains("\"amount\""));
    let (request, _) = sidecar.stop().await;
    let at = [
        ("inferscope.model.name", "fraud"),
        ("inferscope.model.version", "7"),
        ("window", "all"),
    ];
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model_attr("fraud")),
        3
    );
    // Scores 0.1, 0.8, 0.3 against legit, fraud, fraud: the threshold 0.5 gets two right.
    assert_eq!(
        common::point(&request, "inferscope.quality.accuracy", &at),
        Some(2.0 / 3.0)
    );
    assert_eq!(
        common::point(&request, "inferscope.quality.roc_auc", &at),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_4xx_and_counted_and_nothing_else_is_lost() {
    let mut config = config(HashMap::new(), Duration::from_millis(300), 100);
    config.max_message_bytes = 4096;
    let sidecar = common::start(config).await;
    let http = reqwest::Client::new();
    let endpoint = url(&sidecar, "/");
    let v1 = json!({"instances": [[1.0, 2.0]]});
    let send = |request: reqwest::RequestBuilder| async move {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text:?}"));
        (status, body["reason"].as_str().unwrap_or("").to_owned())
    };
    let typed = |request: reqwest::RequestBuilder, id: &str, kind: &str| {
        request
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", kind)
            .header("ce-source", "test")
            .header("ce-inferenceservicename", "m")
    };
    let headers = |request: reqwest::RequestBuilder, id: &str| typed(request, id, REQUEST_TYPE);
    let cases = [
        (
            headers(http.post(&endpoint), "a")
                .header("content-type", "text/plain")
                .body(v1.to_string()),
            (415, "content_type"),
        ),
        (
            http.post(&endpoint)
                .header("ce-specversion", "1.0")
                .header("ce-type", REQUEST_TYPE)
                .header("ce-source", "test")
                .header("content-type", "application/json")
                .body(v1.to_string()),
            (400, "missing_attribute"),
        ),
        (
            headers(http.post(&endpoint), "b")
                .header("content-type", "application/json")
                .body("{\"instances\": [[1.0, 2.0]"),
            (400, "malformed"),
        ),
        (
            typed(http.post(&endpoint), "c", "com.example.other")
                .header("content-type", "application/json")
                .body(v1.to_string()),
            (400, "unknown_type"),
        ),
        (
            headers(http.post(&endpoint), "d")
                .header("content-type", "application/json")
                .body(vec![b' '; 5000]),
            (413, "too_large"),
        ),
        (
            headers(http.post(&endpoint), "e")
                .header("content-type", "application/json")
                .body(
                    json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                        "data": [1, 2, 3]}]})
                    .to_string(),
                ),
            (400, "shape"),
        ),
        (
            http.post(&endpoint)
                .header("content-type", "application/cloudevents+json")
                .body("{\"specversion\": \"1.0\"}"),
            (400, "missing_attribute"),
        ),
    ];
    let refused = cases.len() as i64;
    for (request, (status, reason)) in cases {
        assert_eq!(send(request).await, (status, reason.to_owned()));
    }
    // A GET is refused too (405), and counted.
    let answer = http.get(&endpoint).send().await.unwrap();
    assert_eq!(answer.status(), 405);
    // Between the refusals a good pair still becomes a record.
    for kind in [REQUEST_TYPE, RESPONSE_TYPE] {
        let body = if kind == REQUEST_TYPE {
            v1.clone()
        } else {
            json!({"predictions": [0.5]})
        };
        assert_eq!(
            post_binary(&http, &endpoint, "good", kind, "m", &body)
                .await
                .status(),
            202
        );
    }
    // A response whose request never comes: it waits the TTL, then is recorded alone.
    let answer = post_binary(
        &http,
        &endpoint,
        "orphan",
        RESPONSE_TYPE,
        "m",
        &json!({"predictions": [0.25]}),
    )
    .await;
    assert_eq!(answer.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = sidecar.sidecar.snapshot().await;
        if snapshot.self_metrics[SelfCounter::CloudEventsExpired] == 1 {
            assert_eq!(snapshot.self_metrics[SelfCounter::CloudEventsPending], 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (request, _) = sidecar.stop().await;
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.rejected", &[]),
        refused + 1
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.expired", &[]),
        1
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.evicted", &[]),
        0
    );
    // The good pair and the orphan response.
    assert_eq!(
        common::value(&request, "inferscope.records.received", &model_attr("m")),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unanswered_requests_stay_within_the_join_store() {
    const CAPACITY: usize = 1000;
    const SENT: usize = 10_000;
    let sidecar = common::start(config(HashMap::new(), Duration::from_secs(600), CAPACITY)).await;
    let http = reqwest::Client::new();
    let endpoint = url(&sidecar, "/");
    let body = json!({"instances": [[1.0]]});
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8 {
        let (http, endpoint, body) = (http.clone(), endpoint.clone(), body.clone());
        senders.spawn(async move {
            for i in (sender..SENT).step_by(8) {
                let answer = post_binary(
                    &http,
                    &endpoint,
                    &format!("lost-{i}"),
                    REQUEST_TYPE,
                    "m",
                    &body,
                )
                .await;
                assert_eq!(answer.status(), 202);
            }
        });
    }
    let mut most = 0;
    while !senders.is_empty() {
        let pending =
            sidecar.sidecar.snapshot().await.self_metrics[SelfCounter::CloudEventsPending];
        most = most.max(pending);
        tokio::select! {
            done = senders.join_next() => done.unwrap().unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    assert!(most <= CAPACITY as i64, "{most} waiting");
    let snapshot = sidecar.sidecar.snapshot().await;
    assert_eq!(
        snapshot.self_metrics[SelfCounter::CloudEventsPending],
        CAPACITY as i64
    );
    assert_eq!(
        snapshot.self_metrics[SelfCounter::CloudEventsEvicted],
        (SENT - CAPACITY) as i64
    );
    // At shutdown the waiting requests are recorded, with error type no_response.
    let (request, _) = sidecar.stop().await;
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.expired", &[]),
        CAPACITY as i64
    );
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &[
                ("inferscope.model.name", "m"),
                ("error.type", "no_response")
            ]
        ),
        CAPACITY as i64
    );
}

/// The real client: the Python `cloudevents` SDK (core API binary and structured, legacy v1 API)
/// posting KServe-shaped events (`tests/capture/post_kserve_events.py`), then labels for the
/// request ids it printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_python_cloudevents_sdk_become_records() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/capture-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `tools/install-backends.sh capture`",
        python.display()
    );
    let sidecar = common::start(config(HashMap::new(), Duration::from_secs(60), 100)).await;
    let endpoint = url(&sidecar, "/");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(root.join("tests/capture/post_kserve_events.py"))
            .args([&endpoint, "py-model"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = sent["rows"].as_array().unwrap();
    let mut client = sidecar.client().await;
    let labels = rows.iter().map(|row| {
        let text = |i: usize| row[i].as_str().unwrap().to_owned();
        (text(0), text(1))
    });
    let accepted = send_labels(&mut client, "py-model", "1", labels).await;
    assert_eq!(accepted as usize, rows.len());
    let (request, _) = sidecar.stop().await;
    let model = model_attr("py-model");
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.received", &[]),
        sent["events"].as_i64().unwrap()
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.rejected", &[]),
        0
    );
    assert_eq!(
        common::value(&request, "inferscope.records.received", &model),
        rows.len() as i64
    );
    // Every label found its prediction under the documented id.
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model),
        rows.len() as i64
    );
    let at = [
        ("inferscope.model.name", "py-model"),
        ("inferscope.model.version", "1"),
        ("window", "all"),
    ];
    // Four of five predictions match their label (v2-req/1 predicted 2, labelled 1).
    assert_eq!(
        common::point(&request, "inferscope.quality.accuracy", &at),
        Some(0.8)
    );
}

/// The issue's quality check: scikit-learn's golden datasets (`tests/data/quality.json`) logged
/// as KServe V2 request/response events (features as an input, probabilities as an FP64
/// output, regression values as an output), labels sent later through SubmitLabels with the
/// documented request ids → quality in VictoriaMetrics (PromQL) equals scikit-learn within 1e-9.
/// The binary and regression schemas come from the config file's mappings, the multiclass one
/// from a gRPC declaration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_of_logged_predictions_matches_scikit_learn_in_victoria_metrics() {
    use common::{backends, golden};
    use inferscope::{
        config::{ExportConfig, OtlpProtocol},
        export::{metrics::MetricTransport, resource},
        server::{Sidecar, Sinks},
    };
    let (_vm, vm) = backends::start_victoria_metrics().await;
    let export = ExportConfig {
        endpoint: format!("{vm}/opentelemetry"),
        protocol: OtlpProtocol::HttpProtobuf,
        endpoint_configured: true,
        metric_interval: Duration::from_secs(1),
        traces: false,
        ..common::config().export
    };
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&export).unwrap()),
        traces: None,
        resource: resource::detect(),
    };
    let mapping =
        |task, classes: &[&str], probabilities: Option<&str>, prediction: Option<&str>| {
            ModelMapping {
                task: Some(task),
                class_names: classes.iter().map(|c| c.to_string()).collect(),
                positive_class: (task == MappedTask::Binary).then(|| "pos".into()),
                probabilities_output: probabilities.map(Into::into),
                prediction_output: prediction.map(Into::into),
                ..Default::default()
            }
        };
    let models = HashMap::from([
        (
            "binary_imbalanced".to_owned(),
            mapping(
                MappedTask::Binary,
                &["neg", "pos"],
                Some("probabilities"),
                None,
            ),
        ),
        (
            "regression_outliers".to_owned(),
            mapping(MappedTask::Regression, &[], None, Some("predict")),
        ),
    ]);
    let mut config = config(models, Duration::from_secs(60), 10_000);
    config.export = export;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let endpoint = format!("http://{}/", sidecar.cloudevents_addr.unwrap());
    let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();
    let http = reqwest::Client::new();

    let wanted = ["binary_imbalanced", "multiclass_3", "regression_outliers"];
    let datasets: Vec<Value> = golden::datasets()
        .into_iter()
        .filter(|d| wanted.contains(&d["name"].as_str().unwrap()))
        .collect();
    const ROWS_PER_EVENT: usize = 64;
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        if ds["task"] == "multiclass" {
            let declared = pb::RecordBatch {
                declarations: golden::declaration(ds).into_iter().collect(),
                ..Default::default()
            };
            client.submit_records(declared).await.unwrap();
        }
        let rows = ds["records"].as_array().unwrap();
        let mut labels = Vec::new();
        for (chunk, part) in rows.chunks(ROWS_PER_EVENT).enumerate() {
            let n = part.len();
            let id = format!("{name}-{chunk}");
            let request = json!({"inputs": [{"name": "x", "shape": [n], "datatype": "FP64",
                "data": (0..n).map(|i| (chunk * ROWS_PER_EVENT + i) as f64).collect::<Vec<_>>()}]});
            let output = match ds["task"].as_str().unwrap() {
                "binary" => {
                    let data: Vec<f64> = part
                        .iter()
                        .flat_map(|r| {
                            let s = r["score"].as_f64().unwrap();
                            [1.0 - s, s]
                        })
                        .collect();
                    json!({"name": "probabilities", "shape": [n, 2], "datatype": "FP64", "data": data})
                }
                "multiclass" => {
                    let data: Vec<f64> = part
                        .iter()
                        .flat_map(|r| golden::floats(&r["probabilities"]))
                        .collect();
                    json!({"name": "probabilities", "shape": [n, 3], "datatype": "FP64", "data": data})
                }
                _ => {
                    let data: Vec<f64> =
                        part.iter().map(|r| r["value"].as_f64().unwrap()).collect();
                    json!({"name": "predict", "shape": [n], "datatype": "FP64", "data": data})
                }
            };
            let response = json!({"model_name": name, "outputs": [output]});
            for (kind, body) in [(REQUEST_TYPE, &request), (RESPONSE_TYPE, &response)] {
                let answer = post_binary(&http, &endpoint, &id, kind, name, body).await;
                assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
            }
            labels.extend(part.iter().enumerate().map(|(row, r)| pb::GroundTruth {
                request_id: format!("{id}/{row}"),
                label: Some(golden::label(ds, r)),
                ..Default::default()
            }));
        }
        let ack = client
            .submit_labels(pb::LabelBatch {
                model: name.into(),
                version: "1".into(),
                labels,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            ack.accepted as usize,
            rows.len(),
            "{:?}",
            ack.rejects.first()
        );
    }

    // (PromQL name, attributes beyond model and window, scikit-learn's value) per task.
    let mut failures = Vec::new();
    for ds in &datasets {
        let name = ds["name"].as_str().unwrap();
        let e = &ds["expected"];
        let classification = [
            ("accuracy_ratio", "", e["accuracy"].clone()),
            (
                "balanced_accuracy_ratio",
                "",
                e["balanced_accuracy"].clone(),
            ),
            (
                "f1_ratio",
                r#",average="macro""#,
                e["averages"]["macro"]["f1"].clone(),
            ),
            ("log_loss", "", e["log_loss"].clone()),
        ];
        let ranking = if ds["task"] == "multiclass" {
            r#",average="macro""#
        } else {
            ""
        };
        let mut checks: Vec<(&str, &str, Value)> = Vec::new();
        if ds["task"] == "regression" {
            for metric in ["mae", "mse", "rmse", "r2", "mean_error"] {
                checks.push((metric, "", e[metric].clone()));
            }
            checks.push(("mape_ratio", "", e["mape"].clone()));
        } else {
            checks.extend(classification);
            checks.push(("roc_auc_ratio", ranking, e["roc_auc"].clone()));
            checks.push((
                "average_precision_ratio",
                ranking,
                e["average_precision"].clone(),
            ));
        }
        for window in ["5m", "all"] {
            for (metric, extra, want) in &checks {
                let query = format!(
                    r#"inferscope_quality_{metric}{{inferscope_model_name="{name}",inferscope_model_version="1",window="{window}"{extra}}}"#
                );
                let want = want.as_f64().unwrap();
                let near = |v: f64| (v - want).abs() <= 1e-9 * want.abs().max(1.0);
                let got = backends::poll_promql(&vm, &query, near).await;
                if !got.is_some_and(near) {
                    failures.push(format!(
                        "{query}: VictoriaMetrics {got:?}, scikit-learn {want}"
                    ));
                }
            }
        }
        let joined = format!(
            r#"inferscope_labels_joined_total{{inferscope_model_name="{name}",source="delayed"}}"#
        );
        let n = ds["records"].as_array().unwrap().len() as f64;
        if backends::promql(&vm, &joined, n).await != Some(n) {
            failures.push(format!("{joined}: not {n}"));
        }
    }
    sidecar.stop().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `[capture.kserve]` of the config file: read, and a mapping no declaration could make refused
/// at start-up with the setting named.
#[test]
fn the_config_file_gives_the_join_store_and_the_mappings() {
    use inferscope::config::ConfigArgs;
    let dir = std::env::temp_dir().join(format!("inferscope-kserve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("inferscope.toml");
    std::fs::write(
        &path,
        "[capture.kserve]\njoin_capacity = 5\njoin_ttl_seconds = 2.5\n\
         [capture.kserve.models.fraud]\nversion = \"3\"\ntask = \"binary\"\n\
         class_names = [\"legit\", \"fraud\"]\nprobabilities_output = \"proba\"\n\
         logger_mode = \"response\"\n",
    )
    .unwrap();
    let args = ConfigArgs {
        config: Some(path.clone()),
        cloudevents_listen: Some("127.0.0.1:8088".parse().unwrap()),
        ..Default::default()
    };
    let config = Config::resolve(args.clone()).unwrap();
    assert_eq!(config.kserve.join_capacity, 5);
    assert_eq!(config.kserve.join_ttl, Duration::from_millis(2500));
    let fraud = config.kserve.mapping("fraud");
    assert_eq!(fraud.task, Some(MappedTask::Binary));
    assert_eq!(fraud.version.as_deref(), Some("3"));
    assert_eq!(
        fraud.logger_mode,
        inferscope::capture::kserve::tensors::LoggerMode::Response
    );
    std::fs::write(
        &path,
        "[capture.kserve.models.fraud]\ntask = \"binary\"\nclass_names = [\"a\", \"b\", \"c\"]\n",
    )
    .unwrap();
    let error = Config::resolve(args).unwrap_err().to_string();
    assert!(error.contains("capture.kserve.models"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `logger_mode = "response"` a response is recorded at once, with nothing waiting for a
/// request that will never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_only_logger_is_recorded_at_once() {
    let models = HashMap::from([(
        "scores".to_owned(),
        ModelMapping {
            task: Some(MappedTask::Regression),
            logger_mode: inferscope::capture::kserve::tensors::LoggerMode::Response,
            ..Default::default()
        },
    )]);
    let sidecar = common::start(config(models, Duration::from_secs(600), 100)).await;
    let http = reqwest::Client::new();
    let response = json!({"predictions": [1, 2, 3]});
    let answer = post_binary(
        &http,
        &url(&sidecar, "/"),
        "r-1",
        RESPONSE_TYPE,
        "scores",
        &response,
    )
    .await;
    assert_eq!(answer.status(), 202);
    let snapshot = sidecar.sidecar.snapshot().await;
    assert_eq!(snapshot.self_metrics[SelfCounter::CloudEventsPending], 0);
    let (request, _) = sidecar.stop().await;
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &model_attr("scores")
        ),
        3
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.expired", &[]),
        0
    );
}

/// `request_id_header`: the records of a request are named by a header KServe copied into its
/// `metadata` extension (sdk-go writes it raw; the Python SDK percent-encodes `"`), so that a
/// label sender who knows only its own `X-Request-Id` can follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_from_kserves_metadata_names_the_records() {
    let models = HashMap::from([(
        "iris".to_owned(),
        ModelMapping {
            request_id_header: Some("x-request-id".into()),
            ..Default::default()
        },
    )]);
    let sidecar = common::start(config(models, Duration::from_secs(60), 100)).await;
    let http = reqwest::Client::new();
    let endpoint = url(&sidecar, "/");
    let metadata = [
        ("ce-a", r#"{"X-Request-Id":["req-42"]}"#),
        ("ce-b", r#"{%22X-Request-Id%22:[%22req-43%22]}"#),
        // No such header: the ce-id names the records.
        ("ce-c", r#"{"Traceparent":["x"]}"#),
    ];
    for (id, metadata) in metadata {
        for kind in [REQUEST_TYPE, RESPONSE_TYPE] {
            let (body, metadata) = if kind == REQUEST_TYPE {
                (json!({"instances": [[1.0, 2.0]]}), metadata)
            } else {
                (json!({"predictions": ["setosa"]}), "null")
            };
            let answer = http
                .post(&endpoint)
                .header("Ce-Specversion", "1.0")
                .header("Ce-Id", id)
                .header("Ce-Type", kind)
                .header("Ce-Source", "http://localhost:9081/")
                .header("Ce-Inferenceservicename", "iris")
                .header("Ce-Metadata", metadata)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 202);
        }
    }
    let mut client = sidecar.client().await;
    let labels = ["req-42/0", "req-43/0", "ce-c/0"].map(|id| (id.to_owned(), "setosa".to_owned()));
    assert_eq!(send_labels(&mut client, "iris", "1", labels).await, 3);
    let (request, _) = sidecar.stop().await;
    assert_eq!(
        common::value(&request, "inferscope.labels.joined", &model_attr("iris")),
        3
    );
}

/// A client that never finishes its request does not hold the shutdown: after a quarter of the
/// budget the endpoint stops waiting for it, and the event still waiting is recorded before the
/// drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_does_not_hold_the_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut config = config(HashMap::new(), Duration::from_secs(600), 100);
    config.shutdown_budget = Duration::from_secs(4);
    let sidecar = common::start(config).await;
    let http = reqwest::Client::new();
    let answer = post_binary(
        &http,
        &url(&sidecar, "/"),
        "alone",
        REQUEST_TYPE,
        "m",
        &json!({"instances": [[1.0]]}),
    )
    .await;
    assert_eq!(answer.status(), 202);
    let mut stuck = tokio::net::TcpStream::connect(sidecar.sidecar.cloudevents_addr.unwrap())
        .await
        .unwrap();
    stuck
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let (request, _) = sidecar.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        common::value(&request, "inferscope.cloudevents.expired", &[]),
        1
    );
    assert_eq!(
        common::value(
            &request,
            "inferscope.records.received",
            &[
                ("inferscope.model.name", "m"),
                ("error.type", "no_response")
            ]
        ),
        1
    );
    drop(stuck);
}

/// Logged inferences get the same analyses as gRPC records: a value far outside the reference
/// the first events captured is flagged (`inferscope.anomalies`, read back from VictoriaMetrics),
/// and the flagged record's span, exported to a real Phoenix, is a child of the request's
/// `ce-traceparent`, in the caller's trace (its trace id kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_inferences_are_flagged_and_traced_in_the_callers_trace() {
    use common::backends;
    use inferscope::{
        config::{OtlpProtocol, Sampling},
        server::{Sidecar, Sinks},
    };
    let (_vm, vm) = backends::start_victoria_metrics().await;
    let (_phoenix, phoenix, _) = backends::start_phoenix().await;
    let mut config = config(HashMap::new(), Duration::from_secs(60), 100);
    config.drift.reference_records = 20;
    config.export.endpoint = format!("{vm}/opentelemetry");
    config.export.protocol = OtlpProtocol::HttpProtobuf;
    config.export.traces_endpoint = Some(format!("{phoenix}/v1/traces"));
    config.export.metric_interval = Duration::from_secs(1);
    // The flagged record's span is exported whatever the ratio (its parent is sampled).
    config.sampling = Sampling {
        ratio: 0.0,
        parent_based: true,
    };
    let sinks = Sinks::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    let http = reqwest::Client::new();
    let endpoint = format!("http://{}/", sidecar.cloudevents_addr.unwrap());
    let trace_id = format!("{:032x}", backends::rand_suffix() as u128 | 1 << 100);
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    for i in 0..21 {
        let x = if i == 20 {
            1000.0
        } else {
            1.0 + i as f64 / 100.0
        };
        let id = format!("t-{i}");
        for kind in [REQUEST_TYPE, RESPONSE_TYPE] {
            let body = if kind == REQUEST_TYPE {
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [x]}]})
            } else {
                json!({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [0.5]}]})
            };
            let mut post = http
                .post(&endpoint)
                .header("Ce-Specversion", "1.0")
                .header("Ce-Id", &id)
                .header("Ce-Type", kind)
                .header("Ce-Source", "http://localhost:9081/")
                .header("Ce-Inferenceservicename", "traced")
                .header("Content-Type", "application/json");
            if i == 20 && kind == REQUEST_TYPE {
                post = post.header("Ce-Traceparent", &traceparent);
            }
            assert_eq!(
                post.body(body.to_string()).send().await.unwrap().status(),
                202
            );
        }
    }
    // Stopping exports the final metrics and flushes the spans.
    sidecar.stop().await.unwrap();
    let flagged = r#"sum(inferscope_anomalies_total{inferscope_model_name="traced",inferscope_model_version="1",kind="out_of_reference_range"})"#;
    assert_eq!(backends::promql(&vm, flagged, 1.0).await, Some(1.0));
    let spans = backends::phoenix_spans(&phoenix, &trace_id, 1).await;
    assert_eq!(spans.len(), 1, "the flagged record's span only: {spans:#?}");
    assert_eq!(spans[0]["context"]["trace_id"], trace_id.as_str());
    assert_eq!(spans[0]["parent_id"], "00f067aa0ba902b7", "{spans:#?}");
    assert_eq!(spans[0]["name"], "inferscope.inference", "{spans:#?}");
}
