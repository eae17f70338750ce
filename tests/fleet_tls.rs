//! The fleet's label store over TLS (`rediss://`) with a private CA: the sidecar and
//! `inferscope labels` verify Redis's certificate against the system's roots, which
//! `SSL_CERT_FILE` extends (rustls-native-certs, the `redis` crate's TLS), and refuse a server
//! they cannot verify. Alone in its binary: it sets `SSL_CERT_FILE` for the process.

mod common;

use common::{redis::Redis, tls::TestCa};
use inferscope::config::Config;
use std::process::Command;

fn labels_cli(
    file: &std::path::Path,
    store: &str,
    ca: Option<&std::path::Path>,
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inferscope"));
    command.arg("labels").arg(file).args(["--store", store]);
    command.env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_and_labels_cross_a_tls_redis_with_a_private_ca() {
    let dir = common::tls::temp_dir("fleet-tls");
    let ca = TestCa::new(&dir, "redis");
    let server = ca.server();
    let (redis, tls_port) = Redis::start_tls(&server.cert, &server.key);
    let store = format!("rediss://localhost:{tls_port}/0");

    // Without the CA the server cannot be verified: nothing is sent, and the command says why.
    let file = dir.join("labels.csv");
    std::fs::write(&file, "request_id,model,version,class\nr0,m,1,yes\n").unwrap();
    let refused = labels_cli(&file, &store, None);
    assert_eq!(refused.status.code(), Some(4));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("certificate"), "{said}");

    // With it, the sidecar's predictions go to Redis over TLS and the labels of the command
    // come back through the stream; SAFETY of set_var: this binary's only test, before any
    // thread reads the environment.
    std::env::set_var("SSL_CERT_FILE", &ca.cert);
    let sidecar = common::start(Config {
        label_store: Some(store.clone()),
        ..common::config()
    })
    .await;
    let mut client = sidecar.client().await;
    let records = (0..20)
        .map(|i| common::classified(format!("r{i}"), ["yes", "no"][i % 2]))
        .collect();
    let ack = client
        .submit_records(common::batch(1, "m", records))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 20);
    redis.wait_for_predictions(20);
    let rows: String = (0..20).map(|i| format!("r{i},m,1,yes\n")).collect();
    std::fs::write(&file, format!("request_id,model,version,class\n{rows}")).unwrap();
    let sent = labels_cli(&file, &store, Some(&ca.cert));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    redis.wait_for_predictions(0);
    let (metrics, _) = sidecar.stop().await;
    let joined = common::value(
        &metrics,
        "inferscope.labels.joined",
        &[("source", "delayed")],
    );
    assert_eq!(joined, 20);
    let _ = std::fs::remove_dir_all(dir);
}
