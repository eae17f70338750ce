//! The `inferscope` binary run as a user runs it: `serve` on a free loopback port, waited for
//! with `inferscope health`, stopped with SIGTERM or SIGKILL.

use std::{
    io::Read,
    net::TcpListener,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_inferscope");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `inferscope health` finds the sidecar at `addr` serving.
pub fn health(addr: &str) -> bool {
    Command::new(BIN)
        .args(["health", "--addr", addr, "--timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A running `inferscope serve`; killed if dropped.
pub struct Served {
    pub child: Option<Child>,
    pub addr: String,
}

/// Starts `serve` on a free port with no export and `extra` settings, output to pipes; returns
/// once it answers health (panics with its output if it exits first).
pub fn serve(extra: &[&str]) -> Served {
    let addr = format!("127.0.0.1:{}", free_port());
    serve_on(&addr, &addr, extra)
}

/// [`serve`] listening on `listen`, probed for health on `addr`.
pub fn serve_on(listen: &str, addr: &str, extra: &[&str]) -> Served {
    let addr = addr.to_owned();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--no-metrics", "--no-traces"])
        .args(extra)
        .env_remove("INFERSCOPE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(&mut child, &addr);
    Served {
        child: Some(child),
        addr,
    }
}

/// Waits until `child` answers health on `addr`; panics with its output if it exits first.
pub fn wait_healthy(child: &mut Child, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health(addr) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let _ = { pipe }.read_to_string(&mut out);
            }
            panic!("serve exited ({status}): {out}");
        }
        assert!(Instant::now() < deadline, "serve never answered health");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `signal` (e.g. "-TERM", "-KILL") and returns the exit and everything written.
    pub fn stop(mut self, signal: &str) -> Output {
        let child = self.child.take().expect("running");
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything a stopped process wrote (tracing logs go to stdout).
pub fn output(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
