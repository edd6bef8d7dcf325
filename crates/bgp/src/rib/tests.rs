//! The decision steps one by one (winner and the loser's exact reason), import checks,
//! export rules, graceful-restart stale handling, ECMP and ADD-PATH ids.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::*;
use crate::types::{
    AsPath, AsSegment, AttrEdits, Attrs, Family, NO_ADVERTISE, NO_EXPORT, Nlri, Origin,
};

// ----- fixtures -----

const AS: u32 = 65000;
const OUR_RID: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);
const OUR_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const OUR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe);
const CLUSTER: Ipv4Addr = Ipv4Addr::new(10, 99, 99, 99);

fn config() -> RibConfig {
    RibConfig {
        router_id: OUR_RID,
        local_as: AS,
        cluster_id: None,
    }
}

fn rr_config() -> RibConfig {
    RibConfig {
        cluster_id: Some(CLUSTER),
        ..config()
    }
}

fn addr(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn rid(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 0, n)
}

/// Peer `n`: address 10.0.0.n, router id 10.255.0.n.
fn peer(n: u8, remote_as: u32) -> PeerInfo {
    let mut p = PeerInfo::new(addr(n), rid(n), AS, remote_as);
    p.local_address_v4 = Some(OUR_V4);
    p.local_address_v6 = Some(OUR_V6);
    p
}

fn ibgp(n: u8) -> PeerInfo {
    peer(n, AS)
}

fn ebgp(n: u8, remote_as: u32) -> PeerInfo {
    peer(n, remote_as)
}

fn client(n: u8) -> PeerInfo {
    PeerInfo {
        rr_client: true,
        ..ibgp(n)
    }
}

fn rib(config: RibConfig, peers: &[(u32, PeerInfo)]) -> Rib {
    let mut rib = Rib::new(config);
    for (id, info) in peers {
        rib.add_peer(PeerId(*id), info.clone()).unwrap();
    }
    rib
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn p1() -> IpNet {
    net("192.168.1.0/24")
}

/// A path with this AS_PATH (a single sequence) and next hop 10.0.0.`next_hop`.
fn route(as_path: &[u32], next_hop: u8) -> Attrs {
    Attrs {
        as_path: AsPath::from_sequence(as_path.iter().copied()),
        next_hop: Some(addr(next_hop)),
        ..Attrs::default()
    }
}

fn announce(rib: &mut Rib, peer: u32, prefix: IpNet, attrs: Attrs) -> Vec<Change> {
    rib.update(PeerId(peer), Nlri::new(prefix), Some(Arc::new(attrs)))
        .unwrap()
}

fn withdraw(rib: &mut Rib, peer: u32, prefix: IpNet) -> Vec<Change> {
    rib.update(PeerId(peer), Nlri::new(prefix), None).unwrap()
}

fn best_peer(rib: &Rib, prefix: IpNet) -> Option<PeerId> {
    rib.best(prefix).map(|b| b.peer)
}

/// Why the path from `peer` (path id 0) is not the best; `None` when it is.
fn why(rib: &Rib, prefix: IpNet, peer: PeerId) -> Option<LostBecause> {
    rib.explain(prefix)
        .into_iter()
        .find(|(p, _)| p.peer == peer && p.path_id == 0)
        .map(|(_, why)| why)
        .expect("no path from that peer")
}

fn export_one(rib: &Rib, to: u32, prefix: IpNet) -> Option<Arc<Attrs>> {
    let mut v = rib.export(PeerId(to), prefix);
    assert!(v.len() <= 1, "without ADD-PATH one path at most: {v:?}");
    v.pop().map(|(id, a)| {
        assert_eq!(id, 0, "without ADD-PATH the path id is 0");
        a
    })
}

// ----- decision, step by step -----

#[test]
fn highest_local_pref_wins_and_the_loser_says_by_how_much() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2))]);
    announce(&mut rib, 1, p1(), route(&[], 1));
    announce(
        &mut rib,
        2,
        p1(),
        Attrs {
            local_pref: Some(200),
            ..route(&[], 2)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(
        lost,
        LostBecause::LocalPref {
            path: 100,
            winner: 200
        }
    );
    assert_eq!(lost.to_string(), "lower LOCAL_PREF (100 < 200)");
    assert_eq!(lost.step(), 1);
}

#[test]
fn a_local_route_beats_a_learned_one_of_equal_local_pref_before_as_path() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    // The local route has the longer AS_PATH, yet wins: step 2 comes before step 3.
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    rib.originate(
        p1(),
        Arc::new(Attrs {
            as_path: AsPath::from_sequence([64512, 64513]),
            ..Attrs::default()
        }),
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId::LOCAL));
    assert_eq!(why(&rib, p1(), PeerId(1)), Some(LostBecause::NotLocal));
}

#[test]
fn a_local_route_loses_to_a_higher_local_pref() {
    let mut rib = rib(config(), &[(1, ibgp(1))]);
    rib.originate(p1(), Arc::new(Attrs::default()));
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            local_pref: Some(150),
            ..route(&[], 1)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
    assert_eq!(
        why(&rib, p1(), PeerId::LOCAL),
        Some(LostBecause::LocalPref {
            path: 100,
            winner: 150
        })
    );
}

#[test]
fn shortest_as_path_wins() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    announce(&mut rib, 1, p1(), route(&[65001, 65010, 65020], 1));
    announce(&mut rib, 2, p1(), route(&[65002], 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::AsPathLen { path: 3, winner: 1 })
    );
}

#[test]
fn an_as_set_counts_as_one_in_the_as_path_length() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    announce(&mut rib, 1, p1(), route(&[65001, 65010, 65020], 1));
    let with_set = Attrs {
        as_path: AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65002]),
                AsSegment::Set(vec![1, 2, 3, 4]),
            ],
        },
        ..route(&[], 2)
    };
    announce(&mut rib, 2, p1(), with_set);
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::AsPathLen { path: 3, winner: 2 })
    );
}

#[test]
fn lowest_origin_wins() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            origin: Origin::Incomplete,
            ..route(&[65001], 1)
        },
    );
    announce(&mut rib, 2, p1(), route(&[65002], 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(
        lost,
        LostBecause::Origin {
            path: Origin::Incomplete,
            winner: Origin::Igp
        }
    );
    assert_eq!(lost.to_string(), "worse ORIGIN (incomplete > IGP)");
}

#[test]
fn lowest_med_wins_between_paths_from_the_same_neighbour_as() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65001))]);
    // Peer 1 would win the router-id tie-break; MED decides first.
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(20),
            ..route(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        2,
        p1(),
        Attrs {
            med: Some(10),
            ..route(&[65001], 2)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(
        lost,
        LostBecause::Med {
            path: 20,
            winner: 10,
            neighbor_as: 65001
        }
    );
    assert_eq!(
        lost.to_string(),
        "higher MED (20 > 10) than a path from the same neighbour AS 65001"
    );
}

#[test]
fn med_is_not_compared_between_different_neighbour_ases() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(20),
            ..route(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        2,
        p1(),
        Attrs {
            med: Some(10),
            ..route(&[65002], 2)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
    assert_eq!(
        why(&rib, p1(), PeerId(2)),
        Some(LostBecause::RouterId {
            path: rid(2),
            winner: rid(1)
        })
    );
}

/// The textbook case where pairwise MED comparison is not transitive: A beats B on router
/// id, B beats C on router id, C beats A on MED. RFC 4271's elimination drops A first (it
/// loses to C within AS 65001), then B beats C — whatever the arrival order.
#[test]
fn med_elimination_settles_the_non_transitive_three_path_case_in_any_order() {
    let a = (
        1,
        Attrs {
            med: Some(10),
            ..route(&[65001], 1)
        },
    );
    let b = (
        2,
        Attrs {
            med: Some(5),
            ..route(&[65002], 2)
        },
    );
    let c = (
        3,
        Attrs {
            med: Some(0),
            ..route(&[65001], 3)
        },
    );
    let orders = [
        [&a, &b, &c],
        [&a, &c, &b],
        [&b, &a, &c],
        [&b, &c, &a],
        [&c, &a, &b],
        [&c, &b, &a],
    ];
    for order in orders {
        let mut rib = rib(
            config(),
            &[
                (1, ebgp(1, 65001)),
                (2, ebgp(2, 65002)),
                (3, ebgp(3, 65001)),
            ],
        );
        for (peer, attrs) in order {
            announce(&mut rib, *peer, p1(), attrs.clone());
        }
        assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)), "order {order:?}");
        assert_eq!(
            why(&rib, p1(), PeerId(1)),
            Some(LostBecause::Med {
                path: 10,
                winner: 0,
                neighbor_as: 65001
            })
        );
        assert_eq!(
            why(&rib, p1(), PeerId(3)),
            Some(LostBecause::RouterId {
                path: rid(3),
                winner: rid(2)
            })
        );
        // Withdrawing C, a loser, frees A from the MED step, and A beats B.
        let changes = withdraw(&mut rib, 3, p1());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(1)));
    }
}

