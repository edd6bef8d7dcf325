//! birdd's Prometheus metrics: sessions by state, UPDATEs in and out, state transitions,
//! prefixes received and advertised, routes in the kernel.

use calico_bgp::fsm::State;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sessions: IntGaugeVec,
    pub fsm_transitions: IntCounterVec,
    pub updates_received: IntCounter,
    pub updates_sent: IntCounter,
    pub prefixes_received: IntGauge,
    pub prefixes_advertised: IntGauge,
    pub kernel_routes: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registration only fails on a duplicate or malformed name, which is a bug here.
fn must<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

const STATES: [State; 6] = [
    State::Idle,
    State::Connect,
    State::Active,
    State::OpenSent,
    State::OpenConfirm,
    State::Established,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let sessions = must(IntGaugeVec::new(
            Opts::new("birdd_bgp_sessions", "BGP sessions by state"),
            &["state"],
        ));
        let fsm_transitions = must(IntCounterVec::new(
            Opts::new(
                "birdd_bgp_fsm_transitions_total",
                "Session state changes, by the state entered",
            ),
            &["state"],
        ));
        let counter = |n: &str, h: &str| {
            let c = must(IntCounter::new(n, h));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |n: &str, h: &str| {
            let g = must(IntGauge::new(n, h));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let m = Metrics {
            updates_received: counter(
                "birdd_bgp_updates_received_total",
                "UPDATE messages received",
            ),
            updates_sent: counter("birdd_bgp_updates_sent_total", "UPDATE messages sent"),
            prefixes_received: gauge("birdd_bgp_prefixes_received", "Paths held from all peers"),
            prefixes_advertised: gauge(
                "birdd_bgp_prefixes_advertised",
                "Paths advertised to all peers",
            ),
            kernel_routes: gauge("birdd_kernel_routes", "Routes birdd holds in the kernel"),
            sessions,
            fsm_transitions,
            registry,
        };
        must(m.registry.register(Box::new(m.sessions.clone())));
        must(m.registry.register(Box::new(m.fsm_transitions.clone())));
        m
    }

    /// Refreshes the gauges from the daemon's view.
    pub fn observe(
        &self,
        states: impl Iterator<Item = State>,
        kernel_routes: usize,
        received: u64,
        advertised: u64,
    ) {
        let mut counts = [0i64; 6];
        for s in states {
            if let Some(i) = STATES.iter().position(|x| *x == s) {
                counts[i] += 1;
            }
        }
        for (s, n) in STATES.iter().zip(counts) {
            self.sessions.with_label_values(&[s.name()]).set(n);
        }
        self.kernel_routes.set(kernel_routes as i64);
        self.prefixes_received.set(received as i64);
        self.prefixes_advertised.set(advertised as i64);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
