//! BGP passwords. Calico keeps them in Kubernetes Secrets (BGPPeer `password.secretKeyRef`,
//! BGPConfiguration `nodeMeshPassword`); birdd reads them where the secrets are mounted, the
//! layout of a Secret volume: `<dir>/<secret name>/<key>`. Like confd, a password that was
//! never readable is reported and the session runs without one (the peer then refuses it,
//! which `calicoctl node status` shows). Unlike confd, a secret that goes missing later
//! (an unmount, a half-finished rotation) keeps its last password: a session never drops
//! its signature because a file disappeared.

use std::collections::HashMap;
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

/// Passwords by reference: the last value read of each, read again on [`Passwords::refresh`].
#[derive(Debug)]
pub struct Passwords {
    store: SecretStore,
    known: HashMap<PasswordRef, Password>,
    /// The last error of each reference that fails, so it is reported once, not per read.
    failing: HashMap<PasswordRef, String>,
}

impl Passwords {
    pub fn new(store: SecretStore) -> Passwords {
        Passwords {
            store,
            known: HashMap::new(),
            failing: HashMap::new(),
        }
    }

    /// The password `r` names: the last one read, else read now (once: a reference that
    /// failed waits for the next [`Passwords::refresh`]).
    pub fn get(&mut self, r: &PasswordRef) -> Option<Password> {
        match self.known.get(r) {
            Some(pw) => Some(pw.clone()),
            None if self.failing.contains_key(r) => None,
            None => self.read(r),
        }
    }

    /// Reads every reference in `in_use` again and forgets the others.
    pub fn refresh<'a>(&mut self, in_use: impl IntoIterator<Item = &'a PasswordRef>) {
        let in_use: std::collections::HashSet<&PasswordRef> = in_use.into_iter().collect();
        self.known.retain(|r, _| in_use.contains(r));
        self.failing.retain(|r, _| in_use.contains(r));
        for r in in_use {
            self.read(r);
        }
    }

    fn read(&mut self, r: &PasswordRef) -> Option<Password> {
        match self.store.read(r) {
            Ok(pw) => {
                if self.failing.remove(r).is_some() {
                    tracing::info!(secret = %r.secret_name, key = %r.key, "the BGP password can be read again");
                }
                self.known.insert(r.clone(), pw.clone());
                Some(pw)
            }
            Err(e) => {
                let msg = e.to_string();
                if self.failing.get(r) != Some(&msg) {
                    let kept = self.known.contains_key(r);
                    tracing::warn!(secret = %r.secret_name, key = %r.key, error = %msg,
                    "cannot read a BGP password; {}", if kept {
                        "its sessions keep the last password read"
                    } else {
                        "its sessions run without one until it can be read"
                    });
                    self.failing.insert(r.clone(), msg);
                }
                self.known.get(r).cloned()
            }
        }
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
            // A key that cannot be removed stays listed, to be tried again.
            match sockopt::set_md5_key(&self.socket, self.v6, ip, None) {
                Ok(()) => {
                    self.installed.remove(&ip);
                }
                Err(e) => {
                    tracing::warn!(peer = %ip, error = %e, "removing a TCP MD5 key from the listener")
                }
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
                    self.installed.remove(&ip);
                    tracing::error!(peer = %ip, error = %e,
                        "connections from the peer are refused until its key is on the listener; ours to it are still signed")
                }
            }
        }
    }

    /// Whether connections from `ip` arrive checked against `pw` (and so may be used).
    pub fn has(&self, ip: IpAddr, pw: &Password) -> bool {
        self.installed.get(&ip) == Some(pw)
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
        assert!(keys.has(a, &pw) && !keys.has(b, &pw));
        assert!(!keys.has(a, &Password::new(b"two")));
        keys.sync([]);
        assert!(!keys.has(a, &pw));
    }

    #[test]
    fn a_password_that_goes_missing_keeps_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s/k");
        std::fs::create_dir(dir.path().join("s")).unwrap();
        let mut pws = Passwords::new(SecretStore::new(dir.path().to_path_buf()));
        let k = r("s", "k");
        assert_eq!(pws.get(&k), None, "never readable: no password");
        std::fs::write(&file, "one").unwrap();
        pws.refresh([&k]);
        assert_eq!(pws.get(&k), Some(Password::new(b"one")));
        std::fs::remove_file(&file).unwrap();
        pws.refresh([&k]);
        assert_eq!(pws.get(&k), Some(Password::new(b"one")));
        std::fs::write(&file, "two").unwrap();
        pws.refresh([&k]);
        assert_eq!(pws.get(&k), Some(Password::new(b"two")));
        pws.refresh([]);
        assert!(
            pws.known.is_empty(),
            "references no longer used are forgotten"
        );
    }
}
