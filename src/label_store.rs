//! The label store a fleet shares (`--label-store redis://…`; design: `docs/fleet-design.md`):
//! predictions that wait for a delayed label are written to Redis by whichever sidecar saw them,
//! and a label arriving at any sidecar takes its prediction out (`GETDEL`, atomic: each pair is
//! scored by one sidecar of the fleet). A pending prediction is one key,
//! `{<model>@<version>}:p:<request id>` (the hash tag keeps a model version on one cluster slot),
//! holding `quality::shared`'s bytes, with `--label-ttl-seconds` as Redis's own TTL; `SET … NX`
//! keeps the first prediction of a request id, as the in-memory store does.
//!
//! Nothing on the record path waits for Redis: shards hand each batch's predictions to a writer
//! task through a bounded queue and go on (a full queue, or Redis unreachable, drops them:
//! counted in `inferscope.label_store.dropped`, logged once per outage). The writer sends one
//! pipeline per batch. A label batch looks its predictions up in one pipeline, waiting at most
//! `--label-store-timeout-ms`; past it, or for a label whose prediction is not stored yet, the
//! label is held in the shard's memory and looked up again every second until its hold is
//! nearly over (ingest's label retry). A lookup that fails is counted in
//! `inferscope.label_store.lookup_failures`; every failure is logged once per outage. The
//! connection is made in the background and remade with backoff by the `redis` crate's
//! `ConnectionManager`, so Redis absent at start delays nothing. The password may come from a
//! file (`--label-store-password-file`, a mounted Secret) instead of the URL; it never reaches
//! a log.

use crate::{
    events::{LabelStoreDown, LabelStoreRecovered, Outage, PredictionsNotStored},
    models::ModelKey,
    self_metrics::SelfStats,
};
use redis::{aio::ConnectionManager, Cmd};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot, watch};

/// Batches of predictions waiting for the writer: with 1000-record batches about 64 000
/// predictions, ~10 MB (measured at 1024 batches: 230 MB more RSS under a load Redis could not
/// absorb); past it batches are dropped and counted.
const WRITE_QUEUE: usize = 64;
/// Pipelines the writer keeps in flight at once.
const MAX_IN_FLIGHT: usize = 8;
/// Pause between two attempts to connect while Redis cannot be reached, doubled up to
/// [`MAX_CONNECT_BACKOFF`].
const FIRST_CONNECT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// How long the writer waits for the first connection before dropping what it has: a sidecar
/// started beside a healthy Redis loses nothing to the race between its first batch and its
/// first connection. Only the writer waits; ingest never does.
const FIRST_CONNECTION_GRACE: Duration = Duration::from_secs(2);

/// Predictions of one model version for the store, as `(request id, encoded prediction)`: the
/// key is held once per run of a batch's predictions, not once per prediction.
#[derive(Debug)]
pub struct StoredPredictions {
    pub key: ModelKey,
    pub predictions: Vec<(String, Vec<u8>)>,
}

enum Write {
    Predictions(Vec<StoredPredictions>),
    Flush(oneshot::Sender<()>),
}

/// The store's handle, shared by the shards (writes) and ingest (lookups); cheap to clone.
#[derive(Clone)]
pub struct LabelStore {
    writes: mpsc::Sender<Write>,
    connection: watch::Receiver<Option<ConnectionManager>>,
    timeout: Duration,
    stats: Arc<SelfStats>,
    outage: Arc<Outage>,
    /// Where it points, with any password left out (for logs).
    pub redacted: String,
}

impl std::fmt::Debug for LabelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelStore")
            .field("redis", &self.redacted)
            .finish()
    }
}

/// The label store's password, read from `--label-store-password-file`; printed as
/// `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct Password(Arc<str>);

impl Password {
    /// The password in `path`, without surrounding whitespace (a Secret file often ends with a
    /// newline).
    pub fn read(path: Option<PathBuf>) -> Result<Option<Self>, crate::config::ConfigError> {
        use crate::config::ConfigError;
        const SETTING: &str = "INFERSCOPE_LABEL_STORE_PASSWORD_FILE (--label-store-password-file)";
        let Some(path) = path else {
            return Ok(None);
        };
        match String::from_utf8(crate::security::read_secret(SETTING, &path)?) {
            Ok(password) if !password.is_empty() => Ok(Some(Self(password.into()))),
            _ => Err(ConfigError::Invalid {
                setting: SETTING,
                value: path.display().to_string(),
                fix: "the file must hold the password as UTF-8 text, not empty",
            }),
        }
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A client of the Redis at `url`, with `password` in place of the URL's (the user, for a
/// Redis ACL, stays the URL's).
pub fn client(url: &str, password: Option<&Password>) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info()?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(&*password.0);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info)
}

