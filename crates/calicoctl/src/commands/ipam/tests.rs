//! The ipam commands against the in-memory datastore: Calico's messages and tables, the
//! check report, and releases that leave addresses still in use alone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use calico_api::codec::decode_documents;
use calico_datastore::memory::MemoryDatastore;
use calico_datastore::{Key, ResourceClient};
use calico_ipam::pools::{PoolSpace, Reservations};
use calico_ipam::{AutoAssignArgs, Ipam};
use ipnet::IpNet;

use super::check::{self, Options, Report};
use super::{configure, release, show};
use crate::commands::datastore;
use crate::crud::{Scope, Write};

const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\nspec: {cidr: 10.65.0.0/16}\n";

async fn cluster() -> (ResourceClient, Ipam) {
    let rc = ResourceClient::new(Arc::new(MemoryDatastore::new()));
    apply(&rc, POOL).await;
    let ipam = Ipam::new(rc.datastore().clone());
    (rc, ipam)
}

async fn apply(rc: &ResourceClient, yaml: &str) {
    let o = crate::crud::write(
        rc,
        Write::Apply,
        decode_documents(yaml).unwrap(),
        &Scope::default(),
    )
    .await;
    assert!(o.ok, "{o:?}");
}

async fn assign(ipam: &Ipam, host: &str, handle: &str, pod: &str) -> IpAddr {
    let mut a = AutoAssignArgs::new(host, handle, 1, 0);
    a.attrs = BTreeMap::from([
        ("node".to_string(), host.to_string()),
        ("namespace".to_string(), "default".to_string()),
        ("pod".to_string(), pod.to_string()),
    ]);
    let (v4, _) = ipam.auto_assign(&a).await.unwrap();
    v4.ips[0].addr()
}

/// Pod a's address in use by its endpoint, pod b's allocated with no endpoint (leaked), and
/// a handle `stray` with no address left (leaked too): (client, a's, b's address).
async fn leaky_cluster() -> (ResourceClient, IpAddr, IpAddr) {
    let (rc, ipam) = cluster().await;
    let used = assign(&ipam, "node1", "k8s-pod-network.a", "a").await;
    let leaked = assign(&ipam, "node1", "k8s-pod-network.b", "b").await;
    apply(&rc, &wep("a", used)).await;
    rc.datastore()
        .create(
            &Key::Handle { id: "stray".into() },
            br#"{"block":{},"deleted":false}"#.to_vec(),
        )
        .await
        .unwrap();
    (rc, used, leaked)
}

fn wep(pod: &str, ip: IpAddr) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node1-k8s-{pod}-eth0, namespace: default}}\n\
         spec: {{node: node1, orchestrator: k8s, endpoint: eth0, pod: {pod}, interfaceName: cali{pod}, ipNetworks: [{ip}/32]}}\n"
    )
}

fn opts() -> Options {
    Options::default()
}

#[tokio::test]
async fn the_usage_table_counts_a_reservation_over_the_whole_pool() {
    // Five addresses in use in one block, and a /24 reserved where no block is.
    let (rc, ipam) = cluster().await;
    apply(
        &rc,
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r1}\nspec: {reservedCIDRs: [10.65.0.0/24]}\n",
    )
    .await;
    for i in 0..5 {
        assign(&ipam, "node1", &format!("h{i}"), &format!("p{i}")).await;
    }
    let t = show::usage(&ipam, true).await.unwrap();
    let pool_row = t.lines().find(|l| l.starts_with("| IP Pool")).unwrap();
    let cells: Vec<&str> = pool_row.split('|').map(str::trim).collect();
    assert_eq!(
        cells[3..7],
        ["65536", "5 (0%)", "256 (0%)", "65275 (100%)"],
        "{t}"
    );
    let block_row = t.lines().find(|l| l.starts_with("| Block")).unwrap();
    let cells: Vec<&str> = block_row.split('|').map(str::trim).collect();
    assert_eq!(cells[3..7], ["64", "5 (8%)", "0 (0%)", "59 (92%)"], "{t}");
}

#[test]
fn numbers_print_as_calicoctl_prints_them() {
    assert_eq!(show::g5(256.0), "256");
    assert_eq!(show::g5(65536.0), "65536");
    assert_eq!(show::g5(100000.0), "1e+05");
    assert_eq!(show::g5(1_048_576.0), "1.0486e+06");
    assert_eq!(show::g5(2f64.powi(80)), "1.2089e+24");
    assert_eq!(show::g5(5.0), "5");
}

