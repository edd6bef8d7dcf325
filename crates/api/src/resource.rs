//! The resource catalogue: every kind calico-rs understands, its envelope
//! (`apiVersion`/`kind`/`metadata`/`spec`/`status`), and [`AnyResource`] for code that handles
//! kinds it only learns at run time (calicoctl, the datastore, typha).
//!
//! Each kind's spec, defaults and validation live in `kinds/`; this module only wires them into
//! one uniform shape.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kinds::*;
use crate::meta::ObjectMeta;
use crate::validation::{Errors, Path, ValidationError};

/// `projectcalico.org/v3`.
pub const API_VERSION: &str = "projectcalico.org/v3";
/// `networking.k8s.io/v1`, for Kubernetes NetworkPolicy.
pub const K8S_NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";

/// Static facts about a kind.
#[derive(Debug)]
pub struct KindInfo {
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub api_version: &'static str,
    /// The plural used in etcd keys and REST paths (`ippools`).
    pub plural: &'static str,
    pub namespaced: bool,
    /// Lower-case names calicoctl accepts for the kind, besides the kind itself.
    pub short_names: &'static [&'static str],
}

/// A typed resource of one kind.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Default + Send + Sync + 'static
{
    const KIND: Kind;

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn into_any(self) -> AnyResource;
    /// Returns the resource back when it is of another kind.
    fn from_any(any: AnyResource) -> Result<Self, Box<AnyResource>>;
    /// Fills in Calico's defaults, as Calico's client does before writing.
    fn apply_defaults(&mut self);
    /// Checks every rule Calico enforces on this kind.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Per-kind rules, implemented next to each spec in `kinds/`.
pub(crate) trait KindRules {
    /// Defaults beyond the common ones (metadata is already normalised).
    fn defaults(&mut self) {}
    /// Checks beyond the common metadata checks.
    fn check(&self, errs: &mut Errors);
    /// The name rule for this kind; most kinds use a DNS subdomain.
    fn check_name(name: &str) -> Result<(), String> {
        crate::validation::check_subdomain_name(name)
    }
}

/// A kind with no `status` section. Reading `status: {}` is tolerated; anything inside is an
/// unknown field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoStatus {}

fn check_common<R: Resource + KindRules>(r: &R) -> Result<(), ValidationError> {
    let info = R::KIND.info();
    let meta = r.metadata();
    let mut errs = Errors::new();
    let m = Path::root("metadata");
    errs.check(m.field("name"), R::check_name(&meta.name));
    if info.namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => errs.add(
                m.field("namespace"),
                format!("{} is namespaced: set metadata.namespace (calicoctl uses \"default\" when none is given)", info.kind),
            ),
            Some(ns) => errs.check(m.field("namespace"), crate::validation::check_label_name(ns)),
        }
    }
    crate::validation::check_labels(&mut errs, &m.field("labels"), &meta.labels);
    crate::validation::check_annotations(&mut errs, &m.field("annotations"), &meta.annotations);
    r.check(&mut errs);
    errs.finish(info.kind, meta)
}

fn default_common<R: Resource>(r: &mut R) {
    let info = R::KIND.info();
    let meta = r.metadata_mut();
    if !info.namespaced {
        // Cluster-scoped objects have no namespace, whatever the document said.
        meta.namespace = None;
    }
}

fn serialize_envelope<S: Serializer, Sp: Serialize, St: Serialize>(
    s: S,
    info: &KindInfo,
    metadata: &ObjectMeta,
    spec: &Sp,
    status: Option<&St>,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(None)?;
    m.serialize_entry("apiVersion", info.api_version)?;
    m.serialize_entry("kind", info.kind)?;
    m.serialize_entry("metadata", metadata)?;
    m.serialize_entry("spec", spec)?;
    if let Some(st) = status {
        m.serialize_entry("status", st)?;
    }
    m.end()
}

fn check_type_meta<E: serde::de::Error>(
    info: &KindInfo,
    api_version: Option<&str>,
    kind: Option<&str>,
) -> Result<(), E> {
    if let Some(k) = kind
        && k != info.kind
    {
        return Err(E::custom(format!(
            "kind is {k:?}, expected {:?}",
            info.kind
        )));
    }
    if let Some(a) = api_version
        && a != info.api_version
    {
        return Err(E::custom(format!(
            "apiVersion is {a:?}, expected {:?}",
            info.api_version
        )));
    }
    Ok(())
}

