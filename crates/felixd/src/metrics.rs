//! felixd's Prometheus metrics, under Felix's `felix_*` names where Felix has one.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder,
};

use crate::calc::CalcCounts;
use crate::dataplane::ApplySummary;

/// Every metric felixd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub calc_updates: IntCounter,
    pub resync_state: IntGauge,
    pub active_local_endpoints: IntGauge,
    pub active_local_policies: IntGauge,
    pub active_local_selectors: IntGauge,
    pub cluster_endpoints: IntGauge,
    pub cluster_policies: IntGauge,
    pub cluster_profiles: IntGauge,
    pub cluster_tiers: IntGauge,
    pub apply_time: Histogram,
    pub initial_resync_time: Gauge,
    /// From the datastore being in sync to the kernel programmed, the first time.
    pub first_programming_time: Gauge,
    pub dataplane_failures: IntCounter,
    pub restore_calls: IntCounter,
    pub chains: IntGauge,
    pub ipset_changes: IntCounter,
    pub ipsets: IntGauge,
    pub routes_changed: IntCounter,
    pub invalid_resources: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; an error here is a programming mistake caught by tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |n: &str, h: &str| {
            let c = must(IntCounter::new(n, h));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |n: &str, h: &str| {
            let g = must(IntGauge::with_opts(Opts::new(n, h)));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let fgauge = |n: &str, h: &str| {
            let g = must(Gauge::with_opts(Opts::new(n, h)));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let apply_time = must(Histogram::with_opts(
            HistogramOpts::new(
                "felix_int_dataplane_apply_time_seconds",
                "Time taken to apply a batch of changes to the kernel",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        ));
        must(registry.register(Box::new(apply_time.clone())));
        Metrics {
            calc_updates: counter(
                "felix_calc_graph_updates_processed",
                "Datastore updates processed by the calculation graph",
            ),
            resync_state: gauge(
                "felix_resync_state",
                "Datastore sync state: 1 waiting, 2 resyncing, 3 in sync",
            ),
            active_local_endpoints: gauge(
                "felix_active_local_endpoints",
                "Workload and host endpoints on this node",
            ),
            active_local_policies: gauge(
                "felix_active_local_policies",
                "Policies that select an endpoint on this node",
            ),
            active_local_selectors: gauge(
                "felix_active_local_selectors",
                "IP sets the active rules use",
            ),
            cluster_endpoints: gauge(
                "felix_cluster_num_workload_endpoints",
                "Endpoints in the cluster",
            ),
            cluster_policies: gauge("felix_cluster_num_policies", "Policies in the cluster"),
            cluster_profiles: gauge("felix_cluster_num_profiles", "Profiles in the cluster"),
            cluster_tiers: gauge("felix_cluster_num_tiers", "Tiers in the cluster"),
            apply_time,
            initial_resync_time: fgauge(
                "felix_int_dataplane_initial_resync_time_seconds",
                "Seconds from start to the first complete dataplane programming",
            ),
            first_programming_time: fgauge(
                "felixd_first_programming_seconds",
                "Seconds from being in sync with the datastore to the first complete programming",
            ),
            dataplane_failures: counter(
                "felix_int_dataplane_failures",
                "Dataplane applies that failed (and were retried)",
            ),
            restore_calls: counter(
                "felix_iptables_restore_calls",
                "iptables-restore invocations",
            ),
            chains: gauge("felix_iptables_chains", "Chains felixd wants in the kernel"),
            ipset_changes: counter(
                "felix_ipset_lines_executed",
                "IP set members added or removed and sets written",
            ),
            ipsets: gauge("felix_ipsets_calico", "IP sets felixd manages"),
            routes_changed: counter(
                "felix_route_table_updates",
                "Routes added or removed in the main table",
            ),
            invalid_resources: gauge(
                "felix_invalid_resources",
                "Datastore resources that could not be read and are treated as absent",
            ),
            registry,
        }
    }

    pub fn record_apply(&self, s: &ApplySummary, seconds: f64) {
        self.apply_time.observe(seconds);
        self.restore_calls.inc_by(s.restores as u64);
        self.ipset_changes
            .inc_by((s.sets_written + s.members_changed + s.sets_deleted) as u64);
        self.routes_changed
            .inc_by((s.routes_added + s.routes_removed) as u64);
    }

    pub fn record_counts(&self, c: &CalcCounts) {
        self.active_local_endpoints.set(c.local_endpoints as i64);
        self.active_local_policies.set(c.active_policies as i64);
        self.active_local_selectors.set(c.ipsets as i64);
        self.cluster_endpoints.set(c.endpoints as i64);
        self.cluster_policies.set(c.policies as i64);
        self.cluster_profiles.set(c.profiles as i64);
        self.cluster_tiers.set(c.tiers as i64);
        self.ipsets.set(c.ipsets as i64);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn felix_names_are_exported() {
        let m = Metrics::new();
        m.record_apply(&ApplySummary::default(), 0.01);
        let text = m.render();
        assert!(text.contains("felix_int_dataplane_apply_time_seconds_bucket"));
        assert!(text.contains("felix_active_local_policies"));
    }
}