#[test]
fn the_usage_table_matches_calicos_layout() {
    // A /16 pool with one /26 block (5 in use) and a /24 reservation in unblocked space.
    let pool: IpNet = "10.65.0.0/16".parse().unwrap();
    let block: IpNet = "10.65.79.0/26".parse().unwrap();
    let space =
        Reservations::new(vec!["10.65.0.0/24".parse().unwrap()]).pool_space(&pool, &[block]);
    assert_eq!(
        space,
        PoolSpace {
            reserved: 256,
            free_outside_blocks: 65536 - 64 - 256
        }
    );
    let counts = |capacity, in_use, reserved, free| show::Counts {
        capacity,
        in_use,
        reserved,
        free,
    };
    let rows = vec![
        show::row(
            "IP Pool",
            "10.65.0.0/16",
            counts(65536, 5, space.reserved, 59 + space.free_outside_blocks),
        ),
        show::row("Block", "10.65.79.0/26", counts(64, 5, 0, 59)),
    ];
    let t = crate::printer::boxed_right(&show::USAGE_HEADINGS, &rows, &[2, 3, 4, 5]);
    let want = "\
+----------+---------------+-----------+------------+--------------+--------------+
| GROUPING |     CIDR      | IPS TOTAL | IPS IN USE | IPS RESERVED |   IPS FREE   |
+----------+---------------+-----------+------------+--------------+--------------+
| IP Pool  | 10.65.0.0/16  |     65536 |     5 (0%) |     256 (0%) | 65275 (100%) |
| Block    | 10.65.79.0/26 |        64 |     5 (8%) |       0 (0%) |     59 (92%) |
+----------+---------------+-----------+------------+--------------+--------------+
";
    assert_eq!(t, want);
}

#[tokio::test]
async fn show_ip_says_who_holds_an_address_or_that_nobody_does() {
    let (rc, ipam) = cluster().await;
    let ip = assign(&ipam, "node1", "k8s-pod-network.abc", "web").await;
    let s = show::ip(&rc, ip).await.unwrap();
    assert_eq!(
        s,
        format!(
            "IP {ip} is in use\nHandle ID: k8s-pod-network.abc\nActive Owner Attributes:\n  namespace: default\n  node: node1\n  pod: web\n"
        )
    );
    assert_eq!(
        show::ip(&rc, "10.65.200.1".parse().unwrap()).await.unwrap(),
        "10.65.200.1 is not assigned\n"
    );
    assert_eq!(
        show::ip(&rc, "192.0.2.1".parse().unwrap()).await.unwrap(),
        "192.0.2.1 is not assigned\n"
    );
}

#[tokio::test]
async fn show_borrowed_lists_addresses_taken_from_another_nodes_block() {
    let (rc, _) = cluster().await;
    let block = serde_json::json!({
        "cidr": "10.65.9.0/30", "affinity": "host:node1",
        "allocations": [0, 1, null, 2], "unallocated": [2],
        "attributes": [
            {"handle_id": "h1", "secondary": {"node": "node2", "namespace": "ns", "pod": "p1"}},
            {"handle_id": "h2", "secondary": {"node": "node1", "namespace": "ns", "pod": "p2"}},
            {"handle_id": "h3"}
        ],
        "sequenceNumber": 0, "sequenceNumberForAllocation": {}, "deleted": false
    });
    rc.datastore()
        .create(
            &Key::Block {
                cidr: "10.65.9.0/30".parse().unwrap(),
            },
            serde_json::to_vec(&block).unwrap(),
        )
        .await
        .unwrap();
    let s = show::borrowed(&rc).await.unwrap();
    assert_eq!(
        s,
        "\
+-----------+----------------+--------------+-------------+------+--------------+
|    IP     | BORROWING-NODE |    BLOCK     | BLOCK OWNER | TYPE | ALLOCATED-TO |
+-----------+----------------+--------------+-------------+------+--------------+
| 10.65.9.0 | node2          | 10.65.9.0/30 | node1       | pod  | ns/p1        |
+-----------+----------------+--------------+-------------+------+--------------+

Note: found 1 IP allocations without an explicit node association. Unable to determine if they are borrowed.
"
    );
}

