//! The etcd v3 backend, with Calico's key layout.
//!
//! Every write is a single transaction: create is compared on the key's version being 0,
//! update and conditional delete on its mod_revision, so concurrent writers can never
//! overwrite each other silently. Lists are read page by page at one fixed revision, so a
//! large list is still one consistent snapshot. Watches map etcd's compaction cancel to
//! [`DatastoreError::Compacted`] and a broken stream to [`DatastoreError::Unavailable`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchClient,
    WatchOptions,
};

use crate::error::{DatastoreError, Result};
use crate::{
    Datastore, Expect, Key, KeyPrefix, KvList, KvPair, TxnOutcome, TxnWrite, WatchEvent,
    WatchStream, check_txn,
};

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// e.g. `http://127.0.0.1:2379`; several for a cluster.
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The same as PEM text (calicoctl's inline `etcdCACert`, `etcdCert`, `etcdKey`), used
    /// in place of the files.
    pub ca_cert_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Limit for each non-watch request.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_cert_file: None,
            cert_file: None,
            key_file: None,
            ca_cert_pem: None,
            cert_pem: None,
            key_pem: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Reads Calico's variables (`ETCD_ENDPOINTS`, `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`,
    /// `ETCD_KEY_FILE`, `ETCD_USERNAME`, `ETCD_PASSWORD`), each also accepted with a `CALICO_`
    /// prefix, which wins.
    pub fn from_env() -> Option<EtcdConfig> {
        let var = |name: &str| {
            std::env::var(format!("CALICO_{name}"))
                .or_else(|_| std::env::var(name))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let endpoints = var("ETCD_ENDPOINTS")?;
        let mut cfg = EtcdConfig::new(
            endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty()),
        );
        cfg.ca_cert_file = var("ETCD_CA_CERT_FILE").map(PathBuf::from);
        cfg.cert_file = var("ETCD_CERT_FILE").map(PathBuf::from);
        cfg.key_file = var("ETCD_KEY_FILE").map(PathBuf::from);
        cfg.username = var("ETCD_USERNAME");
        cfg.password = var("ETCD_PASSWORD");
        Some(cfg)
    }
}

/// The etcd backend.
#[derive(Clone)]
pub struct EtcdDatastore {
    kv: KvClient,
    lease: LeaseClient,
    watch: WatchClient,
    endpoints: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDatastore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Page size for lists.
const LIST_PAGE: i64 = 500;
/// The largest response accepted. tonic's default (4 MiB) is less than a page of full IPAM
/// blocks (~15 KB each); etcd's own limit on a value is 1.5 MiB.
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// How often a list restarts when etcd compacts the revision it was reading at.
const LIST_ATTEMPTS: usize = 3;

/// PEM given inline, else read from its file, else none.
fn pem(what: &str, inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<Vec<u8>>> {
    match (inline, file) {
        (Some(text), _) => Ok(Some(text.clone().into_bytes())),
        (None, Some(path)) => std::fs::read(path)
            .map(Some)
            .map_err(|e| DatastoreError::Config {
                reason: format!("cannot read the {what} {}: {e}", path.display()),
            }),
        (None, None) => Ok(None),
    }
}

impl EtcdDatastore {
    /// Connects to etcd. Fails only on bad configuration; an unreachable etcd shows up as
    /// `Unavailable` on the first request (and is retried by the client's channel).
    pub async fn connect(cfg: &EtcdConfig) -> Result<EtcdDatastore> {
        let endpoints = cfg.endpoints.join(",");
        if cfg.endpoints.is_empty() {
            return Err(DatastoreError::Unavailable {
                backend: "etcd".into(),
                reason: "no endpoints configured: set ETCD_ENDPOINTS (e.g. http://127.0.0.1:2379)"
                    .into(),
            });
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts = opts.with_user(u.clone(), p.clone());
        }
        let ca = pem("etcd CA certificate", &cfg.ca_cert_pem, &cfg.ca_cert_file)?;
        let cert = pem("etcd client certificate", &cfg.cert_pem, &cfg.cert_file)?;
        if ca.is_some() || cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            match (cert, pem("etcd client key", &cfg.key_pem, &cfg.key_file)?) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(c, k));
                }
                (None, None) => {}
                _ => {
                    return Err(DatastoreError::Unavailable {
                        backend: "etcd".into(),
                        reason:
                            "set both ETCD_CERT_FILE and ETCD_KEY_FILE for client TLS, or neither"
                                .into(),
                    });
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| map_err(&endpoints, "connect", "", e))?;
        Ok(EtcdDatastore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            lease: client.lease_client(),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            endpoints,
            request_timeout: cfg.request_timeout,
        })
    }

    /// Compacts etcd's history up to `revision` (operators and tests; Calico's
    /// kube-controllers does this periodically).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let mut c = self.kv.clone();
        self.timed("compact", "", c.compact(revision, None)).await?;
        Ok(())
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(&self.endpoints, op, key, e)),
            Err(_) => Err(DatastoreError::Unavailable {
                backend: format!("etcd at {}", self.endpoints),
                reason: format!("{op} of {key} timed out after {:?}", self.request_timeout),
            }),
        }
    }

    fn pair(&self, key: &Key, kv: &etcd_client::KeyValue) -> KvPair {
        KvPair {
            key: key.clone(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }
    }
}

