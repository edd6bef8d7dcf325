//! `calicoctl ipam check`: Calico's IPAM audit (`commands/ipam/check.go`), with its progress
//! lines and its JSON report (`-o FILE`), which `ipam release --from-report` consumes.
//!
//! An allocation is in use when a workload endpoint, a node's tunnel address or (not checked
//! here: there is no Kubernetes API with an etcd datastore) a load balancer service holds its
//! address; anything else is reported as leaked. The IPAM library's structural checks
//! (duplicates, orphaned affinities, corrupt blocks) are reported as well.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use calico_api::resource::{ClusterInformation, IpPool, Node, WorkloadEndpoint};
use calico_datastore::{DatastoreError, Key, KeyPrefix, ResourceClient};
use calico_ipam::Ipam;
use calico_ipam::block::{
    ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TIMESTAMP, ATTR_TYPE, AllocationAttribute,
    AllocationBlock, WINDOWS_RESERVED_HANDLE,
};
use calico_ipam::check::ProblemKind;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The attribute the load balancer controller records a service under.
const ATTR_SERVICE: &str = "service";

/// Calico's machine-readable report (`check.go: Report`), field for field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The calicoctl version that produced it.
    pub version: String,
    #[serde(rename = "clusterGUID")]
    pub cluster_guid: String,
    #[serde(rename = "datastoreLocked")]
    pub datastore_locked: bool,
    #[serde(rename = "clusterInformationRevision")]
    pub cluster_info_revision: String,
    #[serde(rename = "clusterType")]
    pub cluster_type: String,
    /// Every allocation, by address.
    #[serde(deserialize_with = "null_is_default", default)]
    pub allocations: BTreeMap<String, Vec<Allocation>>,
    #[serde(
        rename = "leakedHandles",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_is_default"
    )]
    pub leaked_handles: Vec<HandleInfo>,
}

/// One allocation (`check.go: Allocation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handle: String,
    #[serde(
        rename = "sequenceNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sequence_number: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    #[serde(
        rename = "creationTimestamp",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub creation_timestamp: String,
    /// False: nothing uses the address, it leaked.
    #[serde(rename = "inUse", default)]
    pub in_use: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed: bool,
    /// Who uses it (`null` when nobody, as Go writes a nil slice).
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

/// A handle that no allocation refers to (`check.go: HandleInfo`; Go's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "UID", default)]
    pub uid: Option<String>,
    /// The handle's datastore revision when the report was made.
    #[serde(rename = "Revision")]
    pub revision: String,
}

fn null_is_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `--show-all-ips` / `--show-problem-ips`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub show_all_ips: bool,
    pub show_problem_ips: bool,
}

/// What a check printed, its report and how many problems it found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub text: String,
    pub report: Report,
    pub problems: usize,
}

/// Who uses an address.
#[derive(Debug, Default)]
struct Checker {
    opts: Options,
    allocations: BTreeMap<String, Vec<Allocation>>,
    /// The attribute text of each allocation, for `--show-*-ips`.
    attr_text: BTreeMap<String, Vec<String>>,
    by_node: BTreeMap<String, usize>,
    in_use: BTreeMap<String, Vec<String>>,
    in_use_handles: BTreeSet<String>,
    out: String,
}

impl Checker {
    fn line(&mut self, s: impl AsRef<str>) {
        self.out.push_str(s.as_ref());
        self.out.push('\n');
    }

    fn record_allocation(&mut self, b: &AllocationBlock, ip: IpAddr, attrs: &AllocationAttribute) {
        let ip_s = ip.to_string();
        let mut alloc = Allocation {
            ip: ip_s.clone(),
            ..Allocation::default()
        };
        let block_host = b
            .affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
            .unwrap_or_default()
            .to_string();
        let mut node = block_host.clone();
        if attrs.handle() == Some(WINDOWS_RESERVED_HANDLE) {
            self.record_in_use(&ip_s, "Reserved for Windows".into());
        } else if let Some(h) = attrs.handle() {
            alloc.handle = h.to_string();
            self.in_use_handles.insert(h.to_string());
        }
        let attr = |k: &str| attrs.owner(k).unwrap_or_default().to_string();
        if !attr(ATTR_NODE).is_empty() {
            node = attr(ATTR_NODE);
        }
        alloc.pod = attr(ATTR_POD);
        alloc.namespace = attr(ATTR_NAMESPACE);
        alloc.type_ = attr(ATTR_TYPE);
        alloc.creation_timestamp = attr(ATTR_TIMESTAMP);
        alloc.sequence_number = b.ordinal(ip).map(|o| b.sequence_number_for(o));
        alloc.borrowed = node != block_host;
        alloc.node = node.clone();
        let text = format_attrs(attrs);
        if self.opts.show_all_ips {
            self.line(format!("  {ip_s} allocated; attrs {text}"));
        }
        // An address already claimed (Windows' reservation) is in use from the start.
        if let Some(owners) = self.in_use.get(&ip_s) {
            alloc.in_use = true;
            alloc.owners = Some(owners.clone());
        }
        self.allocations
            .entry(ip_s.clone())
            .or_default()
            .push(alloc);
        self.attr_text.entry(ip_s).or_default().push(text);
        *self.by_node.entry(node).or_default() += 1;
    }

