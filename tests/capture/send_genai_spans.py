"""Sends GenAI spans shaped as vLLM's and OpenLLMetry's to inferscope's OTLP receivers, with the
OpenTelemetry Python SDK's own exporters (a real client, no hand-written bytes), and prints what
it sent as one JSON object on stdout for tests/capture_otlp.rs to check.

Over OTLP/gRPC (`--grpc HOST:PORT`), resource service.name=vllm-demo, service.version=v1:
- one HTTP server span `POST /v1/chat/completions` (not GenAI: forwarded only), parent of
- three vLLM `llm_request` spans, kind SERVER, with the attributes `OutputProcessor.do_tracing`
  sets (docs/no-code-capture-sources.md A.1-A.4, read from `vllm-project/vllm
  vllm/v1/engine/output_processor.py @d0782260` and `vllm/tracing/utils.py @0bf3270f`):
  `gen_ai.latency.time_to_first_token`, `gen_ai.latency.e2e`, `gen_ai.latency.time_in_queue`,
  `gen_ai.usage.prompt_tokens`, `gen_ai.usage.completion_tokens`, `gen_ai.request.id`,
  `gen_ai.response.finish_reasons` as the JSON *string* `'["stop"]'`, `gen_ai.request.temperature`
  / `top_p` / `max_tokens`; no model name (A.4), start = arrival with the end set explicitly;
- on `llm_request` spans, the `span_event` evaluations of the oracle's plan (below) as
  `gen_ai.evaluation.result` span events (section E.3; the span event form public code uses) with
  `gen_ai.evaluation.name`, `.score.value`, `.score.label`.

Over OTLP/HTTP protobuf (`--http URL`, the full `/v1/traces` URL), resource service.name=chat-app:
- two OpenLLMetry `openai.chat` spans, kind CLIENT, as `opentelemetry-instrumentation-openai
  0.62.4` with `opentelemetry-semantic-conventions-ai 0.5.1` sets them (section C):
  `gen_ai.operation.name=chat`, `gen_ai.provider.name=openai`, `gen_ai.request.model`,
  `gen_ai.response.model`, `gen_ai.response.id`, `gen_ai.usage.input_tokens`,
  `gen_ai.usage.output_tokens`, `gen_ai.usage.total_tokens`, `gen_ai.response.finish_reasons` as
  a string array.

Then, once every span is exported, the other evaluations of the plan as OTLP log records, the
form the GenAI semantic conventions define (`gen-ai-events.md`, event `gen_ai.evaluation.result`),
emitted with the SDK's logs API (`Logger.emit(event_name=..., context=..., attributes=...)`; the
separate events API is deprecated since 1.39.0) and its OTLP log exporters: the vLLM ones over
gRPC with the vLLM resource, the OpenLLMetry ones over HTTP (`--http-logs`) with the app's
resource, in the plan's order:
- `log_span`: parented to the generation's span (the record's trace and span ids);
- `log_event_name_attribute`: the same, named by the `event.name` attribute (SDKs before
  `LogRecord.event_name`) instead of `event_name`;
- `log_response_id`: no span, `gen_ai.response.id` = the generation's request id.

The plan and the expected statistics come from tests/data/evaluations.json (stream `otlp`),
written by tests/oracles/evaluations.py; nothing here computes an expected value.

Usage: python send_genai_spans.py --grpc 127.0.0.1:4317 --http http://127.0.0.1:4318/v1/traces \
         --http-logs http://127.0.0.1:4318/v1/logs --evaluations tests/data/evaluations.json
"""

import argparse
import json
import time

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanKind, set_span_in_context

VLLM = [
    # (prompt tokens, completion tokens, e2e s, ttft s)
    (12, 40, 0.9, 0.05),
    (20, 64, 1.3, 0.08),
    (33, 7, 0.4, 0.12),
]
OPENAI = [
    # (input tokens, output tokens, duration s)
    (7, 30, 0.6),
    (9, 31, 0.8),
]
EVENT = "gen_ai.evaluation.result"
VLLM_RESOURCE = {"service.name": "vllm-demo", "service.version": "v1"}
APP_RESOURCE = {"service.name": "chat-app"}


def evaluation_attributes(e):
    """The event's attributes (semconv: name required, score and label when applicable)."""
    attributes = {"gen_ai.evaluation.name": e["name"]}
    if e["score"] is not None:
        attributes["gen_ai.evaluation.score.value"] = e["score"]
    if e["label"]:
        attributes["gen_ai.evaluation.score.label"] = e["label"]
    return attributes


