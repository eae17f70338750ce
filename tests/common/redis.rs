//! A real redis-server on loopback for fleet tests, from `.tools/bin` (`tools/install-backends.sh
//! redis` puts it there; CI runs it). No persistence: each test starts an empty one.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Redis {
    child: Child,
    pub port: u16,
    /// `--requirepass`, if the server asks for one: [`Self::command`] authenticates with it.
    password: Option<String>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_requiring(None)
    }

    /// [`Self::start`], with a server that requires `password` (`--requirepass`) if given.
    pub fn start_requiring(password: Option<&str>) -> Self {
        Self::start_with(password, &[])
    }

    /// [`Self::start`], also listening with TLS (`rediss://`, [`Self::tls_url`]) with the
    /// server certificate `cert` and its `key`; the plain port stays for the test's own commands.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> (Self, u16) {
        let tls_port = super::process::free_port().to_string();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let tls = [
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-auth-clients",
            "no",
        ];
        (Self::start_with(None, &tls), tls_port.parse().unwrap())
    }

    fn start_with(password: Option<&str>, extra: &[&str]) -> Self {
        Self::start_on(super::process::free_port(), password, extra)
    }

    /// Kills the server (SIGKILL) and starts an empty one on the same port, as a Redis that
    /// crashed and came back.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let password = self.password.take();
        *self = Self::start_on(self.port, password.as_deref(), &[]);
    }

    fn start_on(port: u16, password: Option<&str>, extra: &[&str]) -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/redis-server");
        assert!(
            bin.exists(),
            "{} is missing: run tools/install-backends.sh redis",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(password.map(|p| ["--requirepass", p]).into_iter().flatten())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let password = password.map(str::to_owned);
        let redis = Self {
            child,
            port,
            password,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.try_command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one command; returns the first line of the reply (`+OK`, `:42`, …).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).expect("redis answers")
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        // With a password, AUTH goes first in the same write; its answer is read and skipped.
        let auth = self.password.as_deref().map(|p| ["AUTH", p]);
        let commands: Vec<&[&str]> = auth.iter().map(|a| &a[..]).chain([args]).collect();
        let mut request = String::new();
        for command in &commands {
            request.push_str(&format!("*{}\r\n", command.len()));
            for a in *command {
                request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reader = BufReader::new(&mut stream);
        let mut line = String::new();
        for _ in &commands {
            line.clear();
            reader.read_line(&mut line).ok()?;
        }
        Some(line.trim_end().to_owned())
    }

    /// Keys in database 0.
    pub fn keys(&self) -> i64 {
        self.command(&["DBSIZE"])
            .trim_start_matches(':')
            .parse()
            .unwrap()
    }

    /// Predictions waiting for a label in the shared store (keys `{model@version}:p:…`; other
    /// keys, such as the label stream, are not counted).
    pub fn predictions(&self) -> i64 {
        self.command(&["EVAL", "return #redis.call('KEYS', '*}:p:*')", "0"])
            .trim_start_matches(':')
            .parse()
            .unwrap()
    }

    /// Waits (at most 10 s) until the store holds `want` predictions.
    pub fn wait_for_predictions(&self, want: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.predictions() != want {
            assert!(
                Instant::now() < deadline,
                "redis holds {} predictions, not {want}",
                self.predictions()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server, for fault tests.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