#[test]
fn a_missing_med_counts_as_zero() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65001))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(5),
            ..route(&[65001], 1)
        },
    );
    announce(&mut rib, 2, p1(), route(&[65001], 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Med {
            path: 5,
            winner: 0,
            neighbor_as: 65001
        })
    );
}

#[test]
fn paths_with_an_empty_as_path_compare_med_as_from_our_own_as() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(5),
            ..route(&[], 1)
        },
    );
    announce(
        &mut rib,
        2,
        p1(),
        Attrs {
            med: Some(1),
            ..route(&[], 2)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Med {
            path: 5,
            winner: 1,
            neighbor_as: AS
        })
    );
}

#[test]
fn ebgp_beats_ibgp() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ebgp(2, 65002))]);
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    announce(&mut rib, 2, p1(), route(&[65002], 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(lost, LostBecause::Internal);
    assert_eq!(lost.step(), 6);
}

#[test]
fn lowest_igp_cost_wins_and_new_paths_pick_up_known_costs() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2)), (3, ibgp(3))]);
    announce(&mut rib, 1, p1(), route(&[], 1));
    announce(&mut rib, 2, p1(), route(&[], 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));

    let changes = rib.set_igp_cost(addr(1), 20);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::IgpCost {
            path: 20,
            winner: 0
        })
    );

    announce(&mut rib, 3, p1(), route(&[], 1));
    let from3 = rib
        .paths(p1())
        .iter()
        .find(|p| p.peer == PeerId(3))
        .unwrap();
    assert_eq!(from3.igp_cost, 20);

    let changes = rib.set_igp_cost(addr(1), 0);
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(1)));
}

#[test]
fn originator_id_breaks_ties_between_reflected_routes() {
    // Two reflectors: peer 1 has the lower router id, but the route it reflects comes from
    // the originator with the higher id (RFC 4456 §9).
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2))]);
    let reflected = |originator: u8, nh: u8| Attrs {
        originator_id: Some(rid(originator)),
        cluster_list: vec![Ipv4Addr::new(10, 99, 0, nh)],
        ..route(&[], nh)
    };
    announce(&mut rib, 1, p1(), reflected(9, 1));
    announce(&mut rib, 2, p1(), reflected(8, 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(
        lost,
        LostBecause::RouterId {
            path: rid(9),
            winner: rid(8)
        }
    );
    assert_eq!(
        lost.to_string(),
        "higher originator/router id (10.255.0.9 > 10.255.0.8)"
    );
}

#[test]
fn shorter_cluster_list_wins() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2))]);
    let reflected = |clusters: u8, nh: u8| Attrs {
        originator_id: Some(rid(50)),
        cluster_list: (0..clusters).map(|c| Ipv4Addr::new(10, 99, 0, c)).collect(),
        ..route(&[], nh)
    };
    announce(&mut rib, 1, p1(), reflected(2, 1));
    announce(&mut rib, 2, p1(), reflected(1, 2));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::ClusterListLen { path: 2, winner: 1 })
    );
}

#[test]
fn lowest_peer_address_is_the_last_tie_break() {
    let mut rib = rib(config(), &[(5, ibgp(5)), (3, ibgp(3))]);
    let reflected = |nh: u8| Attrs {
        originator_id: Some(rid(50)),
        cluster_list: vec![CLUSTER],
        ..route(&[], nh)
    };
    announce(&mut rib, 5, p1(), reflected(5));
    announce(&mut rib, 3, p1(), reflected(3));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(3)));
    assert_eq!(
        why(&rib, p1(), PeerId(5)),
        Some(LostBecause::PeerAddress {
            path: addr(5),
            winner: addr(3)
        })
    );
}

#[test]
fn add_path_receive_keeps_every_path_of_a_peer_as_a_candidate() {
    let mut rib = rib(config(), &[(1, ibgp(1))]);
    let attrs = |nh: u8| Some(Arc::new(route(&[], nh)));
    rib.update(
        PeerId(1),
        Nlri {
            prefix: p1(),
            path_id: 7,
        },
        attrs(7),
    )
    .unwrap();
    rib.update(
        PeerId(1),
        Nlri {
            prefix: p1(),
            path_id: 3,
        },
        attrs(3),
    )
    .unwrap();
    let best = rib.best(p1()).unwrap();
    assert_eq!(best.path_id, 3);
    assert_eq!(
        best.multipath.len(),
        2,
        "both tie through the IGP cost step"
    );
    let explained = rib.explain(p1());
    assert_eq!(explained.len(), 2);
    assert_eq!(explained[0].1, None);
    assert_eq!(
        explained[1].1,
        Some(LostBecause::PathId {
            path: (PeerId(1), 7),
            winner: (PeerId(1), 3)
        })
    );
    assert_eq!(rib.paths_from(PeerId(1)), 2);
}

#[test]
fn explain_lists_the_best_first_then_losers_by_how_long_they_lasted_then_refused() {
    let mut rib = rib(
        config(),
        &[
            (1, ebgp(1, 65001)),
            (2, ebgp(2, 65002)),
            (3, ebgp(3, 65003)),
            (4, ebgp(4, 65004)),
        ],
    );
    announce(&mut rib, 1, p1(), route(&[65001, AS], 1)); // refused: loop
    announce(&mut rib, 2, p1(), route(&[65002, 1, 2], 2)); // loses at step 3
    announce(&mut rib, 3, p1(), route(&[65003], 3)); // the best
    announce(&mut rib, 4, p1(), route(&[65004], 4)); // loses at step 8 (router id)
    let explained: Vec<(PeerId, Option<u8>)> = rib
        .explain(p1())
        .iter()
        .map(|(p, why)| (p.peer, why.as_ref().map(LostBecause::step)))
        .collect();
    assert_eq!(
        explained,
        vec![
            (PeerId(3), None),
            (PeerId(4), Some(8)),
            (PeerId(2), Some(3)),
            (PeerId(1), Some(0)),
        ]
    );
}

// ----- import checks -----

