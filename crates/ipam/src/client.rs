//! Connecting to ipamd: `unix:///path` (the node-local socket) or `tcp://host:port`.

use std::path::PathBuf;

use calico_proto::ipam::ipam_client::IpamClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Why ipamd could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "{endpoint:?} is not an ipamd address: use unix:///var/run/calico/ipam.sock or tcp://host:port"
    )]
    BadEndpoint { endpoint: String },
    #[error("cannot reach ipamd at {endpoint}: {source}; check that ipamd is running")]
    Unreachable {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a client. The connection is made now, so a missing ipamd fails here.
pub async fn connect(endpoint: &str) -> Result<IpamClient<Channel>, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable {
        endpoint: endpoint.to_string(),
        source,
    };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        // The URI is a placeholder: the connector below ignores it and dials the socket.
        let channel = Endpoint::from_static("http://ipamd.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(unreachable)?;
        return Ok(IpamClient::new(channel));
    }
    if let Some(addr) = endpoint.strip_prefix("tcp://") {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| ConnectError::BadEndpoint {
                endpoint: endpoint.to_string(),
            })?
            .connect()
            .await
            .map_err(unreachable)?;
        return Ok(IpamClient::new(channel));
    }
    Err(ConnectError::BadEndpoint {
        endpoint: endpoint.to_string(),
    })
}
