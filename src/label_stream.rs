//! Labels from outside the pod (issue 11; `docs/fleet-design.md`, decision 5): ground truth that
//! a nightly job or a labelling tool cannot send to a sidecar (each listens on its pod's
//! loopback) is appended by `inferscope labels` (`crate::label_import`) to a Redis stream,
//! [`STREAM`], in the Redis of `--label-store`; every sidecar of the fleet reads it in the
//! consumer group [`GROUP`], so each entry goes to one sidecar.
//!
//! An entry is one field, [`FIELD`], holding a `pb::GroundTruth` as protobuf bytes (model,
//! version, request id, label, time: exact, and the type the sidecar validates anyway). The
//! consumer hands each read (up to [`READ_COUNT`] entries) to `Ingest::accept_labels` as one
//! `pb::LabelBatch`: the path of `SubmitLabels`, with its validation, its lookup of the
//! predictions in the label store and its join. The entries are acknowledged (`XACK`) once the
//! batch is accepted; a batch ingest refuses (shard queues full, memory budget full) is offered
//! again after a pause and acknowledged only then.
//!
//! Exactly once: an entry that is never acknowledged (its sidecar died, or stopped mid-batch)
//! stays pending in the group and is taken over by another sidecar with `XAUTOCLAIM` once it has
//! been idle for [`CLAIM_MIN_IDLE`]. Such a redelivered label may already have been joined: its
//! prediction was then taken out of the store (`GETDEL`, `crate::label_store`), so it finds
//! none and counts as `duplicate` (at the sidecar that joined it) or `unknown_request`
//! (elsewhere), never scored twice; the same holds for a batch ingest refused for longer than
//! [`CLAIM_MIN_IDLE`], which another sidecar may take over meanwhile. An entry that does not
//! decode is acknowledged, counted in `inferscope.label_stream.malformed` and logged once.
//!
//! The consumer has a connection of its own: its `XREADGROUP … BLOCK` would hold up the label
//! store's lookups on a shared one. Redis away: it reconnects with backoff, logging the outage
//! once; records and `SubmitLabels` never wait for it.

use crate::{
    events::{LabelEntriesMalformed, LabelStreamDown, LabelStreamRecovered, Outage, Uncounted},
    ingest::Ingest,
    label_store::{self, Password},
    pb,
    self_metrics::SelfStats,
};
use prost::Message;
use redis::{aio::MultiplexedConnection, Value};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