#[test]
fn a_path_with_our_as_is_refused_kept_and_explained() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let changes = announce(&mut rib, 1, p1(), route(&[65001, AS, 65005], 1));
    assert!(changes.is_empty());
    assert_eq!(rib.best(p1()), None);
    assert_eq!(rib.prefix_count(), 0);
    assert_eq!(rib.paths_from(PeerId(1)), 0);
    assert_eq!(rib.rejected_from(PeerId(1)), 1);
    let lost = why(&rib, p1(), PeerId(1)).unwrap();
    assert_eq!(
        lost,
        LostBecause::Rejected(ImportReject::AsPathLoop { asn: AS })
    );
    assert_eq!(
        lost.to_string(),
        "rejected on import: AS_PATH contains our AS 65000 (loop)"
    );
    assert!(rib.export(PeerId(1), p1()).is_empty());

    // numAllowedLocalASNumbers = 1 lets it in.
    let changes = rib
        .set_peer_info(
            PeerId(1),
            PeerInfo {
                allow_local_as: 1,
                ..ebgp(1, 65001)
            },
        )
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
    assert_eq!(rib.paths_from(PeerId(1)), 1);
    assert_eq!(rib.rejected_from(PeerId(1)), 0);
}

#[test]
fn a_path_carrying_our_router_id_as_originator_is_refused() {
    let mut rib = rib(config(), &[(1, ibgp(1))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            originator_id: Some(OUR_RID),
            ..route(&[], 1)
        },
    );
    assert_eq!(rib.best(p1()), None);
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Rejected(ImportReject::OriginatorIsUs(OUR_RID)))
    );
}

#[test]
fn a_path_that_went_round_our_cluster_is_refused() {
    let mut rib = rib(rr_config(), &[(1, ibgp(1))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            cluster_list: vec![Ipv4Addr::new(10, 1, 1, 1), CLUSTER],
            ..route(&[], 1)
        },
    );
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Rejected(ImportReject::ClusterLoop(CLUSTER)))
    );

    // Without a cluster id, our router id is what the check looks for.
    let mut rib = self::rib(config(), &[(1, ibgp(1))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            cluster_list: vec![OUR_RID],
            ..route(&[], 1)
        },
    );
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Rejected(ImportReject::ClusterLoop(OUR_RID)))
    );
}

#[test]
fn a_path_without_next_hop_is_refused_until_a_good_one_replaces_it() {
    let mut rib = rib(config(), &[(1, ibgp(1))]);
    let changes = announce(&mut rib, 1, p1(), Attrs::default());
    assert!(changes.is_empty());
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::Rejected(ImportReject::NoNextHop))
    );
    let changes = announce(&mut rib, 1, p1(), route(&[], 1));
    assert_eq!(changes.len(), 1);
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
    assert_eq!(rib.rejected_from(PeerId(1)), 0);
}

#[test]
fn local_pref_from_an_ebgp_peer_is_ignored() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ibgp(2))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            local_pref: Some(500),
            ..route(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        2,
        p1(),
        Attrs {
            local_pref: Some(200),
            ..route(&[65001], 2)
        },
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(2)));
    assert_eq!(
        why(&rib, p1(), PeerId(1)),
        Some(LostBecause::LocalPref {
            path: 100,
            winner: 200
        })
    );
    let stored = rib
        .paths(p1())
        .iter()
        .find(|p| p.peer == PeerId(1))
        .unwrap();
    assert_eq!(stored.attrs.local_pref, None);
}

// ----- export -----

#[test]
fn ibgp_routes_are_not_sent_to_other_ibgp_peers_without_a_reflector() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2)), (3, ebgp(3, 65003))]);
    announce(&mut rib, 1, p1(), route(&[65009], 1));
    assert_eq!(export_one(&rib, 2, p1()), None);
    assert_eq!(export_one(&rib, 1, p1()), None, "never back to the source");
    assert!(export_one(&rib, 3, p1()).is_some());
}

#[test]
fn ebgp_routes_go_to_ibgp_peers_with_local_pref_and_their_next_hop() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ibgp(2))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(50),
            local_pref: Some(500),
            ..route(&[65001], 1)
        },
    );
    let sent = export_one(&rib, 2, p1()).unwrap();
    assert_eq!(sent.local_pref, Some(100));
    assert_eq!(sent.next_hop, Some(addr(1)));
    assert_eq!(sent.med, Some(50));
    assert_eq!(sent.as_path, AsPath::from_sequence([65001]));
}

#[test]
fn a_reflector_sends_client_routes_to_every_ibgp_peer_but_the_source() {
    let mut rib = rib(
        rr_config(),
        &[
            (1, client(1)),
            (2, client(2)),
            (3, ibgp(3)),
            (4, ebgp(4, 65004)),
        ],
    );
    announce(&mut rib, 1, p1(), route(&[], 1));
    assert_eq!(export_one(&rib, 1, p1()), None);
    for to in [2, 3] {
        let sent = export_one(&rib, to, p1()).unwrap();
        assert_eq!(sent.originator_id, Some(rid(1)), "to {to}");
        assert_eq!(sent.cluster_list, vec![CLUSTER], "to {to}");
        assert_eq!(
            sent.next_hop,
            Some(addr(1)),
            "reflection keeps the next hop"
        );
        assert_eq!(sent.local_pref, Some(100));
    }
    let external = export_one(&rib, 4, p1()).unwrap();
    assert_eq!(external.originator_id, None);
    assert!(external.cluster_list.is_empty());
    assert_eq!(external.as_path, AsPath::from_sequence([AS]));
}

#[test]
fn a_reflector_sends_non_client_routes_to_clients_only() {
    let mut rib = rib(
        rr_config(),
        &[(1, client(1)), (2, client(2)), (3, ibgp(3)), (5, ibgp(5))],
    );
    announce(&mut rib, 3, p1(), route(&[], 3));
    assert!(export_one(&rib, 1, p1()).is_some());
    assert!(export_one(&rib, 2, p1()).is_some());
    assert_eq!(export_one(&rib, 5, p1()), None);
    assert_eq!(export_one(&rib, 3, p1()), None);
}

#[test]
fn reflection_keeps_an_existing_originator_and_prepends_our_cluster() {
    let mut rib = rib(rr_config(), &[(1, client(1)), (3, ibgp(3))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            originator_id: Some(rid(77)),
            cluster_list: vec![Ipv4Addr::new(10, 1, 1, 1)],
            ..route(&[], 1)
        },
    );
    let sent = export_one(&rib, 3, p1()).unwrap();
    assert_eq!(sent.originator_id, Some(rid(77)));
    assert_eq!(sent.cluster_list, vec![CLUSTER, Ipv4Addr::new(10, 1, 1, 1)]);
}

#[test]
fn a_reflected_route_is_not_sent_to_its_originator() {
    let mut rib = rib(rr_config(), &[(1, client(1)), (3, ibgp(3))]);
    announce(
        &mut rib,
        3,
        p1(),
        Attrs {
            originator_id: Some(rid(1)),
            ..route(&[], 1)
        },
    );
    assert_eq!(export_one(&rib, 1, p1()), None);
}

#[test]
fn ebgp_export_prepends_our_as_sets_our_next_hop_and_strips_internal_attributes() {
    let mut rib = rib(rr_config(), &[(1, ibgp(1)), (2, ebgp(2, 65002))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            local_pref: Some(200),
            med: Some(7),
            originator_id: Some(rid(9)),
            cluster_list: vec![Ipv4Addr::new(10, 1, 1, 1)],
            ..route(&[65010], 1)
        },
    );
    let sent = export_one(&rib, 2, p1()).unwrap();
    assert_eq!(sent.as_path, AsPath::from_sequence([AS, 65010]));
    assert_eq!(sent.next_hop, Some(IpAddr::V4(OUR_V4)));
    assert_eq!(sent.local_pref, None);
    assert_eq!(sent.med, None);
    assert_eq!(sent.originator_id, None);
    assert!(sent.cluster_list.is_empty());
}

