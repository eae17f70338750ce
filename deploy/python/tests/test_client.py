"""Tests of both clients (pure-Python and native) against an in-process fake IngestService
(grpcio, loopback, port 0). Every test runs once per implementation.

Run from deploy/python:  python -m unittest discover -s tests -v
The native client's tests need its extension (native/, `maturin develop`); without it they are
reported as skipped, unless INFERSCOPE_REQUIRE_NATIVE=1 (tools/test-python-client.sh, CI), where
they fail.
"""

import array
import logging
import os
import socket
import sys
import threading
import time
import unittest
from concurrent import futures
from unittest import mock

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import inferscope_client  # noqa: E402
from inferscope_client import NativeInferscopeClient, PythonInferscopeClient, pb, pb_grpc  # noqa: E402
from inferscope_client.client import _fill_record  # noqa: E402

REQUIRE_NATIVE = os.environ.get("INFERSCOPE_REQUIRE_NATIVE") == "1"


class FakeIngest(pb_grpc.IngestServiceServicer):
    """Acks every batch; rejects records whose request_id starts with "bad"; flags "odd" ones;
    can end a stream with UNAVAILABLE on chosen batch numbers (counted over all streams)."""

    def __init__(self, abort_on=()):
        self.lock = threading.Lock()
        self.batches = []
        self.label_batches = []
        self.streams = 0
        self.abort_on = set(abort_on)

    def StreamRecords(self, request_iterator, context):
        with self.lock:
            self.streams += 1
        for batch in request_iterator:
            with self.lock:
                self.batches.append(batch)
                n = len(self.batches)
                abort = n in self.abort_on
            if abort:
                context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load (test)")
            ack = pb.BatchAck(sequence=batch.sequence)
            for i, r in enumerate(batch.records):
                if r.request_id.startswith("bad"):
                    ack.rejects.add(index=i, field="latency_seconds", reason=pb.REJECT_REASON_INVALID_VALUE,
                                    message="latency_seconds is -1, must be >= 0")
                elif r.request_id.startswith("odd"):
                    ack.flags.add(index=i).anomalies.add(kind="latency_outlier", score=9.5, subject="latency")
            ack.accepted = len(batch.records) - len(ack.rejects)
            yield ack

    def SubmitLabels(self, request, context):
        with self.lock:
            self.label_batches.append(request)
        return pb.LabelAck(sequence=request.sequence, accepted=len(request.labels))

    def records(self):
        with self.lock:
            return [r for b in self.batches for r in b.records]


