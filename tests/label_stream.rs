//! Labels from outside the pod: `inferscope labels` (the real binary) appends label files to the
//! Redis stream `inferscope:labels`, and the sidecars of a fleet (in-process, sharing one
//! redis-server) read it in one consumer group: each label is joined exactly once across the
//! fleet, bad rows are reported with their file and line, entries a dead sidecar left pending are
//! taken over, and entries that are not labels are skipped and counted.

mod common;

use common::{process::BIN, redis::Redis, value};
use inferscope::{config::Config, label_stream, pb};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

const M: [(&str, &str); 2] = [
    ("inferscope.model.name", "m"),
    ("inferscope.model.version", "1"),
];

fn fleet_config(url: String) -> Config {
    Config {
        label_store: Some(url),
        ..common::config()
    }
}

/// Classifier records `r<i>` of m@1 predicting yes or no.
fn predictions(n: usize) -> pb::RecordBatch {
    let records = (0..n)
        .map(|i| common::classified(format!("r{i}"), ["yes", "no"][i % 2]))
        .collect();
    common::batch(1, "m", records)
}

/// A sidecar of the fleet on `config`, with the predictions of `r0`..`r<n-1>` stored in Redis.
async fn start_with_predictions(config: Config, redis: &Redis, n: usize) -> common::TestSidecar {
    let sidecar = common::start(config).await;
    let ack = sidecar
        .client()
        .await
        .submit_records(predictions(n))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted as usize, n);
    redis.wait_for_predictions(n as i64);
    sidecar
}

