//! The `calico` CNI network plugin.

fn main() -> std::process::ExitCode {
    calico_cni::main_entry(calico_cni::Binary::Calico)
}
