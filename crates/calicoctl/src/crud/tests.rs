//! The resource commands against the in-memory datastore: result lines, namespaces, tables
//! for every kind, round trips and bad input.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use calico_api::codec::decode_documents;
use calico_datastore::memory::MemoryDatastore;

use super::*;

fn client() -> ResourceClient {
    ResourceClient::new(Arc::new(MemoryDatastore::new()))
}

fn docs(y: &str) -> Vec<AnyResource> {
    decode_documents(y).unwrap()
}

const POOLS: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ippool-name1}
spec: {cidr: 10.0.1.0/24, ipipMode: Always, nodeSelector: foo == 'bar'}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool2}
spec: {cidr: 10.0.2.0/24, natOutgoing: true, vxlanMode: CrossSubnet}
";

fn ps() -> Output {
    Output::Ps
}

#[tokio::test]
async fn apply_then_get_prints_calicos_tables() {
    let rc = client();
    let o = write(&rc, Write::Apply, docs(POOLS), &Scope::default()).await;
    assert_eq!(o.stdout, "Successfully applied 2 'IPPool' resource(s)\n");
    assert!(o.ok);
    let o = get(
        &rc,
        GetTarget::List(Kind::IpPool),
        &Scope::default(),
        &ps(),
        false,
    )
    .await;
    assert_eq!(
        o.stdout,
        "NAME           CIDR          SELECTOR       \n\
         ippool-name1   10.0.1.0/24   foo == 'bar'   \n\
         pool2          10.0.2.0/24   all()          \n\n"
    );
    let o = get(
        &rc,
        GetTarget::Names(Kind::IpPool, vec!["ippool-name1".into()]),
        &Scope::default(),
        &Output::Wide,
        false,
    )
    .await;
    assert_eq!(
        o.stdout,
        "NAME           CIDR          NAT     IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR       ASSIGNMENTMODE   \n\
         ippool-name1   10.0.1.0/24   false   Always     Never       false      false              foo == 'bar'   Automatic        \n\n"
    );
}