    fn record_in_use(&mut self, ip: &str, friendly: String) {
        if self.opts.show_all_ips {
            self.line(format!("  {ip} belongs to {friendly}"));
        }
        self.in_use
            .entry(ip.to_string())
            .or_default()
            .push(friendly.clone());
        for a in self.allocations.get_mut(ip).into_iter().flatten() {
            a.in_use = true;
            a.owners.get_or_insert_with(Vec::new).push(friendly.clone());
        }
    }
}

/// `Main:<handle> Extra:k=v,... [Alternate:k=v,...]`, as Calico prints an allocation.
fn format_attrs(a: &AllocationAttribute) -> String {
    let kvs = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = format!(
        "Main:{} Extra:{}",
        a.handle().unwrap_or("<none>"),
        kvs(&a.active_owner_attrs)
    );
    if a.alternate_owner_attrs
        .as_ref()
        .is_some_and(|m| !m.is_empty())
    {
        let _ = write!(s, " Alternate:{}", kvs(&a.alternate_owner_attrs));
    }
    s
}

/// An address written as an address or a CIDR, as Calico normalises it.
fn normalise_ip(addr: &str) -> Option<String> {
    let ip = addr.split('/').next().unwrap_or(addr);
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// Every stored block, decoded; undecodable ones are left to the library's structural check.
pub(crate) async fn blocks(rc: &ResourceClient) -> Result<Vec<AllocationBlock>> {
    let list = rc
        .datastore()
        .list(&KeyPrefix::Blocks { ip_version: None })
        .await
        .context("failed to list IPAM blocks")?;
    Ok(list
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<AllocationBlock>(&kv.value).ok())
        .collect())
}

