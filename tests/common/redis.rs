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
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/redis-server");
        assert!(
            bin.exists(),
            "{} is missing: run tools/install-backends.sh redis",
            bin.display()
        );
        let port = super::process::free_port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self { child, port };
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
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    /// Keys in database 0.
    pub fn keys(&self) -> i64 {
        self.command(&["DBSIZE"])
            .trim_start_matches(':')
            .parse()
            .unwrap()
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
