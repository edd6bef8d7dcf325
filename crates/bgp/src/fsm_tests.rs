use std::time::Duration;

use super::*;
use crate::wire::{encode_keepalive, encode_notification, encode_open, encode_update};

fn cfg() -> SessionConfig {
    SessionConfig::new(64512, 64512, "10.0.0.1".parse().unwrap())
}

fn peer_open(asn: u32, id: &str, hold: u16) -> Open {
    Open {
        version: 4,
        asn,
        hold_time: hold,
        router_id: id.parse().unwrap(),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: false,
                time: 120,
                families: vec![(Family::Ipv4Unicast, true)],
            }),
        ],
    }
}

fn sent(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(wire::decode_message(b, &Codec::default()).unwrap()),
            _ => None,
        })
        .collect()
}

fn established(mut s: Session) -> (Session, Vec<Output>) {
    let mut all = s.handle(Input::Start);
    all.extend(s.handle(Input::Connected));
    let open = encode_open(&peer_open(64512, "10.0.0.2", 90));
    all.extend(s.handle(Input::Frame(&open)));
    all.extend(s.handle(Input::Frame(&encode_keepalive())));
    (s, all)
}

#[test]
fn active_side_connects_and_reaches_established() {
    let (s, out) = established(Session::new(cfg()));
    assert_eq!(s.state(), State::Established);
    assert!(out.contains(&Output::Connect));
    let msgs = sent(&out);
    // Our OPEN, then the KEEPALIVE that answers theirs.
    assert!(matches!(&msgs[0], Message::Open(o) if o.asn == 64512 && o.hold_time == 240));
    assert_eq!(msgs[1], Message::Keepalive);
    let n = s.negotiated().unwrap();
    assert_eq!(n.hold_time, 90, "the lower hold time wins");
    assert_eq!(n.keepalive_time, 30);
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(n.codec.four_octet_as);
    assert!(out.iter().any(|o| matches!(o, Output::Established(_))));
    assert!(out.contains(&Output::Timer(Timer::Hold, Some(Duration::from_secs(90)))));
    assert!(out.contains(&Output::Timer(
        Timer::Keepalive,
        Some(Duration::from_secs(30))
    )));
}

#[test]
fn passive_side_never_connects() {
    let mut c = cfg();
    c.passive = true;
    let mut s = Session::new(c);
    let out = s.handle(Input::Start);
    assert_eq!(s.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
    let out = s.handle(Input::Timer(Timer::ConnectRetry));
    assert!(!out.contains(&Output::Connect));
    assert_eq!(s.incoming(false), Incoming::Take);
}

#[test]
fn wrong_peer_as_is_refused_with_bad_peer_as() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let out = s.handle(Input::Frame(&encode_open(&peer_open(
        65001, "10.0.0.2", 90,
    ))));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::bad_peer_as())]
    );
    assert_eq!(s.state(), State::Idle);
    assert!(matches!(s.last_error(), Some(DownReason::Sent(n)) if n.subcode == 2));
    // It tries again after the error wait.
    assert!(out.contains(&Output::Timer(
        Timer::IdleHold,
        Some(Duration::from_secs(5))
    )));
    let out = s.handle(Input::Timer(Timer::IdleHold));
    assert!(out.contains(&Output::Connect));
}

#[test]
fn same_router_id_within_an_as_is_refused() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let out = s.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.1", 90,
    ))));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::bad_bgp_identifier())]
    );
}

#[test]
fn error_wait_grows_to_its_maximum() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    let mut waits = Vec::new();
    for _ in 0..5 {
        s.handle(Input::Connected);
        let out = s.handle(Input::Closed("reset".into()));
        waits.extend(out.iter().filter_map(|o| match o {
            Output::Timer(Timer::IdleHold, Some(d)) => Some(d.as_secs()),
            _ => None,
        }));
        s.handle(Input::Timer(Timer::IdleHold));
    }
    assert_eq!(waits, vec![5, 10, 20, 30, 30]);
}

#[test]
fn hold_timer_expiry_sends_the_notification_and_keeps_gr_routes() {
    let (mut s, _) = established(Session::new(cfg()));
    let out = s.handle(Input::Timer(Timer::Hold));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::hold_timer_expired())]
    );
    let down = out.iter().find_map(|o| match o {
        Output::Down {
            stale_families,
            restart_time,
            was_established,
            ..
        } => Some((stale_families.clone(), *restart_time, *was_established)),
        _ => None,
    });
    assert_eq!(down, Some((vec![Family::Ipv4Unicast], 120, true)));
}