/// A directory of its own for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "inferscope-label-stream-{test}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Runs `inferscope labels ARGS`, with no label store from the environment.
fn labels(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("labels")
        .args(args)
        .env_remove("INFERSCOPE_LABEL_STORE")
        .env_remove("INFERSCOPE_LABEL_STORE_PASSWORD_FILE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn connection(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Entries of the label stream read by the group but not acknowledged.
fn unacknowledged(redis: &Redis) -> i64 {
    let script = "return redis.call('XPENDING', KEYS[1], ARGV[1])[1]";
    let count = redis.command(&[
        "EVAL",
        script,
        "1",
        label_stream::STREAM,
        label_stream::GROUP,
    ]);
    count.trim_start_matches(':').parse().unwrap()
}

/// Waits until every prediction is taken out of the store and every entry is acknowledged.
fn wait_until_settled(redis: &Redis, within: Duration) {
    let deadline = Instant::now() + within;
    while redis.predictions() != 0 || unacknowledged(redis) != 0 {
        assert!(
            Instant::now() < deadline,
            "after {within:?}: {} predictions still stored, {} entries unacknowledged",
            redis.predictions(),
            unacknowledged(redis)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn joined(metrics: &ExportMetricsServiceRequest) -> i64 {
    value(
        metrics,
        "inferscope.labels.joined",
        &[M[0], M[1], ("source", "delayed")],
    )
}

fn unmatched(metrics: &ExportMetricsServiceRequest) -> i64 {
    value(metrics, "inferscope.labels.unmatched", &[M[0], M[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_from_files_are_joined_exactly_once_across_the_fleet() {
    let redis = Redis::start();
    let b = common::start(fleet_config(redis.url())).await;
    let a = start_with_predictions(fleet_config(redis.url()), &redis, 60).await;

    // r0..r29 in CSV (model and version from the command line), with two bad rows; r30..r59 in
    // JSON Lines (model and version in each row).
    let dir = scratch("fleet");
    let mut csv = String::from("request_id,class,time\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "r{i},{},2026-01-31T10:00:00Z\n",
            ["yes", "no"][i % 3 % 2]
        ));
        if i == 2 {
            csv.push_str("r-missing,,\n"); // line 5: no label
        }
        if i == 5 {
            csv.push_str("r-late,yes,yesterday\n"); // line 9: not a time
        }
    }
    let csv = write(&dir, "labels.csv", &csv);
    let mut jsonl = String::new();
    for i in 30..60 {
        jsonl.push_str(&format!(
            r#"{{"request_id":"r{i}","model":"m","version":"1","class":"{}"}}"#,
            ["yes", "no"][i % 2]
        ));
        jsonl.push('\n');
    }
    let jsonl = write(&dir, "labels.jsonl", &jsonl);

    let out = labels(&[
        csv.to_str().unwrap(),
        "--model",
        "m",
        "--version",
        "1",
        "--store",
        &redis.url(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("labels.csv:5: label: no label"), "{stderr}");
    assert!(stderr.contains("labels.csv:9: time:"), "{stderr}");
    assert!(stdout.contains("read     32 rows"), "{stdout}");
    assert!(stdout.contains("sent     30 labels"), "{stdout}");
    assert!(
        stdout.contains("rejected 2 (invalid_value 1, missing_field 1)"),
        "{stdout}"
    );
    let out = labels(&[jsonl.to_str().unwrap(), "--store", &redis.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sent     30 labels"));

    wait_until_settled(&redis, Duration::from_secs(20));
    let (at_a, _) = a.stop().await;
    let (at_b, _) = b.stop().await;
    // Every label joined its prediction once, at whichever sidecar read it.
    assert_eq!(joined(&at_a) + joined(&at_b), 60);
    assert_eq!(unmatched(&at_a) + unmatched(&at_b), 0);
    // Scored as the files say: r0..r29 are yes/no by i % 3 % 2 against yes/no by i % 2.
    let correct = (0..30).filter(|i| i % 3 % 2 == i % 2).count() + 30;
    let correct_at = |m: &ExportMetricsServiceRequest| {
        let labelled = common::point(
            m,
            "inferscope.quality.accuracy",
            &[M[0], M[1], ("window", "all")],
        );
        match joined(m) {
            0 => 0.0,
            n => labelled.unwrap() * n as f64,
        }
    };
    let scored = correct_at(&at_a) + correct_at(&at_b);
    assert!(
        (scored - correct as f64).abs() < 1e-9,
        "{scored} ≠ {correct}"
    );
    for m in [&at_a, &at_b] {
        assert_eq!(value(m, "inferscope.label_stream.malformed", &[]), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sidecars_labels_are_taken_over_and_entries_that_are_not_labels_skipped() {
    let redis = Redis::start();
    let a = start_with_predictions(fleet_config(redis.url()), &redis, 10).await;

    // A sidecar that read 10 labels and 2 entries that are not labels, then died: appended and
    // read in one transaction, so that A never sees them as new.
    let mut redis_connection = connection(&redis);
    // A made the group at its start, unless it has not got there yet (then BUSYGROUP for A).
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(label_stream::STREAM)
        .arg(label_stream::GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut redis_connection);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..10 {
        let truth = pb::GroundTruth {
            model: "m".into(),
            version: "1".into(),
            request_id: format!("r{i}"),
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName("yes".into())),
            }),
            time_unix_nano: 0,
        };
        label_stream::append(&mut pipe, &truth, 1000);
    }
    for (field, bytes) in [(label_stream::FIELD, &b"\xff\xff"[..]), ("other", b"x")] {
        pipe.cmd("XADD")
            .arg(label_stream::STREAM)
            .arg("*")
            .arg(field)
            .arg(bytes)
            .ignore();
    }
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg(label_stream::GROUP)
        .arg("ghost")
        .arg("STREAMS")
        .arg(label_stream::STREAM)
        .arg(">");
    let (read,): (redis::Value,) = pipe.query(&mut redis_connection).unwrap();
    assert_ne!(read, redis::Value::Nil);
    assert_eq!(unacknowledged(&redis), 12);
    // Pending for less than a minute: nobody takes them over.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(redis.predictions(), 10);

    // As if the ghost had died two minutes ago.
    let ids: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(label_stream::STREAM)
        .arg(label_stream::GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query(&mut redis_connection)
        .unwrap();
    let mut claim = redis::cmd("XCLAIM");
    claim
        .arg(label_stream::STREAM)
        .arg(label_stream::GROUP)
        .arg("ghost")
        .arg(0);
    for (id, ..) in &ids {
        claim.arg(id);
    }
    claim.arg("IDLE").arg(120_000).arg("JUSTID");
    let _: redis::Value = claim.query(&mut redis_connection).unwrap();

    wait_until_settled(&redis, Duration::from_secs(30));
    let (metrics, _) = a.stop().await;
    assert_eq!(joined(&metrics), 10);
    assert_eq!(unmatched(&metrics), 0);
    assert_eq!(value(&metrics, "inferscope.label_stream.malformed", &[]), 2);
}

#[test]
fn bad_rows_and_unusable_inputs_have_their_exit_codes_without_redis() {
    let dir = scratch("cli");
    let csv = write(
        &dir,
        "truth.csv",
        "request_id,model,version,class_index,value,note\n\
         a,m,1,0,,x\n\
         b,m,1,,,x\n\
         c,m,1,1,2.5,x\n\
         d,,1,1,,x\n\
         e,m,1,-3,,x\n\
         f,m,1\n\
         g,m,1,,0.5,x\n",
    );
    let out = labels(&[csv.to_str().unwrap(), "--dry-run"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    for expected in [
        "truth.csv: columns ignored: note",
        "truth.csv:3: label: no label",
        "truth.csv:4: label: more than one label",
        "truth.csv:5: model: no model: give a model column or --model (missing_field)",
        "truth.csv:6: class_index: \"-3\" is not a class index",
        "truth.csv:7: row: 3 cells, the header has 6 (unreadable)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    assert!(stdout.contains("valid    2 labels (dry run"), "{stdout}");
    assert!(
        stdout.contains("rejected 5 (invalid_value 2, missing_field 2, unreadable 1)"),
        "{stdout}"
    );

    // Standard input is JSON Lines; every row good: 0.
    let mut child = Command::new(BIN)
        .args(["labels", "-", "--dry-run", "--model", "m", "--version", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"request_id\":\"a\",\"value\":1}\n\n{\"request_id\":\"b\",\"class\":\"x\",\"time_unix_nano\":5}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("valid    2 labels"));

    // Nothing listens there: 4, before anything is read.
    let store = format!("redis://127.0.0.1:{}/0", common::process::free_port());
    let out = labels(&[csv.to_str().unwrap(), "--store", &store]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the label store"));
    // A file whose format cannot be told, or that is missing: 1, and nothing is read.
    let out = labels(&["truth.txt", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--format"),
        "{}",
        text(&out.stderr)
    );
    let out = labels(&[csv.to_str().unwrap(), "missing.csv", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_and_the_sidecars_use_the_password_file() {
    let redis = Redis::start_requiring(Some("s3cret-word"));
    let dir = scratch("password");
    let password = write(&dir, "password", "s3cret-word\n");
    let wrong = write(&dir, "wrong", "not-it");
    let config = Config {
        label_store_password: inferscope::label_store::Password::read(Some(password.clone()))
            .unwrap(),
        ..fleet_config(redis.url())
    };
    let a = start_with_predictions(config, &redis, 4).await;
    let csv = write(
        &dir,
        "labels.csv",
        "request_id,class\nr0,yes\nr1,no\nr2,yes\nr3,no\n",
    );
    let csv = csv.to_str().unwrap();
    let common = [csv, "--model", "m", "--version", "1", "--store"];
    let out = labels(
        &[
            &common[..],
            &[&redis.url(), "--password-file", wrong.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("not-it"));
    let out = labels(
        &[
            &common[..],
            &[&redis.url(), "--password-file", password.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    wait_until_settled(&redis, Duration::from_secs(20));
    let (metrics, _) = a.stop().await;
    assert_eq!(joined(&metrics), 4);
}