macro_rules! define_kinds {
    ( $(
        $(#[$attr:meta])*
        $name:ident {
            kind: $kind:literal,
            api_version: $api:expr,
            plural: $plural:literal,
            namespaced: $ns:literal,
            short_names: [$($short:literal),* $(,)?],
            spec: $spec:ty,
            status: $status:ty $(,)?
        }
    )* ) => {
        $(
            $(#[$attr])*
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $name {
                pub metadata: ObjectMeta,
                pub spec: $spec,
                pub status: Option<$status>,
            }

            impl $name {
                /// A new object with this metadata and spec.
                pub fn new(metadata: ObjectMeta, spec: $spec) -> Self {
                    $name { metadata, spec, status: None }
                }
            }

            impl Serialize for $name {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    serialize_envelope(s, Kind::$name.info(), &self.metadata, &self.spec, self.status.as_ref())
                }
            }

            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    #[derive(Deserialize)]
                    struct Wire {
                        #[serde(rename = "apiVersion", default)]
                        api_version: Option<String>,
                        #[serde(default)]
                        kind: Option<String>,
                        #[serde(default)]
                        metadata: ObjectMeta,
                        #[serde(default)]
                        spec: $spec,
                        #[serde(default)]
                        status: Option<$status>,
                    }
                    let w = Wire::deserialize(d)?;
                    check_type_meta::<D::Error>(Kind::$name.info(), w.api_version.as_deref(), w.kind.as_deref())?;
                    Ok($name { metadata: w.metadata, spec: w.spec, status: w.status })
                }
            }

            impl Resource for $name {
                const KIND: Kind = Kind::$name;
                fn metadata(&self) -> &ObjectMeta { &self.metadata }
                fn metadata_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
                fn into_any(self) -> AnyResource { AnyResource::$name(Box::new(self)) }
                fn from_any(any: AnyResource) -> Result<Self, Box<AnyResource>> {
                    match any {
                        AnyResource::$name(r) => Ok(*r),
                        other => Err(Box::new(other)),
                    }
                }
                fn apply_defaults(&mut self) {
                    default_common(self);
                    KindRules::defaults(self);
                }
                fn validate(&self) -> Result<(), ValidationError> {
                    check_common(self)
                }
            }
        )*

        /// Every kind calico-rs reads and writes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind { $($name),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$name),*];

            pub fn info(self) -> &'static KindInfo {
                match self {
                    $(Kind::$name => {
                        static INFO: KindInfo = KindInfo {
                            kind: $kind,
                            list_kind: concat!($kind, "List"),
                            api_version: $api,
                            plural: $plural,
                            namespaced: $ns,
                            short_names: &[$($short),*],
                        };
                        &INFO
                    }),*
                }
            }
        }

        /// One resource of any kind. Variants are boxed so that collections of resources of
        /// mixed kinds cost a pointer each, not the size of the largest kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyResource { $($name(Box<$name>)),* }

        impl AnyResource {
            pub fn kind(&self) -> Kind {
                match self { $(AnyResource::$name(_) => Kind::$name),* }
            }
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(AnyResource::$name(r) => &r.metadata),* }
            }
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(AnyResource::$name(r) => &mut r.metadata),* }
            }
            pub fn apply_defaults(&mut self) {
                match self { $(AnyResource::$name(r) => r.apply_defaults()),* }
            }
            pub fn validate(&self) -> Result<(), ValidationError> {
                match self { $(AnyResource::$name(r) => r.validate()),* }
            }
            /// The object as JSON, exactly as it is written to YAML/JSON output and etcd.
            pub fn to_json(&self) -> serde_json::Value {
                let v = match self { $(AnyResource::$name(r) => serde_json::to_value(r)),* };
                // Serialising these types cannot fail: all map keys are strings.
                v.unwrap_or(serde_json::Value::Null)
            }
            /// Deserialises one object of a known kind from any deserializer.
            pub(crate) fn deserialize_kind<'de, D: Deserializer<'de>>(
                kind: Kind,
                d: D,
            ) -> Result<AnyResource, D::Error> {
                match kind {
                    $(Kind::$name => $name::deserialize(d).map(|r| AnyResource::$name(Box::new(r)))),*
                }
            }
        }

        impl Serialize for AnyResource {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $(AnyResource::$name(r) => r.serialize(s)),* }
            }
        }
    };
}