#[test]
fn a_lost_connection_keeps_routes_of_a_graceful_restart_peer() {
    let (mut s, _) = established(Session::new(cfg()));
    let out = s.handle(Input::Closed("connection reset by peer".into()));
    assert!(out.iter().any(|o| matches!(o,
        Output::Down { stale_families, .. } if stale_families == &vec![Family::Ipv4Unicast])));
}

#[test]
fn a_received_notification_withdraws_everything() {
    let (mut s, _) = established(Session::new(cfg()));
    let out = s.handle(Input::Frame(&encode_notification(
        &Notification::admin_shutdown(),
    )));
    assert!(
        sent(&out).is_empty(),
        "nothing is sent back to a NOTIFICATION"
    );
    assert!(out.iter().any(|o| matches!(o,
        Output::Down { stale_families, reason: DownReason::Received(_), .. } if stale_families.is_empty())));
}

#[test]
fn updates_are_handed_over_and_restart_the_hold_timer() {
    let (mut s, _) = established(Session::new(cfg()));
    let attrs = crate::types::Attrs {
        as_path: crate::types::AsPath::from_sequence([65001]),
        next_hop: Some("10.0.0.2".parse().unwrap()),
        ..Default::default()
    };
    let nlri = [crate::types::Nlri::new("10.244.1.0/26".parse().unwrap())];
    let bytes = encode_update(&attrs, &nlri, &s.codec()).remove(0);
    let out = s.handle(Input::Frame(&bytes));
    assert!(out.contains(&Output::Timer(Timer::Hold, Some(Duration::from_secs(90)))));
    let u = out
        .iter()
        .find_map(|o| match o {
            Output::Update(u) => Some(u.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(u.announced, nlri.to_vec());
}

#[test]
fn an_update_before_established_is_an_fsm_error() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let out = s.handle(Input::Frame(&encode_keepalive()));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(
            Notification::fsm_unexpected_in_open_sent()
        )]
    );
}

#[test]
fn stop_sends_cease_and_stays_down() {
    let (mut s, _) = established(Session::new(cfg()));
    let out = s.handle(Input::Stop(Notification::peer_deconfigured()));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::peer_deconfigured())]
    );
    assert_eq!(s.state(), State::Idle);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Timer(Timer::IdleHold, Some(_))))
    );
    assert_eq!(s.incoming(false), Incoming::Refuse);
}

#[test]
fn the_first_open_after_start_says_restarting_and_later_ones_do_not() {
    let mut c = cfg();
    if let Some(gr) = &mut c.graceful_restart {
        gr.restarting = true;
    }
    let mut s = Session::new(c);
    s.handle(Input::Start);
    let out = s.handle(Input::Connected);
    let restarting = |out: &[Output]| {
        sent(out).iter().any(|m| {
            matches!(m, Message::Open(o) if o.capabilities.iter().any(|c|
                matches!(c, Capability::GracefulRestart(g) if g.restarting)))
        })
    };
    assert!(restarting(&out));
    s.handle(Input::Closed("reset".into()));
    s.handle(Input::Timer(Timer::IdleHold));
    let out = s.handle(Input::Connected);
    assert!(!restarting(&out));
}

#[test]
fn add_path_is_negotiated_per_direction() {
    let mut c = cfg();
    c.add_path = vec![(Family::Ipv4Unicast, AddPathMode::Both)];
    let mut s = Session::new(c);
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let mut open = peer_open(64512, "10.0.0.2", 90);
    open.capabilities.push(Capability::AddPath(vec![(
        Family::Ipv4Unicast,
        AddPathMode::Receive,
    )]));
    s.handle(Input::Frame(&encode_open(&open)));
    let codec = s.negotiated().unwrap().codec;
    assert!(codec.add_path_tx[0], "we send, the peer receives");
    assert!(!codec.add_path_rx[0], "the peer does not send");
}

#[test]
fn a_peer_without_multiprotocol_capabilities_speaks_ipv4() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let mut open = peer_open(64512, "10.0.0.2", 0);
    open.capabilities.clear();
    let out = s.handle(Input::Frame(&encode_open(&open)));
    let n = s.negotiated().unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.codec.four_octet_as);
    assert_eq!(n.hold_time, 0);
    assert!(
        out.contains(&Output::Timer(Timer::Hold, None)),
        "hold time 0: no timer"
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Timer(Timer::Keepalive, Some(_))))
    );
}

