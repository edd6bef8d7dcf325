//! Calico's CNI plugins. A container runtime runs them with the CNI_* environment and the
//! network configuration on stdin; they answer with a result or a CNI error on stdout.
//!
//! Not implemented yet in this build: both binaries answer every command with CNI error 4
//! ("incompatible") and a message saying so, as the CNI spec asks of a plugin that cannot
//! serve a request, so a runtime never mistakes them for working.

/// The CNI error the thin binaries return, as JSON on stdout.
pub fn not_implemented_error(cni_version: &str, plugin: &str) -> String {
    serde_json::json!({
        "cniVersion": cni_version,
        "code": 4,
        "msg": format!("{plugin}: not implemented in this build of calico-rs"),
        "details": "the CNI plugin lands with the CNI issue; use another CNI plugin meanwhile",
    })
    .to_string()
}

/// Reads `cniVersion` from the network configuration, defaulting to 1.0.0.
pub fn requested_version(stdin: &str) -> String {
    serde_json::from_str::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "1.0.0".to_string())
}

/// The shared entry point of both thin binaries.
pub fn run_thin(plugin: &str) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{plugin}: Calico's CNI {} plugin. Container runtimes run it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION) \
             and the network configuration on stdin.\n\nSTATUS: not implemented in this build; every command returns CNI error 4.",
            if plugin == "calico" {
                "network"
            } else {
                "IPAM"
            }
        );
        return std::process::ExitCode::SUCCESS;
    }
    let mut stdin = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin);
    println!(
        "{}",
        not_implemented_error(&requested_version(&stdin), plugin)
    );
    std::process::ExitCode::FAILURE
}
