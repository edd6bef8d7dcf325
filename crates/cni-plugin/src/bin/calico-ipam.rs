//! The `calico-ipam` CNI IPAM plugin.

fn main() -> std::process::ExitCode {
    calico_cni::main_entry(calico_cni::Binary::CalicoIpam)
}
