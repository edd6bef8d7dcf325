//! Policy enforced in the kernel: felixd in a lab node, pods wired by the CNI plugin, real
//! packets between them.

mod common;

use std::time::Duration;

use calico_api::Kind;
use common::{Cluster, Proto, reaches};

const CONVERGE: Duration = Duration::from_secs(20);

fn two_namespaces(c: &mut Cluster) {
    c.namespace("prod", &[("env", "prod")]);
    c.namespace("dev", &[("env", "dev")]);
}

#[test]
fn labels_ports_and_namespaces_decide_who_reaches_whom() {
    let mut c = Cluster::new(&[]);
    two_namespaces(&mut c);
    c.add_pod("prod", "web", &[("app", "web")], None, &[80, 8080]);
    c.add_pod("prod", "client", &[("app", "client")], None, &[80]);
    c.add_pod("dev", "client", &[("app", "client")], None, &[80]);
    let web = c.pod("prod/web").v4();
    let web6 = c.pod("prod/web").v6().expect("dual stack");
    // No policy: the namespace profile allows everything.
    assert!(reaches(c.pod("prod/client"), web, Proto::Tcp, 80));
    assert!(reaches(c.pod("dev/client"), web, Proto::Tcp, 80));
    assert!(reaches(c.pod("dev/client"), web6, Proto::Tcp, 80));

    // Only prod's clients, only on 80.
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [80]}
"#,
    );
    let t = c.eventually(CONVERGE, "dev's client cut off", || {
        !reaches(c.pod("dev/client"), web, Proto::Tcp, 80)
    });
    eprintln!("policy took effect within {t:?}");
    assert!(reaches(c.pod("prod/client"), web, Proto::Tcp, 80));
    assert!(!reaches(c.pod("prod/client"), web, Proto::Tcp, 8080));
    assert!(!reaches(c.pod("prod/client"), web, Proto::Udp, 80));
    assert!(!reaches(c.pod("dev/client"), web6, Proto::Tcp, 80));
    assert!(reaches(c.pod("prod/client"), web6, Proto::Tcp, 80));

    // Clients of any namespace labelled env=dev as well (namespaceSelector).
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-from-dev, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {namespaceSelector: env == 'dev', selector: app == 'client'}
"#,
    );
    c.eventually(CONVERGE, "dev's client let in", || {
        reaches(c.pod("dev/client"), web, Proto::Tcp, 8080)
    });

    // The namespace is relabelled: its pods lose access.
    c.namespace("dev", &[("env", "staging")]);
    c.eventually(CONVERGE, "dev's client cut off again", || {
        !reaches(c.pod("dev/client"), web, Proto::Tcp, 8080)
    });

    // Policies deleted: back to the profile's allow.
    c.delete(Kind::NetworkPolicy, Some("prod"), "web");
    c.delete(Kind::NetworkPolicy, Some("prod"), "web-from-dev");
    c.eventually(CONVERGE, "open again", || {
        reaches(c.pod("dev/client"), web, Proto::Tcp, 8080)
    });
}

#[test]
fn tiers_pass_deny_and_egress() {
    let mut c = Cluster::new(&[]);
    two_namespaces(&mut c);
    c.add_pod("prod", "a", &[("app", "a")], None, &[80]);
    c.add_pod("prod", "b", &[("app", "b")], None, &[80]);
    let a = c.pod("prod/a").v4();
    let b = c.pod("prod/b").v4();
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Deny}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-prod}
spec:
  tier: security
  order: 10
  selector: projectcalico.org/namespace == 'prod'
  ingress: [{action: Pass}]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-no-egress, namespace: prod}
spec:
  selector: app == 'b'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {selector: app == 'a'}
  - action: Allow
"#,
    );
    // Pass hands both to the default tier, where b may not talk to a but a may talk to b.
    c.eventually(CONVERGE, "b's egress to a denied", || {
        !reaches(c.pod("prod/b"), a, Proto::Tcp, 80)
    });
    assert!(reaches(c.pod("prod/a"), b, Proto::Tcp, 80));
    assert!(reaches(c.pod("prod/b"), a, Proto::Udp, 80));
    // The security tier denies (its default) anything it selects that it does not pass.
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-prod}
spec:
  tier: security
  order: 10
  selector: app == 'a'
  ingress: [{action: Pass}]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.b-quiet}
spec:
  tier: security
  order: 20
  selector: app == 'b'
  types: [Ingress]
  ingress: [{action: Log}]
"#,
    );
    c.eventually(CONVERGE, "the tier's default deny applies to b", || {
        !reaches(c.pod("prod/a"), b, Proto::Tcp, 80)
    });
}

#[test]
fn a_new_pod_is_isolated_until_programmed_and_removed_cleanly() {
    let mut c = Cluster::new(&[]);
    two_namespaces(&mut c);
    c.add_pod("prod", "a", &[("app", "a")], None, &[80]);
    // felixd stops: a pod wired now has no chains, and its interface drops everything.
    c.stop_felix();
    c.add_pod("prod", "late", &[("app", "late")], None, &[80]);
    let late = c.pod("prod/late").v4();
    assert!(
        !reaches(c.pod("prod/a"), late, Proto::Tcp, 80),
        "a pod felixd has not programmed must be unreachable"
    );
    assert!(!reaches(
        c.pod("prod/late"),
        c.pod("prod/a").v4(),
        Proto::Tcp,
        80
    ));
    // felixd comes back and programs it.
    c.start_felix();
    c.eventually(CONVERGE, "the late pod programmed", || {
        reaches(c.pod("prod/a"), late, Proto::Tcp, 80)
    });
    // Removing the pod removes its chains and its route.
    let iface_chains = |c: &Cluster| {
        c.filter_chains()
            .iter()
            .filter(|n| n.starts_with("cali-tw-") || n.starts_with("cali-fw-"))
            .count()
    };
    assert_eq!(iface_chains(&c), 4);
    c.del_pod("prod/late");
    c.eventually(CONVERGE, "the pod's chains removed", || {
        iface_chains(&c) == 2
    });
    assert!(!c.lab.routes().contains(&late.to_string()));
}
