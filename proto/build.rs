//! Compiles `vakt/v1/*.proto` with protox (a protobuf compiler in Rust), so a fresh machine
//! builds with cargo alone and no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "vakt/v1/report.proto",
        "vakt/v1/agent.proto",
        "vakt/v1/admin.proto",
        "vakt/v1/store.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vakt_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Ordered maps: a command's parameters encode the same way every time.
        .btree_map(".")
        // Small initial buffers per call and stream (see src/codec.rs).
        .codec_path("crate::codec::SmallBufferCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
