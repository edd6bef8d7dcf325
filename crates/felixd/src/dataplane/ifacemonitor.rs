//! Interface monitor (Felix's `ifacemonitor`): which interfaces exist and whether each is
//! operationally up, from the kernel's link and address notifications, so that endpoint
//! status follows the interfaces, a new pod's routes go in as soon as its interface
//! appears, and host endpoints matched by address follow address changes.
//!
//! Notifications can be lost (a full socket buffer); a full dump every
//! [`RESYNC_INTERVAL`] puts the picture right again.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often every interface is listed again.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceEvent {
    /// Every interface and whether it is up (at start and at each resync): interfaces
    /// missing from it are gone.
    Snapshot(HashMap<String, bool>),
    /// An interface appeared or changed.
    Link { name: String, up: bool },
    /// An interface went away (or was renamed away from this name).
    Gone { name: String },
    /// An address was added or removed somewhere.
    Addresses,
    /// The monitor broke: what is known may be out of date until the next `Snapshot`.
    Lost,
}

/// Operationally up, as Felix reads it: the kernel's `IFF_RUNNING` (`IFF_UP` is only the
/// administrative state).
pub fn link_is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Running)
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Keeps track of names by index, to tell a rename from a new interface.
#[derive(Debug, Default)]
pub struct LinkTracker {
    names: HashMap<u32, String>,
}

impl LinkTracker {
    /// The events one link notification means.
    pub fn on_message(&mut self, msg: &RouteNetlinkMessage) -> Vec<IfaceEvent> {
        match msg {
            RouteNetlinkMessage::NewLink(l) => {
                let Some(name) = link_name(l) else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                if let Some(old) = self.names.insert(l.header.index, name.clone())
                    && old != name
                {
                    out.push(IfaceEvent::Gone { name: old });
                }
                out.push(IfaceEvent::Link {
                    name,
                    up: link_is_up(l),
                });
                out
            }
            RouteNetlinkMessage::DelLink(l) => {
                let name = self.names.remove(&l.header.index).or_else(|| link_name(l));
                name.map(|name| vec![IfaceEvent::Gone { name }])
                    .unwrap_or_default()
            }
            RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => {
                vec![IfaceEvent::Addresses]
            }
            _ => Vec::new(),
        }
    }

    /// A full listing replaces what is known.
    pub fn snapshot(&mut self, links: &[LinkMessage]) -> IfaceEvent {
        self.names.clear();
        let mut up = HashMap::new();
        for l in links {
            if let Some(name) = link_name(l) {
                self.names.insert(l.header.index, name.clone());
                up.insert(name, link_is_up(l));
            }
        }
        IfaceEvent::Snapshot(up)
    }
}

/// Watches the interfaces of this process's network namespace until `stop`, sending what
/// changes; a broken subscription is opened again (after a pause) and starts with a fresh
/// listing. Subscribes before each listing, so nothing falls between them.
pub async fn run(tx: mpsc::UnboundedSender<IfaceEvent>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        match watch_once(&tx, &stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?pause,
                    "the interface monitor failed; interface changes are not seen until it is back");
                if tx.send(IfaceEvent::Lost).is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// One subscription: `Ok` when told to stop (or nobody listens any more), `Err` when it broke.
async fn watch_once(
    tx: &mpsc::UnboundedSender<IfaceEvent>,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let (conn, handle, mut messages) = new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    let conn = tokio::spawn(conn);
    let mut tracker = LinkTracker::default();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            _ = resync.tick() => {
                let links: Result<Vec<LinkMessage>, _> =
                    handle.link().get().execute().try_collect().await;
                match links {
                    Ok(links) => {
                        if tx.send(tracker.snapshot(&links)).is_err()
                            || tx.send(IfaceEvent::Addresses).is_err()
                        {
                            break Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list interfaces; retrying in a second");
                        resync.reset_after(Duration::from_secs(1));
                    }
                }
            }
            m = messages.next() => {
                let Some((m, _)) = m else {
                    break Err(std::io::Error::other("the netlink notification socket closed"));
                };
                match m.payload {
                    NetlinkPayload::InnerMessage(msg)
                        if tracker.on_message(&msg).into_iter().any(|ev| tx.send(ev).is_err()) =>
                    {
                        break Ok(());
                    }
                    // The socket's buffer overflowed: notifications were lost. List again now.
                    NetlinkPayload::Overrun(_) => {
                        tracing::debug!("interface notifications were lost; listing again");
                        resync.reset_immediately();
                    }
                    _ => {}
                }
            }
        }
    };
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, running: bool) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        if running {
            l.header.flags = LinkFlags::Up | LinkFlags::Running;
        } else {
            l.header.flags = LinkFlags::Up;
        }
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn renames_report_the_old_name_gone_and_only_running_counts_as_up() {
        let mut t = LinkTracker::default();
        let IfaceEvent::Snapshot(s) = t.snapshot(&[link(2, "eth0", true), link(3, "tmp1", false)])
        else {
            panic!("not a snapshot")
        };
        assert_eq!(s.get("eth0"), Some(&true));
        // Admin up but not running (the peer end is down): not up.
        assert_eq!(s.get("tmp1"), Some(&false));
        let ev = t.on_message(&RouteNetlinkMessage::NewLink(link(3, "cali1234", true)));
        assert_eq!(
            ev,
            vec![
                IfaceEvent::Gone {
                    name: "tmp1".into()
                },
                IfaceEvent::Link {
                    name: "cali1234".into(),
                    up: true
                }
            ]
        );
        let mut gone = LinkMessage::default();
        gone.header.index = 3;
        let ev = t.on_message(&RouteNetlinkMessage::DelLink(gone));
        assert_eq!(
            ev,
            vec![IfaceEvent::Gone {
                name: "cali1234".into()
            }]
        );
    }
}
