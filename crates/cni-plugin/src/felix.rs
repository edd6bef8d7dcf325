//! Telling felixd about endpoints over its local socket, and optionally waiting until it has
//! programmed them (`policy_setup_timeout_seconds`). felixd being absent never fails a pod:
//! without a timeout the plugin moves on at once; with one it waits that long for felixd to
//! appear and then moves on with a warning.

use std::time::Duration;

use calico_api::resource::WorkloadEndpoint;
use calico_proto::agent::{self as pb, agent_client::AgentClient};
use tokio::time::Instant;
use tonic::transport::Channel;

/// How long any single exchange with felixd may take: a hung felixd must not hang pods.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect_until(endpoint: &str, deadline: Option<Instant>) -> Option<AgentClient<Channel>> {
    loop {
        let attempt = tokio::time::timeout(CALL_TIMEOUT, calico_proto::endpoint::connect(endpoint))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match attempt {
            Ok(c) => return Some(AgentClient::new(c)),
            Err(e) => match deadline {
                Some(d) if Instant::now() < d => {
                    tracing::debug!(error = %e, "felixd not reachable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    tracing::debug!(error = %e, "felixd not reachable");
                    return None;
                }
            },
        }
    }
}

/// Announces a new endpoint; with a timeout, waits for felixd to program it.
pub async fn announce(endpoint: &str, wep: &WorkloadEndpoint, timeout: Duration) {
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let Some(mut client) = connect_until(endpoint, deadline).await else {
        if deadline.is_some() {
            tracing::warn!(
                felixd = endpoint,
                "felixd did not come up within policy_setup_timeout_seconds; the pod starts without waiting for its policy"
            );
        }
        return;
    };
    let namespace = wep.metadata.namespace.clone().unwrap_or_default();
    let name = wep.metadata.name.clone();
    let body = serde_json::to_vec(wep).unwrap_or_default();
    let mut req = tonic::Request::new(pb::EndpointAddedRequest {
        namespace: namespace.clone(),
        name: name.clone(),
        workload_endpoint: body,
    });
    req.set_timeout(CALL_TIMEOUT);
    let sent = client.endpoint_added(req).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not tell felixd about the endpoint; it learns from the datastore");
        return;
    }
    let Some(deadline) = deadline else { return };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut req = tonic::Request::new(pb::WaitProgrammedRequest {
        namespace,
        name: name.clone(),
        timeout_millis: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
    });
    req.set_timeout(left + Duration::from_millis(500));
    match client.wait_programmed(req).await {
        Ok(r) if r.get_ref().state == pb::EndpointState::Programmed as i32 => {
            tracing::info!(endpoint = %name, "felixd has programmed the endpoint");
        }
        Ok(r) => tracing::warn!(
            endpoint = %name,
            state = r.get_ref().state,
            detail = %r.get_ref().detail,
            "felixd has not programmed the endpoint within policy_setup_timeout_seconds; going on"
        ),
        Err(e) => tracing::warn!(error = %e, "waiting for felixd failed; going on"),
    }
}

/// Tells felixd an endpoint is gone (best effort).
pub async fn withdraw(endpoint: &str, namespace: &str, name: &str, container_id: &str) {
    let Some(mut client) = connect_until(endpoint, None).await else {
        return;
    };
    let mut req = tonic::Request::new(pb::EndpointRemovedRequest {
        namespace: namespace.into(),
        name: name.into(),
        container_id: container_id.into(),
    });
    req.set_timeout(CALL_TIMEOUT);
    if let Err(e) = client.endpoint_removed(req).await {
        tracing::debug!(error = %e, "could not tell felixd the endpoint is gone");
    }
}
