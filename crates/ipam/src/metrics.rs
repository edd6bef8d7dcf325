//! ipamd's Prometheus metrics: requests by method and outcome, their latency, addresses
//! assigned and released, compare-and-swap conflicts, and pool utilisation.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::allocator::{IpamStats, Usage};

/// Every metric ipamd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    assigned: IntCounter,
    released: IntCounter,
    cas_conflicts: IntCounter,
    blocks_claimed: IntCounter,
    block_writes: IntCounter,
    pool_capacity: IntGaugeVec,
    pool_in_use: IntGaugeVec,
    pool_available: IntGaugeVec,
    /// Counter values already exported, so the allocator's totals are added as deltas.
    last: Mutex<[u64; 5]>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; an error here is a programming mistake caught by tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "ipam_requests_total",
                "gRPC requests handled, by method and status code",
            ),
            &["method", "code"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "ipam_request_duration_seconds",
                "gRPC request latency by method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method"],
        ));
        let assigned = must(IntCounter::new(
            "ipam_allocations_total",
            "addresses assigned",
        ));
        let released = must(IntCounter::new("ipam_releases_total", "addresses released"));
        let cas_conflicts = must(IntCounter::new(
            "ipam_cas_conflicts_total",
            "datastore compare-and-swap writes that lost to a concurrent writer and were retried",
        ));
        let blocks_claimed = must(IntCounter::new(
            "ipam_blocks_claimed_total",
            "blocks claimed for a node",
        ));
        let block_writes = must(IntCounter::new(
            "ipam_block_writes_total",
            "block transactions committed (concurrent requests on one block share one)",
        ));
        let pool_capacity = must(IntGaugeVec::new(
            Opts::new("ipam_pool_capacity", "addresses in the pool"),
            &["pool"],
        ));
        let pool_in_use = must(IntGaugeVec::new(
            Opts::new("ipam_pool_in_use", "addresses allocated in the pool"),
            &["pool"],
        ));
        let pool_available = must(IntGaugeVec::new(
            Opts::new(
                "ipam_pool_available",
                "addresses still available in the pool",
            ),
            &["pool"],
        ));
        for c in [
            &assigned,
            &released,
            &cas_conflicts,
            &blocks_claimed,
            &block_writes,
        ] {
            must(registry.register(Box::new(c.clone())));
        }
        must(registry.register(Box::new(requests.clone())));
        must(registry.register(Box::new(latency.clone())));
        for g in [&pool_capacity, &pool_in_use, &pool_available] {
            must(registry.register(Box::new(g.clone())));
        }
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            registry,
            requests,
            latency,
            assigned,
            released,
            cas_conflicts,
            blocks_claimed,
            block_writes,
            pool_capacity,
            pool_in_use,
            pool_available,
            last: Mutex::new([0; 5]),
        }
    }

    /// Brings the counters up to the allocator's totals.
    pub fn sync_stats(&self, stats: &IpamStats) {
        let now = [
            stats.addresses_assigned.load(Ordering::Relaxed),
            stats.addresses_released.load(Ordering::Relaxed),
            stats.cas_conflicts.load(Ordering::Relaxed),
            stats.blocks_claimed.load(Ordering::Relaxed),
            stats.block_writes.load(Ordering::Relaxed),
        ];
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for (i, c) in [
            &self.assigned,
            &self.released,
            &self.cas_conflicts,
            &self.blocks_claimed,
            &self.block_writes,
        ]
        .into_iter()
        .enumerate()
        {
            c.inc_by(now[i].saturating_sub(last[i]));
        }
        *last = now;
    }

    pub fn set_usage(&self, usage: &Usage) {
        for p in &usage.pools {
            let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
            self.pool_capacity
                .with_label_values(&[&p.name])
                .set(clamp(p.capacity));
            self.pool_in_use
                .with_label_values(&[&p.name])
                .set(clamp(p.in_use));
            self.pool_available
                .with_label_values(&[&p.name])
                .set(clamp(p.available));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
