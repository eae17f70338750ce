//! Compiles the sidecar's own `proto/inferscope/v1/ingest.proto` (with protox, so the build needs
//! no `protoc`) into prost types and a tonic client, as the sidecar's `build.rs` does.
//! `RecordBatch` is mapped to `crate::sender::EncodedBatch`: batches are encoded once, by hand,
//! and the same bytes are resent.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../../proto";
    let proto = format!("{root}/inferscope/v1/ingest.proto");
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto.as_str()], [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".inferscope.v1.RecordBatch", "crate::sender::EncodedBatch")
        .compile_fds(fds)?;
    Ok(())
}