#[test]
fn ebgp_export_keeps_the_next_hop_when_asked() {
    let keep = PeerInfo {
        keep_next_hop: true,
        ..ebgp(2, 65002)
    };
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, keep)]);
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert_eq!(export_one(&rib, 2, p1()).unwrap().next_hop, Some(addr(1)));
}

#[test]
fn local_routes_go_to_everyone_with_our_address_as_next_hop() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ebgp(2, 65002))]);
    let v6 = net("fd00:10::/64");
    let local = Arc::new(Attrs {
        med: Some(5),
        ..Attrs::default()
    });
    rib.originate(p1(), Arc::clone(&local));
    rib.originate(v6, local);

    let internal = export_one(&rib, 1, p1()).unwrap();
    assert_eq!(internal.next_hop, Some(IpAddr::V4(OUR_V4)));
    assert_eq!(internal.local_pref, Some(100));
    assert_eq!(internal.as_path, AsPath::default());

    let external = export_one(&rib, 2, p1()).unwrap();
    assert_eq!(external.next_hop, Some(IpAddr::V4(OUR_V4)));
    assert_eq!(external.as_path, AsPath::from_sequence([AS]));
    assert_eq!(external.med, Some(5), "our own MED is kept towards eBGP");

    assert_eq!(
        export_one(&rib, 1, v6).unwrap().next_hop,
        Some(IpAddr::V6(OUR_V6))
    );
    assert_eq!(
        export_one(&rib, 2, v6).unwrap().next_hop,
        Some(IpAddr::V6(OUR_V6))
    );
}

#[test]
fn a_local_route_without_next_hop_is_not_sent_when_we_have_no_address() {
    let mut rib = rib(config(), &[(1, PeerInfo::new(addr(1), rid(1), AS, AS))]);
    rib.originate(p1(), Arc::new(Attrs::default()));
    assert_eq!(export_one(&rib, 1, p1()), None);
}

#[test]
fn no_advertise_goes_nowhere_and_no_export_stays_inside_the_as() {
    let mut rib = rib(
        config(),
        &[(1, ebgp(1, 65001)), (2, ibgp(2)), (3, ebgp(3, 65003))],
    );
    let q = net("192.168.2.0/24");
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            communities: vec![NO_ADVERTISE],
            ..route(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        1,
        q,
        Attrs {
            communities: vec![NO_EXPORT],
            ..route(&[65001], 1)
        },
    );
    assert_eq!(export_one(&rib, 2, p1()), None);
    assert_eq!(export_one(&rib, 3, p1()), None);
    assert!(export_one(&rib, 2, q).is_some());
    assert_eq!(export_one(&rib, 3, q), None);
}

#[test]
fn next_hop_self_rewrites_the_next_hop_towards_ibgp() {
    let nhs = PeerInfo {
        next_hop_self: true,
        ..ibgp(2)
    };
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, nhs)]);
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert_eq!(
        export_one(&rib, 2, p1()).unwrap().next_hop,
        Some(IpAddr::V4(OUR_V4))
    );
}

#[test]
fn unchanged_attributes_are_exported_as_the_stored_arc_and_rewrites_are_shared() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ebgp(2, 65002)), (3, ibgp(3))]);
    let local = Arc::new(Attrs {
        local_pref: Some(100),
        next_hop: Some(IpAddr::V4(OUR_V4)),
        ..Attrs::default()
    });
    rib.originate(p1(), Arc::clone(&local));
    assert!(Arc::ptr_eq(&export_one(&rib, 1, p1()).unwrap(), &local));

    let q = net("192.168.2.0/24");
    let r = net("192.168.3.0/24");
    rib.apply(
        PeerId(2),
        &[],
        &[Nlri::new(q), Nlri::new(r)],
        Some(Arc::new(route(&[65002], 2))),
    )
    .unwrap();
    let out = rib.export_many(PeerId(3), [q, r], &mut ExportAll);
    assert_eq!(out.len(), 2);
    assert!(Arc::ptr_eq(&out[0].1[0].1, &out[1].1[0].1));
    assert_eq!(out[0].1[0].1.local_pref, Some(100));
}

#[test]
fn add_path_export_sends_every_path_under_a_stable_id() {
    let ap = PeerInfo {
        add_path_tx: [true, false],
        ..ebgp(9, 65009)
    };
    let mut rib = rib(
        config(),
        &[
            (1, ebgp(1, 65001)),
            (2, ebgp(2, 65002)),
            (3, ebgp(3, 65003)),
            (9, ap),
        ],
    );
    // Peer 1 is the best; 2 and 3 lose on AS_PATH length (no ECMP).
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    announce(&mut rib, 2, p1(), route(&[65002, 2], 2));
    announce(&mut rib, 3, p1(), route(&[65003, 3], 3));
    let ids = |rib: &Rib| -> Vec<(u32, Vec<u32>)> {
        let mut v: Vec<(u32, Vec<u32>)> = rib
            .export(PeerId(9), p1())
            .into_iter()
            .map(|(id, a)| (id, a.as_path.flat()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&rib),
        vec![
            (1, vec![AS, 65001]),
            (2, vec![AS, 65002, 2]),
            (3, vec![AS, 65003, 3])
        ]
    );
    rib.take_path_set_changes();

    // A loser goes: no best change, but the ADD-PATH peer must hear of it.
    assert!(withdraw(&mut rib, 2, p1()).is_empty());
    assert_eq!(rib.take_path_set_changes(), vec![rib.id(p1()).unwrap()]);
    assert_eq!(
        ids(&rib),
        vec![(1, vec![AS, 65001]), (3, vec![AS, 65003, 3])]
    );

    // New attributes keep the id; a returning path takes the smallest free one.
    announce(&mut rib, 1, p1(), route(&[65001, 7], 1));
    announce(&mut rib, 2, p1(), route(&[65002, 2], 2));
    assert_eq!(
        ids(&rib),
        vec![
            (1, vec![AS, 65001, 7]),
            (2, vec![AS, 65002, 2]),
            (3, vec![AS, 65003, 3])
        ]
    );

    // Without ADD-PATH (IPv6 here) only the best, as path id 0.
    let v6 = net("fd00:1::/64");
    announce(
        &mut rib,
        1,
        v6,
        Attrs {
            next_hop: Some("fd00::1".parse().unwrap()),
            ..route(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        2,
        v6,
        Attrs {
            next_hop: Some("fd00::2".parse().unwrap()),
            ..route(&[65002], 2)
        },
    );
    let out = rib.export(PeerId(9), v6);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
}

#[test]
fn exporting_by_slot_gives_what_a_lookup_by_prefix_gives_for_every_kind_of_peer() {
    let ap = PeerInfo {
        add_path_tx: [true, false],
        ..ebgp(9, 65009)
    };
    let mut rib = rib(
        rr_config(),
        &[(1, ebgp(1, 65001)), (2, client(2)), (3, ibgp(3)), (9, ap)],
    );
    let q = net("192.168.2.0/24");
    let mut changes = announce(&mut rib, 1, p1(), route(&[65001], 1));
    changes.extend(announce(&mut rib, 2, q, route(&[], 2)));
    changes.extend(announce(&mut rib, 3, p1(), route(&[], 3)));
    changes.extend(withdraw(&mut rib, 2, q));
    changes.extend(announce(&mut rib, 2, q, route(&[65010], 2)));
    assert!(changes.len() >= 4, "{changes:?}");
    // The last change of each prefix is its current state.
    let mut last: Vec<&Change> = Vec::new();
    for c in changes.iter().rev() {
        if !last.iter().any(|l| l.prefix == c.prefix) {
            last.push(c);
        }
    }
    for to in [1, 2, 3, 9, 42] {
        let mut from_changes = Vec::new();
        rib.export_ids(
            PeerId(to),
            last.iter().map(|c| c.id),
            &mut ExportAll,
            &mut |id, prefix, paths| {
                assert_eq!(rib.id(prefix), Some(id));
                from_changes.push((prefix, paths.to_vec()));
            },
        );
        let looked_up = rib.export_many(PeerId(to), last.iter().map(|c| c.prefix), &mut ExportAll);
        assert_eq!(from_changes, looked_up, "to peer {to}");
    }
}

#[test]
fn path_set_changes_are_not_recorded_without_add_path_peers() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert!(rib.take_path_set_changes().is_empty());
}

#[test]
fn the_full_dump_for_a_new_session_is_sorted_and_filtered() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ibgp(2)), (3, ibgp(3))]);
    let q = net("10.1.0.0/16");
    let r = net("172.16.0.0/12");
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    announce(&mut rib, 1, q, route(&[65001], 1));
    announce(&mut rib, 3, r, route(&[], 3)); // iBGP: not for peer 2
    rib.originate(net("10.2.0.0/16"), Arc::new(Attrs::default()));
    let dump = |to: u32| -> Vec<IpNet> {
        let mut all: Vec<IpNet> = rib.routes().map(|(p, _)| p).collect();
        all.sort();
        rib.export_many(PeerId(to), all, &mut ExportAll)
            .into_iter()
            .filter(|(_, paths)| !paths.is_empty())
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(dump(2), vec![q, net("10.2.0.0/16"), p1()]);
    assert!(dump(42).is_empty());
}

