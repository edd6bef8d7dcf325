//! Pod churn across three nodes: 100 pods made and removed through the real CNI plugin,
//! several at a time on every node; then the real `calicoctl ipam check` finds no leak, the
//! datastore holds no endpoint and no pod address, and no node keeps a `cali` interface or a
//! route to one.

use std::process::Command;
use std::time::{Duration, Instant};

use calico_e2e::pod::PodSpec;
use calico_e2e::{Lab, options};
use calico_lab::Encap;
use calico_lab::probe::Proto;

const PODS: usize = 100;
/// CNI operations at a time: two per node.
const PARALLEL: usize = 6;

fn ipam_check(lab: &Lab) -> (bool, String) {
    let node = &lab.cluster.nodes[0];
    let bin = node.bin_dir().join("calicoctl");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p calicoctl`)",
        bin.display()
    );
    let out = node
        .run(|| {
            Command::new(&bin)
                .args(["ipam", "check"])
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", node.etcd_endpoint())
                .output()
        })
        .expect("running calicoctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_hundred_pods_come_and_go_without_leaking_addresses_interfaces_or_routes() {
    let mut lab = Lab::start(options(3, Encap::Vxlan));
    let specs: Vec<PodSpec> = (0..PODS)
        .map(|i| {
            PodSpec::new(&lab.node_name(i), &format!("churn/pod-{i:03}"))
                .expect("a pod key")
                .label("app", if i % 2 == 0 { "even" } else { "odd" })
        })
        .collect();

    let t = Instant::now();
    lab.add_pods(specs, PARALLEL).expect("every ADD succeeds");
    let added = t.elapsed();
    let pod_addrs = |lab: &Lab| {
        lab.cluster.nodes[0]
            .allocations()
            .into_iter()
            .filter(|(_, h)| h.starts_with("k8s-pod-network."))
            .count()
    };
    assert_eq!(pod_addrs(&lab), PODS, "one address per pod");
    for n in &lab.cluster.nodes {
        let on_node = lab.pods.iter().filter(|p| p.node == n.name).count();
        assert_eq!(
            n.cali_links().len(),
            on_node,
            "{}: one interface per pod",
            n.name
        );
    }
    // A sample across nodes talks while they are all there.
    let sample: Vec<_> = [0, 1, 2, 50, 97, 98]
        .iter()
        .map(|i| &lab.pods[*i])
        .collect();
    let _servers: Vec<_> = sample
        .iter()
        .map(|p| calico_netns_harness::Servers::start(&p.ns, &[8080], &[]))
        .collect();
    let mut m = Vec::new();
    calico_e2e::eventually(Duration::from_secs(20), "the sample connected", || {
        m = lab.matrix(&sample, Proto::Tcp, 8080, Duration::from_millis(500));
        m.iter().flatten().all(|c| *c)
    });

    let t = Instant::now();
    let keys: Vec<String> = lab.pods.iter().map(|p| p.key()).collect();
    lab.del_pods(&keys, PARALLEL).expect("every DEL succeeds");
    let deleted = t.elapsed();
    eprintln!(
        "{PODS} pods over 3 nodes, {PARALLEL} at a time: ADD {} ms ({} ms a pod), DEL {} ms",
        added.as_millis(),
        added.as_millis() / PODS as u128,
        deleted.as_millis()
    );

    let (ok, report) = ipam_check(&lab);
    eprintln!("calicoctl ipam check:\n{report}");
    // Like Calico's, `ipam check` exits 0 whatever it finds; its last line counts problems.
    assert!(ok, "calicoctl ipam check failed:\n{report}");
    assert!(
        report.contains("Check complete; found 0 problems."),
        "calicoctl ipam check found problems:\n{report}"
    );
    assert_eq!(pod_addrs(&lab), 0, "pod addresses left allocated");
    let weps = lab.cluster.with_datastore(async |rc| {
        rc.list::<calico_api::resource::WorkloadEndpoint>(None)
            .await
            .expect("listing endpoints")
            .items
            .len()
    });
    assert_eq!(weps, 0, "WorkloadEndpoints left behind");
    for n in &lab.cluster.nodes {
        assert!(
            n.cali_links().is_empty(),
            "{}: {:?}",
            n.name,
            n.cali_links()
        );
        // felixd removes routes of released workloads; the kernel removed those on the veths.
        calico_e2e::eventually(
            Duration::from_secs(10),
            "no route to a cali interface",
            || !n.routes().contains(" dev cali"),
        );
    }
}
