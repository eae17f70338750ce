//! The native core of the inferscope Python client (`inferscope_client_native`).
//!
//! Written because the pure-Python client (deploy/python/inferscope_client/client.py) spends about
//! 5 µs of the model server's CPU per 30-feature record, three quarters of it building protobuf
//! messages on a background thread that holds the interpreter lock (issue 15). Here `record(...)`
//! copies its arguments into a Rust-owned `InferenceRecord` during its one short hold of the
//! lock and pushes it onto a bounded queue (a record is dropped and counted when the queue is
//! full); batching, encoding and the network run on a Rust thread ([`sender`]) that never takes
//! the lock. The Python-facing class is `inferscope_client.native.NativeInferscopeClient`, which
//! keeps the pure-Python client's API; this module is its engine.

use pyo3::{
    exceptions::{PyTypeError, PyValueError},
    prelude::*,
    types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

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
struct Core {
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
        if self.shared.closing.load(Relaxed) {
            self.shared.counters.dropped.fetch_add(1, Relaxed);
            return false;
        }
        let args = RecordArgs {
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
        };
        match args.build() {
            Ok(record) => self.push(Box::new(record)),
            Err(e) => self.invalid(e),
        }
    }

    /// Queues a serialized `InferenceRecord` (`record_message`); False if it was dropped.
    fn record_encoded(&self, encoded: &[u8]) -> bool {
        if self.shared.closing.load(Relaxed) {
            self.shared.counters.dropped.fetch_add(1, Relaxed);
            return false;
        }
        match <pb::InferenceRecord as prost::Message>::decode(encoded) {
            Ok(record) => self.push(Box::new(record)),
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
        let queued = s.queue.lock().unwrap().drain(..).count();
        let labels = s.labels.lock().unwrap().drain(..).count();
        let _ = queued + labels;
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
        let queued = self.shared.queue.lock().unwrap().len() as u64;
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
    fn push(&self, record: Box<pb::InferenceRecord>) -> bool {
        let s = &self.shared;
        let n = {
            let mut queue = s.queue.lock().unwrap();
            if queue.len() >= s.settings.max_queue {
                drop(queue);
                s.counters.dropped.fetch_add(1, Relaxed);
                return false;
            }
            queue.push_back(record);
            queue.len()
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

/// The arguments of `record`, read into an `InferenceRecord` as the pure-Python client's
/// `_fill_record` does.
struct RecordArgs<'a, 'py> {
    request_id: Option<&'a Bound<'py, PyAny>>,
    latency_seconds: Option<&'a Bound<'py, PyAny>>,
    error_type: Option<&'a Bound<'py, PyAny>>,
    model: Option<&'a Bound<'py, PyAny>>,
    version: Option<&'a Bound<'py, PyAny>>,
    time_unix_nano: Option<&'a Bound<'py, PyAny>>,
    numeric_features: Option<&'a Bound<'py, PyAny>>,
    categorical_features: Option<&'a Bound<'py, PyAny>>,
    features: Option<&'a Bound<'py, PyAny>>,
    predicted_class: Option<&'a Bound<'py, PyAny>>,
    class_probabilities: Option<&'a Bound<'py, PyAny>>,
    score: Option<&'a Bound<'py, PyAny>>,
    regression_value: Option<&'a Bound<'py, PyAny>>,
    input_tokens: Option<&'a Bound<'py, PyAny>>,
    output_tokens: Option<&'a Bound<'py, PyAny>>,
    time_to_first_token_seconds: Option<&'a Bound<'py, PyAny>>,
    finish_reason: Option<&'a Bound<'py, PyAny>>,
    operation: Option<&'a Bound<'py, PyAny>>,
    response_model: Option<&'a Bound<'py, PyAny>>,
    label: Option<&'a Bound<'py, PyAny>>,
    traceparent: Option<&'a Bound<'py, PyAny>>,
    tracestate: Option<&'a Bound<'py, PyAny>>,
    attributes: Option<&'a Bound<'py, PyAny>>,
}

/// `None` for an absent or None argument.
fn given<'a, 'py>(arg: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    arg.filter(|a| !a.is_none())
}

/// `str(value)`, or empty when absent or false ("" and None), as `if x: rec.x = str(x)`.
fn text(arg: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    match given(arg) {
        None => Ok(String::new()),
        Some(a) => text_of(a),
    }
}

fn text_of(a: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = a.cast_exact::<PyString>() {
        return s.extract();
    }
    a.str()?.extract()
}

/// A string argument that must be a string (model, version, finish_reason...).
fn string(arg: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<String> {
    match given(arg) {
        None => Ok(String::new()),
        Some(a) => match a.cast::<PyString>() {
            Ok(s) => s.extract(),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{name} must be str, not {}",
                a.get_type().name()?
            ))),
        },
    }
}

/// `float(value)`.
fn float(a: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(f) = a.cast_exact::<PyFloat>() {
        return Ok(f.value());
    }
    match a.extract::<f64>() {
        Ok(v) => Ok(v),
        // float("1.5") and other conversions float() accepts
        Err(_) => a.py().get_type::<PyFloat>().call1((a,))?.extract(),
    }
}

/// `int(value)`, then as a u64.
fn int(a: &Bound<'_, PyAny>) -> PyResult<u64> {
    match a.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(_) => a.py().get_type::<PyInt>().call1((a,))?.extract(),
    }
}

/// `int(value)`, then as a u32 (class indices).
fn int32(a: &Bound<'_, PyAny>) -> PyResult<u32> {
    u32::try_from(int(a)?).map_err(|_| PyValueError::new_err("a class index must be < 2**32"))
}

fn optional_float(arg: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    given(arg).map(float).transpose()
}

/// A sequence of numbers as `_floats`: None is missing (NaN); numpy arrays through `tolist()`.
fn floats(a: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let item = |v: Bound<'_, PyAny>| -> PyResult<f64> {
        if let Ok(f) = v.cast_exact::<PyFloat>() {
            Ok(f.value())
        } else if v.is_none() {
            Ok(f64::NAN)
        } else {
            float(&v)
        }
    };
    if let Ok(list) = a.cast_exact::<PyList>() {
        let mut out = Vec::with_capacity(list.len());
        for v in list.iter() {
            out.push(item(v)?);
        }
        return Ok(out);
    }
    if let Ok(tuple) = a.cast_exact::<PyTuple>() {
        return tuple.iter().map(item).collect();
    }
    if let Ok(tolist) = a.getattr("tolist") {
        let list = tolist.call0()?;
        if let Ok(list) = list.cast_exact::<PyList>() {
            return list.iter().map(item).collect();
        }
        return list.try_iter()?.map(|v| item(v?)).collect();
    }
    a.try_iter()?.map(|v| item(v?)).collect()
}

/// A label as `_fill_label`: class name, class index (int, bool, numpy integers), regression
/// value, or a `Label` message (anything with `SerializeToString`) or its serialized bytes.
fn label_of(a: &Bound<'_, PyAny>) -> PyResult<pb::Label> {
    use pb::label::Value;
    let value = if let Ok(s) = a.cast::<PyString>() {
        Value::ClassName(s.extract()?)
    } else if a.cast::<PyFloat>().is_ok() {
        Value::RegressionValue(float(a)?)
    } else if a.cast::<PyInt>().is_ok() || a.cast::<PyBool>().is_ok() {
        Value::ClassIndex(a.extract()?)
    } else if let Ok(bytes) = a.cast::<PyBytes>() {
        return <pb::Label as prost::Message>::decode(bytes.as_bytes())
            .map_err(|e| PyValueError::new_err(e.to_string()));
    } else if let Ok(serialize) = a.getattr("SerializeToString") {
        let bytes = serialize.call0()?;
        return <pb::Label as prost::Message>::decode(bytes.cast::<PyBytes>()?.as_bytes())
            .map_err(|e| PyValueError::new_err(e.to_string()));
    } else if a.hasattr("__index__")? {
        Value::ClassIndex(int32(a)?)
    } else if a.hasattr("__float__")? {
        Value::RegressionValue(float(a)?)
    } else {
        return Err(PyTypeError::new_err(format!(
            "label must be str, int, float or Label, not {}",
            a.get_type().name()?
        )));
    };
    Ok(pb::Label { value: Some(value) })
}

impl RecordArgs<'_, '_> {
    fn build(self) -> PyResult<pb::InferenceRecord> {
        use pb::inference_record::Prediction;
        let time_unix_nano = match given(self.time_unix_nano) {
            Some(t) => int(t)?,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        };
        let mut record = pb::InferenceRecord {
            request_id: text(self.request_id)?,
            time_unix_nano,
            latency_seconds: optional_float(self.latency_seconds)?,
            error_type: text(self.error_type)?,
            model: string(self.model, "model")?,
            version: string(self.version, "version")?,
            traceparent: string(self.traceparent, "traceparent")?,
            tracestate: string(self.tracestate, "tracestate")?,
            ..Default::default()
        };
        if let Some(numeric) = given(self.numeric_features) {
            record.numeric_features = floats(numeric)?;
        }
        if let Some(categorical) = given(self.categorical_features) {
            record.categorical_features = categorical
                .try_iter()?
                .map(|c| text_of(&c?))
                .collect::<PyResult<_>>()?;
        }
        if let Some(named) = given(self.features) {
            let items = match named.cast::<PyDict>() {
                Ok(d) => d.items(),
                Err(_) => named
                    .call_method0("items")?
                    .try_iter()?
                    .collect::<PyResult<Vec<_>>>()
                    .map(|v| PyList::new(named.py(), v))??,
            };
            for pair in items.iter() {
                let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                use pb::named_feature::Value;
                let value = if let Ok(s) = value.cast::<PyString>() {
                    Value::Category(s.extract()?)
                } else if value.is_none() {
                    Value::Number(f64::NAN) // missing
                } else {
                    Value::Number(float(&value)?)
                };
                record.named_features.push(pb::NamedFeature {
                    name: text_of(&name)?,
                    value: Some(value),
                });
            }
        }
        let (pc, probabilities, score) = (
            given(self.predicted_class),
            given(self.class_probabilities),
            given(self.score),
        );
        let generation = [
            self.input_tokens,
            self.output_tokens,
            self.time_to_first_token_seconds,
        ]
        .iter()
        .any(|a| given(*a).is_some());
        let generation_text = (
            string(self.finish_reason, "finish_reason")?,
            string(self.operation, "operation")?,
            string(self.response_model, "response_model")?,
        );
        if pc.is_some() || probabilities.is_some() || score.is_some() {
            let mut c = pb::Classification::default();
            match pc {
                Some(p) if p.cast::<PyString>().is_ok() => c.predicted_class = p.extract()?,
                Some(p) => c.predicted_class_index = Some(int32(p)?),
                None => {}
            }
            if let Some(p) = probabilities {
                c.class_probabilities = floats(p)?;
            }
            c.score = score.map(float).transpose()?;
            record.prediction = Some(Prediction::Classification(c));
        } else if let Some(v) = given(self.regression_value) {
            record.prediction = Some(Prediction::Regression(pb::Regression { value: float(v)? }));
        } else if generation
            || !generation_text.0.is_empty()
            || !generation_text.1.is_empty()
            || !generation_text.2.is_empty()
        {
            let (finish_reason, operation, response_model) = generation_text;
            record.prediction = Some(Prediction::Generation(pb::Generation {
                input_tokens: given(self.input_tokens).map(int).transpose()?.unwrap_or(0),
                output_tokens: given(self.output_tokens).map(int).transpose()?.unwrap_or(0),
                time_to_first_token_seconds: optional_float(self.time_to_first_token_seconds)?,
                finish_reason,
                operation,
                response_model,
            }));
        }
        if let Some(label) = given(self.label) {
            record.label = Some(label_of(label)?);
        }
        if let Some(attributes) = given(self.attributes) {
            let items = match attributes.cast::<PyDict>() {
                Ok(d) => d.items(),
                Err(_) => attributes
                    .call_method0("items")?
                    .try_iter()?
                    .collect::<PyResult<Vec<_>>>()
                    .map(|v| PyList::new(attributes.py(), v))??,
            };
            for pair in items.iter() {
                let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                record.attributes.push(pb::Attribute {
                    key: text_of(&key)?,
                    value: text_of(&value)?,
                });
            }
        }
        Ok(record)
    }
}

#[pymodule]
fn inferscope_client_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    Ok(())
}
