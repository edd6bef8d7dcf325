//! BGP passwords. Calico keeps them in Kubernetes Secrets (BGPPeer `password.secretKeyRef`,
//! BGPConfiguration `nodeMeshPassword`); birdd reads them where the secrets are mounted, the
//! layout of a Secret volume: `<dir>/<secret name>/<key>`. Like confd, a password that cannot
//! be read is reported and the session runs without one (the peer then refuses it, which
//! `calicoctl node status` shows).

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::calico::PasswordRef;
use crate::sockopt;

/// A password's bytes; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Arc<[u8]>);

impl Password {
    pub fn new(bytes: &[u8]) -> Password {
        Password(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret {name:?} key {key:?} is not a Kubernetes name (letters, digits, '-', '_' and '.'); fix the secretKeyRef"
    )]
    BadName { name: String, key: String },
    #[error(
        "reading {path}: {source}; mount the secret there (a Secret volume at {dir}/<secret name>) or fix the secretKeyRef"
    )]
    Read {
        path: String,
        dir: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is empty or longer than {} bytes, which TCP MD5 cannot use",
        sockopt::MD5_MAX_KEY_LEN
    )]
    Unusable { path: String },
}

/// Where mounted secrets are read from.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    pub fn new(dir: PathBuf) -> SecretStore {
        SecretStore { dir }
    }

    /// The password `r` names. A trailing newline (a file written by hand) is not part of it.
    pub fn read(&self, r: &PasswordRef) -> Result<Password, SecretError> {
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !plain(&r.secret_name) || !plain(&r.key) {
            return Err(SecretError::BadName {
                name: r.secret_name.clone(),
                key: r.key.clone(),
            });
        }
        let path = self.dir.join(&r.secret_name).join(&r.key);
        let mut bytes = std::fs::read(&path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            dir: self.dir.display().to_string(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() || bytes.len() > sockopt::MD5_MAX_KEY_LEN {
            return Err(SecretError::Unusable {
                path: path.display().to_string(),
            });
        }
        Ok(Password::new(&bytes))
    }
}

/// The MD5 keys on the listening socket, kept equal to the configured peers' passwords so
/// that their connections to us are signed and checked (accepted connections inherit them).
#[derive(Debug)]
pub struct ListenerKeys {
    socket: OwnedFd,
    v6: bool,
    installed: std::collections::HashMap<IpAddr, Password>,
}

impl ListenerKeys {
    /// `socket`: the listener (a duplicate of its descriptor); `v6`: it is AF_INET6.
    pub fn new(socket: OwnedFd, v6: bool) -> ListenerKeys {
        ListenerKeys {
            socket,
            v6,
            installed: Default::default(),
        }
    }

    /// Installs, changes and removes keys so that exactly `want` is installed.
    pub fn sync<'a>(&mut self, want: impl IntoIterator<Item = (IpAddr, &'a Password)>) {
        let want: std::collections::HashMap<IpAddr, &Password> = want
            .into_iter()
            .filter(|(ip, _)| self.v6 || ip.is_ipv4())
            .collect();
        let gone: Vec<IpAddr> = self
            .installed
            .keys()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            self.installed.remove(&ip);
            if let Err(e) = sockopt::set_md5_key(&self.socket, self.v6, ip, None) {
                tracing::warn!(peer = %ip, error = %e, "removing a TCP MD5 key from the listener");
            }
        }
        for (ip, pw) in want {
            if self.installed.get(&ip) == Some(pw) {
                continue;
            }
            match sockopt::set_md5_key(&self.socket, self.v6, ip, Some(pw.bytes())) {
                Ok(()) => {
                    self.installed.insert(ip, pw.clone());
                }
                Err(e) => {
                    tracing::error!(peer = %ip, error = %e, "the peer's connections to us will fail")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, key: &str) -> PasswordRef {
        PasswordRef {
            secret_name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn passwords_are_read_from_the_mounted_secret_and_bad_references_say_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bgp-secrets")).unwrap();
        std::fs::write(dir.path().join("bgp-secrets/rack1"), b"s3cret\n").unwrap();
        std::fs::write(dir.path().join("bgp-secrets/empty"), b"").unwrap();
        let store = SecretStore::new(dir.path().to_path_buf());
        assert_eq!(
            store.read(&r("bgp-secrets", "rack1")).unwrap().bytes(),
            b"s3cret"
        );
        let missing = store.read(&r("bgp-secrets", "rack2")).unwrap_err();
        assert!(
            missing.to_string().contains("bgp-secrets/rack2")
                && missing.to_string().contains("mount the secret"),
            "{missing}"
        );
        assert!(matches!(
            store.read(&r("..", "passwd")),
            Err(SecretError::BadName { .. })
        ));
        assert!(matches!(
            store.read(&r("bgp-secrets", "a/b")),
            Err(SecretError::BadName { .. })
        ));
        assert!(matches!(
            store.read(&r("bgp-secrets", "empty")),
            Err(SecretError::Unusable { .. })
        ));
        assert_eq!(format!("{:?}", Password::new(b"x")), "Password(..)");
    }

    #[test]
    fn listener_keys_follow_the_wanted_set() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = OwnedFd::from(l.try_clone().unwrap());
        let mut keys = ListenerKeys::new(fd, false);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::2".parse().unwrap());
        let pw = Password::new(b"one");
        keys.sync([(a, &pw), (b, &pw)]);
        // An IPv6 peer cannot reach an IPv4 listener: no key for it.
        assert_eq!(keys.installed.len(), 1);
        keys.sync([]);
        assert!(keys.installed.is_empty());
    }
}
