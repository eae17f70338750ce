//! The `inferscope` binary as a user runs it: bad configuration fails naming the setting, `serve`
//! answers `health`, and SIGTERM ends it with exit code 0.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::process::{free_port, health, BIN};

#[test]
fn bad_configuration_fails_at_start_naming_the_setting() {
    let out = Command::new(BIN)
        .args(["serve", "--shards", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--shards"), "{stderr}");

    let out = Command::new(BIN)
        .arg("serve")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_TRACES_SAMPLER"), "{stderr}");
}

#[test]
fn serve_answers_health_and_exits_cleanly_on_sigterm() {
    let addr = format!("127.0.0.1:{}", free_port());
    assert!(!health(&addr), "nothing listens yet");
    let out = common::process::serve_on(&addr, &addr, &[]).stop("-TERM");
    assert_eq!(out.status.code(), Some(0));
    assert!(!health(&addr), "stopped");
}

#[test]
fn profile_builds_a_loadable_profile_from_a_real_csv() {
    let dir = std::env::temp_dir().join(format!("inferscope-cli-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("wine.profile.json");
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wine.csv");
    let out = Command::new(BIN)
        .args(["profile", csv, "--model", "wine", "--version", "1"])
        .args(["--prediction-column", "cultivar", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("178 records of wine@1"), "{summary}");
    assert!(summary.contains("13 numeric, 1 categorical"), "{summary}");
    let profile = inferscope::drift::profile::Profile::load(&output).unwrap();
    assert_eq!(profile.records, 178);
    assert!(profile
        .feature(inferscope::drift::profile::PREDICTION)
        .is_some());

    // A missing file and a file of another kind: one line naming the problem, exit 1.
    for (input, says) in [
        ("/nonexistent.csv", "cannot read"),
        ("/etc/hostname", ".csv"),
    ] {
        let out = Command::new(BIN)
            .args(["profile", input, "--model", "m", "--version", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(says) && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn categorical_codes_keep_their_text() {
    let dir = std::env::temp_dir().join(format!("inferscope-cli-zip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("ref.csv");
    std::fs::write(&csv, "zip,amount\n02134,1.5\n02134,2\n10001,3\n").unwrap();
    let output = dir.join("p.json");
    let out = Command::new(BIN)
        .arg("profile")
        .arg(&csv)
        .args([
            "--model",
            "m",
            "--version",
            "1",
            "--categorical",
            "zip",
            "--output",
        ])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = inferscope::drift::profile::Profile::load(&output).unwrap();
    let Some(inferscope::drift::profile::FeatureProfile::Categorical(zip)) = profile.feature("zip")
    else {
        panic!("zip is categorical");
    };
    let values: Vec<&str> = zip.categories.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(values, ["02134", "10001"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `serve` on `listen` with output to pipes (as under Kubernetes) until it answers health
/// on `probe`, stops it with SIGTERM and returns everything it wrote.
fn serve_output(listen: &str, probe: &str, extra: &[&str]) -> String {
    let out = common::process::serve_on(listen, probe, extra).stop("-TERM");
    assert_eq!(out.status.code(), Some(0));
    common::process::output(&out)
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let addr = format!("127.0.0.1:{}", free_port());
    let logs = serve_output(&addr, &addr, &[]);
    assert!(logs.contains("inferscope serving"), "{logs}");
    assert!(!logs.contains("\x1b["), "{logs:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let addr = format!("127.0.0.1:{}", free_port());
    let logs = serve_output(&addr, &addr, &["--log-format", "json"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    assert!(logs.contains("inferscope serving"), "{logs}");
}

#[test]
fn listening_beyond_loopback_without_tls_warns() {
    let port = free_port();
    let logs = serve_output(
        &format!("0.0.0.0:{port}"),
        &format!("127.0.0.1:{port}"),
        &[],
    );
    let warning = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("without TLS"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(warning.contains("0.0.0.0"), "{warning}");

    // On loopback (the default) there is nothing to warn about.
    let addr = format!("127.0.0.1:{}", free_port());
    let logs = serve_output(&addr, &addr, &[]);
    assert!(!logs.contains("without TLS"), "{logs}");
}

/// `inferscope health` keeps working for probes when ingest has TLS and a token: it speaks TLS
/// with `--tls-ca`, and health is not behind the token.
#[test]
fn health_probes_work_with_tls_and_a_token() {
    let dir = common::tls::temp_dir("cli-tls");
    let ca = common::tls::TestCa::new(&dir, "server");
    let server = ca.server();
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut sidecar = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--no-metrics", "--no-traces"])
        .arg("--tls-cert")
        .arg(&server.cert)
        .arg("--tls-key")
        .arg(&server.key)
        .env("INFERSCOPE_AUTH_TOKEN_FILE", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tls_health = || {
        Command::new(BIN)
            .args(["health", "--addr", &addr, "--timeout", "1", "--tls-ca"])
            .arg(&ca.cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tls_health() {
        assert!(
            Instant::now() < deadline,
            "serve never answered health over TLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!health(&addr), "a plaintext probe is refused");
    let killed = Command::new("kill")
        .args(["-TERM", &sidecar.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(sidecar.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// CPU seconds a process has used (user + system, from `/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn out_of_descriptors_the_accept_loop_waits_instead_of_spinning() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new("bash")
        .args([
            "-c",
            &format!("ulimit -n 64; exec {BIN} serve --listen {addr} --shards 1 --no-metrics --no-traces"),
        ])
        .env("INFERSCOPE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::process::wait_healthy(&mut server, &addr);
    // More connections than descriptors: the rest wait in the backlog, and accept fails.
    let connections: Vec<_> = (0..120)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(server.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(server.id()) - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in 2 s: the accept loop spins"
    );
    drop(connections);
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = server.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        logs.matches("accepting a connection failed").count(),
        1,
        "logged once: {logs}"
    );
}