#[tokio::test]
async fn every_kind_has_its_columns() {
    let rc = client();
    let all = "\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info, nodeToNodeMeshEnabled: false, asNumber: 63400}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec: {peerIP: 192.20.30.40, asNumber: 64567, nodeSelector: rack == 'rack-1'}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: global}
spec: {peerIP: 192.20.30.41, asNumber: 64567}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 300}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.allow-dns}
spec: {tier: security, order: 100.5, selector: all()}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec: {selector: app == 'web'}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked}
spec: {nets: [198.51.100.0/28, 203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0}
spec: {node: node1, interfaceName: eth0, expectedIPs: [10.0.0.1], profiles: [p1, p2]}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec: {bgp: {ipv4Address: 10.0.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec: {labelsToApply: {pcns.projectcalico.org/name: prod, a: b}}
";
    let o = write(
        &rc,
        Write::Create { skip_exists: false },
        docs(all),
        &Scope::default(),
    )
    .await;
    assert!(o.ok, "{o:?}");
    assert_eq!(o.stdout, "Successfully created 10 resource(s)\n");
    let table = |kind: Kind, out: Output, scope: Scope| {
        let rc = rc.clone();
        async move {
            get(&rc, GetTarget::List(kind), &scope, &out, false)
                .await
                .stdout
        }
    };
    assert_eq!(
        table(Kind::BgpConfiguration, ps(), Scope::default()).await,
        "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER   \ndefault   Info          false         63400      \n\n"
    );
    assert_eq!(
        table(Kind::BgpPeer, ps(), Scope::default()).await,
        "NAME        PEERIP         NODE               ASN     \n\
         global      192.20.30.41   (global)           64567   \n\
         rack1-tor   192.20.30.40   rack == 'rack-1'   64567   \n\n"
    );
    let tiers = table(Kind::Tier, ps(), Scope::default()).await;
    assert!(
        tiers.starts_with("NAME       ORDER   \nsecurity   300     \n"),
        "{tiers}"
    );
    assert_eq!(
        table(Kind::GlobalNetworkPolicy, Output::Wide, Scope::default()).await,
        "NAME                 TIER       ORDER   SELECTOR   \nsecurity.allow-dns   security   100.5   all()      \n\n"
    );
    let all_ns = Scope {
        namespace: None,
        all_namespaces: true,
    };
    assert_eq!(
        table(Kind::NetworkPolicy, ps(), all_ns.clone()).await,
        "NAMESPACE   NAME        TIER      \nprod        allow-web   default   \n\n"
    );
    // Without -n or -A only the default namespace is listed.
    assert_eq!(
        table(Kind::NetworkPolicy, ps(), Scope::default()).await,
        "NAME   TIER   \n\n"
    );
    assert_eq!(
        table(Kind::GlobalNetworkSet, Output::Wide, Scope::default()).await,
        "NAME      NETS                             \nblocked   198.51.100.0/28,203.0.113.0/24   \n\n"
    );
    assert_eq!(
        table(Kind::HostEndpoint, Output::Wide, Scope::default()).await,
        "NAME         NODE    INTERFACE   IPS        PROFILES   \nnode1-eth0   node1   eth0        10.0.0.1   p1,p2      \n\n"
    );
    assert_eq!(
        table(Kind::Node, Output::Wide, Scope::default()).await,
        "NAME    ASN       IPV4          IPV6   \nnode1   (63400)   10.0.0.1/24          \n\n"
    );
    assert_eq!(
        table(Kind::Profile, Output::Wide, Scope::default()).await,
        "NAME       LABELS                                 \nkns.prod   a=b,pcns.projectcalico.org/name=prod   \n\n"
    );
    let o = get(
        &rc,
        GetTarget::List(Kind::IpPool),
        &Scope::default(),
        &Output::CustomColumns(vec!["NAME".into(), "NOPE".into()]),
        false,
    )
    .await;
    assert!(
        o.stderr
            .starts_with("unknown heading NOPE, valid values are: NAME, CIDR"),
        "{o:?}"
    );
}

#[tokio::test]
async fn yaml_output_applies_back_unchanged() {
    let rc = client();
    write(&rc, Write::Apply, docs(POOLS), &Scope::default()).await;
    let o = get(
        &rc,
        GetTarget::Names(Kind::IpPool, vec!["pool2".into()]),
        &Scope::default(),
        &Output::Yaml,
        false,
    )
    .await;
    assert!(o.ok, "{o:?}");
    let back = docs(&o.stdout);
    assert_eq!(back.len(), 1);
    let o2 = write(&rc, Write::Replace, back.clone(), &Scope::default()).await;
    assert_eq!(
        o2.stdout, "Successfully replaced 1 'IPPool' resource(s)\n",
        "{o2:?}"
    );
    // A list prints as IPPoolList, which decodes to its items.
    let o = get(
        &rc,
        GetTarget::List(Kind::IpPool),
        &Scope::default(),
        &Output::Json,
        false,
    )
    .await;
    assert!(
        o.stdout.contains("\"kind\": \"IPPoolList\""),
        "{}",
        o.stdout
    );
    assert_eq!(docs(&o.stdout).len(), 2);
    let o = get(
        &rc,
        GetTarget::List(Kind::IpPool),
        &Scope::default(),
        &Output::Name,
        false,
    )
    .await;
    assert_eq!(o.stdout, "ippool/ippool-name1\nippool/pool2\n");
    let o = get(
        &rc,
        GetTarget::List(Kind::IpPool),
        &Scope::default(),
        &Output::JsonPath("{.items[*].spec.cidr}".into()),
        false,
    )
    .await;
    assert_eq!(o.stdout, "10.0.1.0/24 10.0.2.0/24\n");
}

#[tokio::test]
async fn failures_name_the_resource_and_write_nothing_wrong() {
    let rc = client();
    let scope = Scope::default();
    write(
        &rc,
        Write::Create { skip_exists: false },
        docs(POOLS),
        &scope,
    )
    .await;
    // create of existing resources
    let o = write(
        &rc,
        Write::Create { skip_exists: false },
        docs(POOLS),
        &scope,
    )
    .await;
    assert!(!o.ok);
    assert!(
        o.stderr.starts_with("failed to create any 'IPPool' resources: [resource already exists: IPPool(ippool-name1)"),
        "{o:?}"
    );
    let o = write(
        &rc,
        Write::Create { skip_exists: true },
        docs(POOLS),
        &scope,
    )
    .await;
    assert!(o.ok, "{o:?}");
    // replace of a missing one, next to an existing one: partial success
    let mixed = docs(
        &POOLS
            .replace("pool2", "pool3")
            .replace("10.0.2.0", "10.0.3.0"),
    );
    let o = write(&rc, Write::Replace, mixed, &scope).await;
    assert!(!o.ok);
    assert_eq!(
        o.stdout,
        "Partial success: replaced the first 1 out of 2 'IPPool' resources:\n"
    );
    assert!(
        o.stderr.contains("resource does not exist: IPPool(pool3)"),
        "{o:?}"
    );
    // an invalid value: refused with the field, nothing written
    let bad = docs(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.9.0.0/16, blockSize: 12}\n",
    );
    let o = write(&rc, Write::Apply, bad, &scope).await;
    assert!(
        o.stderr.starts_with("failed to apply 'IPPool' resource: ["),
        "{o:?}"
    );
    assert!(o.stderr.contains("blockSize"), "{o:?}");
    assert!(rc.get_any(Kind::IpPool, None, "bad").await.is_err());
    // namespaces
    let np = docs(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {selector: all()}\n",
    );
    let o = write(
        &rc,
        Write::Apply,
        np,
        &Scope {
            namespace: Some("b".into()),
            all_namespaces: false,
        },
    )
    .await;
    assert!(
        o.stderr
            .contains("resource namespace does not match client namespace. a != b"),
        "{o:?}"
    );
    let o = write(
        &rc,
        Write::Apply,
        docs(POOLS),
        &Scope {
            namespace: Some("b".into()),
            all_namespaces: false,
        },
    )
    .await;
    assert!(o.stderr.contains("IPPool is not namespaced"), "{o:?}");
    // the read-only kind
    let ci = docs(
        "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\nspec: {}\n",
    );
    let o = write(&rc, Write::Apply, ci, &scope).await;
    assert!(
        o.stderr.contains(
            "operation apply is not supported on ClusterInformation: resource is readonly"
        )
    );
    // get of a missing name, next to one that exists
    let o = get(
        &rc,
        GetTarget::Names(Kind::IpPool, vec!["pool2".into(), "blah".into()]),
        &scope,
        &ps(),
        false,
    )
    .await;
    assert!(!o.ok);
    assert!(o.stdout.contains("pool2"));
    assert_eq!(o.stderr, "resource does not exist: IPPool(blah)\n");
}

#[tokio::test]
async fn delete_label_and_patch() {
    let rc = client();
    let scope = Scope::default();
    write(&rc, Write::Apply, docs(POOLS), &scope).await;
    let o = label(&rc, "ippool", "pool2", "team=net", false, false, &scope).await;
    assert_eq!(o.stdout, "Successfully set label team on ippool pool2\n");
    let o = label(&rc, "ippool", "pool2", "team=other", false, false, &scope).await;
    assert!(o.stderr.contains("please use '--overwrite'"), "{o:?}");
    let o = label(&rc, "ippool", "pool2", "team=other", true, false, &scope).await;
    assert_eq!(
        o.stdout,
        "Successfully updated label team on ippool pool2\n"
    );
    let o = label(&rc, "ippool", "pool2", "team", false, true, &scope).await;
    assert_eq!(
        o.stdout,
        "Successfully removed label team from ippool pool2\n"
    );
    let o = label(&rc, "ippool", "nosuch", "a=b", false, false, &scope).await;
    assert_eq!(o.stderr, "ippool nosuch not found\n");

    let o = patch(
        &rc,
        "ippool",
        "pool2",
        r#"{"spec":{"disabled":true}}"#,
        PatchType::Strategic,
        &scope,
    )
    .await;
    assert_eq!(
        o.stdout, "Successfully patched 1 'IPPool' resource\n",
        "{o:?}"
    );
    match rc.get_any(Kind::IpPool, None, "pool2").await.unwrap() {
        AnyResource::IpPool(p) => assert!(p.spec.disabled),
        other => panic!("{other:?}"),
    }
    let o = patch(
        &rc,
        "ippool",
        "pool2",
        r#"{"spec":{"cidr":"10.7.0.0/16"}}"#,
        PatchType::Merge,
        &scope,
    )
    .await;
    assert!(
        !o.ok && o.stderr.contains("spec.cidr cannot be changed"),
        "{o:?}"
    );
    let o = patch(
        &rc,
        "ippool",
        "pool2",
        r#"[{"op":"add","path":"/spec/nosuch","value":1}]"#,
        PatchType::Json,
        &scope,
    )
    .await;
    assert!(!o.ok && o.stderr.contains("nosuch"), "{o:?}");

    let targets = vec![
        stub(Kind::IpPool, None, "pool2").unwrap(),
        stub(Kind::IpPool, None, "blah").unwrap(),
        stub(Kind::IpPool, None, "ippool-name1").unwrap(),
    ];
    let o = delete(&rc, targets, &scope, false).await;
    assert_eq!(o.stdout, "Successfully deleted 2 'IPPool' resource(s)\n");
    assert_eq!(
        o.stderr,
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(blah)\n"
    );
    assert!(!o.ok);
    let o = delete(
        &rc,
        vec![stub(Kind::IpPool, None, "blah").unwrap()],
        &scope,
        true,
    )
    .await;
    assert!(o.ok);
}

#[tokio::test]
async fn kubernetes_policies_are_stored_as_calico_names_them() {
    let rc = client();
    let knp = docs(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: prod}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    );
    let o = write(&rc, Write::Apply, knp.clone(), &Scope::default()).await;
    assert_eq!(
        o.stdout, "Successfully applied 1 'NetworkPolicy' resource(s)\n",
        "{o:?}"
    );
    assert!(
        rc.get_any(Kind::NetworkPolicy, Some("prod"), "knp.default.deny-all")
            .await
            .is_ok()
    );
    // get -f and replace -f name the same stored policy as apply and delete do.
    let o = get(
        &rc,
        GetTarget::Resources(knp.clone()),
        &Scope::default(),
        &ps(),
        false,
    )
    .await;
    assert_eq!(
        o.stdout, "NAME                   TIER      \nknp.default.deny-all   default   \n\n",
        "{o:?}"
    );
    assert!(o.ok, "{o:?}");
    let egress = docs(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: prod}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n",
    );
    let o = write(&rc, Write::Replace, egress, &Scope::default()).await;
    assert_eq!(
        o.stdout, "Successfully replaced 1 'NetworkPolicy' resource(s)\n",
        "{o:?}"
    );
    match rc
        .get_any(Kind::NetworkPolicy, Some("prod"), "knp.default.deny-all")
        .await
        .unwrap()
    {
        AnyResource::NetworkPolicy(p) => assert_eq!(p.spec.types.len(), 2, "{p:?}"),
        other => panic!("{other:?}"),
    }
    let o = write(
        &rc,
        Write::Create { skip_exists: false },
        knp.clone(),
        &Scope::default(),
    )
    .await;
    assert!(
        o.stderr
            .contains("resource already exists: NetworkPolicy(prod/knp.default.deny-all)"),
        "{o:?}"
    );
    let o = delete(&rc, knp.clone(), &Scope::default(), false).await;
    assert_eq!(
        o.stdout, "Successfully deleted 1 'NetworkPolicy' resource(s)\n",
        "{o:?}"
    );
    let o = get(
        &rc,
        GetTarget::Resources(knp.clone()),
        &Scope::default(),
        &ps(),
        false,
    )
    .await;
    assert_eq!(
        o.stderr,
        "resource does not exist: NetworkPolicy(prod/knp.default.deny-all)\n"
    );
    let o = write(&rc, Write::Replace, knp, &Scope::default()).await;
    assert!(
        o.stderr
            .contains("resource does not exist: NetworkPolicy(prod/knp.default.deny-all)"),
        "{o:?}"
    );
}