// ----- graceful restart -----

#[test]
fn stale_paths_stay_best_until_flushed_and_a_resent_path_is_kept() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    let q = net("192.168.2.0/24");
    let v6 = net("fd00:1::/64");
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    announce(&mut rib, 1, q, route(&[65001], 1));
    announce(&mut rib, 2, q, route(&[65002, 5], 2));
    announce(
        &mut rib,
        1,
        v6,
        Attrs {
            next_hop: Some("fd00::1".parse().unwrap()),
            ..route(&[65001], 1)
        },
    );

    assert_eq!(rib.mark_stale(PeerId(1), Family::Ipv4Unicast), 2);
    assert_eq!(
        best_peer(&rib, q),
        Some(PeerId(1)),
        "stale is not penalised"
    );
    assert!(rib.paths(q).iter().any(|p| p.peer == PeerId(1) && p.stale));

    // Peer 1 comes back and re-sends p1 only (same attributes: no change).
    assert!(announce(&mut rib, 1, p1(), route(&[65001], 1)).is_empty());
    assert!(!rib.paths(p1())[0].stale);

    let changes = rib.flush_stale(PeerId(1), Family::Ipv4Unicast);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].prefix, q);
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(2)));
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
    assert_eq!(
        best_peer(&rib, v6),
        Some(PeerId(1)),
        "other family untouched"
    );
    assert_eq!(rib.paths_from(PeerId(1)), 2);
}

// ----- changes -----

#[test]
fn removing_a_peer_moves_the_best_and_finally_withdraws() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    announce(&mut rib, 2, p1(), route(&[65002], 2));
    assert_eq!(rib.prefix_count(), 1);

    let changes = rib.remove_peer(PeerId(1));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(2)));
    assert_eq!(rib.paths_from(PeerId(1)), 0);

    let changes = rib.remove_peer(PeerId(2));
    assert_eq!(
        changes,
        vec![Change {
            prefix: p1(),
            id: rib.id(p1()).unwrap(),
            best: None,
            best_moved: true,
        }]
    );
    assert_eq!(rib.prefix_count(), 0);
    assert_eq!(rib.routes().count(), 0);
    assert!(rib.remove_peer(PeerId(2)).is_empty());
}

#[test]
fn the_ecmp_set_holds_ties_through_igp_cost_with_distinct_next_hops() {
    let mut rib = rib(
        config(),
        &[
            (1, ebgp(1, 65001)),
            (2, ebgp(2, 65002)),
            (3, ebgp(3, 65003)),
            (4, ibgp(4)),
            (5, ebgp(5, 65005)),
        ],
    );
    let changes = announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert!(changes[0].best_moved, "a first path is a new best");
    let changes = announce(&mut rib, 2, p1(), route(&[65002], 2));
    assert_eq!(changes.len(), 1, "the ECMP set grew: a change");
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(1)));
    assert!(!changes[0].best_moved, "behind the same best");

    assert!(
        announce(&mut rib, 3, p1(), route(&[65003], 1)).is_empty(),
        "same next hop"
    );
    assert!(
        announce(&mut rib, 4, p1(), route(&[65004], 4)).is_empty(),
        "iBGP"
    );
    assert!(
        announce(&mut rib, 5, p1(), route(&[65005, 1], 5)).is_empty(),
        "longer"
    );

    let best = rib.best(p1()).unwrap();
    let members: Vec<(PeerId, Option<IpAddr>)> = best
        .multipath
        .iter()
        .map(|(p, a)| (*p, a.next_hop))
        .collect();
    assert_eq!(
        members,
        vec![(PeerId(1), Some(addr(1))), (PeerId(2), Some(addr(2)))]
    );

    let changes = withdraw(&mut rib, 2, p1());
    assert_eq!(changes[0].best.as_ref().unwrap().multipath.len(), 1);
    assert!(
        !changes[0].best_moved,
        "an ECMP member left, the best stayed"
    );

    // The best goes: peer 3's path (next hop 1, as peer 1's) takes over.
    let changes = withdraw(&mut rib, 1, p1());
    assert_eq!(changes[0].best.as_ref().map(|b| b.peer), Some(PeerId(3)));
    assert!(changes[0].best_moved);
    // The same peer's path with new attributes is a new best too.
    let changes = announce(&mut rib, 3, p1(), route(&[65003], 3));
    assert!(changes[0].best_moved);
}

#[test]
fn withdrawing_a_path_that_is_not_the_best_changes_nothing() {
    let mut rib = rib(config(), &[(1, ibgp(1)), (2, ibgp(2))]);
    announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            local_pref: Some(200),
            ..route(&[], 1)
        },
    );
    announce(&mut rib, 2, p1(), route(&[], 2));
    assert!(withdraw(&mut rib, 2, p1()).is_empty());
    assert!(withdraw(&mut rib, 2, p1()).is_empty(), "twice is harmless");
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
}

#[test]
fn a_resent_identical_path_changes_nothing_and_new_attributes_do() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let changes = announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert_eq!(changes.len(), 1);
    assert!(announce(&mut rib, 1, p1(), route(&[65001], 1)).is_empty());

    let changes = announce(
        &mut rib,
        1,
        p1(),
        Attrs {
            med: Some(3),
            ..route(&[65001], 1)
        },
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].best.as_ref().unwrap().attrs.med, Some(3));
    assert_eq!(rib.paths_from(PeerId(1)), 1);
}

