#!/usr/bin/env python3
"""Redis memory and speed per pending prediction, for the key layout of issue 11 ("Fleet").

A pending prediction waits in Redis for its delayed label, found by request id, for a TTL of 24 h.
For each layout below and each N, this starts a fresh redis-server (`.tools/bin`, installed by
`tools/install-backends.sh redis`) on a free loopback port with no persistence, loads N pending
predictions of one model version from one connection, pipelined 1000 per round trip, and reports
the growth of `used_memory` (INFO memory) per prediction and the load time; then it looks up and
deletes labels, pipelined 1000 labels per round trip, and reports labels/s from one connection and
the server's own time per label (INFO commandstats).

Layouts (key prefix `{<model>@<version>}:p:`, the hash tag keeps one model version on one slot):
  A       one key per prediction: SET <prefix><id> <value> EX 86400; lookup GETDEL
  B<f>    hashes by request-id hash: HSET <prefix><crc32(id) mod K> <id> <value>, K = N / f so
          buckets hold f entries on average; EXPIRE 86400 on every bucket a batch touched;
          lookup HGET + HDEL pipelined (HDEL's 1 says who deleted it), or one EVALSHA
  C       hashes by minute: HSET <prefix><epoch minute> <id> <value>; EXPIREAT end of minute +
          86400 on every bucket a batch touched; lookup HGET + HDEL on the prediction's minute
          when the label carries it, else HGET on every live minute (1441 buckets)
  C/S     as C, each minute split into sub-buckets by crc32(id), about 100 entries each
  *-bin   the request id stored as its 16 raw UUID bytes instead of the 36-character text

A value is packed little-endian: prediction time (ms, i64), predicted class index (u16), then the
score (f64): 18 bytes, or a 3-class probability vector (3 x f64): 34 bytes. Request ids are random
version-4 UUIDs (fixed seed); prediction times are spread evenly over the last 24 h less 5 min
(the steady state of a 24 h TTL: N pending = predictions per day), in time order.

Python 3.11, standard library only (RESP2 spoken over a socket). Run:
    tools/redis-pending-memory.py                 # N = 100 000 and 1 000 000, every layout
    tools/redis-pending-memory.py --n 100000 --layouts A,B100 --json /tmp/out.json
"""

import argparse
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TTL_S = 86_400
PIPELINE = 1000
SPREAD_MARGIN_S = 300
TTL_ARG = str(TTL_S).encode()
VALUE_FORMATS = {18: struct.Struct("<qHd"), 34: struct.Struct("<qH3d")}
SCRIPT_TAKE = (
    "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if v then redis.call('HDEL', KEYS[1], ARGV[1]) end return v"
)


class RedisError(Exception):
    pass


