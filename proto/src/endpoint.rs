//! Dialing a calico-rs service: `unix:///path` (a node-local socket) or `tcp://host:port`.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Why a service could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{endpoint:?} is not a service address: use unix:///path/to.sock or tcp://host:port")]
    BadEndpoint { endpoint: String },
    #[error("cannot reach {endpoint}: {source}; check that the service is running")]
    Unreachable {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a channel. The connection is made now, so a missing service fails here.
pub async fn connect(endpoint: &str) -> Result<Channel, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable {
        endpoint: endpoint.to_string(),
        source,
    };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        // The URI is a placeholder: the connector below ignores it and dials the socket.
        return Endpoint::from_static("http://calico.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(unreachable);
    }
    if let Some(addr) = endpoint.strip_prefix("tcp://") {
        return Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| ConnectError::BadEndpoint {
                endpoint: endpoint.to_string(),
            })?
            .connect()
            .await
            .map_err(unreachable);
    }
    Err(ConnectError::BadEndpoint {
        endpoint: endpoint.to_string(),
    })
}

/// Why a unix socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path} is in use by another process (is another instance running?)")]
    InUse { path: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds a node-local unix socket for a service: creates its directory, removes a stale
/// socket file a crashed run left (but never one that answers), binds, and sets mode 0600 so
/// only root can call it.
pub fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, BindError> {
    use std::os::unix::fs::PermissionsExt;
    let p = path.display().to_string();
    let io = |what: &'static str| {
        let path = p.clone();
        move |source| BindError::Io { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse { path: p });
        }
        std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting mode 0600 on"))?;
    Ok(l)
}
