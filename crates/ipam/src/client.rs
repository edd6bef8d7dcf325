//! Connecting to ipamd: `unix:///path` (the node-local socket) or `tcp://host:port`.

use calico_proto::ipam::ipam_client::IpamClient;
use tonic::transport::Channel;

pub use calico_proto::endpoint::ConnectError;

/// Opens a client. The connection is made now, so a missing ipamd fails here.
pub async fn connect(endpoint: &str) -> Result<IpamClient<Channel>, ConnectError> {
    Ok(IpamClient::new(
        calico_proto::endpoint::connect(endpoint).await?,
    ))
}
