"""inferscope-client: send inference records to the inferscope sidecar without ever blocking or
breaking the model server.

    from inferscope_client import InferscopeClient

    client = InferscopeClient(model="fraud", version="7")   # sidecar at $INFERSCOPE_ADDR or 127.0.0.1:7717
    client.record("req-1", latency_seconds=0.012, predicted_class="fraud", score=0.91)
    client.send_label("req-1", "legit")                     # ground truth, when it is known
    client.close(timeout=5)

``InferscopeClient`` is the native client (``NativeInferscopeClient``: batching and encoding in
Rust, off the interpreter lock) when its extension ``inferscope_client_native`` is installed, and
the pure-Python one (``PythonInferscopeClient``) otherwise. ``INFERSCOPE_CLIENT=python`` picks the
pure-Python one; ``INFERSCOPE_CLIENT=native`` fails at import when the extension is missing.
``InferscopeClient.implementation`` says which one it is.

The generated protobuf messages and gRPC stubs are ``inferscope_client.pb`` and
``inferscope_client.pb_grpc`` (package ``inferscope.v1``).
"""

import os as _os

from .client import ADDR_ENV, DEFAULT_TARGET, ClientStats
from .client import InferscopeClient as PythonInferscopeClient
from .inferscope.v1 import ingest_pb2 as pb
from .inferscope.v1 import ingest_pb2_grpc as pb_grpc

_choice = _os.environ.get("INFERSCOPE_CLIENT", "auto")
if _choice not in ("auto", "native", "python"):
    raise ImportError(f"INFERSCOPE_CLIENT must be auto, native or python, not {_choice!r}")
try:
    from .native import NativeInferscopeClient
except ImportError:
    if _choice == "native":
        raise
    NativeInferscopeClient = None  # type: ignore[assignment,misc]

if NativeInferscopeClient is not None and _choice != "python":
    InferscopeClient = NativeInferscopeClient
else:
    InferscopeClient = PythonInferscopeClient  # type: ignore[assignment,misc]

__all__ = [
    "InferscopeClient", "PythonInferscopeClient", "NativeInferscopeClient", "ClientStats",
    "DEFAULT_TARGET", "ADDR_ENV", "pb", "pb_grpc",
]
__version__ = "0.1.0"