define_kinds! {
    /// An IP pool: a CIDR that IPAM allocates pod addresses from.
    IpPool {
        kind: "IPPool", api_version: API_VERSION, plural: "ippools", namespaced: false,
        short_names: ["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
        spec: IpPoolSpec, status: IpPoolStatus,
    }
    /// Addresses IPAM must never hand out.
    IpReservation {
        kind: "IPReservation", api_version: API_VERSION, plural: "ipreservations", namespaced: false,
        short_names: ["ipreservation", "ipreservations", "reservation", "reservations"],
        spec: IpReservationSpec, status: NoStatus,
    }
    /// Cluster-wide IPAM settings (only `default`).
    IpamConfiguration {
        kind: "IPAMConfiguration", api_version: API_VERSION, plural: "ipamconfigurations", namespaced: false,
        short_names: ["ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"],
        spec: IpamConfigurationSpec, status: NoStatus,
    }
    /// BGP settings, global (`default`) or per node (`node.<name>`).
    BgpConfiguration {
        kind: "BGPConfiguration", api_version: API_VERSION, plural: "bgpconfigurations", namespaced: false,
        short_names: ["bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"],
        spec: BgpConfigurationSpec, status: NoStatus,
    }
    /// An explicit BGP peering.
    BgpPeer {
        kind: "BGPPeer", api_version: API_VERSION, plural: "bgppeers", namespaced: false,
        short_names: ["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
        spec: BgpPeerSpec, status: NoStatus,
    }
    /// Import/export filters referenced by BGPPeers.
    BgpFilter {
        kind: "BGPFilter", api_version: API_VERSION, plural: "bgpfilters", namespaced: false,
        short_names: ["bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs"],
        spec: BgpFilterSpec, status: NoStatus,
    }
    /// A Calico node: its BGP identity and addresses.
    Node {
        kind: "Node", api_version: API_VERSION, plural: "nodes", namespaced: false,
        short_names: ["node", "nodes", "no", "nos"],
        spec: NodeSpec, status: NodeStatus,
    }
    /// A request for a node to report its BGP daemon, sessions and routes, and the report.
    CalicoNodeStatus {
        kind: "CalicoNodeStatus", api_version: API_VERSION, plural: "caliconodestatuses", namespaced: false,
        short_names: ["caliconodestatus", "caliconodestatuses", "nodestatus", "nodestatuses"],
        spec: CalicoNodeStatusSpec, status: CalicoNodeStatusStatus,
    }
    /// Felix settings, global (`default`) or per node (`node.<name>`).
    FelixConfiguration {
        kind: "FelixConfiguration", api_version: API_VERSION, plural: "felixconfigurations", namespaced: false,
        short_names: ["felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"],
        spec: Box<FelixConfigurationSpec>, status: NoStatus,
    }
    /// calico-kube-controllers settings (only `default`).
    KubeControllersConfiguration {
        kind: "KubeControllersConfiguration", api_version: API_VERSION, plural: "kubecontrollersconfigurations", namespaced: false,
        short_names: ["kubecontrollersconfiguration", "kubecontrollersconfigurations", "kubecontrollersconfig", "kubecontrollersconfigs"],
        spec: KubeControllersConfigurationSpec, status: KubeControllersConfigurationStatus,
    }
    /// Cluster identity and the datastore lock (only `default`).
    ClusterInformation {
        kind: "ClusterInformation", api_version: API_VERSION, plural: "clusterinformations", namespaced: false,
        short_names: ["clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"],
        spec: ClusterInformationSpec, status: NoStatus,
    }
    /// An ordered group of policies with a default action.
    Tier {
        kind: "Tier", api_version: API_VERSION, plural: "tiers", namespaced: false,
        short_names: ["tier", "tiers"],
        spec: TierSpec, status: TierStatus,
    }
    /// A namespaced Calico policy.
    NetworkPolicy {
        kind: "NetworkPolicy", api_version: API_VERSION, plural: "networkpolicies", namespaced: true,
        short_names: ["networkpolicy", "networkpolicies", "policy", "policies", "pol", "pols", "np", "nps"],
        spec: NetworkPolicySpec, status: NoStatus,
    }
    /// A cluster-wide Calico policy.
    GlobalNetworkPolicy {
        kind: "GlobalNetworkPolicy", api_version: API_VERSION, plural: "globalnetworkpolicies", namespaced: false,
        short_names: ["globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"],
        spec: GlobalNetworkPolicySpec, status: NoStatus,
    }
    /// A preview of a change to a NetworkPolicy; never enforced.
    StagedNetworkPolicy {
        kind: "StagedNetworkPolicy", api_version: API_VERSION, plural: "stagednetworkpolicies", namespaced: true,
        short_names: ["stagednetworkpolicy", "stagednetworkpolicies", "stagedpolicy", "stagedpolicies", "snp", "spol", "spols"],
        spec: StagedNetworkPolicySpec, status: NoStatus,
    }
    /// A preview of a change to a GlobalNetworkPolicy; never enforced.
    StagedGlobalNetworkPolicy {
        kind: "StagedGlobalNetworkPolicy", api_version: API_VERSION, plural: "stagedglobalnetworkpolicies", namespaced: false,
        short_names: ["stagedglobalnetworkpolicy", "stagedglobalnetworkpolicies", "sgnp", "sgnps"],
        spec: StagedGlobalNetworkPolicySpec, status: NoStatus,
    }
    /// A preview of a change to a Kubernetes NetworkPolicy; never enforced.
    StagedKubernetesNetworkPolicy {
        kind: "StagedKubernetesNetworkPolicy", api_version: API_VERSION, plural: "stagedkubernetesnetworkpolicies", namespaced: true,
        short_names: ["stagedkubernetesnetworkpolicy", "stagedkubernetesnetworkpolicies", "stagedkubernetespolicy", "stagedkubernetespolicies", "sknp", "skpol", "skpols"],
        spec: StagedKubernetesNetworkPolicySpec, status: NoStatus,
    }
    /// Named, labelled CIDRs in one namespace.
    NetworkSet {
        kind: "NetworkSet", api_version: API_VERSION, plural: "networksets", namespaced: true,
        short_names: ["networkset", "networksets", "netset", "netsets"],
        spec: NetworkSetSpec, status: NoStatus,
    }
    /// Named, labelled CIDRs for the whole cluster.
    GlobalNetworkSet {
        kind: "GlobalNetworkSet", api_version: API_VERSION, plural: "globalnetworksets", namespaced: false,
        short_names: ["globalnetworkset", "globalnetworksets", "gnetset", "gnetsets"],
        spec: GlobalNetworkSetSpec, status: NoStatus,
    }
    /// A host interface (or the whole host) that policy applies to.
    HostEndpoint {
        kind: "HostEndpoint", api_version: API_VERSION, plural: "hostendpoints", namespaced: false,
        short_names: ["hostendpoint", "hostendpoints", "hep", "heps"],
        spec: HostEndpointSpec, status: NoStatus,
    }
    /// A pod's (or container's) network interface.
    WorkloadEndpoint {
        kind: "WorkloadEndpoint", api_version: API_VERSION, plural: "workloadendpoints", namespaced: true,
        short_names: ["workloadendpoint", "workloadendpoints", "wep", "weps"],
        spec: WorkloadEndpointSpec, status: NoStatus,
    }
    /// Rules and labels shared by the endpoints that list the profile.
    Profile {
        kind: "Profile", api_version: API_VERSION, plural: "profiles", namespaced: false,
        short_names: ["profile", "profiles", "pro", "pros"],
        spec: ProfileSpec, status: NoStatus,
    }
    /// A Kubernetes `networking.k8s.io/v1` NetworkPolicy, as Kubernetes defines it.
    K8sNetworkPolicy {
        kind: "NetworkPolicy", api_version: K8S_NETWORKING_API_VERSION, plural: "networkpolicies", namespaced: true,
        short_names: [],
        spec: K8sNetworkPolicySpec, status: NoStatus,
    }
}

impl Kind {
    /// Finds a kind from a document's `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.info().kind == kind && k.info().api_version == api_version)
    }

    /// Finds a Calico kind from a name an operator typed (`ippool`, `IPPools`, `gnp`, ...).
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.iter().copied().find(|k| {
            let info = k.info();
            info.api_version == API_VERSION
                && (info.kind.eq_ignore_ascii_case(&lower)
                    || info.short_names.iter().any(|s| *s == lower))
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().kind)
    }
}