/// A namespaced resource without a namespace goes to `default` (or `-n`), as in Calico; a
/// lookup in the wrong namespace names the namespace it looked in.
#[tokio::test]
async fn a_missing_namespace_means_default() {
    let rc = client();
    let np = docs(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {selector: all()}\n",
    );
    let o = write(&rc, Write::Apply, np.clone(), &Scope::default()).await;
    assert!(o.ok, "{o:?}");
    assert!(
        rc.get_any(Kind::NetworkPolicy, Some("default"), "p")
            .await
            .is_ok()
    );
    let prod = Scope {
        namespace: Some("prod".into()),
        all_namespaces: false,
    };
    let o = write(&rc, Write::Apply, np, &prod).await;
    assert!(o.ok, "{o:?}");
    assert!(
        rc.get_any(Kind::NetworkPolicy, Some("prod"), "p")
            .await
            .is_ok()
    );
    let o = get(
        &rc,
        GetTarget::Names(Kind::NetworkSet, vec!["p".into()]),
        &Scope::default(),
        &ps(),
        false,
    )
    .await;
    assert_eq!(o.stderr, "resource does not exist: NetworkSet(default/p)\n");
    let mut gnp = docs(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g, namespace: prod}\nspec: {selector: all()}\n",
    );
    let e = settle_namespace(&mut gnp[0], &Scope::default()).unwrap_err();
    assert_eq!(
        e,
        "namespace should not be specified for a non-namespaced resource. GlobalNetworkPolicy is not a namespaced resource"
    );
}

