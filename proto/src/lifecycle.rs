//! How every calico-rs daemon (ipamd, felixd, birdd) logs and stops: logs on stderr at the
//! level its flag gives (RUST_LOG overrides); SIGTERM, as the kubelet sends it, or Ctrl-C
//! cancels one token, and the daemon drains from there.

use tokio_util::sync::CancellationToken;

/// Logs to stderr at `level` (error, warn, info, debug, trace, any case) unless RUST_LOG says
/// otherwise.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_lowercase()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Cancels `stop` on the first SIGTERM or SIGINT. Must be called inside a tokio runtime.
pub fn stop_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process cleanly");
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        stop.cancel();
    });
}
