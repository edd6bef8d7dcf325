//! Per-interface kernel settings of workload interfaces, connection-tracking cleanup for
//! addresses that went away, the kernel's global forwarding switches, and the pod MTU file.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::exec::Exec;

fn sysctl_path(parts: &[&str]) -> PathBuf {
    PathBuf::from(format!("/proc/sys/{}", parts.join("/")))
}

fn write(parts: &[&str], value: &str) -> std::io::Result<()> {
    std::fs::write(sysctl_path(parts), value)
}

fn read(parts: &[&str]) -> Option<String> {
    std::fs::read_to_string(sysctl_path(parts))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Felix's settings for a workload interface (`configureProcSysForInterface`): the host end
/// answers ARP and NDP for the pod's gateway, forwards, takes no router advertisements, and
/// uses the host's default reverse-path filter (0 when the pod may send from other prefixes).
pub fn configure_workload_interface(
    iface: &str,
    ipv6: bool,
    allow_spoofing: bool,
) -> std::io::Result<()> {
    let rp = if allow_spoofing {
        "0".to_string()
    } else {
        read(&["net", "ipv4", "conf", "default", "rp_filter"]).unwrap_or_else(|| "1".into())
    };
    // accept_ra first: it is what matters for security even without IPv6 support.
    let _ = write(&["net", "ipv6", "conf", iface, "accept_ra"], "0");
    write(&["net", "ipv4", "conf", iface, "rp_filter"], &rp)?;
    write(&["net", "ipv4", "conf", iface, "route_localnet"], "1")?;
    write(&["net", "ipv4", "conf", iface, "proxy_arp"], "1")?;
    write(&["net", "ipv4", "neigh", iface, "proxy_delay"], "0")?;
    write(&["net", "ipv4", "conf", iface, "forwarding"], "1")?;
    if ipv6 {
        write(&["net", "ipv6", "conf", iface, "proxy_ndp"], "1")?;
        write(&["net", "ipv6", "conf", iface, "forwarding"], "1")?;
    }
    Ok(())
}

/// Turns on forwarding for the node (Felix's `IPForwarding: Enabled`).
pub fn enable_forwarding(ipv6: bool) {
    let mut switches: Vec<&[&str]> = vec![&["net", "ipv4", "ip_forward"]];
    if ipv6 {
        switches.push(&["net", "ipv6", "conf", "all", "forwarding"]);
    }
    for parts in switches {
        if let Err(e) = write(parts, "1") {
            tracing::warn!(sysctl = parts.join("."), error = %e, "cannot enable forwarding");
        }
    }
}

/// Workload interfaces whose settings are still to be written (they may not exist yet: the
/// CNI plugin creates the veth, then announces the endpoint).
#[derive(Debug, Default)]
pub struct InterfaceSettings {
    pending: BTreeSet<(String, bool)>,
}

impl InterfaceSettings {
    pub fn want(&mut self, iface: &str, allow_spoofing: bool) {
        self.pending.retain(|(i, _)| i != iface);
        self.pending.insert((iface.to_string(), allow_spoofing));
    }

    pub fn forget(&mut self, iface: &str) {
        self.pending.retain(|(i, _)| i != iface);
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes what it can; interfaces that do not exist yet stay pending.
    pub fn apply(&mut self, ipv6: bool) -> usize {
        let mut done = 0;
        self.pending.retain(|(iface, spoof)| {
            // /proc/sys/net is this process's namespace's (unlike /sys/class/net).
            if !Path::new(&format!("/proc/sys/net/ipv4/conf/{iface}")).exists() {
                return true;
            }
            match configure_workload_interface(iface, ipv6, *spoof) {
                Ok(()) => {
                    done += 1;
                    false
                }
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "cannot configure a workload interface; will retry");
                    true
                }
            }
        });
        done
    }
}

/// Removes the connection-tracking entries of an address that no longer belongs to a local
/// workload, so a later owner of the address does not inherit its flows.
pub fn flush_conntrack(exec: &dyn Exec, ip: IpAddr) {
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let ip = ip.to_string();
    for dir in ["--orig-src", "--orig-dst"] {
        // `conntrack -D` fails when nothing matched: that is the common, harmless case.
        if let Err(e) = exec.run("conntrack", &["-D", "-f", family, dir, &ip], None)
            && !e.to_string().contains("0 flow entries")
        {
            tracing::debug!(%ip, error = %e, "conntrack cleanup");
        }
    }
}

/// Writes the pod MTU where the CNI plugin reads it, if it changed.
pub fn write_mtu_file(path: &Path, mtu: u32) -> std::io::Result<()> {
    let text = format!("{mtu}\n");
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, path)
}

/// Whether a name matches Felix's default `mtuIfacePattern`
/// (`^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)`).
fn mtu_iface(n: &str) -> bool {
    let b = n.as_bytes();
    let two = |p: &str| n.starts_with(p) && b.len() > 2 && b"Pcopsvx".contains(&b[2]);
    ["en", "wl", "ww", "sl", "ib"].iter().any(|p| two(p))
        || ["eth", "wlan", "wwan"].iter().any(|p| n.starts_with(p))
}

/// Felix's host MTU: the smallest MTU of the up interfaces matching its pattern, else 1460.
/// Read over netlink: `/sys/class/net` shows the interfaces of whoever mounted `/sys`,
/// which need not be this process's network namespace.
pub async fn host_mtu(h: &rtnetlink::Handle) -> u32 {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::{LinkAttribute, State};
    let mut best: Option<u32> = None;
    let mut links = h.link().get().execute();
    while let Ok(Some(l)) = links.try_next().await {
        let mut name = None;
        let mut mtu = None;
        let mut up = false;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                LinkAttribute::OperState(s) => up = matches!(s, State::Up | State::Unknown),
                _ => {}
            }
        }
        if let (Some(n), Some(m), true) = (name, mtu, up)
            && mtu_iface(&n)
        {
            best = Some(best.map_or(m, |b| b.min(m)));
        }
    }
    best.unwrap_or(1460)
}

/// The host's interfaces (not workload ones, not kube-proxy's IPVS dummy, as Felix's
/// interface monitor) with every local address on each, for host endpoints matched by
/// `expectedIPs`.
pub async fn host_addresses(
    h: &rtnetlink::Handle,
    workload_prefixes: &[String],
) -> Result<HashMap<String, HashSet<IpAddr>>, rtnetlink::Error> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut links = h.link().get().execute();
    while let Some(l) = links.try_next().await? {
        let name = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(n) = name
            && n != "kube-ipvs0"
            && !workload_prefixes.iter().any(|p| n.starts_with(p.as_str()))
        {
            names.insert(l.header.index, n);
        }
    }
    let mut out: HashMap<String, HashSet<IpAddr>> = names
        .values()
        .map(|n| (n.clone(), HashSet::new()))
        .collect();
    let mut addrs = h.address().get().execute();
    while let Some(a) = addrs.try_next().await? {
        let Some(name) = names.get(&a.header.index) else {
            continue;
        };
        for attr in &a.attributes {
            if let AddressAttribute::Local(ip) | AddressAttribute::Address(ip) = attr
                && let Some(set) = out.get_mut(name)
            {
                set.insert(*ip);
            }
        }
    }
    Ok(out)
}
