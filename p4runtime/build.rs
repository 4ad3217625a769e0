//! Compiles the protos under `proto/` with protox (pure Rust, so no `protoc`
//! on the build machine) and generates prost messages plus tonic client and
//! server code from the resulting descriptor set.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

/// Every proto we own; `google/protobuf/any.proto` comes built into protox.
const PROTOS: &[&str] = &[
    "p4/v1/p4runtime.proto",
    "p4/v1/p4data.proto",
    "p4/config/v1/p4info.proto",
    "p4/config/v1/p4types.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }

    let descriptors = protox::compile(PROTOS, ["proto"])?;

    // The embedded copy drops source info (comments, spans): reflection
    // needs only the schema, and it keeps the binary small.
    let mut embedded = descriptors.clone();
    for file in &mut embedded.file {
        file.source_code_info = None;
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        embedded.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