def command(*args: bytes) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Connection:
    """A blocking RESP2 connection; replies are parsed by length (values are binary)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.buf[self.pos : end]
                self.pos = end + 2
                return line
            self._fill()

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < self.pos + n + 2:
                self._fill()
            value = self.buf[self.pos : self.pos + n]
            self.pos += n + 2
            return value
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if kind == b"-":
            return RedisError(rest.decode())
        raise RedisError(f"unexpected reply {line[:40]!r}")

    def pipeline(self, payload: bytes, count: int) -> list:
        self.sock.sendall(payload)
        replies = [self.reply() for _ in range(count)]
        errors = [r for r in replies if isinstance(r, RedisError)]
        if errors:
            raise errors[0]
        return replies

    def call(self, *args):
        return self.pipeline(command(*[a if isinstance(a, bytes) else str(a).encode() for a in args]), 1)[0]

    def info(self, section: str) -> dict:
        text = self.call("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A fresh redis-server on a free loopback port, no persistence; stopped on exit."""

    def __init__(self, binary: Path, extra: list[str]):
        self.log = tempfile.NamedTemporaryFile(prefix="redis-pending-", suffix=".log", delete=False)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--enable-debug-command", "local", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = Connection(self.port)
                if probe.call("PING") == b"PONG":
                    probe.close()
                    return
            except (ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: see {self.log.name}")
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        Path(self.log.name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Layout:
    name: str
    # "key": one key per prediction; "id-hash": buckets by request-id hash; "minute": by time.
    kind: str
    # Target entries per bucket (id-hash) or per sub-bucket of a minute (minute; 0: one per minute).
    fill: int = 0
    # The request id as its 16 raw bytes instead of its 36-character text.
    binary_ids: bool = False


LAYOUTS = {
    "A": Layout("A", "key"),
    "A-bin": Layout("A-bin", "key", binary_ids=True),
    "B100": Layout("B100", "id-hash", fill=100),
    "B400": Layout("B400", "id-hash", fill=400),
    "B100-bin": Layout("B100-bin", "id-hash", fill=100, binary_ids=True),
    "C": Layout("C", "minute"),
    "C/S": Layout("C/S", "minute", fill=100),
}


@dataclass
class Predictions:
    ids: list[bytes]  # 36-character UUID text
    raw_ids: list[bytes]  # the same ids, 16 bytes each
    times_ms: list[int]
    classes: list[int]
    scores: list[float]


def make_predictions(n: int, now_ms: int, seed: int) -> Predictions:
    rng = random.Random(seed)
    uuids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(n)]
    # The last 24 h less SPREAD_MARGIN_S, so that no minute bucket expires during a measurement.
    span_ms = (TTL_S - SPREAD_MARGIN_S) * 1000
    step = span_ms / n
    start = now_ms - span_ms
    return Predictions(
        ids=[str(u).encode() for u in uuids],
        raw_ids=[u.bytes for u in uuids],
        times_ms=[start + int(i * step) for i in range(n)],
        classes=[rng.randrange(3) for _ in range(n)],
        scores=[rng.random() for _ in range(n)],
    )


def pack_value(preds: Predictions, i: int, size: int) -> bytes:
    if size == 18:
        return VALUE_FORMATS[18].pack(preds.times_ms[i], preds.classes[i], preds.scores[i])
    p = preds.scores[i]
    rest = (1.0 - p) / 2
    return VALUE_FORMATS[34].pack(preds.times_ms[i], preds.classes[i], p, rest, rest)


class Keys:
    """Where a layout puts a prediction: its key and its field (None for layout A)."""

    def __init__(self, layout: Layout, prefix: bytes, n: int, shift_ms: int):
        self.layout = layout
        self.prefix = prefix
        # Added to the generated prediction times: the clock has moved since they were made, and a
        # minute bucket's EXPIREAT must stay in the future as it would for live traffic.
        self.shift_ms = shift_ms
        self.buckets = max(1, n // layout.fill) if layout.kind == "id-hash" else 0
        # Sub-buckets per minute: the mean per minute (N / 1440) over the target fill.
        self.per_minute = max(1, round(n / (TTL_S // 60) / layout.fill)) if layout.kind == "minute" and layout.fill else 1

    def id_of(self, preds: Predictions, i: int) -> bytes:
        return preds.raw_ids[i] if self.layout.binary_ids else preds.ids[i]

    def minute_key(self, minute: int, text_id: bytes) -> bytes:
        if self.per_minute == 1:
            return self.prefix + b"%d" % minute
        return self.prefix + b"%d:%d" % (minute, zlib.crc32(text_id) % self.per_minute)

    def bucket(self, preds: Predictions, i: int) -> tuple[bytes, int]:
        """(key, EXPIREAT second or 0 for a plain EXPIRE of the TTL) of a hash layout."""
        if self.layout.kind == "id-hash":
            return self.prefix + b"%d" % (zlib.crc32(preds.ids[i]) % self.buckets), 0
        minute = (preds.times_ms[i] + self.shift_ms) // 60_000
        return self.minute_key(minute, preds.ids[i]), (minute + 1) * 60 + TTL_S


def load_batches(keys: Keys, preds: Predictions, value_size: int) -> list[tuple[bytes, int]]:
    """The load as pipelines of PIPELINE predictions: (payload, number of commands)."""
    batches = []
    n = len(preds.ids)
    for lo in range(0, n, PIPELINE):
        parts = []
        touched: dict[bytes, int] = {}
        for i in range(lo, min(lo + PIPELINE, n)):
            rid = keys.id_of(preds, i)
            value = pack_value(preds, i, value_size)
            if keys.layout.kind == "key":
                parts.append(command(b"SET", keys.prefix + rid, value, b"EX", TTL_ARG))
            else:
                key, at = keys.bucket(preds, i)
                parts.append(command(b"HSET", key, rid, value))
                touched[key] = at
        for key, at in touched.items():
            parts.append(command(b"EXPIREAT", key, b"%d" % at) if at else command(b"EXPIRE", key, TTL_ARG))
        batches.append((b"".join(parts), len(parts)))
    return batches


def settle(probe: Connection, timeout_s: float = 120):
    """Waits until the loader's connection is gone and the dictionaries are not rehashing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        clients = int(probe.info("clients")["connected_clients"])
        stats = probe.call("DEBUG", "HTSTATS", "0").decode()
        if clients == 1 and "rehashing target" not in stats:
            return
        time.sleep(0.05)
    raise RuntimeError("redis kept rehashing")


def server_usec(probe: Connection, commands: list[str]) -> float:
    stats = probe.info("commandstats")
    total = 0.0
    for name in commands:
        entry = stats.get(f"cmdstat_{name}")
        if entry:
            fields = dict(kv.split("=") for kv in entry.split(","))
            total += float(fields["usec"])
    return total


def run_pipelined(conn: Connection, commands: list[bytes], per_trip: int) -> list:
    replies = []
    for lo in range(0, len(commands), per_trip):
        chunk = commands[lo : lo + per_trip]
        replies.extend(conn.pipeline(b"".join(chunk), len(chunk)))
    return replies


def lookups(server: RedisServer, probe: Connection, keys: Keys, preds: Predictions,
            sample: list[int], blind: list[int], now_ms: int) -> list[dict]:
    """Looks up and deletes the sampled predictions, each method on its own ids."""
    results = []
    conn = Connection(server.port)

    def timed(method: str, ids: list[int], cmds: list[bytes], cmds_per_label: int, stat_names: list[str], check):
        probe.call("CONFIG", "RESETSTAT")
        t0 = time.perf_counter()
        replies = run_pipelined(conn, cmds, PIPELINE * cmds_per_label)
        elapsed = time.perf_counter() - t0
        found = check(replies)
        if found != len(ids):
            raise RuntimeError(f"{method}: found {found} of {len(ids)}")
        results.append({
            "method": method, "labels": len(ids), "seconds": elapsed,
            "labels_per_s": len(ids) / elapsed,
            "server_us_per_label": server_usec(probe, stat_names) / len(ids),
        })

    half = len(sample) // 2
    first, second = sample[:half], sample[half:]
    if keys.layout.kind == "key":
        cmds = [command(b"GETDEL", keys.prefix + keys.id_of(preds, i)) for i in sample]
        timed("GETDEL", sample, cmds, 1, ["getdel"], lambda r: sum(v is not None for v in r))
    else:
        cmds = []
        for i in first:
            key, _ = keys.bucket(preds, i)
            rid = keys.id_of(preds, i)
            cmds += [command(b"HGET", key, rid), command(b"HDEL", key, rid)]
        timed("HGET+HDEL", first, cmds, 2, ["hget", "hdel"],
                lambda r: sum(1 for v, d in zip(r[0::2], r[1::2]) if v is not None and d == 1))
        sha = conn.call("SCRIPT", "LOAD", SCRIPT_TAKE)
        cmds = []
        for i in second:
            key, _ = keys.bucket(preds, i)
            cmds.append(command(b"EVALSHA", sha, b"1", key, keys.id_of(preds, i)))
        timed("EVALSHA", second, cmds, 1, ["evalsha"], lambda r: sum(v is not None for v in r))
    if keys.layout.kind == "minute" and blind:
        # Without the prediction time: every minute that can still hold a prediction.
        now_min = (now_ms + keys.shift_ms) // 60_000
        minutes = range(now_min - TTL_S // 60, now_min + 1)
        probe.call("CONFIG", "RESETSTAT")
        t0 = time.perf_counter()
        for i in blind:
            rid = keys.id_of(preds, i)
            probes = [keys.minute_key(m, preds.ids[i]) for m in minutes]
            replies = conn.pipeline(b"".join(command(b"HGET", k, rid) for k in probes), len(probes))
            hits = [k for k, v in zip(probes, replies) if v is not None]
            if len(hits) != 1 or conn.call(b"HDEL", hits[0], rid) != 1:
                raise RuntimeError("blind lookup did not find exactly one prediction")
        elapsed = time.perf_counter() - t0
        results.append({
            "method": f"HGET x{len(minutes)} + HDEL", "labels": len(blind), "seconds": elapsed,
            "labels_per_s": len(blind) / elapsed,
            "server_us_per_label": server_usec(probe, ["hget", "hdel"]) / len(blind),
        })
    conn.close()
    return results


def measure(binary: Path, extra: list[str], layout: Layout, preds: Predictions, value_size: int,
            prefix: bytes, n_lookups: int, n_blind: int, now_ms: int, seed: int) -> dict:
    n = len(preds.ids)
    keys = Keys(layout, prefix, n, int(time.time() * 1000) - now_ms)
    batches = load_batches(keys, preds, value_size)
    with RedisServer(binary, extra) as server:
        probe = Connection(server.port)
        memory = probe.info("memory")
        base, base_rss = int(memory["used_memory"]), int(memory["used_memory_rss"])
        probe.call("CONFIG", "RESETSTAT")
        loader = Connection(server.port)
        t0 = time.perf_counter()
        for payload, count in batches:
            loader.pipeline(payload, count)
        load_s = time.perf_counter() - t0
        load_us = server_usec(probe, ["set", "hset", "expire", "expireat"])
        loader.close()
        settle(probe)
        memory = probe.info("memory")
        used, rss = int(memory["used_memory"]), int(memory["used_memory_rss"])
        stats = probe.call("MEMORY", "STATS")
        stats = dict(zip(stats[0::2], stats[1::2]))
        db = stats[b"db.0"]
        db = dict(zip(db[0::2], db[1::2]))
        dict_bytes = db[b"overhead.hashtable.main"] + db[b"overhead.hashtable.expires"]
        n_keys = probe.call("DBSIZE")
        encodings = Counter()
        if layout.kind != "key":
            bucket_keys = sorted({keys.bucket(preds, i)[0] for i in range(n)})
            cmds = [command(b"OBJECT", b"ENCODING", k) for k in bucket_keys]
            encodings.update(r.decode() if r else "missing" for r in run_pipelined(probe, cmds, PIPELINE))
        sizes = Counter(keys.bucket(preds, i)[0] for i in range(n)) if layout.kind != "key" else Counter()
        result = {
            "layout": layout.name, "n": n, "value_bytes": value_size, "keys": n_keys,
            "buckets_max_entries": max(sizes.values()) if sizes else 1,
            "encodings": dict(encodings),
            "bytes_per_prediction": (used - base) / n,
            "dict_bytes_per_prediction": dict_bytes / n,
            "rss_bytes_per_prediction": (rss - base_rss) / n,
            "used_memory_base": base, "used_memory": used,
            "load_s": load_s, "load_per_s": n / load_s, "load_server_us_per_prediction": load_us / n,
            "lookups": [],
        }
        if n_lookups:
            rng = random.Random(seed + 1)
            chosen = rng.sample(range(n), n_lookups + n_blind)
            result["lookups"] = lookups(server, probe, keys, preds, chosen[:n_lookups],
                                        chosen[n_lookups:], now_ms)
        probe.close()
    return result


def print_tables(results: list[dict], version: str):
    print(f"\nRedis {version}; B/pred = growth of used_memory per prediction (dict: of it, the main "
          f"and expires hash tables as MEMORY STATS counts them; rss: growth of used_memory_rss); "
          f"load from one connection, {PIPELINE} predictions per round trip, srv us = server time "
          f"per prediction (INFO commandstats)")
    head = f"{'layout':9} {'N':>9} {'value':>5} {'keys':>9} {'max/bucket':>10} {'encoding':24} " \
           f"{'B/pred':>7} {'dict':>5} {'rss':>5} {'load s':>7} {'pred/s':>9} {'srv us':>6}"
    print(head)
    print("-" * len(head))
    for r in results:
        enc = ",".join(f"{k}:{v}" for k, v in sorted(r["encodings"].items())) or "string"
        print(f"{r['layout']:9} {r['n']:>9} {r['value_bytes']:>5} {r['keys']:>9} "
              f"{r['buckets_max_entries']:>10} {enc:24} {r['bytes_per_prediction']:>7.1f} "
              f"{r['dict_bytes_per_prediction']:>5.1f} {r['rss_bytes_per_prediction']:>5.0f} {r['load_s']:>7.2f} {r['load_per_s']:>9.0f} "
              f"{r['load_server_us_per_prediction']:>6.2f}")
    rows = [(r, l) for r in results for l in r["lookups"]]
    if rows:
        print(f"\nLookup and delete, one connection, {PIPELINE} labels per round trip "
              f"(blind minute scan: one label per round trip)")
        head = f"{'layout':9} {'N':>9} {'method':22} {'labels':>7} {'labels/s':>9} {'srv us/label':>12}"
        print(head)
        print("-" * len(head))
        for r, l in rows:
            print(f"{r['layout']:9} {r['n']:>9} {l['method']:22} {l['labels']:>7} "
                  f"{l['labels_per_s']:>9.0f} {l['server_us_per_label']:>12.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="100000,1000000", help="comma-separated numbers of predictions")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {','.join(LAYOUTS)}")
    ap.add_argument("--values", default="18,34", help="value sizes in bytes: 18 and/or 34")
    ap.add_argument("--lookups", type=int, default=40_000, help="labels looked up per run (18-byte values)")
    ap.add_argument("--blind-lookups", type=int, default=100, help="labels looked up in every minute (C)")
    ap.add_argument("--model", default="churn")
    ap.add_argument("--version", default="v3")
    ap.add_argument("--redis-server", type=Path, default=ROOT / ".tools/bin/redis-server")
    ap.add_argument("--redis-arg", action="append", default=[],
                    help="extra redis-server argument, e.g. --redis-arg=--hash-max-listpack-entries=128")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    if not args.redis_server.exists():
        sys.exit(f"{args.redis_server} is missing: run tools/install-backends.sh redis")
    extra = [part for a in args.redis_arg for part in a.split("=", 1)]
    prefix = f"{{{args.model}@{args.version}}}:p:".encode()
    now_ms = int(time.time() * 1000)
    with RedisServer(args.redis_server, extra) as server:
        probe = Connection(server.port)
        version = probe.info("server")["redis_version"]
        config = probe.call("CONFIG", "GET", "hash-max-listpack-*")
        probe.close()
    print(f"redis {version}; " + ", ".join(f"{k.decode()} {v.decode()}" for k, v in zip(config[0::2], config[1::2])))

    results = []
    for n in (int(x) for x in args.n.split(",")):
        preds = make_predictions(n, now_ms, args.seed)
        for name in args.layouts.split(","):
            for value_size in (int(v) for v in args.values.split(",")):
                n_lookups = min(args.lookups, n // 2) if value_size == 18 else 0
                n_blind = args.blind_lookups if LAYOUTS[name].kind == "minute" and n_lookups else 0
                r = measure(args.redis_server, extra, LAYOUTS[name], preds, value_size, prefix,
                            n_lookups, n_blind, now_ms, args.seed)
                print(f"  {name} N={n} value={value_size}: {r['bytes_per_prediction']:.1f} B/pred, "
                      f"load {r['load_s']:.2f} s", file=sys.stderr, flush=True)
                results.append(r)
    print_tables(results, version)
    if args.json:
        args.json.write_text(json.dumps({"redis_version": version, "args": vars(args) | {
            "redis_server": str(args.redis_server), "json": str(args.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
