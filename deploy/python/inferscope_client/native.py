"""The client with its native core (``inferscope_client_native``, built from ``native/`` with
maturin): the pure-Python client's API and behaviour, with the batching, encoding and sending
done by a Rust thread that never holds the interpreter lock.

``record(...)`` is the core's own function (no Python frame in between): it writes its arguments
as the record's protobuf bytes during its one short hold of the interpreter lock and appends them
to a bounded queue. So, unlike the pure-Python client, the values are read before ``record`` returns
(mutating a list afterwards is harmless), and an argument that cannot be read is counted as
dropped at once (``record`` returns False; the reason is logged by the background thread).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import inferscope_client_native as _native

from .client import ClientStats, _check_sizes, _reason, _target, _TASKS, log
from .inferscope.v1 import ingest_pb2 as pb

__all__ = ["NativeInferscopeClient"]


class NativeInferscopeClient:
    """``InferscopeClient`` with a native core; same arguments, methods and counters.

    ``channel_options`` are grpcio's and do not apply (the native core speaks HTTP/2 through
    tonic); they are accepted and ignored so that code written for either client runs with both.
    """

    implementation = "native"

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
        backoff_initial = max(0.001, float(backoff_initial))
        self._args = (
            self.target, model, version, max_queue, batch_size, max(0.001, float(flush_interval)),
            max_inflight, max(0, max_resends), backoff_initial, max(backoff_initial, float(backoff_max)),
            max_label_queue, label_batch_size, float(rpc_timeout), on_ack,
        )
        self._new_core()
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _new_core(self) -> None:
        self._core = _native.Core(*self._args)
        # The core's method itself: a call goes straight into Rust (fast_record: the same method
        # without PyO3's argument parser; absent from the stable-ABI build).
        fast = getattr(self._core, "fast_record", None)
        self.record = fast() if fast is not None else self._core.record
        self._closed = False

    def record_message(self, record: Any) -> bool:
        """Queues a prebuilt ``inferscope.v1.InferenceRecord``; returns False if it was dropped."""
        try:
            encoded = record.SerializeToString()
        except Exception as e:  # never raise into the model server
            log.debug("inferscope: record_message got %s: %s", type(record).__name__, e)
            return self._core.record_encoded(b"\xff")  # counted as an invalid record
        return self._core.record_encoded(encoded)

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
        """As ``InferscopeClient.declare_model``."""
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
        if not self._core.declare(decl.SerializeToString()) and not self._closed:
            log.warning("inferscope: more than 1024 declared model versions; ignoring %s",
                        (decl.model, decl.version))
        return decl

    def send_label(
        self,
        request_id: str,
        label: Any,
        *,
        model: str = "",
        version: str = "",
        time_unix_nano: int = 0,
    ) -> bool:
        """As ``InferscopeClient.send_label``."""
        return self._core.send_label(request_id, label, model, version, int(time_unix_nano))

    def flush(self, timeout: float = 5.0) -> bool:
        """Sends what is queued now and waits up to ``timeout`` seconds for the acks (records and
        labels). Returns True if everything queued was acknowledged or dropped in time."""
        return self._core.flush(float(timeout))

    def close(self, timeout: float = 5.0) -> bool:
        """Sends what is queued, waits up to ``timeout`` seconds, then stops. Returns True if
        everything was acknowledged; what was still pending is counted as dropped. Idempotent."""
        self._closed = True
        clean, lost, lost_labels = self._core.close(float(timeout))
        if lost or lost_labels:
            log.warning(
                "inferscope: closed with %d records and %d labels not acknowledged (counted as dropped)",
                lost, lost_labels,
            )
        return clean and not lost and not lost_labels

    def stats(self) -> ClientStats:
        """A snapshot of all counters."""
        return ClientStats(*self._core.stats())

    @property
    def sent(self) -> int:
        return self.stats().sent

    @property
    def acked(self) -> int:
        return self.stats().acked

    @property
    def rejected(self) -> int:
        return self.stats().rejected

    @property
    def dropped(self) -> int:
        return self.stats().dropped

    def __enter__(self) -> "NativeInferscopeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _on_ack(ack_bytes: bytes, batch_bytes: bytes, rejected: int, warn: bool,
            callback: Optional[Callable[[Any, Any], None]]) -> None:
    """Called by the native core's thread (holding the interpreter lock) for an ack with rejects,
    to log them as the pure-Python client does, and for every ack when there is an ``on_ack``."""
    ack = pb.BatchAck.FromString(ack_bytes)
    batch = pb.RecordBatch.FromString(batch_bytes)
    if ack.rejects:
        if log.isEnabledFor(logging.DEBUG):
            for r in ack.rejects:
                rid = batch.records[r.index].request_id if r.index < len(batch.records) else "?"
                log.debug(
                    "inferscope: batch %d record %d (request_id=%r) rejected: field=%s reason=%s: %s",
                    ack.sequence, r.index, rid, r.field, _reason(r.reason), r.message,
                )
        r = ack.rejects[0]
        log.log(
            logging.WARNING if warn else logging.DEBUG,
            "inferscope: %d of %d records in batch %d rejected, e.g. record %d field=%s reason=%s: %s "
            "(%d rejected so far; log level DEBUG on 'inferscope_client' shows each)",
            len(ack.rejects), len(batch.records), ack.sequence, r.index, r.field, _reason(r.reason),
            r.message, rejected,
        )
    if callback is not None:
        try:
            callback(ack, batch)
        except Exception:
            log.exception("inferscope: on_ack callback failed")


def _after_fork(ref: "weakref.ReferenceType[NativeInferscopeClient]") -> None:
    client = ref()
    if client is None:
        return
    # The parent's thread does not exist here: start afresh with a new core, and leave what the
    # parent had queued to the parent. The old core is kept, never dropped: its state may be
    # locked by the thread that no longer exists.
    _orphans.append(client._core)
    client._new_core()
    log.debug("inferscope: the child of a fork starts its own native client")


_orphans: list = []

logging.getLogger("inferscope_client").addHandler(logging.NullHandler())