#[tokio::test]
async fn configure_sets_what_it_is_given_with_calicos_messages() {
    let (_, ipam) = cluster().await;
    let set = |s: Option<&str>, m: Option<&str>| configure::Settings {
        strict_affinity: s.map(str::to_string),
        max_blocks_per_host: m.map(str::to_string),
        kubevirt_ip_persistence: None,
    };
    let err = |r: anyhow::Result<String>| r.unwrap_err().to_string();
    assert!(
        err(configure::configure(&ipam, &set(None, None)).await)
            .starts_with("at least one configuration option must be specified")
    );
    assert_eq!(
        err(configure::configure(&ipam, &set(Some("yes"), None)).await),
        "invalid value. Use true or false to set strictaffinity"
    );
    assert_eq!(
        err(configure::configure(&ipam, &set(None, Some("four"))).await),
        "invalid value for maxblockhost. Use a valid number"
    );
    assert!(
        err(configure::configure(&ipam, &set(None, Some("4"))).await)
            .starts_with("error: MaxBlocksPerHost requires StrictAffinity to be enabled")
    );
    assert_eq!(
        configure::configure(&ipam, &set(Some("true"), Some("4")))
            .await
            .unwrap(),
        "Successfully set StrictAffinity to: true\nSuccessfully set MaxBlocksPerHost to: 4\n"
    );
    let cfg = ipam.config().await.unwrap();
    assert!(cfg.strict_affinity);
    assert_eq!(cfg.max_blocks_per_host, 4);
    assert_eq!(
        show::configuration(&ipam).await.unwrap(),
        "\
+------------------------------+-----------------------------------+
|           PROPERTY           |               VALUE               |
+------------------------------+-----------------------------------+
| StrictAffinity               | true                              |
| AutoAllocateBlocks           | true                              |
| MaxBlocksPerHost             |                                 4 |
| KubeVirtVMAddressPersistence | (*ipam.VMAddressPersistence)(nil) |
+------------------------------+-----------------------------------+
"
    );
}

#[tokio::test]
async fn check_reports_leaks_against_workload_endpoints_in_calicos_format() {
    let (rc, used, leaked) = leaky_cluster().await;
    datastore::lock(&rc).await.unwrap();

    let c = check::check(&rc, opts(), "v9.9.9").await.unwrap();
    assert_eq!(c.problems, 2, "{}", c.text);
    for line in [
        "Checking IPAM for inconsistencies...\n\nLoading all IPAM blocks...\nFound 1 IPAM blocks.\n",
        "IPAM blocks record 2 allocations.\n\nLoading all IPAM pools...\n  10.65.0.0/16\nFound 1 active IP pools.\n",
        "Found 1 workload IPs.\nWorkloads and nodes are using 1 IPs.\n",
        "  node1 has 2 allocations\nNode with most allocations has 2; median is 2\n",
        "Found 1 IPs that are allocated in IPAM but not actually in use.\n",
        "Found 1 handles with no matching IPs (and 2 handles with matches).\n",
        "Check complete; found 2 problems.\n",
    ] {
        assert!(c.text.contains(line), "missing {line:?} in\n{}", c.text);
    }
    let r = &c.report;
    assert_eq!(r.version, "v9.9.9");
    assert!(r.datastore_locked);
    assert!(!r.cluster_guid.is_empty());
    let a = &r.allocations[&used.to_string()][0];
    assert!(a.in_use);
    assert_eq!(
        a.owners.as_deref(),
        Some(&["Workload(default/node1-k8s-a-eth0)".to_string()][..])
    );
    let b = &r.allocations[&leaked.to_string()][0];
    assert!(!b.in_use && b.owners.is_none());
    assert_eq!(b.handle, "k8s-pod-network.b");
    assert!(b.sequence_number.is_some());
    assert_eq!(r.leaked_handles.len(), 1);
    assert_eq!(r.leaked_handles[0].id, "stray");

    // The JSON uses Calico's field names and reads back.
    let json = check::report_json(r).unwrap();
    for k in [
        "\"clusterGUID\"",
        "\"datastoreLocked\": true",
        "\"clusterInformationRevision\"",
        "\"inUse\": false",
        "\"owners\": null",
        "\"leakedHandles\"",
        "\"ID\": \"stray\"",
        "\"UID\": null",
        "\"Revision\"",
    ] {
        assert!(json.contains(k), "{k} not in {json}");
    }
    assert_eq!(&serde_json::from_str::<Report>(&json).unwrap(), r);
    let problems = check::check(
        &rc,
        Options {
            show_problem_ips: true,
            ..opts()
        },
        "v9.9.9",
    )
    .await
    .unwrap();
    assert!(problems.text.contains(&format!(
        "  {leaked} leaked; attrs Main:k8s-pod-network.b Extra:namespace=default,node=node1,pod=b\n"
    )));
}