/// The stream labels are appended to.
pub const STREAM: &str = "inferscope:labels";
/// The consumer group every sidecar reads the stream in.
pub const GROUP: &str = "inferscope";
/// The field of an entry that holds the encoded `pb::GroundTruth`.
pub const FIELD: &str = "gt";
/// Entries the stream keeps (`XADD … MAXLEN ~`): about 50 MB of Redis memory with short
/// request ids (measured: 48 bytes an entry for 100 000 labels of ~35 encoded bytes). Trimming
/// drops the oldest entries whether or not they were read, so it must exceed what the fleet
/// leaves unread (a backlog while every sidecar is down); `inferscope labels --max-len` changes
/// it.
pub const DEFAULT_MAX_LEN: u64 = 1_000_000;
/// Entries read at once: one label batch for ingest.
pub const READ_COUNT: usize = 1000;
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// How long an entry stays pending (read, not acknowledged) before another sidecar takes it
/// over: longer than any batch takes to be accepted, short enough that the labels of a dead
/// sidecar are joined within minutes.
pub const CLAIM_MIN_IDLE: Duration = Duration::from_secs(60);
/// How often a sidecar looks for entries to take over (`XAUTOCLAIM`, a bounded scan).
const CLAIM_PERIOD: Duration = Duration::from_secs(10);
/// Pauses between attempts while Redis cannot be reached or ingest refuses a batch, doubled up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects, with `response` as the longest wait for an answer.
pub async fn connect(
    client: &redis::Client,
    response: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Creates the consumer group (and the stream) if missing. `$`: a new group starts at the end
/// of the stream, so entries trimmed long ago, or read by a group since deleted, are not
/// replayed; `inferscope labels` creates it too before it appends, so that a first run before
/// any sidecar loses nothing.
pub async fn create_group(connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(connection)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Adds the `XADD` of one encoded label to `pipe`.
pub fn append(pipe: &mut redis::Pipeline, truth: &pb::GroundTruth, max_len: u64) {
    pipe.cmd("XADD")
        .arg(STREAM)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg(FIELD)
        .arg(truth.encode_to_vec())
        .ignore();
}

/// One entry read from the stream: its id and its label, or why it is not one.
#[derive(Debug)]
struct Entry {
    id: String,
    truth: Result<pb::GroundTruth, String>,
}

/// The text of a bulk or simple string.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An entry as Redis sends it: `[id, [field, value, …]]`. `None` for a deleted one (nil).
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = text(&parts.next()?)?;
    let fields = match parts.next() {
        Some(Value::Array(fields)) => fields,
        Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let gt = fields
        .chunks(2)
        .find(|kv| matches!(&kv[0], Value::BulkString(name) if name == FIELD.as_bytes()))
        .and_then(|kv| kv.get(1));
    let truth = match gt {
        Some(Value::BulkString(bytes)) => {
            pb::GroundTruth::decode(bytes.as_slice()).map_err(|e| e.to_string())
        }
        _ => Err(format!("no field {FIELD:?} with a label")),
    };
    Some(Entry { id, truth })
}

fn entries(value: Value) -> Vec<Entry> {
    match value {
        Value::Array(items) => items.into_iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREADGROUP` reply: nil when the wait ended with nothing, else the one
/// stream's entries (`[[name, entries]]`, or a map under RESP3).
fn read_reply(value: Value) -> Vec<Entry> {
    match value {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => entries(pair.pop().expect("two")),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// The cursor and entries of an `XAUTOCLAIM` reply (`[cursor, entries, deleted ids]`).
fn claim_reply(value: Value) -> (String, Vec<Entry>) {
    let Value::Array(mut parts) = value else {
        return ("0-0".into(), Vec::new());
    };
    parts.truncate(2);
    let claimed = parts.pop().map(entries).unwrap_or_default();
    let cursor = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
    (cursor, claimed)
}

/// This sidecar's name in the group: the pod's (`K8S_POD_NAME`, set from the Downward API, so
/// a restarted container keeps it), else host and process id, else random; a second consumer in
/// one process (tests) gets a suffix.
pub fn consumer_name() -> String {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var("K8S_POD_NAME")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
            Some(format!("{}-{}", host.trim(), std::process::id()))
        })
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    match STARTED.fetch_add(1, Relaxed) {
        0 => base,
        n => format!("{base}-{n}"),
    }
}

/// The task that reads the stream for one sidecar.
pub struct LabelStreamConsumer {
    client: redis::Client,
    ingest: Ingest,
    /// Its name in the group.
    name: String,
    /// Entries per read: [`READ_COUNT`], or `--max-batch-records` if lower (a read is one
    /// label batch, which must not be refused as too large).
    count: usize,
    stats: Arc<SelfStats>,
    outage: Outage,
    /// The Redis URL with any password left out (for logs).
    redacted: String,
    shutdown: CancellationToken,
}

impl LabelStreamConsumer {
    /// Starts reading in the background from the Redis at `url` (with `password` in place of
    /// the URL's, if given); fails only when `url` cannot be used. Ends on `shutdown`, after the
    /// batch in hand.
    pub fn start(
        url: &str,
        password: Option<&Password>,
        ingest: Ingest,
        max_batch_records: usize,
        stats: Arc<SelfStats>,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<JoinHandle<()>> {
        let consumer = Self {
            client: label_store::client(url, password)?,
            ingest,
            name: consumer_name(),
            count: READ_COUNT.min(max_batch_records).max(1),
            stats,
            outage: Outage::default(),
            redacted: label_store::redact(url),
            shutdown,
        };
        tracing::info!(
            redis = %consumer.redacted,
            stream = STREAM,
            group = GROUP,
            consumer = %consumer.name,
            "reading labels from the label stream"
        );
        Ok(tokio::spawn(consumer.run()))
    }

    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        while !self.shutdown.is_cancelled() {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                connected = connect(&self.client, BLOCK + Duration::from_secs(5)) => connected,
            };
            let failed = match connected {
                Ok(mut connection) => match self.consume(&mut connection, &mut backoff).await {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            self.outage.failed(
                &LabelStreamDown {
                    redis: &self.redacted,
                    error: &failed.to_string(),
                },
                Uncounted,
            );
            if !self.pause(&mut backoff).await {
                return;
            }
        }
    }

    /// Sleeps for `backoff` (doubled for next time); `false` if the shutdown came first.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let pause = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Reads and delivers until the shutdown (`Ok`) or a Redis error.
    async fn consume(
        &self,
        connection: &mut MultiplexedConnection,
        backoff: &mut Duration,
    ) -> redis::RedisResult<()> {
        create_group(connection).await?;
        self.outage.recovered(&LabelStreamRecovered {
            redis: &self.redacted,
        });
        *backoff = FIRST_BACKOFF;
        let mut claim_at = Instant::now();
        let mut cursor = String::from("0-0");
        loop {
            let found = if Instant::now() >= claim_at {
                let (next, claimed) = self.claim(connection, &cursor).await?;
                // A cursor other than 0-0: more pending entries to look at, at the next turn.
                claim_at = match next.as_str() {
                    "0-0" => Instant::now() + CLAIM_PERIOD,
                    _ => Instant::now(),
                };
                cursor = next;
                claimed
            } else {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    read = self.read(connection) => read?,
                }
            };
            if !self.deliver(connection, found).await? {
                return Ok(());
            }
        }
    }

    /// New entries for this consumer, waiting up to [`BLOCK`] for some.
    async fn read(&self, connection: &mut MultiplexedConnection) -> redis::RedisResult<Vec<Entry>> {
        let reply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query_async(connection)
            .await?;
        Ok(read_reply(reply))
    }

    /// Entries of other consumers idle for [`CLAIM_MIN_IDLE`], taken over from `cursor`; the
    /// cursor to go on from.
    async fn claim(
        &self,
        connection: &mut MultiplexedConnection,
        cursor: &str,
    ) -> redis::RedisResult<(String, Vec<Entry>)> {
        let reply = redis::cmd("XAUTOCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&self.name)
            .arg(CLAIM_MIN_IDLE.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.count)
            .query_async(connection)
            .await?;
        Ok(claim_reply(reply))
    }

    /// Hands the labels to ingest as one batch and acknowledges the entries once it is accepted;
    /// a batch refused is offered again after a pause. `false` if the shutdown came before it
    /// was accepted (its entries stay pending, for another sidecar to take over).
    async fn deliver(
        &self,
        connection: &mut MultiplexedConnection,
        found: Vec<Entry>,
    ) -> redis::RedisResult<bool> {
        let mut labels = Vec::with_capacity(found.len());
        let mut ids = Vec::with_capacity(found.len());
        let mut malformed = Vec::new();
        for entry in found {
            match entry.truth {
                Ok(truth) => {
                    labels.push(truth);
                    ids.push(entry.id);
                }
                Err(why) => {
                    self.stats.emit(&LabelEntriesMalformed {
                        id: &entry.id,
                        error: &why,
                    });
                    malformed.push(entry.id);
                }
            }
        }
        acknowledge(connection, &malformed).await?;
        if labels.is_empty() {
            return Ok(true);
        }
        let batch = pb::LabelBatch {
            labels,
            ..Default::default()
        };
        let mut backoff = FIRST_BACKOFF;
        // Shard queues or the memory budget full: ingest counts and logs it; the batch waits.
        // It cannot be too large: `count` is within --max-batch-records.
        while let Err(e) = self.ingest.accept_labels(batch.clone()).await {
            tracing::debug!(error = %e, "a batch from the label stream is refused; offered again");
            if !self.pause(&mut backoff).await {
                return Ok(false);
            }
        }
        acknowledge(connection, &ids).await?;
        Ok(true)
    }
}

/// `XACK`s `ids`.
async fn acknowledge(
    connection: &mut MultiplexedConnection,
    ids: &[String],
) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(ids)
        .query_async::<()>(connection)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn label() -> pb::GroundTruth {
        pb::GroundTruth {
            model: "m".into(),
            version: "1".into(),
            request_id: "r1".into(),
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName("yes".into())),
            }),
            time_unix_nano: 7,
        }
    }

    #[test]
    fn a_read_reply_gives_each_entry_its_label_or_why_not() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(STREAM.as_bytes()),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(b"gt"), bulk(&label().encode_to_vec())]),
                ]),
                Value::Array(vec![
                    bulk(b"1-1"),
                    Value::Array(vec![bulk(b"gt"), bulk(b"\xff\xff")]),
                ]),
                Value::Array(vec![
                    bulk(b"1-2"),
                    Value::Array(vec![bulk(b"other"), bulk(b"x")]),
                ]),
            ]),
        ])]);
        let got = read_reply(reply);
        let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "1-1", "1-2"]);
        assert_eq!(got[0].truth.as_ref().unwrap(), &label());
        assert!(got[1].truth.is_err());
        assert!(got[2].truth.as_ref().unwrap_err().contains("no field"));
        assert!(read_reply(Value::Nil).is_empty());
    }

    #[test]
    fn a_claim_reply_gives_the_cursor_and_skips_deleted_entries() {
        let reply = Value::Array(vec![
            bulk(b"5-0"),
            Value::Array(vec![
                Value::Nil,
                Value::Array(vec![
                    bulk(b"2-0"),
                    Value::Array(vec![bulk(b"gt"), bulk(&label().encode_to_vec())]),
                ]),
            ]),
            Value::Array(vec![bulk(b"1-0")]),
        ]);
        let (cursor, claimed) = claim_reply(reply);
        assert_eq!(cursor, "5-0");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, "2-0");
    }

    #[test]
    fn consumers_in_one_process_get_distinct_names() {
        assert_ne!(consumer_name(), consumer_name());
    }
}