#[test]
fn unknown_kinds_list_the_valid_ones_once() {
    let e = named("nosuchkind", &[]).unwrap_err();
    assert!(
        e.starts_with("resource type 'nosuchkind' is not supported; use one of: BGPConfiguration, BGPFilter, BGPPeer, CalicoNodeStatus, ClusterInformation, FelixConfiguration, GlobalNetworkPolicy, GlobalNetworkSet, HostEndpoint, IPAMConfiguration, IPPool, IPReservation, KubeControllersConfiguration, NetworkPolicy, NetworkSet, Node, Profile, StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, StagedNetworkPolicy, Tier, WorkloadEndpoint ("),
        "{e}"
    );
    assert_eq!(e.matches(" NetworkPolicy,").count(), 1, "{e}");
}

/// Every kind, as Calico's documentation writes it (the api crate's examples): `apply`, then
/// `get -o yaml` gives back the input with Calico's defaults filled in.
#[tokio::test]
async fn every_kind_applies_and_reads_back_with_its_defaults() {
    const EXAMPLES: &str = include_str!("../../../api/tests/examples/all-kinds.yaml");
    let rc = client();
    let mut checked = std::collections::BTreeSet::new();
    for r in docs(EXAMPLES) {
        let kind = r.kind();
        let (name, namespace) = (r.metadata().name.clone(), r.metadata().namespace.clone());
        let scope = Scope {
            namespace: namespace.clone(),
            all_namespaces: false,
        };
        let o = write(&rc, Write::Apply, vec![r.clone()], &scope).await;
        if kind == Kind::ClusterInformation {
            // Read-only to calicoctl, as in Calico.
            assert!(!o.ok, "{o:?}");
            continue;
        }
        if kind == Kind::K8sNetworkPolicy {
            // Stored converted, as `knp.default.<name>` (its own test above).
            assert!(o.ok, "{o:?}");
            continue;
        }
        assert!(o.ok, "apply {kind:?} {name}: {o:?}");
        let got = get(
            &rc,
            GetTarget::Names(kind, vec![name.clone()]),
            &scope,
            &Output::Yaml,
            false,
        )
        .await;
        assert!(got.ok, "get {kind:?} {name}: {got:?}");
        let back = docs(&got.stdout);
        assert_eq!(back.len(), 1, "{}", got.stdout);
        let mut want = r.clone();
        want.apply_defaults();
        let (w, b) = (
            serde_json::to_value(&want).unwrap(),
            serde_json::to_value(&back[0]).unwrap(),
        );
        assert_eq!(w["spec"], b["spec"], "{kind:?} {name}:\n{}", got.stdout);
        assert_eq!(
            w["metadata"]["labels"], b["metadata"]["labels"],
            "{kind:?} {name}"
        );
        assert_eq!(b["metadata"]["name"], w["metadata"]["name"]);
        checked.insert(kind);
    }
    assert!(checked.len() >= 21, "kinds checked: {checked:?}");
}

