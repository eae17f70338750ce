"""A client for the inferscope sidecar that never blocks or breaks the model server.

How it behaves:

- ``record(...)`` only appends a tuple to a bounded in-memory queue under a short lock. When the
  queue is full the record is dropped and counted; ``record`` returns False. It never raises for a
  runtime condition (sidecar down, slow, restarting) and never waits for the network.
- One background thread turns queued records into ``RecordBatch`` messages (at most ``batch_size``
  records, or whatever arrived within ``flush_interval`` seconds) and streams them over
  ``StreamRecords``. It reads the ``BatchAck`` for each batch, counts accepted and rejected records
  and logs each reject (index, field, reason) at DEBUG plus a rate-limited WARNING summary.
- At most ``max_inflight`` batches wait for their acks. When the stream fails with a retryable code
  (UNAVAILABLE: the sidecar is shedding load, starting or restarting) the client reconnects with
  jittered exponential backoff and resends the batches that were not acknowledged, each at most
  ``max_resends`` times. Non-retryable failures drop the unacknowledged batches and count them.
- Records dropped on this side (queue full, unreadable arguments, batches given up after
  resends) are reported to the sidecar in the next batch's ``client_dropped_records``, which it
  exports as ``inferscope.client.records.dropped``; a batch given up carries its report back.
- Model declarations are sent with the next batch and again at the start of every new stream,
  so a restarted sidecar learns them again.
- A second background thread sends delayed ground truth (``send_label``) with ``SubmitLabels``,
  batched the same way, from its own bounded queue.
- Nothing touches the network before the first call that needs it, so a client created at import
  time in a pre-fork server (gunicorn ``--preload``) is safe: each worker opens its own channel.

Protobuf messages are built on the background thread, so argument values are read after
``record`` returns: do not mutate a list or array after passing it.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from .inferscope.v1 import ingest_pb2 as pb
from .inferscope.v1 import ingest_pb2_grpc as pb_grpc

__all__ = ["InferscopeClient", "ClientStats", "DEFAULT_TARGET", "ADDR_ENV"]

log = logging.getLogger("inferscope_client")
log.addHandler(logging.NullHandler())  # the application decides where warnings go

DEFAULT_TARGET = "127.0.0.1:7717"
#: The environment variable that gives the sidecar's address when ``target`` is not passed.
ADDR_ENV = "INFERSCOPE_ADDR"

#: Stream failures after which unacknowledged batches are sent again.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)

_TASKS = {
    "binary": pb.TASK_TYPE_BINARY_CLASSIFICATION,
    "binary_classification": pb.TASK_TYPE_BINARY_CLASSIFICATION,
    "multiclass": pb.TASK_TYPE_MULTICLASS_CLASSIFICATION,
    "multiclass_classification": pb.TASK_TYPE_MULTICLASS_CLASSIFICATION,
    "regression": pb.TASK_TYPE_REGRESSION,
    "generation": pb.TASK_TYPE_GENERATION,
}

_WARN_EVERY = 10.0  # seconds between repeated warnings of one kind

LabelValue = Union[str, int, float, "pb.Label"]


def _check_sizes(max_queue: int, batch_size: int, max_inflight: int, label_batch_size: int) -> None:
    """The queue and batch settings both clients accept (ValueError otherwise)."""
    if max_queue < 1 or batch_size < 1 or max_inflight < 1 or label_batch_size < 1:
        raise ValueError("max_queue, batch_size, max_inflight and label_batch_size must be >= 1")
    if batch_size > 10_000:
        raise ValueError("batch_size must be <= 10000 (the sidecar's default batch limit)")


def _target(target: Optional[str]) -> str:
    """The sidecar's address: given, else $INFERSCOPE_ADDR, else the default."""
    return target or os.environ.get(ADDR_ENV) or DEFAULT_TARGET


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of the client's counters (records unless the name says labels)."""

    queued: int  # waiting in the client's queue now
    sent: int  # written to a stream (first send only; resends are in `resent`)
    acked: int  # accepted by the sidecar
    rejected: int  # rejected by the sidecar (see the log for index, field and reason)
    flagged: int  # accepted records that the sidecar flagged as anomalous
    dropped: int  # lost on the client: queue full, invalid, retries exhausted, or left at close
    resent: int  # sent again after a stream failed before their ack
    stream_errors: int  # streams that ended with an error
    labels_sent: int
    labels_acked: int
    labels_rejected: int
    labels_dropped: int