fn map_err(endpoints: &str, op: &'static str, key: &str, e: etcd_client::Error) -> DatastoreError {
    use etcd_client::Error as E;
    let backend = format!("etcd at {endpoints}");
    let unavailable = |reason: String| DatastoreError::Unavailable {
        backend: backend.clone(),
        reason: format!("{reason}; check that etcd is running and ETCD_ENDPOINTS is right"),
    };
    match e {
        E::TransportError(t) => unavailable(format!("transport error: {t}")),
        E::IoError(io) => unavailable(format!("I/O error: {io}")),
        E::WatchError(w) => unavailable(format!("watch channel failed: {w}")),
        E::GRpcStatus(s) => match s.code() {
            // Overload and compaction races are worth retrying; so is a lost connection.
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unknown => unavailable(format!("{op}: {}", s.message())),
            tonic::Code::OutOfRange if s.message().contains("compacted") => {
                unavailable(format!("{op}: {}", s.message()))
            }
            _ => DatastoreError::Rejected {
                backend,
                operation: op,
                key: key.to_string(),
                reason: s.message().to_string(),
            },
        },
        other => DatastoreError::Rejected {
            backend,
            operation: op,
            key: key.to_string(),
            reason: other.to_string(),
        },
    }
}

/// The key just after every key with this prefix (etcd's prefix range end).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdDatastore {
    /// One consistent list: the first page fixes the revision, later pages read at it.
    async fn list_once(&self, prefix: &KeyPrefix) -> Result<KvList> {
        let p = prefix.path();
        let end = range_end(&p);
        let mut c = self.kv.clone();
        let mut items = Vec::new();
        let mut start = p.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self
                .timed("list", &p, c.get(start.clone(), Some(opts)))
                .await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let Ok(path) = kv.key_str() else { continue };
                if let Some(key) = Key::parse(path)
                    && prefix.matches(&key)
                {
                    items.push(self.pair(&key, kv));
                }
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(KvList { items, revision })
    }
}

