"""Posts KServe-shaped inference events to inferscope's CloudEvents endpoint with the Python
`cloudevents` SDK (2.2.0, installed into .tools/capture-venv by `tools/install-backends.sh
capture`), the way KServe's InferenceLogger does, and prints what it sent as JSON.

What KServe sends, read from its source (docs/no-code-capture-sources.md, section F):
- `kserve/kserve pkg/logger/worker.go`: one POST per event through cloudevents sdk-go in binary
  mode, `ce-specversion: 1.0`, `ce-id` shared by a request and its response, `ce-source` the
  logger's source URI, `ce-time` the send time, and the extensions `inferenceservicename`,
  `namespace`, `component`, `endpoint` (often empty) and, on the request only, `metadata` (the
  JSON of the matched request headers); `Content-Type` is the request's own content type, on
  both events;
- `pkg/logger/types.go`: `ce-type` `org.kubeflow.serving.inference.request` and
  `org.kubeflow.serving.inference.response`;
- `pkg/logger/handler.go`: the body is the model server's raw request or response body (V1
  `instances` -> `predictions`, V2 `inputs` -> `outputs`).

The SDK's core HTTP binding percent-encodes header values (HTTP binding 3.1.3.2), where sdk-go
writes them raw: the receiver takes both. Structured mode (`to_structured`) is not what KServe
sends, but what other CloudEvents producers do; its bytes data goes as `data_base64`.

Usage: post_kserve_events.py URL MODEL  -> stdout: {"events": N, "rows": [[request_id, label]...]}
Each event must be answered 202; anything else exits 1 with the answer.
"""

import json
import sys
import urllib.request

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.http import CloudEvent as LegacyCloudEvent
from cloudevents.v1.http import to_binary as legacy_to_binary

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def kserve_attributes(kind, event_id, model):
    attributes = {
        "type": kind,
        "source": "http://localhost:9081/",
        "id": event_id,
        "datacontenttype": "application/json",
        "inferenceservicename": model,
        "namespace": "default",
        "component": "predictor",
        "endpoint": "default",
    }
    if kind == REQUEST:
        attributes["metadata"] = json.dumps({"X-Request-Id": ["abc 123"]})
    return attributes


def post(url, headers, body):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if status != 202:
        sys.exit(f"{headers} -> {status}: {text}")


def send(url, event_id, model, pair, mode, first=REQUEST):
    """Posts a request/response pair; `mode`: binary, structured or legacy (v1 API, binary)."""
    kinds = [REQUEST, RESPONSE] if first == REQUEST else [RESPONSE, REQUEST]
    for kind in kinds:
        body = json.dumps(pair[kind]).encode()
        attributes = kserve_attributes(kind, event_id, model)
        if mode == "legacy":
            headers, data = legacy_to_binary(LegacyCloudEvent(attributes, pair[kind]))
            post(url, dict(headers), data)
            continue
        event = CloudEvent(attributes=attributes, data=body)
        message = (to_binary if mode == "binary" else to_structured)(event, JSONFormat())
        post(url, dict(message.headers), message.body)


def main():
    url, model = sys.argv[1], sys.argv[2]
    rows = []
    # V1, binary mode (KServe's sklearn iris example): two rows, class indices.
    v1 = {
        REQUEST: {"instances": [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]},
        RESPONSE: {"predictions": [1, 0]},
    }
    send(url, "py-v1-binary", model, v1, "binary")
    rows += [["py-v1-binary/0", "1"], ["py-v1-binary/1", "0"]]
    # V2, structured mode, the response first; the V2 request id names the records.
    v2 = {
        REQUEST: {"id": "v2-req", "inputs": [
            {"name": "input-0", "shape": [2, 4], "datatype": "FP32",
             "data": [6.0, 3.4, 4.5, 1.6, 6.3, 3.3, 6.0, 2.5]}]},
        RESPONSE: {"model_name": model, "id": "v2-req", "outputs": [
            {"name": "output-0", "shape": [2], "datatype": "INT64", "data": [1, 2]}]},
    }
    send(url, "py-v2-structured", model, v2, "structured", first=RESPONSE)
    rows += [["v2-req/0", "1"], ["v2-req/1", "1"]]
    # V2, binary mode through the legacy v1 API (cloudevents < 2 programs).
    v2_legacy = {
        REQUEST: {"inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP64",
             "data": [[5.8, 2.7, 5.1, 1.9]]}]},
        RESPONSE: {"outputs": [
            {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [2]}]},
    }
    send(url, "py-v2-legacy", model, v2_legacy, "legacy")
    rows += [["py-v2-legacy/0", "2"]]
    print(json.dumps({"events": 6, "rows": rows}))


if __name__ == "__main__":
    main()