#[test]
fn collisions_keep_the_connection_the_higher_router_id_opened() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    assert_eq!(
        s.incoming(true),
        Incoming::Track,
        "OPEN sent on our connection, the peer's identifier unknown: keep both"
    );
    assert_eq!(
        s.incoming(false),
        Incoming::Take,
        "the peer connecting again gave up its earlier connection"
    );
    s.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.2", 90,
    ))));
    assert_eq!(
        s.incoming(true),
        Incoming::Take,
        "10.0.0.2 > 10.0.0.1: the peer's connection wins"
    );
    let mut low = Session::new(SessionConfig::new(
        64512,
        64512,
        "10.0.0.3".parse().unwrap(),
    ));
    low.handle(Input::Start);
    low.handle(Input::Connected);
    low.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.2", 90,
    ))));
    assert_eq!(low.incoming(true), Incoming::Refuse, "ours wins");
    low.handle(Input::Frame(&encode_keepalive()));
    assert_eq!(low.state(), State::Established);
    // Established with a graceful-restart peer: another connection is its restart (the
    // session shell refuses one that comes right after Established, a collision's tail).
    assert_eq!(low.incoming(true), Incoming::Restart);
    assert_eq!(low.incoming(false), Incoming::Restart);
}

#[test]
fn equal_router_ids_between_ases_are_settled_by_the_as_number() {
    let id = "10.0.0.1".parse().unwrap();
    let s = Session::new(SessionConfig::new(64512, 65000, id));
    assert!(s.peer_is_dominant(id), "AS 65000 > AS 64512");
    let s = Session::new(SessionConfig::new(65000, 64512, id));
    assert!(!s.peer_is_dominant(id));
    assert!(!s.peer_is_dominant("9.255.255.255".parse().unwrap()));
}

#[test]
fn a_tracked_connection_that_wins_continues_in_open_sent_without_a_second_open() {
    // The peer's OPEN came on our connection first (OpenConfirm), then the tracked one won.
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    s.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.2", 90,
    ))));
    assert_eq!(s.state(), State::OpenConfirm);
    let out = s.handle(Input::Replaced);
    assert_eq!(s.state(), State::OpenSent);
    assert!(
        sent(&out).is_empty(),
        "our OPEN is already on that connection"
    );
    assert!(s.negotiated().is_none());
    assert!(out.contains(&Output::Timer(Timer::Keepalive, None)));
    assert!(out.contains(&Output::Timer(Timer::Hold, Some(OPEN_HOLD))));
    s.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.2", 90,
    ))));
    s.handle(Input::Frame(&encode_keepalive()));
    assert_eq!(s.state(), State::Established);

    // The peer closed our connection (it resolved the collision first): the session went
    // down, and the tracked connection takes over without waiting.
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    let n = encode_notification(&Notification::connection_collision());
    s.handle(Input::Frame(&n));
    assert_eq!(s.state(), State::Idle);
    let out = s.handle(Input::Replaced);
    assert_eq!(s.state(), State::OpenSent);
    assert!(out.contains(&Output::Timer(Timer::IdleHold, None)));

    // Stopped sessions stay down.
    s.handle(Input::Stop(Notification::peer_deconfigured()));
    assert!(s.handle(Input::Replaced).is_empty());
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn a_collision_replaces_the_connection_without_an_error_wait() {
    let mut s = Session::new(cfg());
    s.handle(Input::Start);
    s.handle(Input::Connected);
    s.handle(Input::Frame(&encode_open(&peer_open(
        64512, "10.0.0.2", 90,
    ))));
    let out = s.handle(Input::Collision);
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::connection_collision())]
    );
    assert_eq!(s.state(), State::Active);
    assert!(!out.iter().any(|o| matches!(o, Output::Down { .. })));
    let out = s.handle(Input::Connected);
    assert!(matches!(sent(&out)[0], Message::Open(_)));
    assert_eq!(s.state(), State::OpenSent);
}

#[test]
fn a_new_connection_from_a_graceful_restart_peer_while_established_is_its_restart() {
    let (mut s, _) = established(Session::new(cfg()));
    assert_eq!(s.incoming(false), Incoming::Restart);
    assert_eq!(s.incoming(true), Incoming::Restart);
    // What the session does then: the old connection ends as lost, routes kept as stale.
    let out = s.handle(Input::Closed("the peer connected again".into()));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Down { stale_families, restart_time: 120, .. } if stale_families == &[Family::Ipv4Unicast]
    )));
    assert_eq!(s.incoming(false), Incoming::Take);

    // Without graceful restart an Established session keeps its connection.
    let mut without = Session::new(cfg());
    without.handle(Input::Start);
    without.handle(Input::Connected);
    let mut open = peer_open(64512, "10.0.0.2", 90);
    open.capabilities
        .retain(|c| !matches!(c, Capability::GracefulRestart(_)));
    without.handle(Input::Frame(&encode_open(&open)));
    without.handle(Input::Frame(&encode_keepalive()));
    assert_eq!(without.state(), State::Established);
    assert_eq!(without.incoming(false), Incoming::Refuse);
}