/// Runs the check, as `calicoctl ipam check` prints it.
pub async fn check(rc: &ResourceClient, opts: Options, version: &str) -> Result<Checked> {
    let mut c = Checker {
        opts,
        ..Checker::default()
    };
    c.line("Checking IPAM for inconsistencies...");
    c.line("");
    let mut report = Report {
        version: version.to_string(),
        ..Report::default()
    };
    match rc.get::<ClusterInformation>(None, "default").await {
        Ok(ci) => {
            report.cluster_type = ci.spec.cluster_type.clone();
            report.cluster_info_revision = ci.metadata.resource_version.clone();
            report.datastore_locked = !ci.spec.is_ready();
            report.cluster_guid = ci.spec.cluster_guid.clone();
        }
        // Calico's components create it; calico-rs ones may not have. The check still runs.
        Err(DatastoreError::NotFound { .. }) => c.line(
            "No ClusterInformation in the datastore: a report made now cannot be used by \
             'ipam release --from-report' (run 'calicoctl datastore migrate lock' first).",
        ),
        Err(e) => bail!("{e}"),
    }

    c.line("Loading all IPAM blocks...");
    let blocks = blocks(rc).await?;
    c.line(format!("Found {} IPAM blocks.", blocks.len()));
    let mut num_allocs = 0;
    for b in &blocks {
        c.line(format!(
            " IPAM block {} affinity={}:",
            b.cidr,
            b.affinity.as_deref().unwrap_or("<none>")
        ));
        for (ip, attrs) in b.allocated() {
            num_allocs += 1;
            c.record_allocation(b, ip, attrs);
        }
    }
    c.line(format!("IPAM blocks record {num_allocs} allocations."));
    c.line("");

    c.line("Loading all IPAM pools...");
    let mut active: Vec<IpNet> = Vec::new();
    for p in rc
        .list::<IpPool>(None)
        .await
        .context("failed to load IP pools")?
        .items
    {
        if p.spec.disabled {
            continue;
        }
        c.line(format!("  {}", p.spec.cidr));
        let net = p.spec.network().with_context(|| {
            format!(
                "failed to parse IP pool CIDR: {} (pool {})",
                p.spec.cidr, p.metadata.name
            )
        })?;
        active.push(net);
    }
    c.line(format!("Found {} active IP pools.", active.len()));
    c.line("");

    c.line("Loading all nodes.");
    let mut node_ips = 0;
    for n in rc
        .list::<Node>(None)
        .await
        .context("failed to list nodes")?
        .items
    {
        let mut addrs: Vec<(&str, &str)> = Vec::new();
        if !n.spec.ipv4_vxlan_tunnel_addr.is_empty() {
            addrs.push(("IPv4VXLANTunnelAddr", &n.spec.ipv4_vxlan_tunnel_addr));
        }
        if let Some(w) = &n.spec.wireguard
            && !w.interface_ipv4_address.is_empty()
        {
            addrs.push(("Wireguard.InterfaceIPv4Address", &w.interface_ipv4_address));
        }
        if let Some(b) = &n.spec.bgp
            && !b.ipv4_ipip_tunnel_addr.is_empty()
        {
            addrs.push(("IPv4IPIPTunnelAddr", &b.ipv4_ipip_tunnel_addr));
        }
        for (field, a) in addrs {
            let ip = normalise_ip(a).with_context(|| {
                format!("failed to parse {field} ({a}) of node {}", n.metadata.name)
            })?;
            c.record_in_use(&ip, format!("Node({})", n.metadata.name));
            node_ips += 1;
        }
    }
    c.line(format!("Found {node_ips} node tunnel IPs."));
    c.line("");

    c.line("Loading all service load balancer IPs.");
    // Calico lists LoadBalancer services through the Kubernetes API. There is none with an
    // etcd datastore, so addresses the load balancer controller recorded are counted as in
    // use rather than reported as leaked.
    let lb: Vec<(String, String)> = blocks
        .iter()
        .flat_map(|b| b.allocated())
        .filter_map(|(ip, a)| {
            a.owner(ATTR_SERVICE).map(|svc| {
                let ns = a.owner(ATTR_NAMESPACE).unwrap_or_default();
                (ip.to_string(), format!("Service({ns}/{svc})"))
            })
        })
        .collect();
    for (ip, who) in &lb {
        c.record_in_use(ip, who.clone());
    }
    c.line(format!(
        "No Kubernetes API with this datastore: {} load balancer IP(s) counted as in use.",
        lb.len()
    ));
    c.line("");

    c.line("Loading all workload endpoints.");
    let mut wep_ips = 0;
    for w in rc
        .list::<WorkloadEndpoint>(None)
        .await
        .context("failed to list workload endpoints")?
        .items
    {
        let ns = w.metadata.namespace.clone().unwrap_or_default();
        for a in &w.spec.ip_networks {
            let ip = normalise_ip(a).with_context(|| {
                format!(
                    "failed to parse IP ({a}) of workload {ns}/{}",
                    w.metadata.name
                )
            })?;
            c.record_in_use(&ip, format!("Workload({ns}/{})", w.metadata.name));
            wep_ips += 1;
        }
    }
    c.line(format!("Found {wep_ips} workload IPs."));
    c.line(format!(
        "Workloads and nodes are using {} IPs.",
        c.in_use.len()
    ));
    c.line("");

    c.line("Loading all handles");
    let mut handles: BTreeMap<String, HandleInfo> = BTreeMap::new();
    for kv in rc
        .datastore()
        .list(&KeyPrefix::Handles)
        .await
        .context("failed to list handles")?
        .items
    {
        if let Key::Handle { id } = &kv.key {
            handles.insert(
                id.clone(),
                HandleInfo {
                    id: id.clone(),
                    uid: None,
                    revision: kv.revision.to_string(),
                },
            );
        }
    }

    const NODES_TO_PRINT: usize = 20;
    c.line(format!(
        "Looking for top (up to {NODES_TO_PRINT}) nodes by allocations..."
    ));
    let mut nodes: Vec<(String, usize)> = c.by_node.iter().map(|(n, k)| (n.clone(), *k)).collect();
    nodes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (n, k) in nodes.iter().take(NODES_TO_PRINT) {
        c.line(format!("  {n} has {k} allocations"));
    }
    if let Some((_, max)) = nodes.first() {
        let median = nodes[nodes.len() / 2].1;
        c.line(format!(
            "Node with most allocations has {max}; median is {median}"
        ));
    }
    c.line("");

    let mut problems = 0;
    c.line("Scanning for IPs that are allocated but not actually in use...");
    let leaked: Vec<String> = c
        .allocations
        .keys()
        .filter(|ip| !c.in_use.contains_key(*ip))
        .cloned()
        .collect();
    if opts.show_problem_ips || opts.show_all_ips {
        for ip in &leaked {
            for t in c.attr_text.get(ip).cloned().unwrap_or_default() {
                c.line(format!("  {ip} leaked; attrs {t}"));
            }
        }
    }
    problems += leaked.len();
    c.line(format!(
        "Found {} IPs that are allocated in IPAM but not actually in use.",
        leaked.len()
    ));

    c.line("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...");
    let show_problems = opts.show_problem_ips || opts.show_all_ips;
    let (mut outside, mut unallocated) = (0, 0);
    for (ip, owners) in c.in_use.clone() {
        if show_problems && owners.len() > 1 {
            c.line(format!("  {ip} has multiple owners."));
        }
        if c.allocations.contains_key(&ip) {
            continue;
        }
        let in_pool = ip
            .parse::<IpAddr>()
            .is_ok_and(|a| active.iter().any(|p| p.contains(&a)));
        for o in &owners {
            if !show_problems {
                break;
            }
            if in_pool {
                c.line(format!(
                    "  {ip} in use by {o} and in active IPAM pool but has no IPAM allocation."
                ));
            } else {
                c.line(format!(
                    "  {ip} in use by {o} is not in any active IP pool."
                ));
            }
        }
        if in_pool {
            unallocated += 1;
        } else {
            outside += 1;
        }
    }
    problems += outside + unallocated;
    c.line(format!(
        "Found {outside} in-use IPs that are not in active IP pools."
    ));
    c.line(format!("Found {unallocated} in-use IPs that are in active IP pools but have no corresponding IPAM allocation."));
    c.line("");

    c.line("Scanning for IPAM handles with no matching IPs...");
    let mut leaked_handles = Vec::new();
    let mut good = 0;
    for (id, info) in &handles {
        if c.in_use_handles.contains(id) {
            good += 1;
            continue;
        }
        if opts.show_all_ips {
            c.line(format!("  {id} doesn't have any active IPs."));
        }
        leaked_handles.push(info.clone());
    }
    problems += leaked_handles.len();
    c.line(format!(
        "Found {} handles with no matching IPs (and {good} handles with matches).",
        leaked_handles.len()
    ));

    c.line("Scanning for IPs with missing handle...");
    let missing: Vec<String> = c
        .in_use_handles
        .iter()
        .filter(|h| !handles.contains_key(*h))
        .cloned()
        .collect();
    if show_problems {
        for h in &missing {
            c.line(format!("  {h} is in use in a block but doesn't exist."));
        }
    }
    c.line(format!(
        "Found {} handles mentioned in blocks with no matching handle resource.",
        missing.len()
    ));

    // Beyond Calico's check: what the IPAM library finds wrong in the stored structures.
    c.line("Scanning for duplicate IPs, orphaned affinities and corrupt blocks...");
    let structural: Vec<_> = Ipam::new(rc.datastore().clone())
        .check(None)
        .await?
        .problems
        .into_iter()
        .filter(|p| {
            matches!(
                p.kind,
                ProblemKind::Duplicate | ProblemKind::OrphanedAffinity | ProblemKind::CorruptBlock
            )
        })
        .collect();
    if show_problems {
        for p in &structural {
            c.line(format!("  {}", p.detail));
        }
    }
    problems += structural.len();
    c.line(format!(
        "Found {} duplicate IPs, orphaned affinities or corrupt blocks.",
        structural.len()
    ));
    c.line(format!("Check complete; found {problems} problems."));

    report.allocations = std::mem::take(&mut c.allocations);
    report.leaked_handles = leaked_handles;
    Ok(Checked {
        text: c.out,
        report,
        problems,
    })
}

/// The report as Calico writes it (`json.MarshalIndent(r, "", "  ")`).
pub fn report_json(r: &Report) -> Result<String> {
    Ok(serde_json::to_string_pretty(r)?)
}
