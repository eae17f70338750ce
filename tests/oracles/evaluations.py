"""Golden evaluation streams and their expected statistics, computed with NumPy.

Writes tests/data/evaluations.json: streams of evaluations of generations (OpenTelemetry
`gen_ai.evaluation.result`: a name, an optional score, an optional label) and, per model and
evaluation name, what inferscope must export for them (src/quality/evaluation.rs,
src/export/evaluation.rs): the evaluations joined (`inferscope.evaluation.sample_size`), the
mean score of those with a score (`inferscope.evaluation.score`) and each label's share of those
with a label (`inferscope.evaluation.label`).

The join rules the expectation applies (README, "Evaluations of generations"): an evaluation
counts when its request id names a generation of the model, once per (generation, name): the
first in arrival order counts, a later one of the same name is a duplicate. Every evaluation of a
stream arrives within the first minutes, so each window (5m, 1h, all) holds all of them.

Streams:
- `sidecar` (tests/evaluations.rs, over the gRPC API): generations `g<i>` and `late<i>`; inline
  evaluations on some records; `early` ones sent before the generations exist (for `late<i>`);
  `delayed` ones after, with duplicates and evaluations of requests never seen.
- `otlp` (tests/capture/send_genai_spans.py and tests/capture_otlp.rs): evaluations of the vLLM
  and OpenLLMetry generations that script sends, each with how it is sent: `span_event` (a span
  event on the generation's span), `log_span` (a log record event parented to the generation's
  span), `log_event_name_attribute` (the same, named by the older `event.name` attribute) or
  `log_response_id` (a log record event with `gen_ai.response.id` and no span).

Run from the repository root:
    python3 -m venv /tmp/oracles && /tmp/oracles/bin/pip install -r tests/oracles/requirements.txt
    /tmp/oracles/bin/python tests/oracles/evaluations.py
"""

import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "data" / "evaluations.json"
rng = np.random.default_rng(20261202)

# Names and what each carries: a score, a label, or both.
NAMES = {"relevance": ("score", None), "thumbs": (None, ["up", "down"]),
         "judge": ("score", ["pass", "fail", "unsure"])}


def evaluation(request_id, name):
    score_kind, labels = NAMES[name]
    score = None
    if score_kind:
        # Scores on a judge's 0-10 scale, rounded to what evaluators report.
        score = float(np.round(rng.uniform(0.0, 10.0), 3))
    label = ""
    if labels:
        label = str(rng.choice(labels, p=None if len(labels) == 2 else [0.5, 0.3, 0.2]))
    return {"request_id": request_id, "name": name, "score": score, "label": label}


def expected(generations, arrivals):
    """Statistics per name of `arrivals` (in arrival order) joined to `generations`."""
    ids = np.array([a["request_id"] for a in arrivals], dtype=object)
    names = np.array([a["name"] for a in arrivals], dtype=object)
    known = np.isin(ids, np.array(sorted(generations), dtype=object))
    keys = np.array([f"{i}\x00{n}" for i, n in zip(ids, names)], dtype=object)
    # The first arrival of each (request, name) among the known ones.
    _, first = np.unique(keys[known], return_index=True)
    kept = np.flatnonzero(known)[np.sort(first)]
    out = {}
    for name in sorted(set(names[kept])):
        rows = [arrivals[i] for i in kept if arrivals[i]["name"] == name]
        scores = np.array([r["score"] for r in rows if r["score"] is not None], dtype=float)
        labels = np.array([r["label"] for r in rows if r["label"]], dtype=object)
        values, counts = np.unique(labels, return_counts=True) if labels.size else ([], [])
        out[name] = {
            "count": len(rows),
            "mean_score": float(np.mean(scores)) if scores.size else None,
            "labels": {str(v): float(c) / float(labels.size) for v, c in zip(values, counts)},
        }
    return out, int(kept.size), int(np.count_nonzero(known)) - int(kept.size)


def sidecar_stream():
    gens = [f"g{i}" for i in range(40)]
    late = [f"late{i}" for i in range(5)]
    inline = [evaluation(g, "judge") for g in gens if rng.random() < 0.3]
    early = [evaluation(g, n) for g in late for n in ("relevance", "thumbs")]
    delayed = []
    for g in gens:
        for name in NAMES:
            if rng.random() < 0.6:
                delayed.append(evaluation(g, name))
    # Sent twice (another value): the second is a duplicate.
    for i in rng.choice(len(delayed), 8, replace=False):
        delayed.append(evaluation(delayed[i]["request_id"], delayed[i]["name"]))
    order = rng.permutation(len(delayed))
    delayed = [delayed[i] for i in order]
    unknown = [evaluation("nobody", "relevance"), evaluation("nobody", "thumbs"),
               evaluation("nobody-either", "judge")]
    delayed += unknown
    # Inline ones arrive with their records, before the early ones are joined to the late
    # generations of the same batch; the delayed ones after.
    stats, joined, duplicates = expected(set(gens) | set(late), inline + early + delayed)
    return {
        "generations": gens + late,
        "inline": inline,
        "early": early,
        "delayed": delayed,
        "expected": {"llm": stats},
        "joined": joined,
        "joined_inline": len(inline),
        "duplicates": duplicates,
        # Held until --early-label-hold-seconds: one per (request, name), all distinct here.
        "held_early": len({(u["request_id"], u["name"]) for u in unknown}),
    }


def otlp_stream():
    # The generations tests/capture/send_genai_spans.py sends: three vLLM `llm_request` spans
    # (request ids cmpl-<run>-<i>) and two OpenLLMetry `openai.chat` spans (chatcmpl-<run>-<i>).
    plan = [
        ("vllm", 0, "span_event", "relevance"),
        ("vllm", 0, "log_span", "judge"),
        ("vllm", 1, "log_span", "relevance"),
        ("vllm", 1, "log_response_id", "judge"),
        ("vllm", 2, "log_event_name_attribute", "relevance"),
        ("vllm", 2, "log_response_id", "thumbs"),
        ("vllm", 0, "log_response_id", "thumbs"),
        # Judged again: a duplicate, not counted.
        ("vllm", 1, "log_span", "judge"),
        ("openllmetry", 0, "log_span", "relevance"),
        ("openllmetry", 1, "log_response_id", "relevance"),
        ("openllmetry", 0, "log_response_id", "thumbs"),
        ("openllmetry", 1, "log_span", "thumbs"),
    ]
    evaluations = []
    for model, generation, via, name in plan:
        e = evaluation(f"{model}-{generation}", name)
        evaluations.append({"model": model, "generation": generation, "via": via,
                            "name": name, "score": e["score"], "label": e["label"]})
    out = {}
    counted = {}
    for model, n in (("vllm", 3), ("openllmetry", 2)):
        arrivals = [{"request_id": f"{e['model']}-{e['generation']}", "name": e["name"],
                     "score": e["score"], "label": e["label"]}
                    for e in evaluations if e["model"] == model]
        out[model], counted[model], _ = expected({f"{model}-{i}" for i in range(n)}, arrivals)
    return {"generations": {"vllm": 3, "openllmetry": 2}, "evaluations": evaluations,
            "expected": out, "joined": counted}


def main():
    data = {
        "generator": "tests/oracles/evaluations.py",
        "numpy": np.__version__,
        "streams": {"sidecar": sidecar_stream(), "otlp": otlp_stream()},
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
