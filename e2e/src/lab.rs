//! A cluster with pods: the lab's [`Cluster`] plus pods made through the real CNI plugin, the
//! namespace profiles kube-controllers would write for them, and probe matrices between
//! them. Tests and the demo hold one in-process (everything goes when it is dropped); the
//! launcher detaches a named one into its state file and attaches to it again per command.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use calico_api::codec::decode_documents;
use calico_lab::probe::{Probe, Proto, probe_all};
use calico_lab::{Cluster, ClusterOptions, ClusterState, Node, netpol};
use calico_netns_harness::Servers;
use serde::{Deserialize, Serialize};

use crate::pod::{self, Pod, PodError, PodSpec, PodState};

/// A cluster and its pods.
#[derive(Debug)]
pub struct Lab {
    // Dropped first: pods (their namespaces), then the cluster.
    pub pods: Vec<Pod>,
    pub cluster: Cluster,
    /// Whether pods get an IPv6 address too.
    pub dual_stack: bool,
    /// Namespaces whose profile this value wrote or found.
    namespaces: BTreeSet<String>,
}

/// A detached lab, as the launcher's state file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub cluster: ClusterState,
    pub pods: Vec<PodState>,
    pub dual_stack: bool,
    /// How it was brought up, for `lab status`: `vxlan` or `none`, birdd or not.
    pub encap: String,
    pub birdd: bool,
}

impl Lab {
    /// Starts the cluster `o` describes; IPv4-only pods.
    pub fn start(o: ClusterOptions) -> Lab {
        Lab::new(Cluster::start_with(o))
    }

    /// A lab around a running cluster, without pods.
    pub fn new(cluster: Cluster) -> Lab {
        Lab {
            pods: Vec::new(),
            cluster,
            dual_stack: false,
            namespaces: BTreeSet::new(),
        }
    }

    /// The lab an earlier process detached.
    pub fn attach(s: &LabState) -> std::io::Result<Lab> {
        Ok(Lab {
            pods: s.pods.iter().map(Pod::attach).collect::<Result<_, _>>()?,
            cluster: Cluster::attach(&s.cluster)?,
            dual_stack: s.dual_stack,
            namespaces: BTreeSet::new(),
        })
    }

    /// Hands a named lab over to a later process (see [`Cluster::detach`]).
    pub fn detach(mut self, encap: &str, birdd: bool) -> LabState {
        let pods = self
            .pods
            .iter_mut()
            .map(|p| {
                p.ns.keep();
                p.state()
            })
            .collect();
        LabState {
            cluster: self.cluster.detach(),
            pods,
            dual_stack: self.dual_stack,
            encap: encap.to_string(),
            birdd,
        }
    }

    pub fn node(&self, name: &str) -> Result<&Node, PodError> {
        self.cluster
            .node(name)
            .ok_or_else(|| PodError::NoNode(name.to_string()))
    }

    /// Node `i` (`node-a` is 0).
    pub fn node_name(&self, i: usize) -> String {
        self.cluster.nodes[i % self.cluster.nodes.len()]
            .name
            .clone()
    }

    /// Writes Calico resources (YAML), creating or updating each.
    pub fn apply(&self, yaml: &str) {
        let docs = decode_documents(yaml).expect("valid YAML");
        self.cluster.with_datastore(async move |rc| {
            for d in docs {
                rc.apply_any(d).await.expect("applying a resource");
            }
        });
    }

