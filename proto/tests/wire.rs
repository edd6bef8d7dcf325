//! Field numbers are the contract: these bytes must not change when the .proto files evolve.

#![allow(clippy::unwrap_used)]

use calico_proto::ipam::{AutoAssignRequest, IpUse};
use calico_proto::sync::{KvUpdate, ServerMessage, Updates, server_message};
use prost::Message;

#[test]
fn auto_assign_request_encodes_with_its_field_numbers() {
    let req = AutoAssignRequest {
        num_ipv4: 1,
        handle_id: "h".into(),
        r#use: IpUse::Tunnel as i32,
        ..Default::default()
    };
    // field 1 varint 1; field 3 string "h"; field 9 varint 1 (protoc's proto3 encoding).
    assert_eq!(
        req.encode_to_vec(),
        vec![0x08, 0x01, 0x1a, 0x01, b'h', 0x48, 0x01]
    );
    assert_eq!(
        AutoAssignRequest::decode(&req.encode_to_vec()[..]).unwrap(),
        req
    );
}

#[test]
fn sync_updates_round_trip() {
    let msg = ServerMessage {
        message: Some(server_message::Message::Updates(Updates {
            updates: vec![KvUpdate {
                key: "/calico/resources/v3/projectcalico.org/ippools/p".into(),
                value: br#"{"kind":"IPPool"}"#.to_vec(),
                revision: 42,
            }],
        })),
    };
    assert_eq!(
        ServerMessage::decode(&msg.encode_to_vec()[..]).unwrap(),
        msg
    );
}