class _Session:
    """One StreamRecords call: its in-flight batches and whether it is over."""

    __slots__ = ("inflight", "dead", "sent_declarations", "acks")

    def __init__(self) -> None:
        self.inflight: Dict[int, List[Any]] = {}  # sequence -> [batch, attempts]
        self.dead = False
        self.sent_declarations = False
        self.acks = 0


class InferscopeClient:
    """Streams inference records to the inferscope sidecar in the background.

    Args:
        target: the sidecar's gRPC address; default ``$INFERSCOPE_ADDR``, else 127.0.0.1:7717
            (it listens on loopback in the same pod).
        model, version: defaults for every record (a record's own values override them).
        max_queue: records held while the sidecar is slow or away; past it records are dropped.
        batch_size: records per batch (the sidecar refuses batches over 10000).
        flush_interval: seconds a partial batch waits before it is sent anyway.
        max_inflight: batches sent and not yet acknowledged, per stream.
        max_resends: times one batch is sent again after stream failures before it is dropped.
        backoff_initial, backoff_max: reconnect delay bounds in seconds (full jitter).
        max_label_queue, label_batch_size: the same bounds for ground-truth labels.
        rpc_timeout: seconds allowed for one SubmitLabels call.
        on_ack: optional ``callback(ack: BatchAck, batch: RecordBatch)``, called on the background
            thread for every ack, e.g. to act on ``ack.flags`` (``batch.records[flag.index]`` is the
            flagged record). Exceptions it raises are logged and ignored. Keep it quick.
        channel_options: extra grpc channel options, appended to the defaults.
    """

    implementation = "python"

    def __init__(
        self,
        target: Optional[str] = None,
        *,
        model: str = "",
        version: str = "",
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_inflight: int = 8,
        max_resends: int = 3,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_label_queue: int = 10_000,
        label_batch_size: int = 500,
        rpc_timeout: float = 5.0,
        on_ack: Optional[Callable[[Any, Any], None]] = None,
        channel_options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        _check_sizes(max_queue, batch_size, max_inflight, label_batch_size)
        self.target = _target(target)
        self.model = model
        self.version = version
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = max(0.001, float(flush_interval))
        self._max_inflight = max_inflight
        self._max_resends = max(0, max_resends)
        self._backoff_initial = max(0.001, float(backoff_initial))
        self._backoff_max = max(self._backoff_initial, float(backoff_max))
        self._max_label_queue = max_label_queue
        self._label_batch_size = label_batch_size
        self._rpc_timeout = rpc_timeout
        self._on_ack = on_ack
        self._channel_options = [
            # Reconnect quickly once the sidecar is back (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", int(self._backoff_initial * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(self._backoff_initial * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self._backoff_max * 1000)),
            # The sidecar is on loopback: never route it through an HTTP proxy from the environment.
            ("grpc.enable_http_proxy", 0),
            # This client resends unacknowledged batches itself.
            ("grpc.enable_retries", 0),
        ] + list(channel_options)
        self._init_state()
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # ------------------------------------------------------------------ state

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._label_wakeup = threading.Event()
        self._backoff_wakeup = threading.Event()
        self._queue: deque = deque()
        self._labels: deque = deque()
        self._resend: deque = deque()  # [batch, attempts] to send first on the next stream
        self._declarations: Dict[Tuple[str, str], Any] = {}
        self._pending_declarations: List[Any] = []
        self._sequence = 0
        self._label_sequence = 0
        self._unfinished = 0  # records queued, in a batch being built, or in flight
        self._labels_unfinished = 0
        self._flush_requested = False
        self._started = False
        self._closing = False
        self._closed = False
        self._abort = False
        self._call: Any = None
        self._last_ready_wait = 0.0
        self._channel: Any = None
        self._stub: Any = None
        self._threads: List[threading.Thread] = []
        self._pid = os.getpid()
        self._n = dict.fromkeys(
            (
                "sent", "acked", "rejected", "flagged", "dropped", "resent", "stream_errors",
                "labels_sent", "labels_acked", "labels_rejected", "labels_dropped",
            ),
            0,
        )
        self._warned_dropped = 0
        self._drops_reported = 0  # of self._n["dropped"], sent in a batch's client_dropped_records
        self._warned_labels_dropped = 0
        self._next_warning: Dict[str, float] = {}

    def _ensure_started(self) -> None:
        # Called with self._lock held.
        if self._started or self._closed:
            return
        self._started = True
        self._channel = grpc.insecure_channel(self.target, options=self._channel_options)
        self._stub = pb_grpc.IngestServiceStub(self._channel)
        for name, fn in (("inferscope-records", self._run_records), ("inferscope-labels", self._run_labels)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    # ------------------------------------------------------------------ public API

    def record(
        self,
        request_id: str = "",
        *,
        latency_seconds: Optional[float] = None,
        error_type: str = "",
        model: str = "",
        version: str = "",
        time_unix_nano: Optional[int] = None,
        numeric_features: Optional[Iterable[float]] = None,
        categorical_features: Optional[Iterable[str]] = None,
        features: Optional[Mapping[str, Union[float, str]]] = None,
        predicted_class: Union[str, int, None] = None,
        class_probabilities: Optional[Iterable[float]] = None,
        score: Optional[float] = None,
        regression_value: Optional[float] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        time_to_first_token_seconds: Optional[float] = None,
        finish_reason: str = "",
        operation: str = "",
        response_model: str = "",
        label: Optional[LabelValue] = None,
        traceparent: str = "",
        tracestate: str = "",
        attributes: Optional[Mapping[str, str]] = None,
    ) -> bool:
        """Queues one inference record; returns False if it was dropped (queue full or closed).

        Prediction (pick one): ``predicted_class`` (a class name, or an int index into the declared
        classes) with optional ``class_probabilities`` / ``score``; or ``regression_value``; or a
        generation (``input_tokens``, ``output_tokens``, ``time_to_first_token_seconds``,
        ``finish_reason``, ``operation``, ``response_model``). Features: positional
        ``numeric_features`` / ``categorical_features`` after ``declare_model``, or ``features`` as
        a name -> number-or-string mapping. ``label``: ground truth known now (class name, class
        index or regression value). ``error_type`` empty means success.
        """
        item = (
            request_id, time.time_ns() if time_unix_nano is None else time_unix_nano,
            latency_seconds, error_type, model, version, numeric_features, categorical_features,
            features, predicted_class, class_probabilities, score, regression_value, input_tokens,
            output_tokens, time_to_first_token_seconds, finish_reason, operation, response_model,
            label, traceparent, tracestate, attributes,
        )
        return self._enqueue(item)

    def record_message(self, record: Any) -> bool:
        """Queues a prebuilt ``inferscope.v1.InferenceRecord``; returns False if it was dropped."""
        return self._enqueue(record)

    def declare_model(
        self,
        model: str = "",
        version: str = "",
        *,
        task: Union[str, int] = pb.TASK_TYPE_UNSPECIFIED,
        class_names: Sequence[str] = (),
        positive_class: str = "",
        numeric_features: Sequence[str] = (),
        categorical_features: Sequence[str] = (),
        gen_ai_provider: str = "",
        allow_undeclared_classes: bool = False,
    ) -> Any:
        """Declares a model version's schema once; it goes out with the next batch (and again on
        every new stream). ``task``: "binary", "multiclass", "regression", "generation" or a
        ``TaskType`` value. Positional ``numeric_features`` / ``categorical_features`` in records
        then follow the order given here. With ``class_names``, the sidecar rejects records and
        labels that name another class unless ``allow_undeclared_classes`` is set. Returns the
        ``ModelDeclaration``; never raises for an unknown task name (it is sent as unspecified and
        logged)."""
        if isinstance(task, str):
            task_value = _TASKS.get(task.lower())
            if task_value is None:
                log.warning("inferscope: unknown task %r, declaring TASK_TYPE_UNSPECIFIED", task)
                task_value = pb.TASK_TYPE_UNSPECIFIED
        else:
            task_value = int(task)
        decl = pb.ModelDeclaration(
            model=model or self.model,
            version=version or self.version,
            task=task_value,
            class_names=[str(c) for c in class_names],
            positive_class=positive_class,
            gen_ai_provider=gen_ai_provider,
            allow_undeclared_classes=allow_undeclared_classes,
        )
        for name in numeric_features:
            decl.features.add(name=str(name), kind=pb.FEATURE_KIND_NUMERIC)
        for name in categorical_features:
            decl.features.add(name=str(name), kind=pb.FEATURE_KIND_CATEGORICAL)
        with self._lock:
            if self._closed:
                return decl
            key = (decl.model, decl.version)
            if key not in self._declarations and len(self._declarations) >= 1024:
                log.warning("inferscope: more than 1024 declared model versions; ignoring %s", key)
                return decl
            self._declarations[key] = decl
            self._pending_declarations = [d for d in self._pending_declarations if (d.model, d.version) != key]
            self._pending_declarations.append(decl)
            self._ensure_started()
        return decl

    def send_label(
        self,
        request_id: str,
        label: LabelValue,
        *,
        model: str = "",
        version: str = "",
        time_unix_nano: int = 0,
    ) -> bool:
        """Queues delayed ground truth for an earlier record with the same ``request_id``.
        ``label``: a class name (str), a class index (int) or a regression value (float).
        Returns False if it was dropped (queue full or closed)."""
        with self._lock:
            if self._closed or len(self._labels) >= self._max_label_queue:
                self._n["labels_dropped"] += 1
                return False
            self._labels.append((request_id, label, model, version, time_unix_nano))
            self._labels_unfinished += 1
            n = len(self._labels)
            self._ensure_started()
        if n == self._label_batch_size:
            self._label_wakeup.set()
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Sends what is queued now and waits up to ``timeout`` seconds for the acks (records and
        labels). Returns True if everything queued was acknowledged or dropped in time."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cv:
            if not self._started:
                return self._unfinished == 0 and self._labels_unfinished == 0
            self._flush_requested = True
        self._wakeup.set()
        self._label_wakeup.set()
        self._backoff_wakeup.set()
        with self._cv:
            while self._unfinished or self._labels_unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(min(remaining, 0.1))
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Sends what is queued, waits up to ``timeout`` seconds, then stops. Returns True if
        everything was acknowledged; what was still pending is counted as dropped. Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed and not self._threads:
                return self._unfinished == 0 and self._labels_unfinished == 0
            self._closed = True
            self._closing = True
            threads, self._threads = self._threads, []
        self._wakeup.set()
        self._label_wakeup.set()
        self._backoff_wakeup.set()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        clean = not any(t.is_alive() for t in threads)
        with self._cv:
            self._abort = True
            call = self._call
            lost, lost_labels = self._unfinished, self._labels_unfinished
            self._n["dropped"] += lost
            self._n["labels_dropped"] += lost_labels
            self._unfinished = self._labels_unfinished = 0
            self._queue.clear()
            self._labels.clear()
            self._resend.clear()
            self._cv.notify_all()
        if call is not None:
            _quietly(call.cancel)
        if self._channel is not None:
            # grpc's connectivity poller (behind channel_ready_future) can outlive our cancelled
            # futures by a polling cycle and fails noisily on a channel closed under it; closing a
            # moment later avoids that race without making close() wait.
            delay = self._last_ready_wait + 1.0 - time.monotonic()
            if delay > 0:
                timer = threading.Timer(delay, _quietly, args=(self._channel.close,))
                timer.daemon = True
                timer.start()
            else:
                _quietly(self._channel.close)
        if lost or lost_labels:
            log.warning(
                "inferscope: closed with %d records and %d labels not acknowledged (counted as dropped)",
                lost, lost_labels,
            )
        return clean and not lost and not lost_labels

    def stats(self) -> ClientStats:
        """A consistent snapshot of all counters."""
        with self._lock:
            return ClientStats(queued=len(self._queue), **self._n)

    @property
    def sent(self) -> int:
        return self._n["sent"]

    @property
    def acked(self) -> int:
        return self._n["acked"]

    @property
    def rejected(self) -> int:
        return self._n["rejected"]

    @property
    def dropped(self) -> int:
        return self._n["dropped"]

    def __enter__(self) -> "InferscopeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ records: caller side

    def _enqueue(self, item: Any) -> bool:
        with self._lock:
            if self._closed or len(self._queue) >= self._max_queue:
                self._n["dropped"] += 1
                return False
            self._queue.append(item)
            self._unfinished += 1
            n = len(self._queue)
            if not self._started:
                self._ensure_started()
        if n == self._batch_size:
            self._wakeup.set()
        return True

    # ------------------------------------------------------------------ records: background side

    def _run_records(self) -> None:
        backoff = self._backoff_initial
        while True:
            with self._lock:
                if self._abort or (self._closing and self._unfinished == 0):
                    return
            # Records are taken from the queue only once the channel is connected, so an absent
            # sidecar costs retries, not records: they wait in the bounded queue.
            if not self._connected(backoff):
                backoff = min(backoff * 2, self._backoff_max)
                self._warn("connect", "inferscope: sidecar at %s not reachable yet; %d records queued",
                           self.target, len(self._queue), level=logging.INFO)
                self._maybe_warn_drops()
                continue
            session = _Session()
            code = None
            details = ""
            try:
                call = self._stub.StreamRecords(self._requests(session))
                with self._lock:
                    self._call = call
                for ack in call:
                    session.acks += 1
                    self._handle_ack(session, ack)
                    backoff = self._backoff_initial
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                details = e.details() if hasattr(e, "details") else str(e)
            except Exception:  # never let the thread die
                log.exception("inferscope: unexpected error in the record stream")
                code = grpc.StatusCode.UNKNOWN
            self._end_session(session, code, details)
            with self._lock:
                self._call = None
                if self._abort or (self._closing and self._unfinished == 0):
                    return
            if code is None and session.acks:
                continue  # the server ended the stream cleanly after acking: reconnect at once
            delay = random.uniform(backoff / 2, backoff)
            backoff = min(backoff * 2, self._backoff_max)
            self._maybe_warn_drops()
            self._backoff_wakeup.wait(delay)
            self._backoff_wakeup.clear()

    def _connected(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds (less once close() gives up) for the channel to be READY."""
        end = time.monotonic() + timeout
        future = grpc.channel_ready_future(self._channel)
        try:
            while True:
                try:
                    future.result(timeout=max(0.0, min(0.1, end - time.monotonic())))
                    return True
                except grpc.FutureTimeoutError:
                    if self._abort or time.monotonic() >= end:
                        return False
        except Exception:  # the channel was closed under us
            return False
        finally:
            future.cancel()
            self._last_ready_wait = time.monotonic()

    def _requests(self, session: _Session) -> Iterator[Any]:
        """The request stream of one call; runs on a gRPC thread."""
        try:
            while True:
                batch = self._next_batch(session)
                if batch is _END:
                    return
                if batch is not None:
                    yield batch
        except GeneratorExit:
            raise
        except Exception:
            log.exception("inferscope: unexpected error while batching records")

    def _next_batch(self, session: _Session) -> Any:
        with self._cv:
            while len(session.inflight) >= self._max_inflight and not (session.dead or self._abort):
                self._cv.wait(0.05)
            if session.dead or self._abort:
                return _END
            if self._resend:
                entry = self._resend.popleft()
                batch = entry[0]
                if not session.sent_declarations:
                    session.sent_declarations = True
                    del batch.declarations[:]
                    batch.declarations.extend(self._declarations.values())
                    self._pending_declarations = []
                session.inflight[batch.sequence] = entry
                self._n["resent"] += len(batch.records)
                return batch
        # Wait for a full batch, the flush interval, a flush() or close().
        deadline = time.monotonic() + self._flush_interval
        while True:
            with self._lock:
                n = len(self._queue)
                urgent = self._closing or self._abort or self._flush_requested
            if n >= self._batch_size or urgent or session.dead:
                break  # a flush with nothing queued clears the request below, so no busy loop
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.wait(min(remaining, 0.25))
            self._wakeup.clear()
        self._maybe_warn_drops()
        with self._lock:
            if session.dead or self._abort:
                return _END
            items = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            if not session.sent_declarations:
                declarations = list(self._declarations.values())
                session.sent_declarations = True
            else:
                declarations = self._pending_declarations
            self._pending_declarations = []
            report = self._n["dropped"] - self._drops_reported
            if not items and not declarations and not report:
                self._flush_requested = False
                if self._closing and not self._resend:
                    return _END  # half-close: the server acks what is in flight and ends the call
                return None
            self._drops_reported += report
            self._sequence += 1
            sequence = self._sequence
        batch = pb.RecordBatch(sequence=sequence, model=self.model, version=self.version,
                               client_dropped_records=report)
        batch.declarations.extend(declarations)
        invalid = 0
        for item in items:
            try:
                if isinstance(item, tuple):
                    _fill_record(batch.records.add(), item)
                else:
                    batch.records.add().CopyFrom(item)
            except Exception as e:  # a bad argument drops that record only
                del batch.records[-1]
                invalid += 1
                self._warn("invalid", "inferscope: dropped an invalid record (%s: %s)", type(e).__name__, e)
        with self._cv:
            self._n["dropped"] += invalid
            self._unfinished -= invalid
            self._n["sent"] += len(batch.records)
            if invalid:
                self._cv.notify_all()
            if not batch.records and not batch.declarations and not batch.client_dropped_records:
                return None
            entry = [batch, 0]
            if session.dead or self._abort:
                self._resend.append(entry)
                return _END
            session.inflight[sequence] = entry
        return batch

    def _handle_ack(self, session: _Session, ack: Any) -> None:
        with self._cv:
            entry = session.inflight.pop(ack.sequence, None)
            if entry is None:
                log.debug("inferscope: ack for unknown batch %d", ack.sequence)
                return
            batch = entry[0]
            self._n["acked"] += ack.accepted
            self._n["rejected"] += len(ack.rejects)
            self._n["flagged"] += len(ack.flags)
            self._unfinished -= len(batch.records)
            self._cv.notify_all()
        if ack.rejects:
            self._log_rejects(ack, batch)
        if self._on_ack is not None:
            try:
                self._on_ack(ack, batch)
            except Exception:
                log.exception("inferscope: on_ack callback failed")

    def _end_session(self, session: _Session, code: Any, details: str) -> None:
        with self._cv:
            session.dead = True
            entries = sorted(session.inflight.values(), key=lambda e: e[0].sequence)
            session.inflight.clear()
            lost = 0
            retry = code is None or code in _RETRYABLE
            for entry in entries:
                entry[1] += 1
                if retry and entry[1] <= self._max_resends and not self._abort:
                    self._resend.append(entry)
                else:
                    lost += len(entry[0].records)
                    self._drops_reported -= entry[0].client_dropped_records  # report them again
            # Keep the resend queue in sequence order, ahead of new records.
            if entries:
                self._resend = deque(sorted(self._resend, key=lambda e: e[0].sequence))
            self._n["dropped"] += lost
            self._unfinished -= lost
            if code is not None:
                self._n["stream_errors"] += 1
            self._cv.notify_all()
        if code is None:
            if entries:
                log.debug("inferscope: stream ended with %d batches unacknowledged; resending", len(entries))
            return
        name = getattr(code, "name", str(code))
        if code in _RETRYABLE:
            self._warn(
                "stream", "inferscope: stream to %s ended with %s (%s); reconnecting, %d batches to resend, %d records dropped",
                self.target, name, details, len(entries), lost,
                level=logging.INFO if code == grpc.StatusCode.UNAVAILABLE else logging.WARNING,
            )
        else:
            self._warn(
                "stream", "inferscope: stream to %s failed with %s (%s); %d unacknowledged records dropped",
                self.target, name, details, lost, level=logging.ERROR,
            )

    def _log_rejects(self, ack: Any, batch: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for r in ack.rejects:
                rid = batch.records[r.index].request_id if r.index < len(batch.records) else "?"
                log.debug(
                    "inferscope: batch %d record %d (request_id=%r) rejected: field=%s reason=%s: %s",
                    ack.sequence, r.index, rid, r.field, _reason(r.reason), r.message,
                )
        r = ack.rejects[0]
        self._warn(
            "rejects",
            "inferscope: %d of %d records in batch %d rejected, e.g. record %d field=%s reason=%s: %s "
            "(%d rejected so far; log level DEBUG on 'inferscope_client' shows each)",
            len(ack.rejects), len(batch.records), ack.sequence, r.index, r.field, _reason(r.reason),
            r.message, self._n["rejected"],
        )

    # ------------------------------------------------------------------ labels: background side

    def _run_labels(self) -> None:
        backoff = self._backoff_initial
        while True:
            deadline = time.monotonic() + self._flush_interval
            while True:
                with self._lock:
                    n = len(self._labels)
                    if self._abort or (self._closing and n == 0):
                        return
                    urgent = self._closing or self._flush_requested
                if n >= self._label_batch_size or (n and urgent):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._label_wakeup.wait(min(remaining, 0.25))
                self._label_wakeup.clear()
            if n == 0:
                continue
            if not self._connected(backoff):
                backoff = min(backoff * 2, self._backoff_max)
                self._maybe_warn_drops()
                continue
            backoff = self._backoff_initial
            with self._lock:
                items = [self._labels.popleft() for _ in range(min(self._label_batch_size, len(self._labels)))]
                self._label_sequence += 1
                sequence = self._label_sequence
            if items:
                self._send_labels(sequence, items)
            self._maybe_warn_drops()

    def _send_labels(self, sequence: int, items: List[Tuple]) -> None:
        batch = pb.LabelBatch(sequence=sequence, model=self.model, version=self.version)
        invalid = 0
        for request_id, label, model, version, t in items:
            try:
                gt = batch.labels.add(request_id=request_id, model=model, version=version, time_unix_nano=t)
                _fill_label(gt.label, label)
            except Exception as e:
                del batch.labels[-1]
                invalid += 1
                self._warn("invalid_label", "inferscope: dropped an invalid label (%s: %s)", type(e).__name__, e)
        n = len(batch.labels)
        outcome: Tuple[int, int, int] = (0, 0, n)  # acked, rejected, dropped
        attempt = 0
        backoff = self._backoff_initial
        while n:
            try:
                ack = self._stub.SubmitLabels(batch, timeout=self._rpc_timeout)
                outcome = (ack.accepted, len(ack.rejects), 0)
                for r in ack.rejects:
                    rid = batch.labels[r.index].request_id if r.index < n else "?"
                    log.debug("inferscope: label %d (request_id=%r) rejected: field=%s reason=%s: %s",
                              r.index, rid, r.field, _reason(r.reason), r.message)
                if ack.rejects:
                    r = ack.rejects[0]
                    self._warn("label_rejects", "inferscope: %d of %d labels rejected, e.g. label %d field=%s reason=%s: %s",
                               len(ack.rejects), n, r.index, r.field, _reason(r.reason), r.message)
                break
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                attempt += 1
                with self._lock:
                    give_up = self._abort or code not in _RETRYABLE or attempt > self._max_resends + 1
                if give_up:
                    self._warn("labels", "inferscope: SubmitLabels failed with %s; %d labels dropped",
                               getattr(code, "name", code), n, level=logging.WARNING)
                    break
                self._backoff_wakeup.wait(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, self._backoff_max)
            except Exception:
                log.exception("inferscope: unexpected error sending labels")
                break
        with self._cv:
            self._n["labels_sent"] += n
            self._n["labels_acked"] += outcome[0]
            self._n["labels_rejected"] += outcome[1]
            self._n["labels_dropped"] += outcome[2] + invalid
            self._labels_unfinished -= len(items)
            if not self._labels and not self._queue:
                self._flush_requested = False
            self._cv.notify_all()

    # ------------------------------------------------------------------ logging helpers

    def _warn(self, kind: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        """Logs at most once per _WARN_EVERY seconds per kind (DEBUG shows every one)."""
        now = time.monotonic()
        if now >= self._next_warning.get(kind, 0.0):
            self._next_warning[kind] = now + _WARN_EVERY
            log.log(level, msg, *args)
        else:
            log.debug(msg, *args)

    def _maybe_warn_drops(self) -> None:
        # Logged from the background threads: the caller's thread never logs or does I/O.
        d, ld = self._n["dropped"], self._n["labels_dropped"]
        if d > self._warned_dropped or ld > self._warned_labels_dropped:
            now = time.monotonic()
            if now >= self._next_warning.get("drops", 0.0):
                self._next_warning["drops"] = now + _WARN_EVERY
                log.warning(
                    "inferscope: %d records and %d labels dropped so far (queue full, invalid or undeliverable)",
                    d, ld,
                )
                self._warned_dropped, self._warned_labels_dropped = d, ld


_END = object()


def _after_fork(ref: "weakref.ReferenceType[InferscopeClient]") -> None:
    client = ref()
    if client is None:
        return
    was_started = client._started
    # The parent's threads do not exist here and its channel must not be used: start afresh, and
    # leave what the parent had queued to the parent.
    client._init_state()
    if was_started:
        log.debug("inferscope: client used before fork; the child opens its own channel on first use")


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        pass


def _reason(value: int) -> str:
    try:
        return pb.RejectReason.Name(value)
    except ValueError:
        return str(value)


def _floats(values: Iterable[Any]) -> List[float]:
    tolist = getattr(values, "tolist", None)  # numpy arrays: plain Python floats in one call
    if tolist is not None:
        values = tolist()
    return [math.nan if v is None else float(v) for v in values]  # None: missing (NaN)


def _fill_label(msg: Any, value: Any) -> None:
    if isinstance(value, pb.Label):
        msg.CopyFrom(value)
    elif isinstance(value, str):
        msg.class_name = value
    elif isinstance(value, numbers.Integral):  # bool and numpy integers too: an index into the classes
        msg.class_index = int(value)
    elif isinstance(value, numbers.Real):
        msg.regression_value = float(value)
    else:
        raise TypeError(f"label must be str, int, float or Label, not {type(value).__name__}")


def _fill_record(rec: Any, item: Tuple) -> None:
    (
        request_id, t, latency, error_type, model, version, numeric, categorical, named,
        predicted_class, probabilities, score, regression_value, input_tokens, output_tokens,
        ttft, finish_reason, operation, response_model, label, traceparent, tracestate, attributes,
    ) = item
    if request_id:
        rec.request_id = str(request_id)
    rec.time_unix_nano = int(t)
    if latency is not None:
        rec.latency_seconds = float(latency)
    if error_type:
        rec.error_type = str(error_type)
    if model:
        rec.model = model
    if version:
        rec.version = version
    if numeric is not None:
        rec.numeric_features.extend(_floats(numeric))
    if categorical is not None:
        rec.categorical_features.extend(str(c) for c in categorical)
    if named:
        for name, value in named.items():
            f = rec.named_features.add(name=str(name))
            if isinstance(value, str):
                f.category = value
            elif value is None:
                f.number = math.nan  # missing
            else:
                f.number = float(value)
    if predicted_class is not None or probabilities is not None or score is not None:
        c = rec.classification
        c.SetInParent()
        if isinstance(predicted_class, str):
            c.predicted_class = predicted_class
        elif predicted_class is not None:
            c.predicted_class_index = int(predicted_class)
        if probabilities is not None:
            c.class_probabilities.extend(_floats(probabilities))
        if score is not None:
            c.score = float(score)
    elif regression_value is not None:
        rec.regression.value = float(regression_value)
    elif (
        input_tokens is not None or output_tokens is not None or ttft is not None
        or finish_reason or operation or response_model
    ):
        g = rec.generation
        g.SetInParent()
        if input_tokens is not None:
            g.input_tokens = int(input_tokens)
        if output_tokens is not None:
            g.output_tokens = int(output_tokens)
        if ttft is not None:
            g.time_to_first_token_seconds = float(ttft)
        if finish_reason:
            g.finish_reason = finish_reason
        if operation:
            g.operation = operation
        if response_model:
            g.response_model = response_model
    if label is not None:
        _fill_label(rec.label, label)
    if traceparent:
        rec.traceparent = traceparent
    if tracestate:
        rec.tracestate = tracestate
    if attributes:
        for k, v in attributes.items():
            rec.attributes.add(key=str(k), value=str(v))