#[test]
fn one_update_withdraws_then_announces_and_missing_attributes_withdraw() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let q = net("192.168.2.0/24");
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    let changes = rib
        .apply(
            PeerId(1),
            &[Nlri::new(p1())],
            &[Nlri::new(q)],
            Some(Arc::new(route(&[65001], 1))),
        )
        .unwrap();
    let prefixes: Vec<(IpNet, bool)> = changes
        .iter()
        .map(|c| (c.prefix, c.best.is_some()))
        .collect();
    assert_eq!(prefixes, vec![(p1(), false), (q, true)]);

    // RFC 7606 treat-as-withdraw: the announced prefixes go.
    let changes = rib.apply(PeerId(1), &[], &[Nlri::new(q)], None).unwrap();
    assert_eq!(
        changes,
        vec![Change {
            prefix: q,
            id: rib.id(q).unwrap(),
            best: None,
            best_moved: true,
        }]
    );
    assert_eq!(rib.prefix_count(), 0);
}

#[test]
fn prefixes_are_found_in_any_order_through_released_and_reused_slots() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let nets = |r: std::ops::Range<u32>| -> Vec<Nlri> {
        r.map(|i| {
            Nlri::new(IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap(),
            ))
        })
        .collect()
    };
    let attrs = || Some(Arc::new(route(&[65001], 1)));
    let first = nets(0..300);
    rib.apply(PeerId(1), &[], &first, attrs()).unwrap();
    // In order, then every other one, then backwards: each withdrawal finds its prefix.
    let (a, b) = first.split_at(100);
    assert_eq!(rib.apply(PeerId(1), a, &[], None).unwrap().len(), 100);
    let odd: Vec<Nlri> = b.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(rib.apply(PeerId(1), &odd, &[], None).unwrap().len(), 100);
    let even: Vec<Nlri> = b.iter().step_by(2).rev().copied().collect();
    assert_eq!(rib.apply(PeerId(1), &even, &[], None).unwrap().len(), 100);
    assert_eq!(rib.prefix_count(), 0);
    assert_eq!(rib.release_empty(|_| false), 300);
    // New prefixes take the freed slots, which still hold the old addresses until reused;
    // the old prefixes are gone however they are asked for.
    let second = nets(1000..1200);
    rib.apply(PeerId(1), &[], &second, attrs()).unwrap();
    assert!(rib.apply(PeerId(1), &first, &[], None).unwrap().is_empty());
    assert!(first.iter().all(|n| rib.id(n.prefix).is_none()));
    // Sent again: nothing changes, and every prefix keeps its slot.
    let ids: Vec<_> = second.iter().map(|n| rib.id(n.prefix)).collect();
    assert!(
        rib.apply(PeerId(1), &[], &second, attrs())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids,
        second.iter().map(|n| rib.id(n.prefix)).collect::<Vec<_>>()
    );
    assert_eq!(rib.prefix_count(), 200);
    assert_eq!(rib.apply(PeerId(1), &second, &[], None).unwrap().len(), 200);
    assert_eq!(rib.prefix_count(), 0);

    // A freed slot right after a found one, still holding its old prefix, is not taken
    // for that prefix coming back: it goes in through the index again.
    let mut rib = self::rib(config(), &[(1, ebgp(1, 65001))]);
    let ten = nets(0..10);
    rib.apply(PeerId(1), &[], &ten, attrs()).unwrap();
    rib.apply(PeerId(1), &ten[5..6], &[], None).unwrap();
    assert_eq!(rib.release_empty(|_| false), 1);
    rib.apply(PeerId(1), &[], &ten[4..6], attrs()).unwrap();
    assert_eq!(rib.prefix_count(), 10);
    assert!(ten.iter().all(|n| rib.id(n.prefix).is_some()));
}

#[test]
fn a_new_prefix_twice_in_one_update_or_withdrawn_and_announced_gets_one_slot() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let q = net("10.1.0.0/16");
    let attrs = || Some(Arc::new(route(&[65001], 1)));
    let changes = rib
        .apply(PeerId(1), &[], &[Nlri::new(p1()), Nlri::new(p1())], attrs())
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(rib.paths(p1()).len(), 1);
    // Withdrawn and announced in one UPDATE: the announcement stands.
    let changes = rib
        .apply(PeerId(1), &[Nlri::new(q)], &[Nlri::new(q)], attrs())
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(rib.prefix_count(), 2);
    assert_eq!(rib.release_empty(|_| false), 0);
    // Both go; their slots are released and the prefixes are not found any more.
    rib.apply(PeerId(1), &[Nlri::new(p1()), Nlri::new(q)], &[], None)
        .unwrap();
    assert_eq!(rib.release_empty(|_| false), 2);
    assert_eq!(rib.id(p1()), None);
    assert_eq!(rib.id(q), None);
    assert_eq!(rib.prefix_count(), 0);
}

#[test]
fn local_routes_can_be_withdrawn() {
    let mut rib = rib(config(), &[]);
    assert_eq!(rib.originate(p1(), Arc::new(Attrs::default())).len(), 1);
    assert_eq!(rib.paths_from(PeerId::LOCAL), 1);
    assert_eq!(
        rib.withdraw_local(p1()),
        vec![Change {
            prefix: p1(),
            id: rib.id(p1()).unwrap(),
            best: None,
            best_moved: true,
        }]
    );
    assert!(rib.withdraw_local(p1()).is_empty());
}

#[test]
fn peers_must_be_known_and_id_zero_is_ours() {
    let mut rib = rib(config(), &[(1, ibgp(1))]);
    assert_eq!(
        rib.update(PeerId(7), Nlri::new(p1()), None),
        Err(RibError::UnknownPeer(PeerId(7)))
    );
    assert_eq!(
        rib.add_peer(PeerId::LOCAL, ibgp(2)),
        Err(RibError::ReservedPeerId)
    );
    assert_eq!(
        rib.add_peer(PeerId(1), ibgp(1)),
        Err(RibError::DuplicatePeer(PeerId(1)))
    );
    assert_eq!(
        rib.update(PeerId::LOCAL, Nlri::new(p1()), None),
        Err(RibError::ReservedPeerId)
    );
    assert_eq!(
        rib.set_peer_info(PeerId(3), ibgp(3)),
        Err(RibError::UnknownPeer(PeerId(3)))
    );
}

#[test]
fn counters_follow_prefixes_and_paths() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    for i in 0..10u8 {
        let prefix = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 50, i, 0)), 24).unwrap();
        announce(&mut rib, 1, prefix, route(&[65001], 1));
        if i % 2 == 0 {
            announce(&mut rib, 2, prefix, route(&[65002], 2));
        }
    }
    assert_eq!(rib.prefix_count(), 10);
    assert_eq!(rib.paths_from(PeerId(1)), 10);
    assert_eq!(rib.paths_from(PeerId(2)), 5);
    rib.remove_peer(PeerId(1));
    assert_eq!(rib.prefix_count(), 5);
    assert_eq!(rib.routes().count(), 5);
}