/// `url` with its password (if any) replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A command on one pending prediction's key, with room for `more` further arguments of
/// `more_bytes` in all: its buffers are sized once, and the key is written straight into them
/// (the writer and the lookups build one per prediction; BENCHMARKS.md, "Fleet").
fn keyed(name: &str, model: &str, version: &str, request_id: &str, more: (usize, usize)) -> Cmd {
    let key = model.len() + version.len() + request_id.len() + 6;
    let mut cmd = Cmd::with_capacity(2 + more.0, name.len() + key + more.1);
    cmd.arg(name).arg(PendingKey {
        model,
        version,
        request_id,
    });
    cmd
}

/// A pending prediction's key, `{<model>@<version>}:p:<request id>`, as a command argument, written without a `String` of its own.
struct PendingKey<'a> {
    model: &'a str,
    version: &'a str,
    request_id: &'a str,
}

impl redis::ToRedisArgs for PendingKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        for part in ["{", self.model, "@", self.version, "}:p:", self.request_id] {
            // Writes into the command's buffer: cannot fail.
            let _ = arg.write_all(part.as_bytes());
        }
    }
}

impl LabelStore {
    /// Starts connecting to `url` (with `password` in place of the URL's, if given) in the
    /// background and the writer task; fails only on a URL that cannot be used.
    pub fn start(
        url: &str,
        password: Option<&Password>,
        ttl: Duration,
        timeout: Duration,
        stats: Arc<SelfStats>,
    ) -> redis::RedisResult<Self> {
        let client = client(url, password)?;
        let (connected, connection) = watch::channel(None);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let store = Self {
            writes,
            connection,
            timeout,
            stats,
            outage: Arc::new(Outage::default()),
            redacted: redact(url),
        };
        tokio::spawn(connect(client, connected, timeout, store.redacted.clone()));
        tokio::spawn(store.clone().write(queue, ttl.as_secs().max(1)));
        Ok(store)
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.connection.borrow().clone()
    }

    /// The connection as it is made and remade, for the fleet's other users of the same Redis
    /// (`src/fleet.rs`).
    pub fn connection_watch(&self) -> watch::Receiver<Option<ConnectionManager>> {
        self.connection.clone()
    }

    /// Queues a batch's predictions; never waits.
    pub fn put(&self, predictions: Vec<StoredPredictions>) {
        let n = predictions.iter().map(|p| p.predictions.len()).sum();
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
            self.writes.try_send(Write::Predictions(predictions))
        {
            self.stats.emit(&PredictionsNotStored {
                predictions: n,
                why: "the writer's queue is full",
            });
        }
    }

    /// Waits (at most `within`) until what was queued before is written or dropped.
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.writes.send(Write::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }

    async fn write(self, mut queue: mpsc::Receiver<Write>, ttl_seconds: u64) {
        use futures_util::StreamExt;
        let mut first = self.connection.clone();
        let _ = tokio::time::timeout(FIRST_CONNECTION_GRACE, first.wait_for(Option::is_some)).await;
        // Pipelines in flight at once on the multiplexed connection: round trips overlap, so a
        // busy sidecar's writer is not held to one batch per round trip.
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                Some((n, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(n, outcome);
                }
                write = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => match write {
                    None => break,
                    Some(Write::Flush(done)) => {
                        while let Some((n, outcome)) = in_flight.next().await {
                            self.settle(n, outcome);
                        }
                        let _ = done.send(());
                    }
                    Some(Write::Predictions(predictions)) => {
                        let n = predictions.iter().map(|p| p.predictions.len()).sum();
                        let Some(mut connection) = self.connection() else {
                            self.stats.emit(&PredictionsNotStored {
                                predictions: n,
                                why: "Redis is not connected",
                            });
                            continue;
                        };
                        let mut pipe = redis::Pipeline::with_capacity(n);
                        for run in &predictions {
                            let (model, version) = (&run.key.model, &run.key.version);
                            for (request_id, value) in &run.predictions {
                                let mut set =
                                    keyed("SET", model, version, request_id, (4, value.len() + 24));
                                set.arg(value).arg("EX").arg(ttl_seconds).arg("NX");
                                pipe.add_command(set).ignore();
                            }
                        }
                        let timeout = self.timeout;
                        in_flight.push(async move {
                            let outcome = tokio::time::timeout(
                                timeout,
                                pipe.query_async::<()>(&mut connection),
                            )
                            .await;
                            (n, outcome)
                        });
                    }
                },
            }
        }
    }

    /// Counts a pipeline's outcome.
    fn settle(
        &self,
        n: usize,
        outcome: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>,
    ) {
        match outcome {
            Ok(Ok(())) => self.outage.recovered(&LabelStoreRecovered {
                redis: &self.redacted,
            }),
            Ok(Err(e)) => self.failed(n, &e.to_string()),
            Err(_) => self.failed(n, "timed out"),
        }
    }

    /// Logs a failed request if it starts an outage.
    fn down(&self, error: &str) {
        self.outage.failed(
            &LabelStoreDown {
                redis: &self.redacted,
                error,
            },
            crate::events::Uncounted,
        );
    }

    fn failed(&self, predictions: usize, error: &str) {
        self.down(error);
        self.stats.emit(&PredictionsNotStored {
            predictions,
            why: "the write failed",
        });
    }

    /// Takes the stored predictions of `labels` (model, version, request id) out of the store
    /// in one round trip, in order (`None` where there is none); `None` as a whole when Redis is
    /// not connected or does not answer within the timeout (logged if that starts an outage;
    /// the caller counts the labels).
    pub async fn take(&self, labels: &[(&str, &str, &str)]) -> Option<Vec<Option<Vec<u8>>>> {
        if labels.is_empty() {
            return Some(Vec::new());
        }
        let Some(mut connection) = self.connection() else {
            self.down("not connected");
            return None;
        };
        let mut pipe = redis::Pipeline::with_capacity(labels.len());
        for (model, version, request_id) in labels {
            pipe.add_command(keyed("GETDEL", model, version, request_id, (0, 0)));
        }
        match tokio::time::timeout(self.timeout, pipe.query_async(&mut connection)).await {
            Ok(Ok(found)) => {
                self.outage.recovered(&LabelStoreRecovered {
                    redis: &self.redacted,
                });
                Some(found)
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("timed out");
                None
            }
        }
    }
}

