//! Compiles our etcd protos with protox (pure Rust), so no system `protoc` is needed.
//! Clients only: ros talks to etcd, it does not serve its API.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/etcdserverpb/header.proto",
        "proto/etcdserverpb/kv.proto",
        "proto/etcdserverpb/watch.proto",
        "proto/etcdserverpb/lease.proto",
        "proto/etcdserverpb/cluster.proto",
        "proto/etcdserverpb/maintenance.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