#[test]
fn every_reason_reads_like_a_sentence() {
    let cases = [
        (
            LostBecause::NotLocal,
            "not locally originated (a local route exists)",
        ),
        (
            LostBecause::AsPathLen { path: 3, winner: 1 },
            "longer AS_PATH (3 > 1)",
        ),
        (
            LostBecause::Internal,
            "learned over iBGP (an eBGP path exists)",
        ),
        (
            LostBecause::IgpCost {
                path: 20,
                winner: 0,
            },
            "higher IGP cost to the next hop (20 > 0)",
        ),
        (
            LostBecause::ClusterListLen { path: 2, winner: 1 },
            "longer CLUSTER_LIST (2 > 1)",
        ),
        (
            LostBecause::PeerAddress {
                path: addr(5),
                winner: addr(3),
            },
            "higher peer address (10.0.0.5 > 10.0.0.3)",
        ),
        (
            LostBecause::PathId {
                path: (PeerId(1), 7),
                winner: (PeerId(1), 3),
            },
            "higher peer/path id (1/7 > 1/3)",
        ),
        (
            LostBecause::Rejected(ImportReject::NoNextHop),
            "rejected on import: no next hop",
        ),
        (
            LostBecause::Rejected(ImportReject::ClusterLoop(CLUSTER)),
            "rejected on import: CLUSTER_LIST contains our cluster id 10.99.99.99 (reflection loop)",
        ),
    ];
    for (why, text) in cases {
        assert_eq!(why.to_string(), text);
    }
}

#[test]
fn a_stored_path_stays_compact() {
    // Per path: source, two path ids, IGP cost, one shared attribute set, flags (§6 of the
    // BGP reference: ≤ 100–150 B per path all in).
    assert!(std::mem::size_of::<PathEntry>() <= 24);
    // Per prefix: its slot (the prefix, the ECMP count, the paths with one inline) and a
    // 4-byte index entry.
    assert!(std::mem::size_of::<Paths>() <= 24);
    assert!(std::mem::size_of::<Dest>() <= 40);
}

#[test]
fn an_export_policy_edits_paths_before_the_protocol_rewrites_them() {
    let mut rib = rib(
        config(),
        &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002)), (3, ibgp(3))],
    );
    let (q, r, s) = (net("10.1.0.0/16"), net("10.2.0.0/16"), net("10.3.0.0/16"));
    let mut attrs = route(&[65001], 1);
    attrs.communities.push(7);
    for p in [p1(), q, r, s] {
        announce(&mut rib, 1, p, attrs.clone());
    }
    // Refuse s; prepend to q and r alike; leave p1 alone.
    let mut policy = |prefix: IpNet, a: &Attrs, from: Option<&PeerInfo>| {
        assert_eq!(from.map(|f| f.remote_as), Some(65001));
        assert_eq!(a.communities, [7], "the policy sees the stored path");
        if prefix == s {
            return None;
        }
        let mut e = AttrEdits::default();
        if prefix != p1() {
            e.prepend = vec![64999, 64998];
            e.add_community(7); // already there: not added twice
            e.add_community(9);
            e.local_pref = Some(500);
        }
        Some(e)
    };
    let out = rib.export_many(PeerId(2), [p1(), q, r, s], &mut policy);
    let got = |p: IpNet| {
        out.iter()
            .find(|(x, _)| *x == p)
            .map(|(_, v)| v.clone())
            .expect("every prefix answered")
    };
    assert!(got(s).is_empty(), "a refused path is a withdrawal");
    let plain = &got(p1())[0].1;
    assert_eq!(plain.as_path.flat(), [AS, 65001]);
    let edited = &got(q)[0].1;
    // eBGP: our AS still goes in front of what the policy prepended; LOCAL_PREF is not sent.
    assert_eq!(edited.as_path.flat(), [AS, 64999, 64998, 65001]);
    assert_eq!(edited.communities, [7, 9]);
    assert_eq!(edited.local_pref, None);
    assert!(
        Arc::ptr_eq(edited, &got(r)[0].1),
        "the same edits of the same path share one copy"
    );
    // To iBGP the edited LOCAL_PREF goes out.
    let mut set_lp = |_: IpNet, _: &Attrs, _: Option<&PeerInfo>| {
        Some(AttrEdits {
            local_pref: Some(2147482623),
            ..AttrEdits::default()
        })
    };
    let out = rib.export_many(PeerId(3), [p1()], &mut set_lp);
    assert_eq!(out[0].1[0].1.local_pref, Some(2147482623));
    // Without a policy nothing changes.
    assert_eq!(
        export_one(&rib, 3, q).map(|a| a.local_pref),
        Some(Some(100))
    );
}

#[test]
fn an_import_filter_sets_local_pref_on_an_ebgp_path_whose_own_is_dropped() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    let mut sent = route(&[65001], 1);
    sent.local_pref = Some(900); // from an external peer: ignored
    let raise = AttrEdits {
        local_pref: Some(300),
        communities: vec![5],
        ..AttrEdits::default()
    };
    rib.apply_edited(
        PeerId(1),
        &[],
        &[Nlri::new(p1())],
        Some(Arc::new(sent.clone())),
        Some(&raise),
    )
    .unwrap();
    rib.apply(PeerId(2), &[], &[Nlri::new(p1())], Some(Arc::new(sent)))
        .unwrap();
    let best = rib.best(p1()).expect("a best path");
    assert_eq!(best.peer, PeerId(1), "the filter's LOCAL_PREF decides");
    assert_eq!(best.attrs.local_pref, Some(300));
    assert_eq!(best.attrs.communities, [5]);
    assert_eq!(
        why(&rib, p1(), PeerId(2)),
        Some(LostBecause::LocalPref {
            path: 100,
            winner: 300
        })
    );
}

#[test]
fn an_import_filter_prepending_our_own_as_does_not_make_a_loop() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let prepend = AttrEdits {
        prepend: vec![AS],
        ..AttrEdits::default()
    };
    rib.apply_edited(
        PeerId(1),
        &[],
        &[Nlri::new(p1())],
        Some(Arc::new(route(&[65001], 1))),
        Some(&prepend),
    )
    .unwrap();
    let best = rib
        .best(p1())
        .expect("accepted: the loop check saw the path as received");
    assert_eq!(best.attrs.as_path.flat(), [AS, 65001]);
}

#[test]
fn reordering_in_place_matches_taking_each_path_from_its_old_place() {
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }
    for n in 1..=6 {
        for order in permutations(n) {
            let mut dest = Dest::new(&p1());
            for i in 0..n {
                dest.paths.push(PathEntry {
                    peer: PeerId(i as u32 + 1),
                    path_id: 0,
                    tx_path_id: 0,
                    igp_cost: 0,
                    attrs: Arc::new(route(&[65001], 1)),
                    stale: false,
                    rejected: None,
                });
            }
            dest.reorder(&order);
            let got: Vec<u32> = dest.paths.iter().map(|p| p.peer.0 - 1).collect();
            let want: Vec<u32> = order.iter().map(|&i| i as u32).collect();
            assert_eq!(got, want, "order {order:?}");
        }
    }
}

#[test]
fn a_prefix_keeps_its_slot_until_the_caller_lets_it_go() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let q = net("192.168.2.0/24");
    let c = announce(&mut rib, 1, p1(), route(&[65001], 1));
    let id = c[0].id;
    assert_eq!(rib.id(p1()), Some(id));
    assert_eq!(rib.prefix(id), Some(p1()));

    // Withdrawn: the slot stays the prefix's while the caller holds it.
    let c = withdraw(&mut rib, 1, p1());
    assert_eq!((c[0].id, c[0].best.as_ref()), (id, None));
    assert_eq!(rib.routes().count(), 0);
    assert_eq!(rib.release_empty(|held| held == id), 0);
    assert_eq!(rib.id(p1()), Some(id));
    // Announced again meanwhile: same slot, nothing to free.
    assert_eq!(announce(&mut rib, 1, p1(), route(&[65001], 1))[0].id, id);
    assert_eq!(rib.release_empty(|_| false), 0);

    // Let go: the slot is freed, and the next new prefix takes it.
    withdraw(&mut rib, 1, p1());
    assert_eq!(rib.release_empty(|_| false), 1);
    assert_eq!(rib.id(p1()), None);
    assert_eq!(announce(&mut rib, 1, q, route(&[65001], 1))[0].id, id);
    assert_eq!(rib.prefix(id), Some(q));
    assert_eq!(rib.id_capacity(), 1);
    let ids: Vec<_> = rib.ids().collect();
    assert_eq!(ids, vec![(id, q)]);

    // A peer's whole table going empties its slots the same way.
    announce(&mut rib, 1, p1(), route(&[65001], 1));
    assert_eq!(rib.remove_peer(PeerId(1)).len(), 2);
    assert_eq!(rib.release_empty(|_| false), 2);
    assert_eq!(rib.ids().count(), 0);
}

