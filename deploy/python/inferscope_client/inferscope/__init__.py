"""Generated protobuf and gRPC stubs for the inferscope ingest API (see generate.sh)."""