/// Connects (retrying with backoff until it works), then leaves reconnection to the manager.
async fn connect(
    client: redis::Client,
    slot: watch::Sender<Option<ConnectionManager>>,
    timeout: Duration,
    redacted: String,
) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
        .set_response_timeout(Some(timeout));
    let mut backoff = FIRST_CONNECT_BACKOFF;
    let mut logged = false;
    loop {
        match client
            .get_connection_manager_with_config(config.clone())
            .await
        {
            Ok(manager) => {
                tracing::info!(redis = %redacted, "label store connected");
                slot.send_replace(Some(manager));
                return;
            }
            Err(e) => {
                if !logged {
                    if e.kind() == redis::ErrorKind::AuthenticationFailed {
                        tracing::error!(redis = %redacted, error = %e, "the label store refused the password (check --label-store-password-file, or the user and password of --label-store); retrying in the background (predictions are not stored meanwhile)");
                    } else {
                        tracing::warn!(redis = %redacted, error = %e, "cannot reach the label store; retrying in the background (predictions are not stored meanwhile)");
                    }
                    logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("redis://ops:s3cret@redis:6379/0"),
            "redis://ops:***@redis:6379/0"
        );
        assert_eq!(redact("rediss://:s3cret@r:6380"), "rediss://:***@r:6380");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_password_file_is_trimmed_replaces_the_urls_and_is_never_printed() {
        let dir = std::env::temp_dir().join(format!("inferscope-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, "s3cret pass\n").unwrap();
        let password = Password::read(Some(path.clone())).unwrap().unwrap();
        assert!(!format!("{password:?}").contains("s3cret"));
        let acl = client("redis://ops:old@127.0.0.1:6379/2", Some(&password)).unwrap();
        let settings = acl.get_connection_info().redis_settings();
        assert_eq!(settings.password(), Some("s3cret pass"));
        assert_eq!(settings.username(), Some("ops"));
        assert_eq!(settings.db(), 2);
        let plain = client("redis://127.0.0.1:6379", Some(&password)).unwrap();
        assert_eq!(
            plain.get_connection_info().redis_settings().password(),
            Some("s3cret pass")
        );

        std::fs::write(&path, " \n").unwrap();
        let err = Password::read(Some(path)).unwrap_err().to_string();
        assert!(err.contains("--label-store-password-file"), "{err}");
        let err = Password::read(Some(dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--label-store-password-file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn key(model: &str, version: &str, request_id: &str) -> String {
        format!("{{{model}@{version}}}:p:{request_id}")
    }

    #[test]
    fn a_model_version_is_one_hash_tag() {
        assert_eq!(key("fraud", "7", "r-1"), "{fraud@7}:p:r-1");
        let mut built = redis::cmd("GETDEL");
        built.arg(key("fraud", "7", "r-1"));
        assert_eq!(
            keyed("GETDEL", "fraud", "7", "r-1", (0, 0)).get_packed_command(),
            built.get_packed_command()
        );
    }
}
