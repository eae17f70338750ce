//! Sidecars of a fleet sharing their pending predictions through a real redis-server
//! (`--label-store`): a label that reaches any sidecar joins a prediction made at another, each
//! pair is scored once, and Redis being away never delays an ack.

mod common;

use common::{redis::Redis, value};
use inferscope::{config::Config, label_store::Password, models::ModelKey, pb};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

fn fleet_config(url: String) -> Config {
    Config {
        label_store: Some(url),
        ..common::config()
    }
}

/// Classifier records `r<i>`, each predicting `predicted[i]`.
fn predictions(predicted: &[&str]) -> pb::RecordBatch {
    let records = predicted
        .iter()
        .enumerate()
        .map(|(i, class)| pb::InferenceRecord {
            request_id: format!("r{i}"),
            latency_seconds: Some(0.01),
            prediction: Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class: (*class).into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    common::batch(1, "m", records)
}

fn labels(truth: &[&str]) -> pb::LabelBatch {
    pb::LabelBatch {
        sequence: 1,
        model: "m".into(),
        version: "1".into(),
        labels: truth
            .iter()
            .enumerate()
            .map(|(i, class)| pb::GroundTruth {
                request_id: format!("r{i}"),
                label: Some(pb::Label {
                    value: Some(pb::label::Value::ClassName((*class).into())),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_at_one_sidecar_joins_the_prediction_made_at_another() {
    let redis = Redis::start();
    let a = common::start(fleet_config(redis.url())).await;
    let b = common::start(fleet_config(redis.url())).await;
    let predicted: Vec<&str> = (0..60).map(|i| ["yes", "no", "maybe"][i % 3]).collect();
    // The truth differs from the prediction on every fifth record.
    let truth: Vec<&str> = (0..60)
        .map(|i| if i % 5 == 0 { "other" } else { predicted[i] })
        .collect();
    let ack = a
        .client()
        .await
        .submit_records(predictions(&predicted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 60);
    redis.wait_for_predictions(60);
    let ack = b
        .client()
        .await
        .submit_labels(labels(&truth))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 60);
    // Each prediction was taken out by the label that joined it.
    assert_eq!(redis.predictions(), 0);

    let (at_a, _) = a.stop().await;
    let (at_b, _) = b.stop().await;
    let m = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
    ];
    let delayed = |request| {
        value(
            request,
            "inferscope.labels.joined",
            &[m[0], m[1], ("source", "delayed")],
        )
    };
    assert_eq!((delayed(&at_a), delayed(&at_b)), (0, 60));
    let unknown = value(
        &at_b,
        "inferscope.labels.unmatched",
        &[m[0], m[1], ("reason", "unknown_request")],
    );
    assert_eq!(unknown, 0);
    // Scored at B as the pairs the test made: accuracy is the share of matching pairs.
    let correct = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();
    let accuracy = common::point(
        &at_b,
        "inferscope.quality.accuracy",
        &[m[0], m[1], ("window", "all")],
    );
    assert_eq!(accuracy, Some(correct as f64 / 60.0));
    assert_eq!(value(&at_a, "inferscope.label_store.dropped", &[]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_acks_come_at_once_and_the_predictions_not_stored_are_counted() {
    // Nothing listens on this port.
    let url = format!("redis://127.0.0.1:{}/0", common::process::free_port());
    acks_without_a_usable_store(fleet_config(url)).await;
}

/// Sends 100 predictions and their labels to a sidecar whose label store cannot be used:
/// neither ack waits for it, and every prediction not stored and every label not looked up is
/// counted.
async fn acks_without_a_usable_store(config: Config) {
    let s = common::start(config).await;
    let mut client = s.client().await;
    let predicted = vec!["yes"; 100];
    let started = Instant::now();
    let ack = client
        .submit_records(predictions(&predicted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 100);
    let ack = client
        .submit_labels(labels(&predicted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 100);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "acks took {:?}",
        started.elapsed()
    );
    let (metrics, _) = s.stop().await;
    assert_eq!(value(&metrics, "inferscope.label_store.dropped", &[]), 100);
    assert_eq!(
        value(&metrics, "inferscope.label_store.lookup_failures", &[]),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_delays_no_record_ack_and_labels_wait_at_most_the_timeout() {
    let redis = Redis::start();
    let mut config = fleet_config(redis.url());
    // A record ack that waited for Redis would take at least this; the asserts leave it room.
    config.label_store_timeout = Duration::from_secs(1);
    let s = common::start(config).await;
    let mut client = s.client().await;
    // Connected and writing.
    client
        .submit_records(predictions(&["yes"; 10]))
        .await
        .unwrap();
    redis.wait_for_predictions(10);
    redis.signal("-STOP");
    let mut slowest = Duration::ZERO;
    for sequence in 2..22 {
        let mut batch = predictions(&["no"; 50]);
        batch.sequence = sequence;
        for r in &mut batch.records {
            r.request_id = format!("{sequence}-{}", r.request_id);
        }
        let started = Instant::now();
        client.submit_records(batch).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    let started = Instant::now();
    client.submit_labels(labels(&["yes"; 10])).await.unwrap();
    let label_ack = started.elapsed();
    redis.signal("-CONT");
    assert!(
        slowest < Duration::from_millis(500),
        "a record ack took {slowest:?}"
    );
    assert!(
        label_ack < Duration::from_secs(3),
        "the label ack took {label_ack:?}"
    );
    let (metrics, _) = s.stop().await;
    // The writes that timed out while Redis was stopped are counted, never more than were sent.
    let dropped = value(&metrics, "inferscope.label_store.dropped", &[]);
    assert!((1..=1000).contains(&dropped), "{dropped}");
}

/// The fault test: Redis frozen (SIGSTOP) for 10 s while a client keeps sending: every
/// batch is acked, the ack latency's p99 over the freeze is printed (and held far below the
/// store's timeout), and the predictions that could not be written are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_ten_seconds_under_load_holds_no_ack() {
    let redis = Redis::start();
    let s = common::start(fleet_config(redis.url())).await;
    let mut client = s.client().await;
    client
        .submit_records(predictions(&["yes"; 10]))
        .await
        .unwrap();
    redis.wait_for_predictions(10);
    redis.signal("-STOP");
    let frozen = Instant::now();
    let mut latencies = Vec::new();
    let mut sequence = 1;
    while frozen.elapsed() < Duration::from_secs(10) {
        sequence += 1;
        let mut batch = predictions(&["no"; 100]);
        batch.sequence = sequence;
        for r in &mut batch.records {
            r.request_id = format!("{sequence}-{}", r.request_id);
        }
        let started = Instant::now();
        let ack = client.submit_records(batch).await.unwrap().into_inner();
        latencies.push(started.elapsed());
        assert_eq!(ack.accepted, 100);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.signal("-CONT");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "Redis frozen 10 s: {} batches of 100 acked, ack p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99,
        latencies.last().unwrap()
    );
    // The store's timeout is 200 ms; an ack that waited for Redis would take at least that.
    assert!(p99 < Duration::from_millis(150), "ack p99 {p99:?}");
    let (metrics, _) = s.stop().await;
    let dropped = value(&metrics, "inferscope.label_store.dropped", &[]);
    let sent = latencies.len() as i64 * 100;
    assert!(dropped > 0 && dropped <= sent, "{dropped} of {sent}");
}

/// Redis killed (SIGKILL) and started again empty on its address: meanwhile acks do not wait
/// and the predictions not written are counted; afterwards the sidecar writes again on the
/// connection it remade by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_that_comes_back_is_written_to_again() {
    let mut redis = Redis::start();
    let s = common::start(fleet_config(redis.url())).await;
    let mut client = s.client().await;
    client
        .submit_records(predictions(&["yes"; 10]))
        .await
        .unwrap();
    redis.wait_for_predictions(10);
    redis.kill_and_restart();
    assert_eq!(redis.predictions(), 0, "a fresh, empty Redis");
    // Until the connection is remade, batches are acked at once and their predictions dropped.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sequence = 1;
    loop {
        sequence += 1;
        let mut batch = predictions(&["no"; 10]);
        batch.sequence = sequence;
        for r in &mut batch.records {
            r.request_id = format!("{sequence}-{}", r.request_id);
        }
        let started = Instant::now();
        client.submit_records(batch).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
        if redis.predictions() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never written again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (metrics, _) = s.stop().await;
    let dropped = value(&metrics, "inferscope.label_store.dropped", &[]);
    eprintln!("written again after {sequence} batches; {dropped} predictions dropped meanwhile");
}

/// Waits (at most 10 s) until `sidecar` has joined `want` delayed labels of model m.
async fn wait_for_joins(sidecar: &common::TestSidecar, want: u64) {
    let key = ModelKey::new("m", "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = sidecar.sidecar.snapshot().await;
        let joined = snapshot
            .quality
            .get(&key)
            .map_or(0, |q| q.join.joined_delayed);
        if joined == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{joined} delayed labels joined, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_that_comes_before_its_prediction_reaches_another_sidecar_is_joined_once() {
    // Short, so that a label left held is counted unknown_request before the sidecars stop.
    const HOLD: Duration = Duration::from_secs(3);
    let redis = Redis::start();
    let config = || {
        let mut config = fleet_config(redis.url());
        config.quality.early_label_hold = HOLD;
        config
    };
    let a = common::start(config()).await;
    let b = common::start(config()).await;
    let sent = Instant::now();
    let ack = b
        .client()
        .await
        .submit_labels(labels(&["yes"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
    let ack = a
        .client()
        .await
        .submit_records(predictions(&["yes"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
    // B looks the label up again until A's writer has stored the prediction.
    wait_for_joins(&b, 1).await;
    // Past B's hold: the label it joined is not also counted unknown_request.
    let past_hold = sent + HOLD + Duration::from_millis(500);
    tokio::time::sleep(past_hold.saturating_duration_since(Instant::now())).await;

    let (at_a, _) = a.stop().await;
    let (at_b, _) = b.stop().await;
    let m = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
    ];
    for (at, joined) in [(&at_a, 0), (&at_b, 1)] {
        let delayed = [m[0], m[1], ("source", "delayed")];
        assert_eq!(value(at, "inferscope.labels.joined", &delayed), joined);
        let unknown = [m[0], m[1], ("reason", "unknown_request")];
        assert_eq!(value(at, "inferscope.labels.unmatched", &unknown), 0);
    }
    // Received once, though handed to the shard twice (when it came, and when it was found).
    assert_eq!(value(&at_b, "inferscope.labels.received", &m), 1);
}

const PASSWORD: &str = "fleet-s3cret";

/// A file holding `password`, as a mounted Secret does (with a trailing newline), in a
/// directory of its own named after `test`.
fn password_file(test: &str, password: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inferscope-fleet-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

fn with_password_file(redis: &Redis, file: &Path) -> Config {
    Config {
        label_store_password: Password::read(Some(file.to_owned())).unwrap(),
        ..fleet_config(redis.url())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_opens_a_redis_that_requires_a_password() {
    let redis = Redis::start_requiring(Some(PASSWORD));
    let file = password_file("right", PASSWORD);
    let a = common::start(with_password_file(&redis, &file)).await;
    let b = common::start(with_password_file(&redis, &file)).await;
    let predicted = vec!["yes"; 20];
    a.client()
        .await
        .submit_records(predictions(&predicted))
        .await
        .unwrap();
    b.client()
        .await
        .submit_labels(labels(&predicted))
        .await
        .unwrap();
    wait_for_joins(&b, 20).await;
    let (at_a, _) = a.stop().await;
    let (at_b, _) = b.stop().await;
    assert_eq!(value(&at_a, "inferscope.label_store.dropped", &[]), 0);
    assert_eq!(
        value(&at_b, "inferscope.label_store.lookup_failures", &[]),
        0
    );
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_holds_no_ack_and_what_is_not_stored_or_looked_up_is_counted() {
    let redis = Redis::start_requiring(Some(PASSWORD));
    let file = password_file("wrong", "not-the-password");
    acks_without_a_usable_store(with_password_file(&redis, &file)).await;
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[test]
fn a_refused_password_is_logged_as_such_and_never_printed() {
    use common::process::{Served, BIN};
    let redis = Redis::start_requiring(Some(PASSWORD));
    let file = password_file("logged", "not-the-password");
    // The binary's log goes to a file, read while it runs: the refusal is logged once the
    // connection's own retries give up, a few seconds after start.
    let log = file.with_file_name("log");
    let addr = format!("127.0.0.1:{}", common::process::free_port());
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", &addr, "--no-metrics", "--no-traces"])
        .args(["--label-store", &redis.url(), "--label-store-password-file"])
        .arg(&file)
        .env_remove("INFERSCOPE_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::process::wait_healthy(&mut child, &addr);
    let served = Served {
        child: Some(child),
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let logged = std::fs::read_to_string(&log).unwrap();
        if logged.contains("refused the password") || Instant::now() > deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(served);
    assert!(logged.contains("refused the password"), "{logged}");
    assert!(!logged.contains("not-the-password"), "{logged}");
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}