#[test]
fn slots_past_the_first_chunk_find_their_prefixes_and_are_reused() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001))]);
    let nets: Vec<IpNet> = (0..10_000u32)
        .map(|i| IpNet::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24).unwrap())
        .collect();
    let attrs = Arc::new(route(&[65001], 1));
    let nlri: Vec<Nlri> = nets.iter().map(|n| Nlri::new(*n)).collect();
    let changes = rib
        .apply(PeerId(1), &[], &nlri, Some(attrs.clone()))
        .unwrap();
    assert_eq!(changes.len(), nets.len());
    for c in &changes {
        assert_eq!(rib.id(c.prefix), Some(c.id));
        assert_eq!(rib.prefix(c.id), Some(c.prefix));
    }
    assert_eq!(rib.id_capacity(), nets.len());

    // Every other prefix goes and its slot is freed; new prefixes take those slots.
    let gone: Vec<Nlri> = nlri.iter().step_by(2).copied().collect();
    rib.apply(PeerId(1), &gone, &[], None).unwrap();
    assert_eq!(rib.release_empty(|_| false), gone.len());
    let fresh: Vec<Nlri> = (0..gone.len() as u32)
        .map(|i| Nlri::new(IpNet::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)).into(), 24).unwrap()))
        .collect();
    let changes = rib.apply(PeerId(1), &[], &fresh, Some(attrs)).unwrap();
    assert_eq!(rib.id_capacity(), nets.len(), "no new slot was needed");
    for c in &changes {
        assert_eq!(rib.prefix(c.id), Some(c.prefix));
    }
    for n in nlri.iter().skip(1).step_by(2) {
        let id = rib.id(n.prefix).unwrap();
        assert_eq!(rib.prefix(id), Some(n.prefix));
        assert_eq!(best_peer(&rib, n.prefix), Some(PeerId(1)));
    }
    assert_eq!(rib.ids().count(), nets.len());
}

/// A prefix's selection by value: the best (source, path id, attributes) and the ECMP members.
type SelectionValue = (PeerId, u32, Attrs, Vec<(PeerId, Attrs)>);

fn selection_of(rib: &Rib, prefix: IpNet) -> Option<SelectionValue> {
    rib.best(prefix).map(|b| {
        (
            b.peer,
            b.path_id,
            Attrs::clone(&b.attrs),
            b.multipath
                .iter()
                .map(|(p, a)| (*p, Attrs::clone(a)))
                .collect(),
        )
    })
}

#[test]
fn deferred_decisions_end_where_immediate_ones_do_and_report_each_moved_prefix_once() {
    let peers = [
        (1, ebgp(1, 65001)),
        (2, ebgp(2, 65002)),
        (3, ibgp(3)),
        (4, ebgp(4, 65001)),
    ];
    let mut now = rib(config(), &peers);
    let mut later = rib(config(), &peers);
    later.defer_decisions();
    let prefixes: Vec<IpNet> = (0..5).map(|i| net(&format!("192.168.{i}.0/24"))).collect();
    let variants = |v: u64| -> Attrs {
        let mut a = route(&[65001, 65010][..1 + (v % 2) as usize], (v % 3) as u8 + 1);
        a.med = Some((v / 2 % 3) as u32);
        a.local_pref = v.is_multiple_of(5).then_some(200);
        a
    };
    // A fixed pseudo-random walk (64-bit LCG): announcements, replacements, withdrawals.
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut decided: Vec<_> = prefixes.iter().map(|p| selection_of(&later, *p)).collect();
    for round in 0..400 {
        let peer = next(4) as u32 + 1;
        let prefix = prefixes[next(5) as usize];
        if next(4) == 0 {
            withdraw(&mut now, peer, prefix);
            assert!(withdraw(&mut later, peer, prefix).is_empty());
        } else {
            let a = variants(next(30));
            announce(&mut now, peer, prefix, a.clone());
            assert!(announce(&mut later, peer, prefix, a).is_empty());
        }
        if next(7) != 0 {
            continue;
        }
        let changes = later.decide();
        let mut reported: Vec<IpNet> = changes.iter().map(|c| c.prefix).collect();
        reported.sort();
        let before = reported.len();
        reported.dedup();
        assert_eq!(
            before,
            reported.len(),
            "round {round}: a prefix reported twice"
        );
        for (i, p) in prefixes.iter().enumerate() {
            let sel = selection_of(&later, *p);
            assert_eq!(sel, selection_of(&now, *p), "round {round}: {p}");
            let moved = sel != decided[i];
            assert_eq!(reported.contains(p), moved, "round {round}: {p}");
            decided[i] = sel;
        }
        for c in &changes {
            assert_eq!(c.best, later.best(c.prefix), "round {round}");
        }
    }
    // A whole-table operation joins the round and decides everything waiting.
    announce(&mut later, 1, prefixes[0], route(&[65001], 9));
    let changes = later.remove_peer(PeerId(2));
    announce(&mut now, 1, prefixes[0], route(&[65001], 9));
    now.remove_peer(PeerId(2));
    for p in &prefixes {
        assert_eq!(selection_of(&later, *p), selection_of(&now, *p));
    }
    assert!(changes.iter().all(|c| c.best == later.best(c.prefix)));
}

#[test]
fn removing_a_peer_never_reports_its_pending_path_as_best() {
    let mut rib = rib(config(), &[(1, ebgp(1, 65001)), (2, ebgp(2, 65002))]);
    rib.defer_decisions();
    announce(&mut rib, 1, p1(), route(&[65001, 65009], 1));
    rib.decide();
    // Peer 2's shorter path waits for a decision when the peer goes.
    announce(&mut rib, 2, p1(), route(&[65002], 2));
    let changes = rib.remove_peer(PeerId(2));
    assert!(
        changes
            .iter()
            .all(|c| c.best.as_ref().is_none_or(|b| b.peer != PeerId(2))),
        "{changes:?}"
    );
    assert_eq!(best_peer(&rib, p1()), Some(PeerId(1)));
}

#[test]
fn multipath_holds_one_member_inline_and_reads_as_a_slice_for_any_count() {
    let member = |i: u32| (PeerId(i), Arc::new(Attrs::default()));
    let none: Multipath = std::iter::empty().collect();
    assert!(none.is_empty());
    let one: Multipath = [member(1)].into_iter().collect();
    assert!(matches!(one, Multipath::One(_)));
    assert_eq!(one.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [PeerId(1)]);
    assert_eq!(one, Multipath::Many(vec![member(1)]), "equal by members");
    let three: Multipath = (1..=3).map(member).collect();
    assert_eq!(
        (&three).into_iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [PeerId(1), PeerId(2), PeerId(3)]
    );
}