    /// The namespace's profile as kube-controllers writes it, with `labels` (and the
    /// `kubernetes.io/metadata.name` label Kubernetes gives every namespace).
    pub fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let mut all = labels.to_vec();
        if !labels
            .iter()
            .any(|(k, _)| *k == "kubernetes.io/metadata.name")
        {
            all.push(("kubernetes.io/metadata.name", name));
        }
        let profile = netpol::namespace_profile(name, &all);
        self.cluster.with_datastore(async move |rc| {
            rc.apply_any(profile)
                .await
                .expect("writing a namespace profile");
        });
        self.namespaces.insert(name.to_string());
    }

    /// The namespace's profile, written unless it exists.
    fn ensure_namespace(&mut self, name: &str) {
        if self.namespaces.contains(name) {
            return;
        }
        let profile = netpol::namespace_profile(name, &[("kubernetes.io/metadata.name", name)]);
        self.cluster.with_datastore(async move |rc| {
            // An existing profile (labels someone set) stays as it is.
            let _ = rc.create_any(profile).await;
        });
        self.namespaces.insert(name.to_string());
    }

    /// Makes a pod through CNI ADD on its node.
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<&Pod, PodError> {
        self.add_pods(vec![spec], 1)?;
        Ok(self.pods.last().expect("the pod just added"))
    }

    /// Makes pods, `parallel` CNI ADDs at a time. Stops at the first failure (the pods made
    /// so far stay).
    pub fn add_pods(&mut self, specs: Vec<PodSpec>, parallel: usize) -> Result<(), PodError> {
        for s in &specs {
            if self.find(&s.key()).is_some() {
                return Err(PodError::Exists(s.key()));
            }
            self.node(&s.node)?;
        }
        for s in &specs {
            self.ensure_namespace(&s.namespace);
        }
        let naming = self.cluster.naming().cloned();
        for chunk in specs.chunks(parallel.max(1)) {
            let made: Vec<Result<Pod, PodError>> = std::thread::scope(|sc| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|spec| {
                        let node = self.node(&spec.node)?;
                        let naming = naming.as_ref();
                        let dual = self.dual_stack;
                        Ok(sc.spawn(move || pod::create(node, naming, spec, dual)))
                    })
                    .collect::<Result<_, PodError>>()?;
                Ok::<_, PodError>(
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect(),
                )
            })?;
            let mut first_err = None;
            for m in made {
                match m {
                    Ok(p) => self.pods.push(p),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes a pod through CNI DEL on its node.
    pub fn del_pod(&mut self, key: &str) -> Result<(), PodError> {
        self.del_pods(&[key.to_string()], 1)
    }

    /// Removes pods, `parallel` CNI DELs at a time; returns the first failure after trying
    /// them all.
    pub fn del_pods(&mut self, keys: &[String], parallel: usize) -> Result<(), PodError> {
        let mut taken = Vec::new();
        for k in keys {
            let i = self
                .pods
                .iter()
                .position(|p| p.key() == *k)
                .ok_or_else(|| PodError::NoPod(k.clone()))?;
            taken.push(self.pods.remove(i));
        }
        let mut first_err = None;
        let dual = self.dual_stack;
        while !taken.is_empty() {
            let chunk: Vec<Pod> = taken.drain(..parallel.max(1).min(taken.len())).collect();
            let results: Vec<Result<(), PodError>> = std::thread::scope(|sc| {
                let handles: Vec<_> = chunk
                    .into_iter()
                    .map(|p| {
                        let node = self.node(&p.node);
                        sc.spawn(move || pod::delete(node?, p, dual))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            for r in results {
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn find(&self, key: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.key() == key)
    }

    /// The pod `key`; panics if there is none.
    pub fn pod(&self, key: &str) -> &Pod {
        self.find(key).unwrap_or_else(|| panic!("no pod {key}"))
    }

    /// Echo servers on `tcp` and `udp` ports in every pod, until dropped.
    pub fn serve(&self, tcp: &[u16], udp: &[u16]) -> Vec<Servers> {
        self.pods
            .iter()
            .map(|p| Servers::start(&p.ns, tcp, udp))
            .collect()
    }

    /// Whether each of `pods` reaches each other's IPv4 address on `proto`/`port`, all
    /// probed at once: `[client][server]`, the diagonal true.
    pub fn matrix(
        &self,
        pods: &[&Pod],
        proto: Proto,
        port: u16,
        timeout: Duration,
    ) -> Vec<Vec<bool>> {
        let mut probes = Vec::new();
        for (i, from) in pods.iter().enumerate() {
            for (j, to) in pods.iter().enumerate() {
                if let (true, Some(ip)) = (i != j, to.v4()) {
                    probes.push(Probe {
                        from: &from.ns,
                        to: ip,
                        proto,
                        port,
                    });
                }
            }
        }
        let mut results = probe_all(&probes, timeout).into_iter();
        (0..pods.len())
            .map(|i| {
                (0..pods.len())
                    .map(|j| i == j || (pods[j].v4().is_some() && results.next().unwrap_or(false)))
                    .collect()
            })
            .collect()
    }

    /// The matrix of every pod, printed as a grid (pods in the order they were made).
    pub fn grid(&self, proto: Proto, port: u16, timeout: Duration) -> (String, Vec<Vec<bool>>) {
        let pods: Vec<&Pod> = self.pods.iter().collect();
        let m = self.matrix(&pods, proto, port, timeout);
        let names: Vec<String> = pods.iter().map(|p| p.key()).collect();
        (crate::format_grid(&names, |i, j| m[i][j]), m)
    }

    /// Each pod's IPv4 address.
    pub fn v4(&self, key: &str) -> IpAddr {
        self.pod(key)
            .v4()
            .unwrap_or_else(|| panic!("{key} has no IPv4 address"))
    }
}
