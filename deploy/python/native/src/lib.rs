//! The native core of the inferscope Python client (`inferscope_client_native`).
//!
//! Written because the pure-Python client (deploy/python/inferscope_client/client.py) spends about
//! 5 µs of the model server's CPU per 30-feature record, three quarters of it building protobuf
//! messages on a background thread that holds the interpreter lock (issue 15). Here `record(...)`
//! writes its arguments as the record's protobuf bytes ([`encode`]) during its one short hold of
//! the lock and appends them to a bounded queue (a record is dropped and counted when the queue
//! is full); batching and the network run on a Rust thread ([`sender`]) that never takes the
//! lock. The Python-facing class is `inferscope_client.native.NativeInferscopeClient`, which
//! keeps the pure-Python client's API; this module is its engine.

use encode::{label_of, RecordArgs};
use pyo3::{exceptions::PyValueError, prelude::*, types::PyString};
use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

mod encode;
mod sender;

/// The types of proto/inferscope/v1/ingest.proto (build.rs).
#[allow(clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/inferscope.v1.rs"));
}

use sender::{Settings, Shared};

/// The engine of one client: the shared state and, once something needs the network, the
/// background thread.
#[pyclass(frozen, module = "inferscope_client_native")]
pub struct Core {
    shared: Arc<Shared>,
    started: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a number of seconds >= 0")))
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (target, model, version, max_queue, batch_size, flush_interval,
        max_inflight, max_resends, backoff_initial, backoff_max, max_label_queue,
        label_batch_size, rpc_timeout, on_ack=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        target: String,
        model: String,
        version: String,
        max_queue: usize,
        batch_size: usize,
        flush_interval: f64,
        max_inflight: usize,
        max_resends: u32,
        backoff_initial: f64,
        backoff_max: f64,
        max_label_queue: usize,
        label_batch_size: usize,
        rpc_timeout: f64,
        on_ack: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let settings = Settings {
            target,
            model,
            version,
            max_queue,
            batch_size,
            flush_interval: seconds(flush_interval, "flush_interval")?,
            max_inflight,
            max_resends,
            backoff_initial: seconds(backoff_initial, "backoff_initial")?,
            backoff_max: seconds(backoff_max, "backoff_max")?,
            max_label_queue,
            label_batch_size,
            rpc_timeout: seconds(rpc_timeout, "rpc_timeout")?,
        };
        Ok(Self {
            shared: Arc::new(Shared::new(settings, on_ack)),
            started: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// Queues one inference record; False if it was dropped (queue full, closed, or an argument
    /// that cannot be read: counted as dropped and logged by the background thread). Never
    /// raises. Arguments as `InferscopeClient.record`.
    #[pyo3(signature = (request_id=None, *, latency_seconds=None, error_type=None, model=None,
        version=None, time_unix_nano=None, numeric_features=None, categorical_features=None,
        features=None, predicted_class=None, class_probabilities=None, score=None,
        regression_value=None, input_tokens=None, output_tokens=None,
        time_to_first_token_seconds=None, finish_reason=None, operation=None,
        response_model=None, label=None, traceparent=None, tracestate=None, attributes=None))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        request_id: Option<&Bound<'_, PyAny>>,
        latency_seconds: Option<&Bound<'_, PyAny>>,
        error_type: Option<&Bound<'_, PyAny>>,
        model: Option<&Bound<'_, PyAny>>,
        version: Option<&Bound<'_, PyAny>>,
        time_unix_nano: Option<&Bound<'_, PyAny>>,
        numeric_features: Option<&Bound<'_, PyAny>>,
        categorical_features: Option<&Bound<'_, PyAny>>,
        features: Option<&Bound<'_, PyAny>>,
        predicted_class: Option<&Bound<'_, PyAny>>,
        class_probabilities: Option<&Bound<'_, PyAny>>,
        score: Option<&Bound<'_, PyAny>>,
        regression_value: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        time_to_first_token_seconds: Option<&Bound<'_, PyAny>>,
        finish_reason: Option<&Bound<'_, PyAny>>,
        operation: Option<&Bound<'_, PyAny>>,
        response_model: Option<&Bound<'_, PyAny>>,
        label: Option<&Bound<'_, PyAny>>,
        traceparent: Option<&Bound<'_, PyAny>>,
        tracestate: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.record_args(RecordArgs {
            request_id,
            latency_seconds,
            error_type,
            model,
            version,
            time_unix_nano,
            numeric_features,
            categorical_features,
            features,
            predicted_class,
            class_probabilities,
            score,
            regression_value,
            input_tokens,
            output_tokens,
            time_to_first_token_seconds,
            finish_reason,
            operation,
            response_model,
            label,
            traceparent,
            tracestate,
            attributes,
        })
    }

    /// `record` itself as a Python function that reads its arguments without PyO3's general
    /// argument parser (`encode::record_fastcall`: about 700 instructions less a call). The same
    /// method as `record`, arguments and all; `native.py` uses it when the build has it (not with
    /// `--features abi3`, whose stable ABI lacks the fast calling convention for Python 3.9).
    #[cfg(not(feature = "abi3"))]
    fn fast_record(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        encode::fast_record(slf)
    }