#[tokio::test]
async fn staged_policies_and_node_statuses_go_through_every_command() {
    let rc = client();
    let prod = Scope {
        namespace: Some("prod".into()),
        all_namespaces: false,
    };
    let staged = "\
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-web}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: old-rule}
spec: {stagedAction: Delete}
";
    let o = write(
        &rc,
        Write::Create { skip_exists: false },
        docs(staged),
        &prod,
    )
    .await;
    assert_eq!(
        o.stdout, "Successfully created 2 'StagedNetworkPolicy' resource(s)\n",
        "{o:?}"
    );
    // A Delete with a spec is refused, naming the field and what to do.
    let o = write(
        &rc,
        Write::Apply,
        docs("apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: g}\nspec: {stagedAction: Delete, selector: all()}\n"),
        &Scope::default(),
    )
    .await;
    assert!(!o.ok, "{o:?}");
    assert!(
        o.stderr
            .contains("spec.selector: must be empty when stagedAction is Delete")
            && o.stderr.contains("use stagedAction Set"),
        "{o:?}"
    );
    let o = label(&rc, "snp", "allow-web", "team=web", false, false, &prod).await;
    assert_eq!(
        o.stdout, "Successfully set label team on snp allow-web\n",
        "{o:?}"
    );
    let o = patch(
        &rc,
        "stagedpolicy",
        "allow-web",
        r#"{"spec":{"order":5}}"#,
        PatchType::Merge,
        &prod,
    )
    .await;
    assert!(o.ok, "{o:?}");
    let o = get(
        &rc,
        GetTarget::List(Kind::StagedNetworkPolicy),
        &prod,
        &Output::Wide,
        false,
    )
    .await;
    assert_eq!(
        o.stdout,
        "NAMESPACE   NAME        TIER      ORDER   SELECTOR       \n\
         prod        allow-web   default   5       app == 'web'   \n\
         prod        old-rule    default   <nil>                  \n\n"
    );
    let got = get(
        &rc,
        GetTarget::Names(Kind::StagedNetworkPolicy, vec!["allow-web".into()]),
        &prod,
        &Output::Yaml,
        false,
    )
    .await;
    let back = docs(&got.stdout);
    assert_eq!(back[0].to_json()["spec"]["stagedAction"], "Set");
    let o = write(&rc, Write::Replace, back, &prod).await;
    assert!(o.ok, "{o:?}");
    let (kind, names) = named("spols", &["allow-web".into(), "old-rule".into()]).unwrap();
    let targets = names.iter().map(|n| stub(kind, None, n).unwrap()).collect();
    let o = delete(&rc, targets, &prod, false).await;
    assert_eq!(
        o.stdout,
        "Successfully deleted 2 'StagedNetworkPolicy' resource(s)\n"
    );

    // Staged Kubernetes policies keep their own kind: nothing becomes knp.default.*.
    let o = write(
        &rc,
        Write::Apply,
        docs("apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: db}\nspec: {podSelector: {matchLabels: {app: db}}}\n"),
        &prod,
    )
    .await;
    assert_eq!(
        o.stdout,
        "Successfully applied 1 'StagedKubernetesNetworkPolicy' resource(s)\n"
    );
    assert!(
        rc.list_any(Kind::NetworkPolicy, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let o = get(
        &rc,
        GetTarget::Names(Kind::StagedKubernetesNetworkPolicy, vec!["db".into()]),
        &prod,
        &Output::Ps,
        false,
    )
    .await;
    assert_eq!(o.stdout, "NAMESPACE   NAME   \nprod        db     \n\n");

    // CalicoNodeStatus: cluster-scoped, `nodestatus` on the command line.
    let o = write(
        &rc,
        Write::Apply,
        docs("apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata: {name: n1}\nspec: {node: node1, classes: [Agent, BGP], updatePeriodSeconds: 30}\n"),
        &Scope::default(),
    )
    .await;
    assert_eq!(
        o.stdout,
        "Successfully applied 1 'CalicoNodeStatus' resource(s)\n"
    );
    let (kind, _) = named("nodestatus", &["n1".into()]).unwrap();
    let o = get(
        &rc,
        GetTarget::Names(kind, vec!["n1".into()]),
        &Scope::default(),
        &Output::Wide,
        false,
    )
    .await;
    assert_eq!(
        o.stdout,
        "NAME   NODE    CLASSES     \nn1     node1   Agent,BGP   \n\n"
    );
    let o = get(&rc, GetTarget::List(kind), &prod, &Output::Ps, false).await;
    assert!(
        !o.ok && o.stderr.contains("CalicoNodeStatus is not namespaced"),
        "{o:?}"
    );
}
