//! Status reports to the datastore, where Felix writes them:
//!
//! - each local endpoint's status (`up`, `down`, or `error` for a host endpoint that no
//!   interface matched) under `/calico/felix/v2/<region>/host/<host>/workload/...` and
//!   `/calico/felix/v1/host/<host>/endpoint/<name>`, when `endpointReportingEnabled`;
//! - this node's liveness under `/calico/felix/v2/<region>/host/<host>/status` with a TTL,
//!   and the same value under `.../last_reported_status` without one, every
//!   `reportingInterval`.
//!
//! Endpoint writes are coalesced per key and go out at most once per
//! `endpointReportingDelay` (Felix writes one key per delay; here a round writes every key
//! that changed, so a node starting with a hundred pods is reported in one round, not in a
//! hundred seconds). Every 180 delays (Felix's resync) the keys in the datastore are compared
//! with what is wanted and fixed, which removes the reports of endpoints that went while
//! the agent was down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::key::region_string;
use calico_datastore::{Datastore, DatastoreError, Key, KeyPrefix};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ReportingConfig;

pub const UP: &str = "up";
pub const DOWN: &str = "down";
/// A host endpoint that no interface matched.
pub const ERROR: &str = "error";

/// How long one datastore write may take before the round stops (Felix: 2 s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Felix resyncs endpoint statuses every 180 reporting delays.
const RESYNC_DELAYS: u32 = 180;
/// The shortest delay between rounds (a configured 0 would spin on a failing datastore).
const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest pause after failed rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the main loop tells the endpoint reporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusMsg {
    /// An endpoint's status key and its status; `None` when the endpoint is gone.
    Endpoint(Key, Option<&'static str>),
    /// Every endpoint the first dataplane apply programmed has been reported: keys in the
    /// datastore that are not wanted now can be removed.
    InSync,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EndpointStatusValue {
    status: String,
}

/// Felix's `StatusReport`.
#[derive(Debug, serde::Serialize)]
struct ProcessStatusValue {
    time: String,
    uptime: f64,
    first_update: bool,
}

/// Writes endpoint statuses, rate-limited and coalesced.
#[derive(Debug)]
pub struct EndpointReporter {
    ds: Arc<dyn Datastore>,
    hostname: String,
    desired: HashMap<Key, &'static str>,
    /// Writes not done yet, in key order; the latest status per key.
    pending: BTreeMap<Key, Option<&'static str>>,
    in_sync: bool,
    next_write: Instant,
    next_resync: Option<Instant>,
    /// Failed rounds in a row (the pause after a round doubles with each).
    failures: u32,
}

impl EndpointReporter {
    pub fn new(ds: Arc<dyn Datastore>, hostname: String) -> EndpointReporter {
        EndpointReporter {
            ds,
            hostname,
            desired: HashMap::new(),
            pending: BTreeMap::new(),
            in_sync: false,
            next_write: Instant::now(),
            next_resync: None,
            failures: 0,
        }
    }

    /// Reporting was turned off: forget everything (reports already written stay, as when
    /// Felix restarts without reporting).
    pub fn reset(&mut self) {
        self.desired.clear();
        self.pending.clear();
        self.in_sync = false;
        self.next_resync = None;
        self.failures = 0;
    }

    pub fn on_msg(&mut self, msg: StatusMsg) {
        match msg {
            StatusMsg::Endpoint(key, status) => {
                if self.desired.get(&key).copied() == status {
                    return;
                }
                match status {
                    Some(s) => self.desired.insert(key.clone(), s),
                    None => self.desired.remove(&key),
                };
                self.pending.insert(key, status);
            }
            StatusMsg::InSync => {
                if !self.in_sync {
                    self.in_sync = true;
                    // The first resync right away: reports left by endpoints that went while
                    // the agent was away are removed now, not three minutes later.
                    self.next_resync = Some(Instant::now());
                }
            }
        }
    }

    /// Keys waiting to be written.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When there is work to do, if ever.
    pub fn next_wake(&self) -> Option<Instant> {
        let write = (!self.pending.is_empty()).then_some(self.next_write);
        match (write, self.next_resync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due: a resync, then a round of writes.
    pub async fn work(&mut self, cfg: &ReportingConfig) {
        let now = Instant::now();
        let delay = cfg.endpoint_delay.max(MIN_DELAY);
        if self.next_resync.is_some_and(|t| now >= t) {
            match self.resync(cfg).await {
                Ok(()) => self.next_resync = Some(now + jitter(delay * RESYNC_DELAYS)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the endpoint statuses back; will retry");
                    self.next_resync = Some(now + delay.max(Duration::from_secs(1)));
                }
            }
        }
        if !self.pending.is_empty() && now >= self.next_write {
            let pause = if self.write_round().await {
                self.failures = 0;
                delay
            } else {
                self.failures = self.failures.saturating_add(1);
                (delay * 2u32.saturating_pow(self.failures.min(16))).min(MAX_BACKOFF.max(delay))
            };
            self.next_write = Instant::now() + jitter(pause);
        }
    }

    /// Queues a fix for every status key of this node that differs from what is wanted.
    async fn resync(&mut self, cfg: &ReportingConfig) -> Result<(), DatastoreError> {
        let region = region_string(&cfg.region);
        let mut listed: HashMap<Key, Option<String>> = HashMap::new();
        for prefix in [
            KeyPrefix::WorkloadEndpointStatuses {
                region,
                hostname: self.hostname.clone(),
            },
            KeyPrefix::HostEndpointStatuses {
                hostname: self.hostname.clone(),
            },
        ] {
            for kv in self.ds.list(&prefix).await?.items {
                let status = serde_json::from_slice::<EndpointStatusValue>(&kv.value)
                    .ok()
                    .map(|v| v.status);
                listed.insert(kv.key, status);
            }
        }
        let mut fixes = 0;
        for (key, status) in &listed {
            let want = self.desired.get(key).copied();
            if status.as_deref() != want {
                self.pending.insert(key.clone(), want);
                fixes += 1;
            }
        }
        for (key, want) in &self.desired {
            if !listed.contains_key(key) {
                self.pending.insert(key.clone(), Some(want));
                fixes += 1;
            }
        }
        if fixes > 0 {
            tracing::info!(fixes, "endpoint statuses in the datastore were out of date");
        }
        Ok(())
    }

    /// Writes every pending key; stops at the first failure (the datastore is likely down)
    /// and keeps what is left for the next round. Whether all went.
    async fn write_round(&mut self) -> bool {
        while let Some((key, status)) = self.pending.pop_first() {
            let result = match status {
                Some(s) => {
                    let value = serde_json::to_vec(&EndpointStatusValue { status: s.into() })
                        .unwrap_or_default();
                    tokio::time::timeout(WRITE_TIMEOUT, self.ds.apply(&key, value))
                        .await
                        .map(|r| r.map(|_| ()))
                }
                None => tokio::time::timeout(WRITE_TIMEOUT, self.ds.delete(&key, None))
                    .await
                    .map(|r| match r {
                        Err(DatastoreError::NotFound { .. }) => Ok(()),
                        other => other.map(|_| ()),
                    }),
            };
            let err = match result {
                Ok(Ok(())) => {
                    tracing::debug!(%key, ?status, "endpoint status written");
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {WRITE_TIMEOUT:?}"),
            };
            // A newer status for the key may have arrived meanwhile: it wins.
            self.pending.entry(key.clone()).or_insert(status);
            tracing::warn!(%key, error = err, left = self.pending.len(),
                "cannot write an endpoint status; is the datastore up? will retry");
            return false;
        }
        true
    }
}

/// Up to 10 % less, so that nodes started together do not write together (Felix's jitter).
fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 - rand::random::<f64>() * 0.1)
}

/// Runs the endpoint reporter until `stop` or until the main loop goes away.
pub async fn run_endpoint_reporter(
    mut reporter: EndpointReporter,
    mut cfg: watch::Receiver<Option<ReportingConfig>>,
    mut rx: mpsc::UnboundedReceiver<StatusMsg>,
    stop: CancellationToken,
) {
    loop {
        let wake = reporter
            .next_wake()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m {
                Some(m) => {
                    reporter.on_msg(m);
                    while let Ok(m) = rx.try_recv() {
                        reporter.on_msg(m);
                    }
                }
                None => return,
            },
            c = cfg.changed() => if c.is_err() { return },
            _ = tokio::time::sleep_until(wake) => {}
        }
        let current = cfg.borrow_and_update().clone();
        match current {
            Some(c) if c.endpoints_enabled => reporter.work(&c).await,
            Some(_) => reporter.reset(),
            None => {}
        }
    }
}

/// Writes this node's liveness every `reportingInterval` from the moment `ready` turns
/// true (the dataplane's first programming) until `stop`.
pub async fn run_process_reporter(
    ds: Arc<dyn Datastore>,
    hostname: String,
    mut cfg: watch::Receiver<Option<ReportingConfig>>,
    mut ready: watch::Receiver<bool>,
    started: Instant,
    stop: CancellationToken,
) {
    if tokio::select! {
        _ = stop.cancelled() => true,
        r = ready.wait_for(|r| *r) => r.is_err(),
    } {
        return;
    }
    let mut first = true;
    loop {
        let current = cfg.borrow_and_update().clone();
        let wait = match current {
            Some(c) if !c.interval.is_zero() => {
                let report = ProcessStatusValue {
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    uptime: started.elapsed().as_secs_f64(),
                    first_update: first,
                };
                let value = serde_json::to_vec(&report).unwrap_or_default();
                let region = region_string(&c.region);
                let key = |last| Key::FelixStatus {
                    region: region.clone(),
                    hostname: hostname.clone(),
                    last,
                };
                // A TTL of 0 means a report that never expires (libcalico-go grants no
                // lease then).
                let live = if c.ttl.is_zero() {
                    ds.apply(&key(false), value.clone()).await
                } else {
                    ds.apply_with_ttl(&key(false), value.clone(), c.ttl).await
                };
                match live {
                    Ok(_) => first = false,
                    Err(e) => tracing::warn!(error = %e, "cannot write this node's status report"),
                }
                if let Err(e) = ds.apply(&key(true), value).await {
                    tracing::warn!(error = %e, "cannot write this node's last status report");
                }
                c.interval
            }
            // Reporting off: look again when the configuration changes.
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            c = cfg.changed() => if c.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_datastore::memory::MemoryDatastore;

    fn wep(pod: &str) -> Key {
        Key::WorkloadEndpointStatus {
            region: "no-region".into(),
            hostname: "n1".into(),
            orchestrator: "k8s".into(),
            workload: format!("default/{pod}"),
            endpoint: "eth0".into(),
        }
    }

    fn cfg() -> ReportingConfig {
        ReportingConfig {
            endpoints_enabled: true,
            endpoint_delay: Duration::from_millis(1),
            ..ReportingConfig::default()
        }
    }

    async fn status_of(ds: &Arc<dyn Datastore>, key: &Key) -> Option<String> {
        ds.get(key).await.ok().map(|kv| {
            serde_json::from_slice::<EndpointStatusValue>(&kv.value)
                .unwrap()
                .status
        })
    }

    async fn settle(r: &mut EndpointReporter, c: &ReportingConfig) {
        for _ in 0..1000 {
            if r.pending() == 0 && r.next_resync.is_none_or(|t| t > Instant::now()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            r.work(c).await;
        }
        panic!("the reporter did not settle");
    }

    #[tokio::test]
    async fn statuses_are_coalesced_written_removed_and_resynced() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        let c = cfg();
        // Left by an earlier run: a pod that went while the agent was down, and a wrong
        // status.
        ds.apply(&wep("gone"), br#"{"status":"up"}"#.to_vec())
            .await
            .unwrap();
        ds.apply(&wep("b"), br#"{"status":"down"}"#.to_vec())
            .await
            .unwrap();
        let other_node = Key::HostEndpointStatus {
            hostname: "n2".into(),
            endpoint: "eth0".into(),
        };
        ds.apply(&other_node, br#"{"status":"up"}"#.to_vec())
            .await
            .unwrap();
        let mut r = EndpointReporter::new(ds.clone(), "n1".into());
        r.on_msg(StatusMsg::Endpoint(wep("a"), Some(DOWN)));
        r.on_msg(StatusMsg::Endpoint(wep("a"), Some(UP)));
        r.on_msg(StatusMsg::Endpoint(wep("b"), Some(UP)));
        let hep = Key::HostEndpointStatus {
            hostname: "n1".into(),
            endpoint: "eth0-hep".into(),
        };
        r.on_msg(StatusMsg::Endpoint(hep.clone(), Some(ERROR)));
        assert_eq!(r.pending(), 3, "one write per key, the latest status");
        r.on_msg(StatusMsg::InSync);
        settle(&mut r, &c).await;
        assert_eq!(status_of(&ds, &wep("a")).await.as_deref(), Some(UP));
        assert_eq!(status_of(&ds, &wep("b")).await.as_deref(), Some(UP));
        assert_eq!(status_of(&ds, &hep).await.as_deref(), Some(ERROR));
        assert_eq!(status_of(&ds, &wep("gone")).await, None);
        assert_eq!(status_of(&ds, &other_node).await.as_deref(), Some(UP));

        r.on_msg(StatusMsg::Endpoint(wep("a"), None));
        settle(&mut r, &c).await;
        assert_eq!(status_of(&ds, &wep("a")).await, None);

        // Someone else's change is put right at the next resync.
        ds.delete(&hep, None).await.unwrap();
        r.next_resync = Some(Instant::now());
        settle(&mut r, &c).await;
        assert_eq!(status_of(&ds, &hep).await.as_deref(), Some(ERROR));
    }

    #[tokio::test]
    async fn a_failed_write_is_kept_for_the_next_round_and_a_newer_status_wins() {
        let mem = Arc::new(MemoryDatastore::new());
        let ds: Arc<dyn Datastore> = mem.clone();
        let c = cfg();
        let mut r = EndpointReporter::new(ds.clone(), "n1".into());
        r.on_msg(StatusMsg::Endpoint(wep("a"), Some(UP)));
        mem.set_available(false);
        r.work(&c).await;
        assert_eq!(r.pending(), 1);
        r.on_msg(StatusMsg::Endpoint(wep("a"), Some(DOWN)));
        mem.set_available(true);
        settle(&mut r, &c).await;
        assert_eq!(status_of(&ds, &wep("a")).await.as_deref(), Some(DOWN));
    }

    #[tokio::test]
    async fn a_zero_delay_and_a_dead_datastore_do_not_spin_and_turning_off_forgets() {
        let mem = Arc::new(MemoryDatastore::new());
        let ds: Arc<dyn Datastore> = mem.clone();
        let c = ReportingConfig {
            endpoint_delay: Duration::ZERO,
            ..cfg()
        };
        let mut r = EndpointReporter::new(ds, "n1".into());
        r.on_msg(StatusMsg::Endpoint(wep("a"), Some(UP)));
        mem.set_available(false);
        r.work(&c).await;
        let wait = r.next_wake().unwrap() - Instant::now();
        assert!(wait >= Duration::from_millis(150), "{wait:?}");
        r.work(&c).await;
        assert_eq!(r.pending(), 1, "nothing written before the pause ends");
        r.on_msg(StatusMsg::InSync);
        r.reset();
        assert_eq!(r.pending(), 0);
        assert_eq!(r.next_wake(), None);
    }

    #[tokio::test]
    async fn the_process_report_has_felixs_shape_and_a_ttl() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        let (cfg_tx, cfg_rx) = watch::channel(Some(ReportingConfig {
            interval: Duration::from_millis(50),
            ttl: Duration::from_secs(1),
            region: "west".into(),
            ..ReportingConfig::default()
        }));
        let (ready_tx, ready_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_process_reporter(
            ds.clone(),
            "n1".into(),
            cfg_rx,
            ready_rx,
            Instant::now(),
            stop.clone(),
        ));
        let key = |last| Key::FelixStatus {
            region: "region-west".into(),
            hostname: "n1".into(),
            last,
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(ds.get(&key(false)).await.is_err(), "nothing before ready");
        ready_tx.send(true).unwrap();
        let mut seen = None;
        for _ in 0..100 {
            if let Ok(kv) = ds.get(&key(false)).await {
                seen = Some(kv);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let v: serde_json::Value = serde_json::from_slice(&seen.unwrap().value).unwrap();
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(v["uptime"].as_f64().unwrap() >= 0.1);
        assert!(v["first_update"].is_boolean());
        // Later reports are not first.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let v: serde_json::Value =
            serde_json::from_slice(&ds.get(&key(true)).await.unwrap().value).unwrap();
        assert_eq!(v["first_update"], false);
        stop.cancel();
        task.await.unwrap();
        drop(cfg_tx);
        // With the agent gone, the live report expires; the last one stays.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(ds.get(&key(false)).await.is_err());
        assert!(ds.get(&key(true)).await.is_ok());
    }
}