    /// Queues a serialized `InferenceRecord` (`record_message`); False if it was dropped.
    fn record_encoded(&self, encoded: &[u8]) -> bool {
        if self.shared.closing.load(Relaxed) {
            self.shared.counters.dropped.fetch_add(1, Relaxed);
            return false;
        }
        match <pb::InferenceRecord as prost::Message>::decode(encoded) {
            Ok(record) => with_scratch(|scratch| {
                prost::Message::encode_raw(&record, scratch);
                self.push(scratch)
            }),
            Err(e) => self.invalid(PyValueError::new_err(e.to_string())),
        }
    }

    /// Registers a serialized `ModelDeclaration`: sent with the next batch and at the start of
    /// every new stream. At most 1024 model versions; False past that or when closed.
    fn declare(&self, encoded: &[u8]) -> PyResult<bool> {
        let declaration = <pb::ModelDeclaration as prost::Message>::decode(encoded)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if self.shared.closing.load(Relaxed) {
            return Ok(false);
        }
        {
            let mut d = self.shared.declarations.lock().unwrap();
            let same = |x: &pb::ModelDeclaration| {
                x.model == declaration.model && x.version == declaration.version
            };
            if !d.all.iter().any(same) && d.all.len() >= 1024 {
                return Ok(false);
            }
            d.all.retain(|x| !same(x));
            d.pending.retain(|x| !same(x));
            d.all.push(declaration.clone());
            d.pending.push(declaration);
        }
        self.ensure_started();
        Ok(true)
    }

    /// Queues delayed ground truth; `label` is a class name, a class index, a regression value
    /// or a serialized `Label` (bytes). False if it was dropped (queue full or closed).
    #[pyo3(signature = (request_id, label, model, version, time_unix_nano))]
    fn send_label(
        &self,
        request_id: &Bound<'_, PyAny>,
        label: &Bound<'_, PyAny>,
        model: String,
        version: String,
        time_unix_nano: u64,
    ) -> bool {
        let s = &self.shared;
        let truth = (|| -> PyResult<pb::GroundTruth> {
            Ok(pb::GroundTruth {
                request_id: text_of(request_id)?,
                label: Some(label_of(label)?),
                model,
                version,
                time_unix_nano,
            })
        })();
        let truth = match truth {
            Ok(t) => t,
            Err(e) => {
                *s.invalid.lock().unwrap() =
                    Some(format!("inferscope: dropped an invalid label ({e})"));
                s.counters.labels_dropped.fetch_add(1, Relaxed);
                return false;
            }
        };
        let n = {
            let mut labels = s.labels.lock().unwrap();
            if s.closing.load(Relaxed) || labels.len() >= s.settings.max_label_queue {
                drop(labels);
                s.counters.labels_dropped.fetch_add(1, Relaxed);
                return false;
            }
            labels.push_back(truth);
            s.counters.labels_unfinished.fetch_add(1, Relaxed);
            labels.len()
        };
        self.ensure_started();
        if n == s.settings.label_batch_size {
            s.label_wake.notify_one();
        }
        true
    }

    /// Sends what is queued now and waits up to `timeout` seconds (without the interpreter
    /// lock) for the acks; True if everything queued was acknowledged or dropped in time.
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        if !self.started.load(Relaxed) {
            return self.idle();
        }
        self.shared.flush_requested.store(true, Relaxed);
        self.shared.wake.notify_one();
        self.shared.label_wake.notify_one();
        let shared = self.shared.clone();
        py.detach(move || shared.wait_idle(deadline))
    }

    /// Sends what is queued, waits up to `timeout` seconds, then stops; what is still pending
    /// is counted as dropped. Returns (clean, records lost, labels lost).
    fn close(&self, py: Python<'_>, timeout: f64) -> (bool, i64, i64) {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        let s = &self.shared;
        s.closing.store(true, Relaxed);
        s.wake.notify_one();
        s.label_wake.notify_one();
        let thread = self.thread.lock().unwrap().take();
        let clean = match thread {
            None => true,
            Some(thread) => py.detach(|| {
                while !thread.is_finished() && Instant::now() < deadline {
                    // wake the sender in case it is waiting for a full batch or a backoff
                    s.wake.notify_one();
                    std::thread::sleep(Duration::from_millis(2));
                }
                if thread.is_finished() {
                    let _ = thread.join();
                    true
                } else {
                    false
                }
            }),
        };
        s.abort.send_replace(true);
        s.queue.lock().unwrap().clear();
        s.queued.store(0, Relaxed);
        s.labels.lock().unwrap().clear();
        let lost = s.counters.unfinished.swap(0, Relaxed).max(0);
        let lost_labels = s.counters.labels_unfinished.swap(0, Relaxed).max(0);
        s.counters.dropped.fetch_add(lost as u64, Relaxed);
        s.counters
            .labels_dropped
            .fetch_add(lost_labels as u64, Relaxed);
        s.finished(0, 0);
        (clean, lost, lost_labels)
    }

    /// (queued, sent, acked, rejected, flagged, dropped, resent, stream_errors, labels_sent,
    /// labels_acked, labels_rejected, labels_dropped)
    fn stats(&self) -> [u64; 12] {
        let c = &self.shared.counters;
        let queued = self.shared.queued.load(Relaxed) as u64;
        [
            queued,
            c.sent.load(Relaxed),
            c.acked.load(Relaxed),
            c.rejected.load(Relaxed),
            c.flagged.load(Relaxed),
            c.dropped.load(Relaxed),
            c.resent.load(Relaxed),
            c.stream_errors.load(Relaxed),
            c.labels_sent.load(Relaxed),
            c.labels_acked.load(Relaxed),
            c.labels_rejected.load(Relaxed),
            c.labels_dropped.load(Relaxed),
        ]
    }

    /// True if nothing is queued or in flight.
    fn idle(&self) -> bool {
        let c = &self.shared.counters;
        c.unfinished.load(Relaxed) <= 0 && c.labels_unfinished.load(Relaxed) <= 0
    }
}

