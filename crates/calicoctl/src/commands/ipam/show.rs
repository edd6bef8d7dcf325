//! `calicoctl ipam show`: usage per pool (and block), one address, borrowed addresses, or
//! the IPAM configuration, printed as Calico's `commands/ipam/show.go` prints them.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::Result;
use calico_datastore::ResourceClient;
use calico_ipam::Ipam;
use calico_ipam::block::{ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TYPE};

use crate::printer::{boxed, boxed_right};

/// The attribute KubeVirt allocations carry (`model.IPAMBlockAttributeVMIName`).
const ATTR_VMI_NAME: &str = "vmi-name";

/// The usage table: one row per pool, and with `blocks` each of its blocks, as Calico's
/// `ShowBlockUtilization` prints it. IN USE counts allocated addresses, RESERVED those an
/// IPReservation covers (allocated or not: the two may overlap), FREE those that are
/// neither. A pool's RESERVED and FREE cover its whole CIDR, space no block has been carved
/// from included (Calico's `countPoolSpace`).
pub async fn usage(ipam: &Ipam, blocks: bool) -> Result<String> {
    let usage = ipam.usage().await?;
    let mut rows = Vec::new();
    for p in &usage.pools {
        rows.push(row(
            "IP Pool",
            &p.cidr.to_string(),
            Counts {
                capacity: p.capacity,
                in_use: p.in_use,
                reserved: p.reserved,
                free: p.available,
            },
        ));
        if blocks {
            for b in usage.blocks.iter().filter(|b| b.pool == p.name) {
                rows.push(row(
                    "Block",
                    &b.cidr.to_string(),
                    Counts {
                        capacity: b.capacity,
                        in_use: b.in_use,
                        reserved: b.reserved,
                        free: b.available,
                    },
                ));
            }
        }
    }
    Ok(boxed_right(&USAGE_HEADINGS, &rows, &[2, 3, 4, 5]))
}

pub(super) const USAGE_HEADINGS: [&str; 6] = [
    "GROUPING",
    "CIDR",
    "IPS TOTAL",
    "IPS IN USE",
    "IPS RESERVED",
    "IPS FREE",
];

/// The numbers of one usage row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counts {
    pub capacity: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub free: u128,
}

pub(super) fn row(kind: &str, cidr: &str, c: Counts) -> Vec<String> {
    // Calico: fmt.Sprintf("%.5g (%.f%%)", n, 100*n/capacity).
    let with_pct = |n: u128| {
        let pct = if c.capacity == 0 {
            0.0
        } else {
            100.0 * n as f64 / c.capacity as f64
        };
        format!("{} ({pct:.0}%)", g5(n as f64))
    };
    vec![
        kind.to_string(),
        cidr.to_string(),
        g5(c.capacity as f64),
        with_pct(c.in_use),
        with_pct(c.reserved),
        with_pct(c.free),
    ]
}

/// Go's `%.5g`, as `ipam show` prints counts.
pub(super) fn g5(f: f64) -> String {
    crate::printer::go_g(f, Some(5))
}

/// `--ip=<IP>`: whether the address is allocated, and to whom.
pub async fn ip(rc: &ResourceClient, ip: IpAddr) -> Result<String> {
    let blocks = super::check::blocks(rc).await?;
    let attrs = blocks
        .iter()
        .find(|b| b.cidr.contains(&ip))
        .and_then(|b| b.attributes_for(ip));
    let Some(a) = attrs else {
        return Ok(format!("{ip} is not assigned\n"));
    };
    let mut s = format!("IP {ip} is in use\n");
    let _ = writeln!(s, "Handle ID: {}", a.handle().unwrap_or("<none>"));
    match owner_attrs("Active Owner Attributes", a.active_owner_attrs.as_ref()) {
        Some(t) => s.push_str(&t),
        None => s.push_str("No Active Owner attributes defined\n"),
    }
    if let Some(t) = owner_attrs(
        "Alternate Owner Attributes",
        a.alternate_owner_attrs.as_ref(),
    ) {
        s.push_str(&t);
    }
    Ok(s)
}

fn owner_attrs(
    title: &str,
    attrs: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    let attrs = attrs.filter(|m| !m.is_empty())?;
    let mut s = format!("{title}:\n");
    for (k, v) in attrs {
        let _ = writeln!(s, "  {k}: {v}");
    }
    Some(s)
}

/// `--show-borrowed`: addresses a node took from a block affine to another node (or to none).
pub async fn borrowed(rc: &ResourceClient) -> Result<String> {
    let mut rows = Vec::new();
    let mut unclassified = 0;
    for b in super::check::blocks(rc).await? {
        // `host:node-2` → `node-2`, as Calico splits it.
        let owner = b
            .affinity
            .as_deref()
            .map(|a| match a.split(':').collect::<Vec<_>>().as_slice() {
                [_, o] => (*o).to_string(),
                parts => parts.first().copied().unwrap_or_default().to_string(),
            })
            .unwrap_or_default();
        for (ip, a) in b.allocated() {
            let Some(node) = a.owner(ATTR_NODE) else {
                unclassified += 1;
                continue;
            };
            if node == owner {
                continue;
            }
            let ns = a.owner(ATTR_NAMESPACE).unwrap_or_default();
            let (kind, to) = if let Some(vmi) = a.owner(ATTR_VMI_NAME) {
                ("vmi".to_string(), format!("{ns}/{vmi}"))
            } else if let Some(pod) = a.owner(ATTR_POD) {
                ("pod".to_string(), format!("{ns}/{pod}"))
            } else {
                (
                    a.owner(ATTR_TYPE).unwrap_or_default().to_string(),
                    String::new(),
                )
            };
            rows.push(vec![
                ip.to_string(),
                node.to_string(),
                b.cidr.to_string(),
                owner.clone(),
                kind,
                to,
            ]);
        }
    }
    let mut s = boxed(
        &[
            "IP",
            "BORROWING-NODE",
            "BLOCK",
            "BLOCK OWNER",
            "TYPE",
            "ALLOCATED-TO",
        ],
        &rows,
    );
    if unclassified != 0 {
        let _ = writeln!(
            s,
            "\nNote: found {unclassified} IP allocations without an explicit node association. Unable to determine if they are borrowed."
        );
    }
    Ok(s)
}

/// `--show-configuration`: the fields of Calico's `ipam.IPAMConfig`, in its order, as Go's
/// `%#v` prints them.
pub async fn configuration(ipam: &Ipam) -> Result<String> {
    let cfg = ipam
        .config()
        .await
        .map_err(|e| anyhow::anyhow!("error: {e}"))?;
    let persistence = match &cfg.kube_virt_vm_address_persistence {
        None => "(*ipam.VMAddressPersistence)(nil)".to_string(),
        // Go prints the pointer's address here; the value is what an operator wants.
        Some(p) => format!("(*ipam.VMAddressPersistence)({p:?})"),
    };
    let rows = vec![
        vec!["StrictAffinity".into(), cfg.strict_affinity.to_string()],
        vec![
            "AutoAllocateBlocks".into(),
            cfg.auto_allocate_blocks.to_string(),
        ],
        vec![
            "MaxBlocksPerHost".into(),
            cfg.max_blocks_per_host.to_string(),
        ],
        vec!["KubeVirtVMAddressPersistence".into(), persistence],
    ];
    Ok(boxed(&["PROPERTY", "VALUE"], &rows))
}