def start_server(servicer, port=0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_IngestServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class ClientWithServerTests:
    Client = None  # set by the per-implementation subclasses at the end of this file

    def setUp(self):
        self.fake = FakeIngest()
        self.server, self.port = start_server(self.fake)
        self.addCleanup(self.server.stop, 0)

    def client(self, **kw):
        kw.setdefault("flush_interval", 0.05)
        c = self.Client(f"127.0.0.1:{self.port}", model="fraud", version="7", **kw)
        self.addCleanup(c.close, 1.0)
        return c

    def test_streams_batches_with_declaration(self):
        c = self.client(batch_size=100)
        c.declare_model(task="binary", class_names=["legit", "fraud"], positive_class="fraud",
                        numeric_features=["amount", "age"], categorical_features=["country"])
        for i in range(250):
            self.assertTrue(c.record(f"r{i}", latency_seconds=0.001 * i, numeric_features=[1.0 * i, None],
                                     categorical_features=["fr"], predicted_class=i % 2, score=0.5))
        self.assertTrue(c.flush(10))
        s = c.stats()
        self.assertEqual((s.sent, s.acked, s.rejected, s.dropped, s.queued), (250, 250, 0, 0, 0))
        self.assertTrue(all(0 < len(b.records) <= 100 for b in self.fake.batches))
        self.assertEqual([r.request_id for r in self.fake.records()], [f"r{i}" for i in range(250)])
        first = self.fake.batches[0]
        self.assertEqual((first.model, first.version), ("fraud", "7"))
        self.assertEqual(len(first.declarations), 1)
        self.assertEqual(list(first.declarations[0].class_names), ["legit", "fraud"])
        self.assertEqual([f.kind for f in first.declarations[0].features],
                         [pb.FEATURE_KIND_NUMERIC, pb.FEATURE_KIND_NUMERIC, pb.FEATURE_KIND_CATEGORICAL])
        self.assertTrue(all(not b.declarations for b in self.fake.batches[1:]))
        r = self.fake.records()[3]
        self.assertEqual(r.WhichOneof("prediction"), "classification")
        self.assertEqual(r.classification.predicted_class_index, 1)
        self.assertNotEqual(r.numeric_features[1], r.numeric_features[1])  # None -> NaN (missing)
        self.assertGreater(r.time_unix_nano, 0)
        seqs = [b.sequence for b in self.fake.batches]
        self.assertEqual(seqs, sorted(set(seqs)))

    def test_record_kinds_serialize(self):
        c = self.client()
        c.record("g1", latency_seconds=1.5, input_tokens=12, output_tokens=80, time_to_first_token_seconds=0.2,
                 finish_reason="stop", attributes={"tenant": "a"}, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        c.record("x1", regression_value=3.25, features={"amount": 10, "country": "fr"}, label=3.0)
        c.record("e1", latency_seconds=0.1, error_type="timeout")
        c.record_message(pb.InferenceRecord(request_id="raw", latency_seconds=0.5))
        self.assertTrue(c.flush(10))
        by_id = {r.request_id: r for r in self.fake.records()}
        self.assertEqual(by_id["g1"].generation.output_tokens, 80)
        self.assertAlmostEqual(by_id["g1"].generation.time_to_first_token_seconds, 0.2)
        self.assertEqual(by_id["g1"].attributes[0].value, "a")
        self.assertEqual(by_id["x1"].regression.value, 3.25)
        self.assertEqual({f.name: f.WhichOneof("value") for f in by_id["x1"].named_features},
                         {"amount": "number", "country": "category"})
        self.assertEqual(by_id["x1"].label.regression_value, 3.0)
        self.assertEqual(by_id["e1"].error_type, "timeout")
        self.assertEqual(by_id["raw"].latency_seconds, 0.5)

    def test_rejects_counted_and_logged(self):
        c = self.client()
        with self.assertLogs("inferscope_client", level=logging.DEBUG) as logs:
            for i in range(10):
                c.record(("bad" if i in (2, 5, 7) else "ok") + str(i), latency_seconds=0.01)
            self.assertTrue(c.flush(10))
        s = c.stats()
        self.assertEqual((s.acked, s.rejected, s.dropped), (7, 3, 0))
        text = "\n".join(logs.output)
        self.assertIn("WARNING:inferscope_client", text)
        self.assertIn("REJECT_REASON_INVALID_VALUE", text)
        debug = [line for line in logs.output if line.startswith("DEBUG") and "rejected: field=latency_seconds" in line]
        self.assertEqual(len(debug), 3)
        self.assertTrue(any("record 5 (request_id='bad5')" in line for line in debug))

    def test_on_ack_sees_flags_and_its_errors_are_contained(self):
        flagged = []

        def on_ack(ack, batch):
            flagged.extend(batch.records[f.index].request_id for f in ack.flags)
            raise RuntimeError("callback bug")

        c = self.client(on_ack=on_ack)
        with self.assertLogs("inferscope_client", level=logging.ERROR):
            for i in range(5):
                c.record(f"odd{i}" if i == 3 else f"ok{i}", latency_seconds=0.01)
            self.assertTrue(c.flush(10))
        self.assertEqual(flagged, ["odd3"])
        self.assertEqual(c.stats().flagged, 1)
        c.record("after", latency_seconds=0.01)  # the client still works
        self.assertTrue(c.flush(10))
        self.assertEqual(c.acked, 6)

    def test_labels(self):
        c = self.client()
        self.assertTrue(c.send_label("a", "fraud"))
        self.assertTrue(c.send_label("b", 1))
        self.assertTrue(c.send_label("c", 2.5, model="other", version="2"))
        self.assertTrue(c.flush(10))
        labels = [gt for b in self.fake.label_batches for gt in b.labels]
        self.assertEqual([gt.label.WhichOneof("value") for gt in labels], ["class_name", "class_index", "regression_value"])
        self.assertEqual((labels[2].model, labels[2].version), ("other", "2"))
        self.assertEqual(self.fake.label_batches[0].model, "fraud")
        s = c.stats()
        self.assertEqual((s.labels_sent, s.labels_acked, s.labels_dropped), (3, 3, 0))

    def test_resends_batches_lost_to_unavailable(self):
        self.fake.abort_on = {2}  # the second batch ends the stream with UNAVAILABLE, unacked
        c = self.client(batch_size=10, max_inflight=1)
        c.declare_model(task="regression")
        for i in range(50):
            c.record(f"r{i}", regression_value=float(i))
        self.assertTrue(c.flush(10))
        s = c.stats()
        self.assertEqual((s.acked, s.dropped, s.stream_errors), (50, 0, 1))
        self.assertEqual(s.resent, 10)
        self.assertGreaterEqual(self.fake.streams, 2)
        ids = [r.request_id for r in self.fake.records()]
        self.assertEqual(len(ids), 60)  # batch 2 was received twice, acked once
        self.assertEqual(sorted(set(ids)), sorted(f"r{i}" for i in range(50)))
        # The new stream declares the model again.
        self.assertEqual(len(self.fake.batches[2].declarations), 1)

    def test_close_flushes(self):
        c = self.client(batch_size=1000, flush_interval=10)
        for i in range(30):
            c.record(f"r{i}", latency_seconds=0.01)
        self.assertTrue(c.close(5))
        self.assertEqual(c.acked, 30)
        self.assertFalse(c.record("late"))  # closed: dropped, counted, no exception
        self.assertEqual(c.dropped, 1)


    def test_address_from_the_environment(self):
        with mock.patch.dict(os.environ, {"INFERSCOPE_ADDR": f"127.0.0.1:{self.port}"}):
            c = self.Client(model="fraud", version="7", flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        self.assertEqual(c.target, f"127.0.0.1:{self.port}")
        self.assertTrue(c.record("env", latency_seconds=0.01))
        self.assertTrue(c.flush(10))
        self.assertEqual([r.request_id for r in self.fake.records()], ["env"])


    def test_fork_after_use(self):
        """A client used before os.fork(): the child's client starts afresh (its own thread and
        connection, nothing of the parent's queue) and works; the parent's carries on."""
        if not hasattr(os, "fork"):
            self.skipTest("no os.fork on this platform")
        c = self.client()
        for i in range(20):
            c.record(f"parent{i}", latency_seconds=0.01)
        self.assertTrue(c.flush(10))
        c.record("queued-before-fork", latency_seconds=0.01)  # the parent's to send, not the child's
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, never return into unittest
            code = 1
            try:
                ok = all(c.record(f"child{i}", latency_seconds=0.01) for i in range(30))
                code = 0 if ok and c.flush(10) and c.stats().acked == 30 and c.close(5) else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                self.fail("the child hung")
            time.sleep(0.02)
        self.assertTrue(os.WIFEXITED(status))
        self.assertEqual(os.WEXITSTATUS(status), 0)
        self.assertTrue(c.record("parent-after", latency_seconds=0.01))
        self.assertTrue(c.flush(10))
        ids = [r.request_id for r in self.fake.records()]
        self.assertEqual(sorted(i for i in ids if i.startswith("child")), sorted(f"child{i}" for i in range(30)))
        self.assertEqual(ids.count("queued-before-fork"), 1)
        self.assertIn("parent-after", ids)
        self.assertEqual(c.stats().acked, 22)


class Number:
    """A number that is not a float (as numpy's scalars are): float() calls __float__."""

    def __init__(self, value, on_float=None):
        self.value = value
        self.on_float = on_float

    def __float__(self):
        if self.on_float is not None:
            self.on_float()
        return self.value


class Values:
    """A sequence with tolist(), as numpy arrays have."""

    def __init__(self, values):
        self.values = values

    def tolist(self):
        return list(self.values)


class Pairs:
    """A mapping that is not a dict: only items()."""

    def __init__(self, pairs):
        self.pairs = pairs

    def items(self):
        return iter(self.pairs)

    def __bool__(self):
        return bool(self.pairs)


def record_cases():
    """record() arguments covering every field and the ways a value can be given."""
    t = 1_700_000_000_123_456_789
    long = "x" * 200
    cases = [
        dict(request_id="req-1", latency_seconds=0.012, numeric_features=[0.5 * i - 3 for i in range(30)],
             predicted_class=1, score=0.7),
        dict(request_id="n", numeric_features=(1.5, None, 2, True, Number(4.25), "1.5", -0.0, float("inf"))),
        dict(request_id="n2", numeric_features=[]),
        dict(request_id="n3", numeric_features=(v for v in [1.0, 2.0])),
        dict(request_id="n4", numeric_features=Values([1, 2.5, None])),
        dict(request_id="n5", numeric_features=array.array("d", [0.25] * 17)),
        dict(request_id="n6", numeric_features=[float(i) for i in range(300)], class_probabilities=(0.2, 0.8)),
        dict(request_id="c", categorical_features=["fr", "", 3, "é", "✓" * 70]),
        dict(request_id="named", features={"amount": 10, "country": "fr", "missing": None, long: 1.5, "": "",
                                           "ratio": Number(0.5)}),
        dict(request_id="named2", features=Pairs([("a", 1.0), ("b", "x")])),
        dict(request_id="named3", features={}),
        dict(request_id="pc", predicted_class="fraud", class_probabilities=[0.1, 0.9]),
        dict(request_id="pc0", predicted_class=0),
        dict(request_id="pcb", predicted_class=True, score=0),
        dict(request_id="pce", predicted_class=""),
        dict(request_id="score", score=Number(0.25)),
        dict(request_id="reg", regression_value=3.25, label=2.5),
        dict(request_id="reg0", regression_value=0.0),
        dict(request_id="reg-int", regression_value=7, label=False),
        dict(request_id="gen", input_tokens=12, output_tokens=0, time_to_first_token_seconds=0.2,
             finish_reason="stop", operation="chat", response_model="m-1"),
        dict(request_id="gen2", finish_reason="length"),
        dict(request_id="gen3", output_tokens=5, finish_reason=""),
        dict(request_id="lab", label="fraud", predicted_class="legit"),
        dict(request_id="lab2", label=3),
        dict(request_id="lab3", label=pb.Label(class_name="x")),
        dict(request_id="tp", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", tracestate="k=v" * 50),
        dict(request_id="attr", attributes={"tenant": "a", "n": 5, "empty": "", long: long}),
        dict(request_id="attr2", attributes=Pairs([("k", "v")])),
        dict(request_id="mv", model="other", version="2", error_type="timeout", latency_seconds=3),
        dict(request_id=0, latency_seconds=0.0, error_type=""),
        dict(request_id=12345, model="", version=""),
        dict(),
    ]
    for i, case in enumerate(cases):
        case.setdefault("time_unix_nano", t + i)
    return cases


class EncodingTests(unittest.TestCase):
    """The native client writes each record's protobuf bytes itself (native/src/encode.rs): what
    the sidecar receives must be the message the pure-Python client builds from the same
    arguments (client.py's _fill_record, through Google's protobuf)."""

    def setUp(self):
        if NativeInferscopeClient is None:
            if REQUIRE_NATIVE:
                self.fail("INFERSCOPE_REQUIRE_NATIVE=1 but inferscope_client_native is not importable")
            self.skipTest("native extension not installed (deploy/python/README.md: maturin develop)")
        self.fake = FakeIngest()
        self.server, self.port = start_server(self.fake)
        self.addCleanup(self.server.stop, 0)

    def expected(self, case):
        """The pure-Python client's message for these arguments."""
        items = []
        py = PythonInferscopeClient("127.0.0.1:1", model="fraud", version="7")
        py._enqueue = lambda item: items.append(item) or True
        py.record(**case)
        rec = pb.InferenceRecord()
        _fill_record(rec, items[0])
        return rec

    def test_records_decode_to_the_pure_python_clients_messages(self):
        c = NativeInferscopeClient(f"127.0.0.1:{self.port}", model="fraud", version="7", batch_size=7,
                                   flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        self.assertIsNot(c.record, c._core.record)  # the fast entry point
        # Both entry points: record (fast_record, its own argument parsing) and the core's PyO3
        # method (the stable-ABI build's record).
        for name, record in (("fast_record", c.record), ("Core.record", c._core.record)):
            with self.subTest(entry=name):
                self.fake.batches.clear()
                # Generators are used up by reading: the expected messages from a fresh copy.
                cases, fresh = record_cases(), record_cases()
                for case in cases:
                    self.assertTrue(record(**case), case)
                self.assertTrue(c.flush(10))
                got = self.fake.records()
                self.assertEqual(len(got), len(cases))
                for case, rec in zip(fresh, got):
                    want = self.expected(case)
                    self.assertEqual(rec.SerializeToString(deterministic=True),
                                     want.SerializeToString(deterministic=True), f"{case}\n{rec}\n{want}")
                self.assertTrue(all(b.model == "fraud" and b.version == "7" for b in self.fake.batches))
                self.assertEqual(max(len(b.records) for b in self.fake.batches), 7)

    def test_fast_record_checks_its_arguments_as_python_does(self):
        c = NativeInferscopeClient(f"127.0.0.1:{self.port}", flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'scores'"):
            c.record("a", scores=1.0)
        with self.assertRaisesRegex(TypeError, "at most 1 positional argument"):
            c.record("a", 0.5)
        for _ in range(2):  # the same call site again (its keyword names are looked up once)
            with self.assertRaisesRegex(TypeError, "multiple values for argument 'request_id'"):
                c.record("a", request_id="b")
        # A keyword name built at run time is not the interned one: found by its text.
        name = "".join(["sc", "ore"])
        self.assertTrue(c.record(**{"request_id": "k", name: 0.5}))
        self.assertTrue(c.record())
        for i in range(3):
            self.assertTrue(c.record(f"p{i}", score=0.5 + i))
            self.assertTrue(c.record(request_id=f"k{i}", latency_seconds=float(i)))
        self.assertTrue(c.flush(10))
        got = self.fake.records()
        self.assertEqual([r.request_id for r in got], ["k", "", "p0", "k0", "p1", "k1", "p2", "k2"])
        self.assertEqual(got[0].classification.score, 0.5)
        self.assertEqual([r.classification.score for r in got[2::2]], [0.5, 1.5, 2.5])
        self.assertEqual([r.latency_seconds for r in got[3::2]], [0.0, 1.0, 2.0])

    def test_a_list_changed_while_it_is_read(self):
        values = [1.0, 2.0, 3.0, 4.0]
        values[1] = Number(2.0, on_float=lambda: values.clear())
        copy = [1.0, Number(2.0, on_float=lambda: copy.clear()), 3.0, 4.0]
        c = NativeInferscopeClient(f"127.0.0.1:{self.port}", flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        self.assertTrue(c.record("m", time_unix_nano=5, numeric_features=values))
        self.assertTrue(c.flush(10))
        self.assertEqual(self.fake.records()[0], self.expected(dict(request_id="m", time_unix_nano=5,
                                                                    numeric_features=copy)))
        self.assertEqual(list(self.fake.records()[0].numeric_features), [1.0, 2.0])

    def test_record_called_while_reading_a_records_arguments(self):
        c = NativeInferscopeClient(f"127.0.0.1:{self.port}", flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        inner = Number(1.0, on_float=lambda: c.record("inner", numeric_features=[9.0]))
        self.assertTrue(c.record("outer", numeric_features=[inner, 2.0]))
        self.assertTrue(c.flush(10))
        got = {r.request_id: list(r.numeric_features) for r in self.fake.records()}
        self.assertEqual(got, {"inner": [9.0], "outer": [1.0, 2.0]})

    def test_unreadable_arguments_drop_the_record_only(self):
        c = NativeInferscopeClient(f"127.0.0.1:{self.port}", flush_interval=0.05)
        self.addCleanup(c.close, 1.0)
        bad = [dict(numeric_features=[1.0, "x"]), dict(model=5), dict(predicted_class=-1),
               dict(numeric_features=[1.0] * 40 + [object()]), dict(features={"a": object()}),
               dict(label=object()), dict(time_unix_nano=-1)]
        for case in bad:
            self.assertFalse(c.record("bad", **case), case)
        self.assertTrue(c.record("good", numeric_features=[1.0] * 40))
        self.assertTrue(c.flush(10))
        self.assertEqual([r.request_id for r in self.fake.records()], ["good"])
        self.assertEqual(list(self.fake.records()[0].numeric_features), [1.0] * 40)
        self.assertEqual(c.stats().dropped, len(bad))


class ClientWithoutServerTests:
    Client = None

    def setUp(self):
        # A bound socket that never listens: connections are refused and nobody else gets the port.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.addCleanup(self.sock.close)
        self.target = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def test_drops_when_queue_full(self):
        c = self.Client(self.target, max_queue=10, batch_size=5)
        self.addCleanup(c.close, 0.5)
        start = time.monotonic()
        results = [c.record(f"r{i}", latency_seconds=0.01) for i in range(100)]
        elapsed = time.monotonic() - start
        self.assertEqual(results.count(True), 10)
        self.assertEqual(results.count(False), 90)
        s = c.stats()
        self.assertEqual((s.queued, s.dropped, s.sent), (10, 90, 0))
        self.assertLess(elapsed, 0.5)
        for i in range(10):
            self.assertTrue(c.send_label(f"r{i}", 1))

    def test_never_raises_or_blocks_when_server_down(self):
        c = self.Client(self.target, max_queue=1000)
        for i in range(2000):
            c.record(f"r{i}", latency_seconds=0.01, features={"x": i}, predicted_class="a")
        c.record("broken", numeric_features=["not a number"])  # invalid: dropped on the background thread
        c.declare_model("m", "1", task="no-such-task")
        c.send_label("r1", "a")
        self.assertFalse(c.flush(0.3))
        start = time.monotonic()
        self.assertFalse(c.close(1.0))
        self.assertLess(time.monotonic() - start, 2.0)
        s = c.stats()
        self.assertEqual(s.sent, 0)
        self.assertEqual(s.dropped, 2001)  # 1000 over the queue bound + 1001 left at close
        self.assertEqual(s.labels_dropped, 1)
        self.assertFalse(c.record("after-close"))
        self.assertTrue(c.close(0.1) in (True, False))  # idempotent

    def test_connects_when_the_sidecar_starts_later(self):
        port = free_port()
        c = self.Client(f"127.0.0.1:{port}", flush_interval=0.05, backoff_max=0.5)
        self.addCleanup(c.close, 1.0)
        for i in range(50):
            c.record(f"r{i}", latency_seconds=0.01)
        c.send_label("r0", "a")
        time.sleep(0.5)
        self.assertEqual(c.stats().sent, 0)
        fake = FakeIngest()
        server, _ = start_server(fake, port)
        self.addCleanup(server.stop, 0)
        self.assertTrue(c.flush(10))
        s = c.stats()
        self.assertEqual((s.acked, s.dropped, s.labels_acked), (50, 0, 1))
        self.assertEqual(len(fake.records()), 50)

    def test_a_burst_past_the_queue_is_dropped_counted_and_reported(self):
        port = free_port()
        c = self.Client(f"127.0.0.1:{port}", max_queue=100, batch_size=50, flush_interval=0.05,
                        backoff_max=0.2)
        self.addCleanup(c.close, 1.0)
        # The sidecar is not there yet: the queue holds 100 records, the other 150 are dropped.
        results = [c.record(f"r{i}", latency_seconds=0.01) for i in range(250)]
        self.assertEqual((results.count(True), results.count(False)), (100, 150))
        fake = FakeIngest()
        server, _ = start_server(fake, port)
        self.addCleanup(server.stop, 0)
        self.assertTrue(c.flush(10))
        s = c.stats()
        self.assertEqual((s.acked, s.dropped), (100, 150))
        # The drops reach the sidecar in the batches' client_dropped_records, once.
        self.assertEqual(sum(b.client_dropped_records for b in fake.batches), 150)
        self.assertTrue(c.record("more", latency_seconds=0.01))
        self.assertTrue(c.flush(10))
        self.assertEqual(fake.batches[-1].client_dropped_records, 0)
        self.assertEqual(sum(b.client_dropped_records for b in fake.batches), 150)


class ChoiceTest(unittest.TestCase):
    def test_the_native_client_is_the_default_when_installed(self):
        if NativeInferscopeClient is None:
            if REQUIRE_NATIVE:
                self.fail("INFERSCOPE_REQUIRE_NATIVE=1 but inferscope_client_native is not importable")
            self.skipTest("native extension not installed (deploy/python/README.md: maturin develop)")
        expected = PythonInferscopeClient if os.environ.get("INFERSCOPE_CLIENT") == "python" else NativeInferscopeClient
        self.assertIs(inferscope_client.InferscopeClient, expected)
        self.assertEqual(NativeInferscopeClient.implementation, "native")


def _native_or_skip(cls):
    """The native tests run when the extension is there; without it they fail under
    INFERSCOPE_REQUIRE_NATIVE=1 and are reported as skipped otherwise."""
    if NativeInferscopeClient is not None or REQUIRE_NATIVE:
        return cls
    return unittest.skip("native extension not installed (deploy/python/README.md: maturin develop)")(cls)


class PythonClientWithServerTest(ClientWithServerTests, unittest.TestCase):
    Client = PythonInferscopeClient


class PythonClientWithoutServerTest(ClientWithoutServerTests, unittest.TestCase):
    Client = PythonInferscopeClient


@_native_or_skip
class NativeClientWithServerTest(ClientWithServerTests, unittest.TestCase):
    Client = NativeInferscopeClient


@_native_or_skip
class NativeClientWithoutServerTest(ClientWithoutServerTests, unittest.TestCase):
    Client = NativeInferscopeClient


if __name__ == "__main__":
    unittest.main()
