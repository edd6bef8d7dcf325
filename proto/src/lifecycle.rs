//! How every calico-rs daemon (ipamd, felixd, birdd) stops: SIGTERM, as the kubelet sends
//! it, or Ctrl-C cancels one token; the daemon drains from there.

use tokio_util::sync::CancellationToken;

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