impl Core {
    /// `record`, once its arguments are sorted out.
    fn record_args(&self, args: RecordArgs<'_, '_>) -> bool {
        let s = &self.shared;
        if s.closing.load(Relaxed) || s.queued.load(Relaxed) >= s.settings.max_queue {
            // Closed or full: dropped without reading the arguments.
            s.counters.dropped.fetch_add(1, Relaxed);
            return false;
        }
        with_scratch(|scratch| match args.encode(scratch) {
            Ok(()) => self.push(scratch),
            Err(e) => self.invalid(e),
        })
    }

    /// Queues one encoded `InferenceRecord` (its bytes, as [`RecordArgs::encode`] writes them),
    /// as a `RecordBatch.records` field.
    fn push(&self, record: &[u8]) -> bool {
        let s = &self.shared;
        let mut field = [0u8; 16];
        let key_and_len = {
            let mut slice = &mut field[..];
            let room = slice.len();
            prost::encoding::encode_key(5, prost::encoding::WireType::LengthDelimited, &mut slice);
            prost::encoding::encode_varint(record.len() as u64, &mut slice);
            room - slice.len()
        };
        let n = {
            let mut queue = s.queue.lock().unwrap();
            if queue.len() >= s.settings.max_queue {
                drop(queue);
                s.counters.dropped.fetch_add(1, Relaxed);
                return false;
            }
            queue.push(&field[..key_and_len], record, s.settings.batch_size);
            let n = queue.len();
            s.queued.store(n, Relaxed);
            n
        };
        s.counters.unfinished.fetch_add(1, Relaxed);
        self.ensure_started();
        // The sender polls while records flow; it is woken only when it does not, and when the
        // queue is half full (a burst faster than it expected).
        let polling = s.polling.load(Relaxed);
        if (n == s.settings.batch_size && !polling) || n == s.settings.max_queue / 2 {
            s.wake.notify_one();
        }
        true
    }

    /// A record whose arguments could not be read: dropped and counted, the reason kept for
    /// the background thread to log.
    fn invalid(&self, e: PyErr) -> bool {
        self.shared.counters.dropped.fetch_add(1, Relaxed);
        *self.shared.invalid.lock().unwrap() =
            Some(format!("inferscope: dropped an invalid record ({e})"));
        self.ensure_started();
        false
    }

    fn ensure_started(&self) {
        if self.started.load(Relaxed) || self.started.swap(true, Relaxed) {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("inferscope-client".into())
            .spawn(move || sender::run(shared));
        if let Ok(handle) = spawned {
            *self.thread.lock().unwrap() = Some(handle);
        }
    }
}

/// `str(value)`, as a Rust string (label request ids).
fn text_of(a: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = a.cast_exact::<PyString>() {
        return s.extract();
    }
    a.str()?.extract()
}

thread_local! {
    /// The buffer a record is encoded into before it goes into the queue (under the queue's
    /// lock, in one copy), reused by every call on this thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Runs `f` with an empty scratch buffer: this thread's, or a new one when this thread's is in
/// use (a `record` called from Python code that the reading of another record's arguments ran,
/// such as a `__float__`).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let mut f = Some(f);
    let reused = SCRATCH.try_with(|cell| {
        cell.try_borrow_mut().ok().map(|mut scratch| {
            scratch.clear();
            let result = (f.take().unwrap())(&mut scratch);
            if scratch.capacity() > 1 << 20 {
                *scratch = Vec::with_capacity(1024); // do not keep a huge record's buffer
            }
            result
        })
    });
    match reused {
        Ok(Some(result)) => result,
        _ => (f.take().unwrap())(&mut Vec::new()),
    }
}

#[pymodule]
fn inferscope_client_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    Ok(())
}