fn get_response(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

fn header_revision(resp: &etcd_client::TxnResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

#[async_trait::async_trait]
impl Datastore for EtcdDatastore {
    fn backend_name(&self) -> &'static str {
        "etcdv3"
    }

    async fn get(&self, key: &Key) -> Result<KvPair> {
        let path = key.path();
        let mut c = self.kv.clone();
        let resp = self.timed("get", &path, c.get(path.clone(), None)).await?;
        resp.kvs()
            .first()
            .map(|kv| self.pair(key, kv))
            .ok_or(DatastoreError::NotFound { key: path })
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<KvList> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.list_once(prefix).await {
                // A later page's revision was compacted under us: read a fresh snapshot.
                Err(DatastoreError::Unavailable { reason, .. })
                    if attempt < LIST_ATTEMPTS && reason.contains("compacted") => {}
                other => return other,
            }
        }
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<KvPair> {
        key.check()?;
        let path = key.path();
        let txn = Txn::new()
            .when([Compare::version(path.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(path.clone(), value.clone(), None)]);
        let mut c = self.kv.clone();
        let resp = self.timed("create", &path, c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(DatastoreError::AlreadyExists { key: path });
        }
        Ok(KvPair {
            key: key.clone(),
            value,
            revision: header_revision(&resp),
        })
    }

    async fn update(&self, key: &Key, value: Vec<u8>, revision: i64) -> Result<KvPair> {
        key.check()?;
        let path = key.path();
        // `mod_revision == 0` would also match a key that does not exist; require it to exist.
        let txn = Txn::new()
            .when([
                Compare::version(path.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(path.clone(), CompareOp::Equal, revision),
            ])
            .and_then([TxnOp::put(path.clone(), value.clone(), None)])
            .or_else([TxnOp::get(path.clone(), None)]);
        let mut c = self.kv.clone();
        let resp = self.timed("update", &path, c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(match get_response(&resp) {
                None => DatastoreError::NotFound { key: path },
                Some(kv) => DatastoreError::Conflict {
                    key: path,
                    expected: revision,
                    actual: Some(kv.mod_revision()),
                },
            });
        }
        Ok(KvPair {
            key: key.clone(),
            value,
            revision: header_revision(&resp),
        })
    }

    async fn apply(&self, key: &Key, value: Vec<u8>) -> Result<KvPair> {
        key.check()?;
        let path = key.path();
        let mut c = self.kv.clone();
        let resp = self
            .timed("apply", &path, c.put(path.clone(), value.clone(), None))
            .await?;
        Ok(KvPair {
            key: key.clone(),
            value,
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn apply_with_ttl(&self, key: &Key, value: Vec<u8>, ttl: Duration) -> Result<KvPair> {
        key.check()?;
        let path = key.path();
        // A lease per write, as libcalico-go does: the previous one expires on its own and
        // takes nothing with it, since the key now belongs to the new one.
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut l = self.lease.clone();
        let lease = self
            .timed("grant a lease for", &path, l.grant(secs, None))
            .await?;
        let mut c = self.kv.clone();
        let opts = PutOptions::new().with_lease(lease.id());
        let resp = self
            .timed(
                "apply",
                &path,
                c.put(path.clone(), value.clone(), Some(opts)),
            )
            .await?;
        Ok(KvPair {
            key: key.clone(),
            value,
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn delete(&self, key: &Key, revision: Option<i64>) -> Result<KvPair> {
        key.check()?;
        let path = key.path();
        let del = TxnOp::delete(path.clone(), Some(DeleteOptions::new().with_prev_key()));
        let txn = match revision {
            Some(r) => Txn::new()
                .when([
                    Compare::version(path.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(path.clone(), CompareOp::Equal, r),
                ])
                .and_then([del])
                .or_else([TxnOp::get(path.clone(), None)]),
            None => Txn::new().and_then([del]),
        };
        let mut c = self.kv.clone();
        let resp = self.timed("delete", &path, c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(match get_response(&resp) {
                None => DatastoreError::NotFound { key: path },
                Some(kv) => DatastoreError::Conflict {
                    key: path,
                    expected: revision.unwrap_or(0),
                    actual: Some(kv.mod_revision()),
                },
            });
        }
        let deleted = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(mut d) => d.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        match deleted {
            Some(kv) => Ok(KvPair {
                key: key.clone(),
                value: kv.value().to_vec(),
                revision: header_revision(&resp),
            }),
            None => Err(DatastoreError::NotFound { key: path }),
        }
    }

    async fn txn(&self, writes: &[TxnWrite]) -> Result<TxnOutcome> {
        check_txn(writes)?;
        let mut compares = Vec::with_capacity(writes.len());
        let mut ops = Vec::with_capacity(writes.len());
        let mut reads = Vec::with_capacity(writes.len());
        for w in writes {
            let path = w.key.path();
            match w.expect {
                Expect::Absent => {
                    compares.push(Compare::version(path.clone(), CompareOp::Equal, 0));
                }
                Expect::Revision(r) => {
                    // An absent key has mod_revision 0, and `check_txn` refuses r <= 0, so one
                    // compare suffices (etcd counts compares against --max-txn-ops too).
                    compares.push(Compare::mod_revision(path.clone(), CompareOp::Equal, r));
                }
            }
            ops.push(match &w.value {
                Some(v) => TxnOp::put(path.clone(), v.clone(), None),
                None => TxnOp::delete(path.clone(), None),
            });
            reads.push(TxnOp::get(path, None));
        }
        let first = writes.first().map(|w| w.key.path()).unwrap_or_default();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let mut c = self.kv.clone();
        let resp = self.timed("txn", &first, c.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(TxnOutcome::Committed {
                revision: header_revision(&resp),
            });
        }
        let current = writes
            .iter()
            .zip(resp.op_responses())
            .map(|(w, r)| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.pair(&w.key, kv)),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome::Failed { current })
    }

    async fn watch(&self, prefix: &KeyPrefix, from_revision: i64) -> Result<WatchStream> {
        let p = prefix.path();
        let mut opts = WatchOptions::new()
            .with_range(range_end(&p))
            .with_progress_notify();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let mut c = self.watch.clone();
        let stream = self
            .timed("watch", &p, c.watch(p.clone(), Some(opts)))
            .await?;
        let state = WatchState {
            inner: stream,
            prefix: prefix.clone(),
            pending: VecDeque::new(),
            done: false,
            endpoints: self.endpoints.clone(),
            requested: from_revision,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_watch_event)))
    }
}

struct WatchState {
    inner: etcd_client::WatchStream,
    prefix: KeyPrefix,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
    endpoints: String,
    requested: i64,
}

async fn next_watch_event(mut st: WatchState) -> Option<(Result<WatchEvent>, WatchState)> {
    loop {
        if let Some(ev) = st.pending.pop_front() {
            return Some((ev, st));
        }
        if st.done {
            return None;
        }
        match st.inner.message().await {
            Ok(Some(resp)) => {
                if resp.canceled() {
                    st.done = true;
                    let err = if resp.compact_revision() > 0 {
                        DatastoreError::Compacted {
                            requested: st.requested,
                            compacted: resp.compact_revision(),
                        }
                    } else {
                        DatastoreError::Unavailable {
                            backend: format!("etcd at {}", st.endpoints),
                            reason: format!("watch cancelled: {}", resp.cancel_reason()),
                        }
                    };
                    st.pending.push_back(Err(err));
                    continue;
                }
                let header_rev = resp.header().map_or(0, |h| h.revision());
                // In a catch-up batch the header holds the store's current revision while later
                // events are still to come; progress may only claim what was actually seen.
                let last_event_rev = resp
                    .events()
                    .iter()
                    .filter_map(|e| e.kv().map(etcd_client::KeyValue::mod_revision))
                    .max();
                let mut any = false;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(path) = kv.key_str() else { continue };
                    let Some(key) = Key::parse(path) else {
                        continue;
                    };
                    if !st.prefix.matches(&key) {
                        continue;
                    }
                    any = true;
                    st.pending.push_back(Ok(match ev.event_type() {
                        etcd_client::EventType::Put => WatchEvent::Put(KvPair {
                            key,
                            value: kv.value().to_vec(),
                            revision: kv.mod_revision(),
                        }),
                        etcd_client::EventType::Delete => WatchEvent::Delete {
                            key,
                            revision: kv.mod_revision(),
                        },
                    }));
                }
                if !any && !resp.created() {
                    let revision = last_event_rev.unwrap_or(header_rev);
                    if revision > 0 {
                        st.pending.push_back(Ok(WatchEvent::Progress { revision }));
                    }
                }
            }
            Ok(None) => {
                st.done = true;
                st.pending.push_back(Err(DatastoreError::Unavailable {
                    backend: format!("etcd at {}", st.endpoints),
                    reason: "the watch stream was closed by the server".into(),
                }));
            }
            Err(e) => {
                st.done = true;
                st.pending
                    .push_back(Err(map_err(&st.endpoints, "watch", "", e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pem_comes_inline_before_its_file_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "from-file").unwrap();
        let inline = Some("inline".to_string());
        let path = Some(file.clone());
        assert_eq!(pem("CA", &inline, &path).unwrap(), Some(b"inline".to_vec()));
        assert_eq!(
            pem("CA", &None, &path).unwrap(),
            Some(b"from-file".to_vec())
        );
        assert_eq!(pem("CA", &None, &None).unwrap(), None);
        let gone = Some(dir.path().join("gone.pem"));
        let err = pem("etcd CA certificate", &None, &gone)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the etcd CA certificate"), "{err}");
    }
}
