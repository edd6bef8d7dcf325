//! Generates Rust for every contract in this directory. Needs `protoc` (Debian's
//! protobuf-compiler, installed by `make deps`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["ipam.proto", "sync.proto", "agent.proto", "bgp.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    if std::env::var_os("PROTOC").is_none() && which("protoc").is_none() {
        return Err("protoc is not installed: run `make deps` (apt-get install protobuf-compiler) or set PROTOC".into());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["."])?;
    Ok(())
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}
