//! `get KIND -o ps|wide` for every kind, compared with `testdata/golden/tables.txt`
//! (rewritten with UPDATE_GOLDEN=1; review the diff against Calico's templates in
//! `calicoctl/calicoctl/resourcemgr/*.go` before accepting it).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use calico_api::codec::decode_documents;
use calico_datastore::memory::MemoryDatastore;

use super::*;

const FIXTURE: &str = include_str!("../../testdata/tables.yaml");

/// Compares rendered text with a checked-in file (rewritten with UPDATE_GOLDEN=1).
fn assert_golden(file: &str, text: &str) {
    let golden = format!("{}/testdata/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        text == want,
        "tables differ from {golden} (UPDATE_GOLDEN=1 to accept):\n{text}"
    );
}

#[tokio::test]
async fn every_kind_prints_calicos_ps_and_wide_tables() {
    let rc = ResourceClient::new(Arc::new(MemoryDatastore::new()));
    let o = write(
        &rc,
        Write::Apply,
        decode_documents(FIXTURE).unwrap(),
        &Scope::default(),
    )
    .await;
    assert!(o.ok, "{o:?}");
    // Read-only to calicoctl: written as calico-node's startup writes it.
    let ci = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\nspec: {clusterGUID: 5ca9b4bd2e1c4e6f8b0a5ed3f7c2a1d0, clusterType: 'k8s,bgp,kdd', calicoVersion: v3.31.0, datastoreReady: true}\n",
    )
    .unwrap();
    rc.create_any(ci.into_iter().next().unwrap()).await.unwrap();

    let mut text = String::new();
    let prod = Scope {
        namespace: Some("prod".into()),
        all_namespaces: false,
    };
    let all = Scope {
        namespace: None,
        all_namespaces: true,
    };
    for kind in Kind::ALL
        .iter()
        .copied()
        .filter(|k| *k != Kind::K8sNetworkPolicy)
    {
        let plural = kind.info().plural;
        let mut cases = vec![("", Scope::default())];
        if kind.info().namespaced {
            cases.push((" -n prod", prod.clone()));
            cases.push((" -A", all.clone()));
        }
        for (flags, scope) in cases {
            for (name, out) in [("ps", Output::Ps), ("wide", Output::Wide)] {
                let o = get(&rc, GetTarget::List(kind), &scope, &out, false).await;
                assert!(o.ok, "{kind}: {o:?}");
                text.push_str(&format!("$ calicoctl get {plural}{flags} -o {name}\n"));
                text.push_str(&o.stdout);
            }
        }
    }
    // One by name: the same columns, one row.
    let o = get(
        &rc,
        GetTarget::Names(
            Kind::WorkloadEndpoint,
            vec!["node1-k8s-my--nginx--b1337a-eth0".into()],
        ),
        &prod,
        &Output::Wide,
        false,
    )
    .await;
    assert!(o.ok, "{o:?}");
    text.push_str("$ calicoctl get wep node1-k8s-my--nginx--b1337a-eth0 -n prod -o wide\n");
    text.push_str(&o.stdout);
    assert_golden("tables.txt", &text);
}
