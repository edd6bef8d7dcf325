//! The shell's side of RFC 4271 §6.8, against a scripted peer on loopback: both speakers
//! connect at the same moment and the connection the higher BGP identifier opened stays.

use std::net::Ipv4Addr;

use calico_bgp::wire::{Capability, Open, encode_keepalive, encode_notification, encode_open};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

const STEP: Duration = Duration::from_secs(5);

fn open(id: Ipv4Addr) -> Vec<u8> {
    encode_open(&Open {
        version: 4,
        asn: 64512,
        hold_time: 90,
        router_id: id,
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::FourOctetAs(64512),
        ],
    })
}

async fn read_msg(s: &mut TcpStream) -> Message {
    let mut header = [0u8; 19];
    tokio::time::timeout(STEP, s.read_exact(&mut header))
        .await
        .expect("a message within 5 s")
        .expect("the connection open");
    let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
    let mut frame = header.to_vec();
    frame.resize(len, 0);
    tokio::time::timeout(STEP, s.read_exact(&mut frame[19..]))
        .await
        .expect("the message body")
        .expect("the connection open");
    wire::decode_message(&frame, &Codec::default()).expect("a valid message")
}

fn collision() -> Message {
    Message::Notification(Notification::connection_collision())
}

async fn established(events: &mut mpsc::Receiver<SessionEvent>) -> SocketAddr {
    let deadline = Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SessionEvent::Established { local, .. })) => return local,
            Ok(Some(_)) => {}
            other => panic!("no Established event: {other:?}"),
        }
    }
}

/// Our session (identifier `ours`) has connected to the peer and the peer has connected to
/// us; both sides sent nothing yet. Returns (our connection, the peer's connection), each
/// as the peer holds it, with our OPEN read from both.
async fn crossed_connections(
    ours: Ipv4Addr,
) -> (
    SessionHandle,
    mpsc::Receiver<SessionEvent>,
    TcpStream,
    TcpStream,
) {
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let port = peer.local_addr().expect("its address").port();
    let (events_tx, events) = mpsc::channel(64);
    let mut cfg = SessionConfig::new(64512, 64512, ours);
    cfg.families = vec![Family::Ipv4Unicast];
    let endpoint = Endpoint {
        address: IpAddr::from([127, 0, 0, 1]),
        port,
        source: None,
        ttl_security: None,
        password: None,
    };
    let session = spawn(1, endpoint, cfg, events_tx);
    let (mut our_conn, _) = tokio::time::timeout(STEP, peer.accept())
        .await
        .expect("the session connects")
        .expect("accepted");
    assert!(matches!(read_msg(&mut our_conn).await, Message::Open(_)));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let mut their_conn = TcpStream::connect(listener.local_addr().expect("its address"))
        .await
        .expect("the peer connects to us");
    let (accepted, _) = listener.accept().await.expect("accepted");
    session
        .commands
        .send(SessionCommand::Incoming(accepted))
        .await
        .expect("the session runs");
    assert!(
        matches!(read_msg(&mut their_conn).await, Message::Open(_)),
        "our OPEN on the peer's connection too: both go on until an OPEN names the peer"
    );
    (session, events, our_conn, their_conn)
}

#[tokio::test]
async fn a_dominant_peers_connection_stays() {
    let (_s, mut events, mut ours, mut theirs) =
        crossed_connections(Ipv4Addr::new(10, 0, 0, 1)).await;
    theirs
        .write_all(&open(Ipv4Addr::new(10, 0, 0, 9)))
        .await
        .expect("written");
    assert_eq!(read_msg(&mut theirs).await, Message::Keepalive);
    assert_eq!(read_msg(&mut ours).await, collision());
    theirs
        .write_all(&encode_keepalive())
        .await
        .expect("written");
    let local = established(&mut events).await;
    assert_eq!(local, theirs.peer_addr().expect("an address"));
}

#[tokio::test]
async fn our_connection_stays_when_our_identifier_is_higher() {
    let (_s, mut events, mut ours, mut theirs) =
        crossed_connections(Ipv4Addr::new(10, 0, 0, 9)).await;
    theirs
        .write_all(&open(Ipv4Addr::new(10, 0, 0, 2)))
        .await
        .expect("written");
    assert_eq!(read_msg(&mut theirs).await, collision());
    ours.write_all(&open(Ipv4Addr::new(10, 0, 0, 2)))
        .await
        .expect("written");
    assert_eq!(read_msg(&mut ours).await, Message::Keepalive);
    ours.write_all(&encode_keepalive()).await.expect("written");
    let local = established(&mut events).await;
    assert_eq!(local, ours.peer_addr().expect("an address"));
}

#[tokio::test]
async fn the_peers_connection_wins_after_its_open_came_on_ours() {
    let (_s, mut events, mut ours, mut theirs) =
        crossed_connections(Ipv4Addr::new(10, 0, 0, 1)).await;
    let peer_open = open(Ipv4Addr::new(10, 0, 0, 9));
    ours.write_all(&peer_open).await.expect("written");
    // OpenConfirm on ours, then the collision is settled against it.
    assert_eq!(read_msg(&mut ours).await, Message::Keepalive);
    assert_eq!(read_msg(&mut ours).await, collision());
    theirs.write_all(&peer_open).await.expect("written");
    assert_eq!(read_msg(&mut theirs).await, Message::Keepalive);
    theirs
        .write_all(&encode_keepalive())
        .await
        .expect("written");
    established(&mut events).await;
}

#[tokio::test]
async fn the_peers_connection_carries_on_when_the_peer_closed_ours() {
    let (_s, mut events, mut ours, mut theirs) =
        crossed_connections(Ipv4Addr::new(10, 0, 0, 1)).await;
    // The peer settled the collision first and closed our connection.
    ours.write_all(&encode_notification(&Notification::connection_collision()))
        .await
        .expect("written");
    drop(ours);
    theirs
        .write_all(&open(Ipv4Addr::new(10, 0, 0, 9)))
        .await
        .expect("written");
    assert_eq!(read_msg(&mut theirs).await, Message::Keepalive);
    theirs
        .write_all(&encode_keepalive())
        .await
        .expect("written");
    established(&mut events).await;
}
