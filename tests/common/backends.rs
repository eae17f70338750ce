//! Real backends for end-to-end tests (ARCHITECTURE.md, Testing map): VictoriaMetrics (OTLP/HTTP
//! in, PromQL out) and Arize Phoenix (OTLP traces in, REST out), started from `.tools/` as
//! `tools/install-backends.sh` installs them, on free loopback ports, and killed when dropped.

use serde_json::Value;
use std::{
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A backend process, killed when the test ends however it ends.
pub struct Backend {
    pub child: Child,
    pub _dir: TempDir,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "inferscope-e2e-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

pub fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `tools/install-backends.sh` (the README's test command does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_ready(url: &str, within: Duration, child: &mut Child) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("backend for {url} exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn start_victoria_metrics() -> (Backend, String) {
    let dir = TempDir::new("vm");
    let port = free_port();
    let mut child = Command::new(tool("victoria-metrics"))
        .args([
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.0.display()),
            "-search.latencyOffset=1s".into(),
            "-opentelemetry.usePrometheusNaming".into(),
            "-loggerLevel=WARN".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start victoria-metrics");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(
        &format!("{base}/health"),
        Duration::from_secs(30),
        &mut child,
    )
    .await;
    (Backend { child, _dir: dir }, base)
}

pub async fn start_phoenix() -> (Backend, String, String) {
    let dir = TempDir::new("phoenix");
    let (http, grpc) = (free_port(), free_port());
    let mut child = Command::new(tool("phoenix"))
        .arg("serve")
        .env("PHOENIX_TELEMETRY_ENABLED", "false")
        .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
        .env("PHOENIX_WORKING_DIR", &dir.0)
        .env("PHOENIX_HOST", "127.0.0.1")
        .env("PHOENIX_PORT", http.to_string())
        .env("PHOENIX_GRPC_PORT", grpc.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start phoenix");
    let base = format!("http://127.0.0.1:{http}");
    wait_ready(
        &format!("{base}/readyz"),
        Duration::from_secs(120),
        &mut child,
    )
    .await;
    (
        Backend { child, _dir: dir },
        base,
        format!("http://127.0.0.1:{grpc}"),
    )
}

/// The JSON answer of an instant PromQL query.
pub async fn instant_query(client: &reqwest::Client, base: &str, query: &str) -> Value {
    client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of a scalar PromQL query, polled until `done` accepts it (fresh samples take a
/// moment to become searchable even after a flush) or the deadline passes; returns the last value
/// seen.
pub async fn poll_promql(base: &str, query: &str, done: impl Fn(f64) -> bool) -> Option<f64> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        let _ = client
            .get(format!("{base}/internal/force_flush"))
            .send()
            .await;
        let body = instant_query(&client, base, query).await;
        last = body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if last.is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    last
}

/// Polls until the query is exactly `want`.
pub async fn promql(base: &str, query: &str, want: f64) -> Option<f64> {
    poll_promql(base, query, |v| v == want).await
}

/// Asserts that a scalar PromQL query reaches `want`.
pub async fn assert_promql(base: &str, query: &str, want: f64) {
    assert_eq!(promql(base, query, want).await, Some(want), "{query}");
}

/// The spans of a trace in Phoenix's default project, polled until there are `want` of them.
pub async fn phoenix_spans(base: &str, trace_id: &str, want: usize) -> Vec<Value> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut spans = Vec::new();
    while Instant::now() < deadline {
        let response = client
            .get(format!("{base}/v1/projects/default/spans"))
            .query(&[("trace_id", trace_id), ("limit", "100")])
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            let body: Value = response.json().await.unwrap();
            spans = body["data"].as_array().cloned().unwrap_or_default();
            if spans.len() >= want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    spans
}

/// Runs a client script (off the runtime's threads) and returns the JSON it printed on stdout;
/// panics with its stderr if it failed.
pub async fn run_json(mut command: Command) -> Value {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
