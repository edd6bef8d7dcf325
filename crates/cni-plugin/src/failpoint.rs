//! Test-only crash points: with `CALICO_CNI_FAILPOINT=<step>` in its environment the plugin
//! kills itself (SIGKILL, no cleanup) right after that step, so tests can prove that a DEL and
//! a fresh ADD recover from a crash anywhere. Steps: `ipam`, `veth`, `pod`, `host-route`, `wep`.

pub const ENV: &str = "CALICO_CNI_FAILPOINT";

pub fn hit(step: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == step) {
        tracing::warn!(step, "failpoint reached: killing this process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
