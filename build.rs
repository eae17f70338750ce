//! Compiles `proto/inferscope/v1/*.proto` and the Open Inference Protocol's `proto/oip/` with protox
//! (pure Rust; the build needs no `protoc`)
//! into Rust types and tonic stubs, and writes the file descriptor set that gRPC reflection serves.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/inferscope/v1/ingest.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("inferscope_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // The oracle for `src/wire.rs`'s hand-written `RecordBatch`: the proto's types as prost
    // generates them, used by its tests only.
    let oracle = out_dir.join("oracle");
    fs::create_dir_all(&oracle)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(&oracle)
        .compile_fds(fds.clone())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Decoded record by record, so that one bad record does not lose its batch.
        .extern_path(".inferscope.v1.RecordBatch", "crate::wire::RecordBatch")
        .extern_path(".inferscope.v1.LabelBatch", "crate::wire::LabelBatch")
        .compile_fds(fds)?;
    // The Open Inference Protocol (package `inference`): the tap serves it and calls the model
    // server with it (src/tap/).
    let oip = ["proto/oip/grpc_predict_v2.proto"];
    for proto in oip {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile(oip, ["proto"])?)?;
    Ok(())
}
