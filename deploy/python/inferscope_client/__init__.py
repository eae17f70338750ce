"""inferscope-client: send inference records to the inferscope sidecar without ever blocking or
breaking the model server.

    from inferscope_client import InferscopeClient

    client = InferscopeClient(model="fraud", version="7")   # sidecar at 127.0.0.1:7717
    client.record("req-1", latency_seconds=0.012, predicted_class="fraud", score=0.91)
    client.send_label("req-1", "legit")                     # ground truth, when it is known
    client.close(timeout=5)

The generated protobuf messages and gRPC stubs are ``inferscope_client.pb`` and
``inferscope_client.pb_grpc`` (package ``inferscope.v1``).
"""

from .client import DEFAULT_TARGET, ClientStats, InferscopeClient
from .inferscope.v1 import ingest_pb2 as pb
from .inferscope.v1 import ingest_pb2_grpc as pb_grpc

__all__ = ["InferscopeClient", "ClientStats", "DEFAULT_TARGET", "pb", "pb_grpc"]
__version__ = "0.1.0"