#[tokio::test]
async fn release_by_ip_frees_the_address_once() {
    let (_, ipam) = cluster().await;
    let ip = assign(&ipam, "node1", "h", "p").await;
    assert_eq!(
        release::ip(&ipam, ip).await.unwrap(),
        format!("Successfully released IP address {ip}\n")
    );
    assert_eq!(
        release::ip(&ipam, ip).await.unwrap_err().to_string(),
        format!("IP address {ip} is not assigned")
    );
}

#[tokio::test]
async fn release_from_a_report_frees_leaks_only_while_locked_and_current() {
    let (rc, used, leaked) = leaky_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, r: &Report| {
        let p = dir.path().join(name);
        std::fs::write(&p, check::report_json(r).unwrap()).unwrap();
        p
    };

    // A current report taken while the datastore is unlocked: refused unless forced.
    datastore::lock(&rc).await.unwrap();
    datastore::unlock(&rc).await.unwrap();
    let unlocked = check::check(&rc, opts(), "v1").await.unwrap().report;
    let u = write("unlocked.json", &unlocked);
    let e = release::from_reports(&rc, std::slice::from_ref(&u), false, "v1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("data store is not locked"), "{e}");
    datastore::lock(&rc).await.unwrap();
    let report = check::check(&rc, opts(), "v1").await.unwrap().report;
    let f = write("r.json", &report);
    datastore::unlock(&rc).await.unwrap();
    let e = release::from_reports(&rc, std::slice::from_ref(&f), false, "v1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("are all stale"), "{e}");

    datastore::lock(&rc).await.unwrap();
    let report = check::check(&rc, opts(), "v1").await.unwrap().report;
    let f = write("r.json", &report);
    let e = release::from_reports(&rc, std::slice::from_ref(&f), false, "v2")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("was produced using a different version (v1) of calicoctl"),
        "{e}"
    );
    let mut other = report.clone();
    other.cluster_guid = "another".into();
    let g = write("other.json", &other);
    let e = release::from_reports(&rc, &[g], true, "v1")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cluster does not match the provided report ({}): mismatched cluster GUID. Refusing to release",
            dir.path().join("other.json").display()
        )
    );

    let out = release::from_reports(&rc, std::slice::from_ref(&f), false, "v1")
        .await
        .unwrap();
    assert_eq!(
        out,
        "Releasing 1 old IPs...\nReleased 1 IPs successfully\nDeleting 1 handles...\n\
         Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n.\n\
         Released 1 handles; 0 skipped; 0 errors.\n"
    );
    assert!(show::ip(&rc, used).await.unwrap().contains("is in use"));
    assert!(
        show::ip(&rc, leaked)
            .await
            .unwrap()
            .contains("is not assigned")
    );
    // The same report again: nothing left to do, the handle is gone.
    let again = release::from_reports(&rc, std::slice::from_ref(&f), false, "v1")
        .await
        .unwrap();
    assert!(
        again.contains("1 addresses marked as leaked in the report had already been cleaned up."),
        "{again}"
    );
    assert!(
        again.contains("x\nReleased 0 handles; 1 skipped; 0 errors."),
        "{again}"
    );
}

#[tokio::test]
async fn a_report_does_not_release_an_address_reassigned_since() {
    let (rc, ipam) = cluster().await;
    let leaked = assign(&ipam, "node1", "k8s-pod-network.old", "old").await;
    datastore::lock(&rc).await.unwrap();
    let report = check::check(&rc, opts(), "v1").await.unwrap().report;
    // Released and handed to someone else after the report was written.
    release::ip(&ipam, leaked).await.unwrap();
    ipam.assign_ip(
        leaked,
        "k8s-pod-network.new",
        &BTreeMap::new(),
        "node1",
        calico_ipam::IpUse::Workload,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.json");
    std::fs::write(&f, check::report_json(&report).unwrap()).unwrap();
    let out = release::from_reports(&rc, &[f], false, "v1").await.unwrap();
    assert!(out.contains("Released 0 IPs successfully"), "{out}");
    assert!(
        show::ip(&rc, leaked)
            .await
            .unwrap()
            .contains("k8s-pod-network.new")
    );
}