def provider(resource, exporter):
    tp = TracerProvider(resource=Resource.create(resource))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def send_vllm(endpoint, run, plan):
    tp = provider(VLLM_RESOURCE, GrpcExporter(endpoint=endpoint, insecure=True))
    tracer = tp.get_tracer("vllm.llm_engine")
    t0 = time.time_ns() - 10_000_000_000
    http = tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER, start_time=t0,
                             attributes={"http.request.method": "POST", "url.path": "/v1/chat/completions"})
    sent = []
    for i, (prompt, completion, e2e, ttft) in enumerate(VLLM):
        start = t0 + i * 2_000_000_000
        request_id = f"cmpl-{run}-{i}"
        span = tracer.start_span("llm_request", kind=SpanKind.SERVER, start_time=start,
                                 context=set_span_in_context(http), attributes={
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.top_p": 0.9,
            "gen_ai.request.max_tokens": 256,
            "gen_ai.request.n": 1,
            "gen_ai.latency.time_to_first_token": ttft,
            "gen_ai.latency.e2e": e2e,
            "gen_ai.latency.time_in_queue": 0.002,
            "gen_ai.latency.time_in_model_prefill": ttft - 0.002,
            "gen_ai.usage.prompt_tokens": prompt,
            "gen_ai.usage.completion_tokens": completion,
            "gen_ai.request.id": request_id,
            "gen_ai.response.finish_reasons": json.dumps(["stop"]),
        })
        for e in plan:
            if e["model"] == "vllm" and e["generation"] == i and e["via"] == "span_event":
                span.add_event(EVENT, evaluation_attributes(e))
        span.end(end_time=start + int(e2e * 1e9) + 1_000_000)
        ctx = span.get_span_context()
        sent.append({"span_id": f"{ctx.span_id:016x}", "request_id": request_id, "context": ctx})
    http.end(end_time=t0 + 8_000_000_000)
    tp.force_flush()
    tp.shutdown()
    ctx = http.get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}", "http_span_id": f"{ctx.span_id:016x}", "llm": sent}


def send_openllmetry(endpoint, run):
    tp = provider(APP_RESOURCE, HttpExporter(endpoint=endpoint))
    tracer = tp.get_tracer("opentelemetry.instrumentation.openai.v1")
    t0 = time.time_ns() - 5_000_000_000
    sent = []
    trace_id = None
    parent = None
    for i, (inp, out, duration) in enumerate(OPENAI):
        start = t0 + i * 1_000_000_000
        span = tracer.start_span("openai.chat", kind=SpanKind.CLIENT, start_time=start,
                                 context=parent, attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "llm.is_streaming": False,
            "server.address": "https://api.openai.com/v1/",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"chatcmpl-{run}-{i}",
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.total_tokens": inp + out,
            "gen_ai.response.finish_reasons": ("stop",),
        })
        span.end(end_time=start + int(duration * 1e9))
        ctx = span.get_span_context()
        trace_id = f"{ctx.trace_id:032x}"
        # Both in one trace, the second a sibling under the first's trace (same trace id).
        parent = parent or set_span_in_context(span)
        sent.append({"span_id": f"{ctx.span_id:016x}", "request_id": f"chatcmpl-{run}-{i}",
                     "context": ctx})
    tp.force_flush()
    tp.shutdown()
    return {"trace_id": trace_id, "llm": sent}


def send_evaluation_logs(plan, model, generations, resource, exporter):
    """The plan's log-record evaluations of `model`, in order, one export each."""
    lp = LoggerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
    lp.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = lp.get_logger("inferscope.tests.evaluator")
    for e in plan:
        if e["model"] != model or e["via"] == "span_event":
            continue
        generation = generations[e["generation"]]
        attributes = evaluation_attributes(e)
        parent = set_span_in_context(NonRecordingSpan(generation["context"]))
        if e["via"] == "log_span":
            logger.emit(event_name=EVENT, context=parent, attributes=attributes)
        elif e["via"] == "log_event_name_attribute":
            logger.emit(context=parent, attributes={"event.name": EVENT, **attributes})
        elif e["via"] == "log_response_id":
            attributes["gen_ai.response.id"] = generation["request_id"]
            logger.emit(event_name=EVENT, attributes=attributes)
        else:
            raise ValueError(f"unknown way to send an evaluation: {e['via']}")
    lp.force_flush()
    lp.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--http-logs", required=True)
    parser.add_argument("--evaluations", required=True)
    parser.add_argument("--run", default=str(time.time_ns()))
    args = parser.parse_args()
    with open(args.evaluations) as f:
        plan = json.load(f)["streams"]["otlp"]["evaluations"]
    vllm = send_vllm(args.grpc, args.run, plan)
    openllmetry = send_openllmetry(args.http, args.run)
    send_evaluation_logs(plan, "vllm", vllm["llm"], VLLM_RESOURCE,
                         GrpcLogExporter(endpoint=args.grpc, insecure=True))
    send_evaluation_logs(plan, "openllmetry", openllmetry["llm"], APP_RESOURCE,
                         HttpLogExporter(endpoint=args.http_logs))
    for sent in vllm["llm"] + openllmetry["llm"]:
        del sent["context"]
    out = {
        "vllm": vllm,
        "openllmetry": openllmetry,
        "vllm_tokens": VLLM,
        "openai_tokens": OPENAI,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
