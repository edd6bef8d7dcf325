//! `calicoctl node status`: the node's Calico processes and BGP sessions, read from birdd's
//! control socket and printed as Calico prints BIRD's (one table per IP family).

use std::process::ExitCode;

use anyhow::Result;
use calico_proto::bgp::{ListPeersRequest, Peer, PeerType, SessionState, bgp_client::BgpClient};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The Calico processes and BGP sessions of this node.
    ///
    /// Example: sudo calicoctl node status
    Status,
}

/// birdd's control socket; `CALICO_BIRDD_SOCKET` points elsewhere (a lab node, a test).
const BIRDD_SOCKET: &str = "/var/run/calico/birdd.sock";

pub async fn run(cmd: &Command) -> Result<ExitCode> {
    match cmd {
        Command::Status => status().await,
    }
}

async fn status() -> Result<ExitCode> {
    if !nix_is_root() {
        println!("Need super user privileges: Operation not permitted");
        return Ok(ExitCode::FAILURE);
    }
    if !process_running(&["felixd", "calico-felix", "calico-node"]) {
        eprintln!("Calico process is not running.");
        return Ok(ExitCode::FAILURE);
    }
    println!("Calico process is running.");
    let socket = std::env::var("CALICO_BIRDD_SOCKET").unwrap_or_else(|_| BIRDD_SOCKET.into());
    if !process_running(&["birdd"]) && !std::path::Path::new(&socket).exists() {
        println!("\nThe BGP backend process (birdd) is not running.");
        println!();
        return Ok(ExitCode::SUCCESS);
    }
    match peers(&socket).await {
        Ok(peers) => {
            for (family, v4) in [("IPv4", true), ("IPv6", false)] {
                println!("\n{family} BGP status");
                let rows: Vec<Vec<String>> = peers
                    .iter()
                    .filter(|p| {
                        p.address
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|a| a.is_ipv4() == v4)
                    })
                    .map(row)
                    .collect();
                if rows.is_empty() {
                    println!("No {family} peers found.");
                } else {
                    print!(
                        "{}",
                        crate::printer::boxed(
                            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                            &rows
                        )
                    );
                }
            }
        }
        // As Calico does when BIRD's socket does not answer: say so, and exit 0.
        Err(e) => print!("\nError querying birdd: unable to connect to {socket}: {e}"),
    }
    println!();
    Ok(ExitCode::SUCCESS)
}

async fn peers(socket: &str) -> Result<Vec<Peer>> {
    let channel = calico_proto::endpoint::connect(&format!("unix://{socket}")).await?;
    let mut client = BgpClient::new(channel);
    let mut peers = client
        .list_peers(ListPeersRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner()
        .peers;
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(peers)
}

/// One table row in BIRD's words: `up` / `start` / `down`, the time of the last change
/// (the time of day when it was today, as BIRD prints it), and the info column.
fn row(p: &Peer) -> Vec<String> {
    let state = SessionState::try_from(p.state).unwrap_or(SessionState::Idle);
    let kind = match PeerType::try_from(p.r#type).unwrap_or(PeerType::Global) {
        PeerType::NodeToNodeMesh => "node-to-node mesh",
        PeerType::NodeSpecific => "node specific",
        PeerType::Global => "global",
    };
    let proto_state = match state {
        SessionState::Established => "up",
        SessionState::Idle if p.info.contains("stopped") => "down",
        _ => "start",
    };
    vec![
        p.address.clone(),
        kind.to_string(),
        proto_state.to_string(),
        since(p.since_unix_seconds),
        p.info.clone(),
    ]
}

fn since(unix: i64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_opt(unix, 0).single() {
        Some(t) if t.date_naive() == Local::now().date_naive() => t.format("%H:%M:%S").to_string(),
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => String::new(),
    }
}

fn nix_is_root() -> bool {
    // The real uid, as Calico checks it; /proc/self/status avoids an unsafe libc call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether a process whose argv[0] (its base name) is one of `names` runs on this machine.
fn process_running(names: &[&str]) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
            let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
            names.iter().any(|n| n.as_bytes() == base)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_as_birds_protocol_table() {
        let p = Peer {
            address: "10.99.0.2".into(),
            r#type: PeerType::NodeToNodeMesh as i32,
            state: SessionState::Active as i32,
            since_unix_seconds: 0,
            info: "Active Socket: Connection refused".into(),
            ..Default::default()
        };
        let r = row(&p);
        assert_eq!(r[..3], ["10.99.0.2", "node-to-node mesh", "start"]);
        let t = crate::printer::boxed(
            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            &[vec![
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                "09:14:03".into(),
                r[4].clone(),
            ]],
        );
        assert_eq!(
            t,
            "+--------------+-------------------+-------+----------+---------------------------+\n\
             | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |           INFO            |\n\
             +--------------+-------------------+-------+----------+---------------------------+\n\
             | 10.99.0.2    | node-to-node mesh | start | 09:14:03 | Active Socket: Connection |\n\
             |              |                   |       |          | refused                   |\n\
             +--------------+-------------------+-------+----------+---------------------------+\n"
        );
    }
}
