//! Each validation rule, broken on purpose: the object is rejected and the message names the
//! field path and says what is wrong.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use calico_api::codec::decode_documents;

/// A document of `kind` with flow-style metadata and spec.
fn doc(kind: &str, meta: &str, spec: &str) -> String {
    let api = if kind == "K8sNetworkPolicy" {
        "networking.k8s.io/v1"
    } else {
        "projectcalico.org/v3"
    };
    let kind = if kind == "K8sNetworkPolicy" {
        "NetworkPolicy"
    } else {
        kind
    };
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {meta}\nspec: {spec}\n")
}

/// Decodes, defaults and validates; returns the validation message.
fn error_of(text: &str) -> String {
    let mut rs = decode_documents(text).unwrap_or_else(|e| panic!("decodes: {e}\n{text}"));
    let mut r = rs.remove(0);
    r.apply_defaults();
    match r.validate() {
        Ok(()) => panic!("should be invalid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const NP: &str = "{name: np, namespace: ns}";

#[rustfmt::skip]
fn cases() -> Vec<(String, &'static str, &'static str)> {
    let pool = |spec: &str| doc("IPPool", "{name: p1}", spec);
    let np = |spec: &str| doc("NetworkPolicy", NP, spec);
    let rule = |r: &str| np(&format!("{{ingress: [{r}]}}"));
    vec![
        // IPPool
        (pool("{ipipMode: Never}"), "spec.cidr", "needs a CIDR"),
        (pool("{cidr: nonsense}"), "spec.cidr", "not a valid CIDR"),
        (pool("{cidr: 10.0.0.1/16}"), "spec.cidr", "not strictly masked"),
        (pool("{cidr: 169.254.0.0/16}"), "spec.cidr", "link-local"),
        (pool("{cidr: 'fe80::/64'}"), "spec.cidr", "link-local"),
        (pool("{cidr: 10.0.0.0/16, blockSize: 19}"), "spec.blockSize", "19 is outside 20..32 for an IPv4 pool"),
        (pool("{cidr: 'fd00::/48', blockSize: 100}"), "spec.blockSize", "outside 116..128 for an IPv6 pool"),
        (pool("{cidr: 10.0.0.0/27}"), "spec.blockSize", "smaller than its block size"),
        (pool("{cidr: 'fd00::/48', ipipMode: Always}"), "spec.ipipMode", "IPIP is not supported on an IPv6 pool"),
        (pool("{cidr: 10.0.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}"), "spec.vxlanMode", "cannot both be enabled"),
        (pool("{cidr: 10.0.0.0/16, nodeSelector: 'a = b'}"), "spec.nodeSelector", "expected =="),
        (pool("{cidr: 10.0.0.0/16, nodeSelector: global()}"), "spec.nodeSelector", "global()"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [LoadBalancer, Workload]}"), "spec.allowedUses", "LoadBalancer cannot be combined"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [LoadBalancer], disableBGPExport: true}"), "spec.disableBGPExport", "must be exported"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [LoadBalancer], nodeSelector: \"x == 'y'\"}"), "spec.nodeSelector", "must select all()"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [LoadBalancer], vxlanMode: Always}"), "spec.allowedUses", "cannot use IPIP or VXLAN"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [Tunnel], namespaceSelector: has(x)}"), "spec.namespaceSelector", "cannot have a namespaceSelector"),
        (pool("{cidr: 10.0.0.0/16, allowedUses: [Workload, Workload]}"), "spec.allowedUses[1]", "listed twice"),
        (doc("IPPool", "{name: My_Pool}", "{cidr: 10.0.0.0/16}"), "metadata.name", "lower case alphanumeric"),
        (doc("IPPool", "{name: p1, labels: {'bad key': x}}", "{cidr: 10.0.0.0/16}"), "metadata.labels[\"bad key\"]", "alphanumerics"),
        (doc("IPPool", "{name: p1, labels: {ok: -bad}}", "{cidr: 10.0.0.0/16}"), "metadata.labels[\"ok\"]", "begin and end with an alphanumeric"),
        // IPReservation
        (doc("IPReservation", "{name: r}", "{reservedCIDRs: [10.0.0.1, banana]}"), "spec.reservedCIDRs[1]", "not a valid CIDR"),
        // IPAMConfiguration
        (doc("IPAMConfiguration", "{name: other}", "{strictAffinity: true, autoAllocateBlocks: true}"), "metadata.name", "must be \"default\""),
        (doc("IPAMConfiguration", "{name: default}", "{strictAffinity: false, autoAllocateBlocks: true, maxBlocksPerHost: 4}"), "spec.maxBlocksPerHost", "requires strictAffinity"),
        (doc("IPAMConfiguration", "{name: default}", "{strictAffinity: false, autoAllocateBlocks: false}"), "spec.autoAllocateBlocks", "requires strictAffinity"),
        (doc("IPAMConfiguration", "{name: default}", "{strictAffinity: true, autoAllocateBlocks: true, maxBlocksPerHost: -1}"), "spec.maxBlocksPerHost", "outside 0..1000000"),
        (doc("IPAMConfiguration", "{name: default}", "{strictAffinity: true, autoAllocateBlocks: true, ipCooldownSeconds: 5000}"), "spec.ipCooldownSeconds", "outside 0..1200"),
        // BGPConfiguration
        (doc("BGPConfiguration", "{name: node.n1}", "{asNumber: 65000}"), "spec.asNumber", "only be set on the global BGPConfiguration"),
        (doc("BGPConfiguration", "{name: node.n1}", "{nodeToNodeMeshEnabled: false}"), "spec.nodeToNodeMeshEnabled", "only be set on the global"),
        (doc("BGPConfiguration", "{name: node.n1}", "{serviceClusterIPs: [{cidr: 10.96.0.0/12}]}"), "spec.serviceClusterIPs", "only be set on the global"),
        (doc("BGPConfiguration", "{name: default}", "{logSeverityScreen: Chatty}"), "spec.logSeverityScreen", "not one of"),
        (doc("BGPConfiguration", "{name: default}", "{communities: [{name: c, value: '70000:1'}], prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [c]}]}"), "spec.communities[0].value", "not a community"),
        (doc("BGPConfiguration", "{name: default}", "{prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [undefined-one]}]}"), "spec.prefixAdvertisements[0].communities[0]", "neither a community value"),
        (doc("BGPConfiguration", "{name: default}", "{communities: [{name: c, value: '1:1'}]}"), "spec.communities", "no prefixAdvertisements"),
        (doc("BGPConfiguration", "{name: default}", "{listenPort: 0}"), "spec.listenPort", "not a valid port"),
        (doc("BGPConfiguration", "{name: default}", "{nodeToNodeMeshEnabled: false, nodeMeshMaxRestartTime: 2m}"), "spec.nodeMeshMaxRestartTime", "nodeToNodeMeshEnabled is false"),
        (doc("BGPConfiguration", "{name: default}", "{ignoredInterfaces: ['iface with space']}"), "spec.ignoredInterfaces[0]", "not a valid interface pattern"),
        (doc("BGPConfiguration", "{name: default}", "{serviceExternalIPs: [{cidr: 10.0.0.1/8}]}"), "spec.serviceExternalIPs[0].cidr", "host bits"),
        // BGPPeer
        (doc("BGPPeer", "{name: p}", "{node: n1, nodeSelector: all(), peerIP: 10.0.0.1, asNumber: 1}"), "spec.nodeSelector", "cannot both be set"),
        (doc("BGPPeer", "{name: p}", "{peerIP: 10.0.0.1, peerSelector: has(rr)}"), "spec.peerSelector", "cannot both be set"),
        (doc("BGPPeer", "{name: p}", "{peerSelector: has(rr), asNumber: 65000}"), "spec.asNumber", "must be empty when peerSelector"),
        (doc("BGPPeer", "{name: p}", "{peerIP: 'not-an-ip', asNumber: 1}"), "spec.peerIP", "not an IP address"),
        (doc("BGPPeer", "{name: p}", "{peerIP: '10.0.0.1:0', asNumber: 1}"), "spec.peerIP", "port 0"),
        (doc("BGPPeer", "{name: p}", "{reachableBy: 10.0.0.254, asNumber: 1}"), "spec.reachableBy", "must be empty when peerIP is empty"),
        (doc("BGPPeer", "{name: p}", "{peerIP: 10.0.0.1, reachableBy: 'fd00::1', asNumber: 1}"), "spec.reachableBy", "same address family"),
        (doc("BGPPeer", "{name: p}", "{peerIP: 10.0.0.1, keepOriginalNextHop: true, nextHopMode: Keep}"), "spec.nextHopMode", "cannot both be set"),
        (doc("BGPPeer", "{name: p}", "{localWorkloadSelector: has(bgp)}"), "spec.asNumber", "required when localWorkloadSelector"),
        (doc("BGPPeer", "{name: p}", "{peerIP: 10.0.0.1, filters: [Bad_Filter]}"), "spec.filters[0]", "lower case"),
        // BGPFilter
        (doc("BGPFilter", "{name: f}", "{exportV4: [{action: Accept, cidr: 10.0.0.0/8}]}"), "spec.exportV4[0].matchOperator", "both be set"),
        (doc("BGPFilter", "{name: f}", "{exportV4: [{action: Accept, prefixLength: {min: 24}}]}"), "spec.exportV4[0].prefixLength", "cidr is required"),
        (doc("BGPFilter", "{name: f}", "{importV4: [{action: Reject, operations: [{setPriority: {value: 5}}]}]}"), "spec.importV4[0].operations", "only be used with action Accept"),
        (doc("BGPFilter", "{name: f}", "{exportV6: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In}]}"), "spec.exportV6[0].cidr", "not an IPv6 network"),
        (doc("BGPFilter", "{name: f}", "{exportV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {max: 40}}]}"), "spec.exportV4[0].prefixLength.max", "outside 0..32"),
        (doc("BGPFilter", "{name: f}", "{importV6: [{action: Accept, interface: 'a/b'}]}"), "spec.importV6[0].interface", "not a valid interface pattern"),
        (doc("BGPFilter", "{name: f}", "{importV4: [{action: Accept, operations: [{addCommunity: {value: '1:1'}, setPriority: {value: 3}}]}]}"), "spec.importV4[0].operations[0]", "exactly one of"),
        // Node
        (doc("Node", "{name: n1}", "{bgp: {}}"), "spec.bgp", "must not be empty"),
        (doc("Node", "{name: n1}", "{bgp: {ipv4Address: 'fd00::1/64'}}"), "spec.bgp.ipv4Address", "not an IPv4"),
        (doc("Node", "{name: n1}", "{bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 'fd00::1'}}"), "spec.bgp.routeReflectorClusterID", "not a valid IPv4 address"),
        (doc("Node", "{name: n1}", "{vxlanTunnelMACAddr: 'zz:zz'}"), "spec.vxlanTunnelMACAddr", "not a valid MAC"),
        (doc("Node", "{name: n1}", "{addresses: [{address: 10.0.0.1, type: Public}]}"), "spec.addresses[0].type", "not one of"),
        (doc("Node", "{name: n1}", "{orchRefs: [{nodeName: n1}]}"), "spec.orchRefs[0].orchestrator", "is required"),
        // FelixConfiguration
        (doc("FelixConfiguration", "{name: default}", "{iptablesBackend: Ancient}"), "spec.iptablesBackend", "not one of Legacy, NFT, Auto"),
        (doc("FelixConfiguration", "{name: default}", "{failsafeInboundHostPorts: [{protocol: icmp, port: 1}]}"), "spec.failsafeInboundHostPorts[0].protocol", "TCP, UDP or SCTP"),
        (doc("FelixConfiguration", "{name: default}", "{vxlanVNI: 0}"), "spec.vxlanVNI", "outside 1..16777215"),
        (doc("FelixConfiguration", "{name: default}", "{routeRefreshInterval: -5s}"), "spec.routeRefreshInterval", "must not be negative"),
        (doc("FelixConfiguration", "{name: default}", "{routeTableRanges: [{min: 250, max: 260}]}"), "spec.routeTableRanges[0]", "reserved tables"),
        (doc("FelixConfiguration", "{name: default}", "{nodeSelector: has(x)}"), "spec.nodeSelector", "only selector-scoped"),
        (doc("FelixConfiguration", "{name: default}", "{defaultEndpointToHostAction: Allow}"), "spec.defaultEndpointToHostAction", "Drop, Return, Accept"),
        (doc("FelixConfiguration", "{name: default}", "{bpfLogLevel: Verbose}"), "spec.bpfLogLevel", "Off, Info, Debug"),
        (doc("FelixConfiguration", "{name: default}", "{bpfConntrackMode: auto}"), "spec.bpfConntrackMode", "Auto, Userspace, BPFProgram"),
        // KubeControllersConfiguration and ClusterInformation
        (doc("KubeControllersConfiguration", "{name: mine}", "{controllers: {}}"), "metadata.name", "must be \"default\""),
        (doc("KubeControllersConfiguration", "{name: default}", "{healthChecks: Maybe, controllers: {}}"), "spec.healthChecks", "Enabled or Disabled"),
        (doc("KubeControllersConfiguration", "{name: default}", "{logSeverityScreen: Chatty, controllers: {}}"), "spec.logSeverityScreen", "None, Debug, Info"),
        (doc("ClusterInformation", "{name: other}", "{}"), "metadata.name", "must be \"default\""),
        // Tier
        (doc("Tier", "{name: a.b}", "{order: 1}"), "metadata.name", "no dots"),
        (doc("Tier", "{name: default}", "{order: 5}"), "spec.order", "order must be 1000000"),
        (doc("Tier", "{name: kube-admin}", "{order: 1000, defaultAction: Deny}"), "spec.defaultAction", "must be Pass"),
        (doc("Tier", "{name: t}", "{order: 1, defaultAction: Allow}"), "spec.defaultAction", "must be Deny or Pass"),
        // NetworkPolicy and rules
        (doc("NetworkPolicy", "{name: np}", "{}"), "metadata.namespace", "is namespaced"),
        (doc("NetworkPolicy", "{name: a.b.c, namespace: ns}", "{}"), "metadata.name", "optionally with one '.'"),
        (np("{selector: global()}"), "spec.selector", "global() is only allowed"),
        (np("{types: [Ingress, Ingress]}"), "spec.types", "more than once"),
        (rule("{action: Allow, destination: {ports: [80]}}"), "spec.ingress[0].destination.ports[0]", "must set protocol to TCP or UDP or SCTP"),
        (rule("{action: Allow, protocol: ICMP, destination: {ports: [80]}}"), "spec.ingress[0].destination.ports[0]", "protocol ICMP has no ports"),
        (rule("{action: Allow, icmp: {type: 8}}"), "spec.ingress[0].icmp", "require protocol to be ICMP or ICMPv6"),
        (rule("{action: Allow, protocol: ICMP, icmp: {code: 1}}"), "spec.ingress[0].icmp.code", "needs an ICMP type"),
        (rule("{action: Allow, protocol: ICMP, icmp: {type: 300}}"), "spec.ingress[0].icmp.type", "outside 0..254"),
        (rule("{action: Allow, protocol: ICMP, ipVersion: 6}"), "spec.ingress[0].protocol", "requires ipVersion 4"),
        (rule("{action: Allow, ipVersion: 5}"), "spec.ingress[0].ipVersion", "must be 4 or 6"),
        (rule("{action: Allow, protocol: Bogus}"), "spec.ingress[0].protocol", "protocol name invalid"),
        (rule("{action: Allow, protocol: 0}"), "spec.ingress[0].protocol", "protocol number invalid"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/8, 'fd00::/8']}}"), "spec.ingress[0].source.nets", "cannot mix IPv4 and IPv6"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {nets: ['fd00::/8']}}"), "spec.ingress[0].destination.nets", "cannot mix IPv4 and IPv6"),
        (rule("{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}"), "spec.ingress[0].source.nets", "do not match the rule's ipVersion 6"),
        (rule("{action: Allow, source: {notNets: [0.0.0.0/0]}}"), "spec.ingress[0].source.notNets[0]", "matches no traffic"),
        (rule("{action: Allow, source: {nets: [banana]}}"), "spec.ingress[0].source.nets[0]", "not a valid CIDR"),
        (rule("{action: Allow, source: {namespaceSelector: \"global() && has(x)\"}}"), "spec.ingress[0].source.namespaceSelector", "cannot be combined"),
        (rule("{action: Allow, source: {selector: global()}}"), "spec.ingress[0].source.selector", "global() is only allowed"),
        (rule("{action: Allow, source: {selector: \"a ==\"}}"), "spec.ingress[0].source.selector", "invalid selector"),
        (rule("{action: Deny, http: {methods: [GET]}}"), "spec.ingress[0].http", "only valid on Allow"),
        (rule("{action: Allow, http: {paths: [{exact: nope}]}}"), "spec.ingress[0].http.paths[0]", "must start with /"),
        (rule("{action: Allow, destination: {services: {name: web}}}"), "spec.ingress[0].destination.services", "not allowed in an ingress rule's destination"),
        (rule("{action: Allow, source: {services: {name: web}, selector: has(a)}}"), "spec.ingress[0].source.services", "cannot specify selector"),
        (rule("{action: Allow, protocol: TCP, destination: {ports: ['0']}}"), "spec.ingress[0].destination.ports[0]", "between 1 and 65535"),
        (np("{egress: [{action: Allow, http: {methods: [GET]}}]}"), "spec.egress[0].http", "not allowed in egress"),
        // GlobalNetworkPolicy
        (doc("GlobalNetworkPolicy", "{name: g}", "{preDNAT: true, ingress: [{action: Allow}]}"), "spec.applyOnForward", "must be true"),
        (doc("GlobalNetworkPolicy", "{name: g}", "{preDNAT: true, applyOnForward: true, egress: [{action: Allow}]}"), "spec.egress", "preDNAT policy cannot have egress"),
        (doc("GlobalNetworkPolicy", "{name: g}", "{preDNAT: true, doNotTrack: true, applyOnForward: true}"), "spec.preDNAT", "cannot both be true"),
        (doc("GlobalNetworkPolicy", "{name: g}", "{ingress: [{action: Allow, source: {services: {name: web}}}]}"), "spec.ingress[0].source.services.namespace", "must name the service's namespace"),
        (doc("GlobalNetworkPolicy", "{name: a.b.c}", "{}"), "metadata.name", "optionally with one '.'"),
        (doc("GlobalNetworkPolicy", "{name: g}", "{namespaceSelector: global()}"), "spec.namespaceSelector", "global() is only allowed"),
        // Staged policies: a Delete names only the policy (and its tier); a Set is checked
        // as the policy it would set.
        (doc("StagedNetworkPolicy", NP, "{stagedAction: Delete, selector: has(a)}"), "spec.selector", "must be empty when stagedAction is Delete"),
        (doc("StagedNetworkPolicy", NP, "{stagedAction: Delete, tier: t1, ingress: [{action: Allow}]}"), "spec.ingress", "every field except tier must be unset"),
        (doc("StagedNetworkPolicy", NP, "{stagedAction: Delete, serviceAccountSelector: has(a)}"), "spec.serviceAccountSelector", "must be empty when stagedAction is Delete"),
        (doc("StagedNetworkPolicy", NP, "{ingress: [{action: Allow, destination: {ports: [80]}}]}"), "spec.ingress[0].destination.ports[0]", "must set protocol"),
        (doc("StagedNetworkPolicy", NP, "{stagedAction: Set, selector: global()}"), "spec.selector", "global() is only allowed"),
        (doc("StagedNetworkPolicy", NP, "{types: [Ingress, Ingress]}"), "spec.types", "more than once"),
        (doc("StagedNetworkPolicy", NP, "{tier: a.b}"), "spec.tier", "lower case"),
        (doc("StagedNetworkPolicy", "{name: snp}", "{}"), "metadata.namespace", "is namespaced"),
        (doc("StagedNetworkPolicy", "{name: a.b.c, namespace: ns}", "{}"), "metadata.name", "optionally with one '.'"),
        (doc("StagedGlobalNetworkPolicy", "{name: g}", "{stagedAction: Delete, order: 10}"), "spec.order", "must be empty when stagedAction is Delete"),
        (doc("StagedGlobalNetworkPolicy", "{name: g}", "{stagedAction: Delete, preDNAT: true}"), "spec.preDNAT", "must be empty when stagedAction is Delete"),
        (doc("StagedGlobalNetworkPolicy", "{name: g}", "{preDNAT: true, ingress: [{action: Allow}]}"), "spec.applyOnForward", "must be true"),
        (doc("StagedGlobalNetworkPolicy", "{name: g}", "{namespaceSelector: global()}"), "spec.namespaceSelector", "global() is only allowed"),
        (doc("StagedGlobalNetworkPolicy", "{name: g}", "{ingress: [{action: Allow, source: {services: {name: web}}}]}"), "spec.ingress[0].source.services.namespace", "must name the service's namespace"),
        (doc("StagedGlobalNetworkPolicy", "{name: a.b.c}", "{}"), "metadata.name", "optionally with one '.'"),
        (doc("StagedKubernetesNetworkPolicy", NP, "{stagedAction: Delete, podSelector: {matchLabels: {a: b}}}"), "spec.podSelector", "the spec must be unset"),
        (doc("StagedKubernetesNetworkPolicy", NP, "{stagedAction: Delete, policyTypes: [Ingress]}"), "spec.policyTypes", "must be empty when stagedAction is Delete"),
        (doc("StagedKubernetesNetworkPolicy", NP, "{podSelector: {}, policyTypes: [Inbound]}"), "spec.policyTypes[0]", "Ingress or Egress"),
        (doc("StagedKubernetesNetworkPolicy", NP, "{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}"), "spec.ingress[0].ports[0].endPort", "must be between port"),
        (doc("StagedKubernetesNetworkPolicy", "{name: sknp}", "{podSelector: {}}"), "metadata.namespace", "is namespaced"),
        // CalicoNodeStatus
        (doc("CalicoNodeStatus", "{name: s}", "{classes: [Agent], updatePeriodSeconds: 10}"), "spec.node", "is required"),
        (doc("CalicoNodeStatus", "{name: s}", "{node: Bad_Node, classes: [Agent], updatePeriodSeconds: 10}"), "spec.node", "lower case alphanumeric"),
        (doc("CalicoNodeStatus", "{name: s}", "{node: n1, updatePeriodSeconds: 10}"), "spec.classes", "at least one of Agent, BGP, Routes"),
        (doc("CalicoNodeStatus", "{name: s}", "{node: n1, classes: [BGP, Routes, BGP], updatePeriodSeconds: 10}"), "spec.classes[2]", "listed twice"),
        (doc("CalicoNodeStatus", "{name: s}", "{node: n1, classes: [BGP]}"), "spec.updatePeriodSeconds", "is required"),
        (doc("CalicoNodeStatus", "{name: s}", "{node: n1, classes: [BGP], updatePeriodSeconds: 86401}"), "spec.updatePeriodSeconds", "more than one day"),
        (format!("{}status: {{bgp: {{peersV4: [{{peerIP: 10.0.0.300}}]}}}}\n", doc("CalicoNodeStatus", "{name: s}", "{node: n1, classes: [BGP], updatePeriodSeconds: 10}")), "status.bgp.peersV4[0].peerIP", "not an IP address"),
        // Network sets
        (doc("NetworkSet", "{name: s, namespace: ns}", "{nets: [10.0.0.0/33]}"), "spec.nets[0]", "not a valid CIDR"),
        (doc("GlobalNetworkSet", "{name: s, labels: {projectcalico.org/namespace: x}}", "{nets: [10.0.0.0/8]}"), "metadata.labels[\"projectcalico.org/namespace\"]", "set by Calico"),
        // HostEndpoint
        (doc("HostEndpoint", "{name: h}", "{interfaceName: eth0}"), "spec.node", "must name its node"),
        (doc("HostEndpoint", "{name: h}", "{node: n1}"), "spec.interfaceName", "or at least one expectedIPs"),
        (doc("HostEndpoint", "{name: h}", "{node: n1, expectedIPs: [10.0.0.300]}"), "spec.expectedIPs[0]", "not a valid IP"),
        (doc("HostEndpoint", "{name: h}", "{node: n1, interfaceName: eth0, ports: [{name: '', protocol: TCP, port: 80}]}"), "spec.ports[0].name", "needs a name"),
        (doc("HostEndpoint", "{name: h}", "{node: n1, interfaceName: eth0, ports: [{name: p, protocol: ICMP, port: 80}]}"), "spec.ports[0].protocol", "does not support ports"),
        (doc("HostEndpoint", "{name: h}", "{node: n1, interfaceName: 'this-name-is-way-too-long'}"), "spec.interfaceName", "not a valid interface name"),
        // WorkloadEndpoint
        (doc("WorkloadEndpoint", "{name: wrong, namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1}"), "metadata.name", "must be \"n1-k8s-p-eth0\""),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1}"), "spec.node", "required to name the endpoint"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1, ipNetworks: [10.0.0.0/24]}"), "spec.ipNetworks[0]", "more than one address"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0}"), "spec.interfaceName", "is required"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1, ipNetworks: [10.0.0.1/32], ipNATs: [{internalIP: 10.0.0.2, externalIP: 1.2.3.4}]}"), "spec.ipNATs[0].internalIP", "not one of the endpoint's ipNetworks"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1, ipv4Gateway: 'fd00::1'}"), "spec.ipv4Gateway", "not an IPv4 address"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: k8s, pod: p, endpoint: eth0, interfaceName: cali1, ports: [{protocol: TCP, port: 80}]}"), "spec.ports[0].name", "needs a name unless it has a hostPort"),
        (doc("WorkloadEndpoint", "{namespace: ns}", "{node: n1, orchestrator: cni, containerID: 'bad_id', endpoint: eth0, interfaceName: cali1}"), "spec.containerID", "not a valid container ID"),
        // Profile
        (doc("Profile", "{name: pr}", "{ingress: [{action: Allow, destination: {ports: [80]}}]}"), "spec.ingress[0].destination.ports[0]", "must set protocol"),
        (doc("Profile", "{name: pr}", "{labelsToApply: {'bad key': v}}"), "spec.labelsToApply[\"bad key\"]", "alphanumerics"),
        // Kubernetes NetworkPolicy
        (doc("K8sNetworkPolicy", NP, "{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [x]}]}}"), "spec.podSelector.matchExpressions[0].operator", "not one of In, NotIn"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}"), "spec.podSelector.matchExpressions[0].values", "takes no values"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}"), "spec.ingress[0].ports[0].endPort", "must be between port"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}"), "spec.ingress[0].ports[0].endPort", "named port"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, egress: [{ports: [{protocol: ICMP}]}]}"), "spec.egress[0].ports[0].protocol", "TCP, UDP, SCTP"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}"), "spec.ingress[0].from[0].ipBlock.except[0]", "strictly within"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16}, podSelector: {}}]}]}"), "spec.ingress[0].from[0]", "cannot be combined"),
        (doc("K8sNetworkPolicy", NP, "{podSelector: {}, policyTypes: [Inbound]}"), "spec.policyTypes[0]", "Ingress or Egress"),
    ]
}

