//! The `calico-ipam` CNI IPAM plugin (thin in this build).
fn main() -> std::process::ExitCode {
    calico_cni::run_thin("calico-ipam")
}