#[test]
fn every_rule_rejects_its_bad_example_naming_the_field() {
    let cases = cases();
    assert!(
        cases.len() >= 120,
        "keep the table complete ({} cases)",
        cases.len()
    );
    let mut failures = Vec::new();
    for (text, path, reason) in &cases {
        let msg = error_of(text);
        if !msg.contains(&format!("{path}: ")) || !msg.contains(reason) {
            failures.push(format!("expected `{path}: …{reason}…`\n     got `{msg}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_message_names_the_object_as_calico_users_expect() {
    let msg = error_of(&doc(
        "IPPool",
        "{name: p1}",
        "{cidr: 10.0.0.0/16, blockSize: 19}",
    ));
    assert_eq!(
        msg,
        "IPPool \"p1\": spec.blockSize: 19 is outside 20..32 for an IPv4 pool"
    );
    let msg = error_of(&doc("NetworkPolicy", NP, "{selector: global()}"));
    assert!(
        msg.starts_with("NetworkPolicy \"ns/np\": spec.selector: "),
        "{msg}"
    );
}

#[test]
fn several_problems_are_all_reported() {
    let msg = error_of(&doc(
        "IPPool",
        "{name: Bad}",
        "{cidr: 10.0.0.1/16, ipipMode: Always, vxlanMode: Always}",
    ));
    for needle in ["metadata.name", "spec.cidr", "spec.vxlanMode"] {
        assert!(msg.contains(needle), "{msg}");
    }
}
