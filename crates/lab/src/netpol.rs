//! The Kubernetes NetworkPolicy conformance catalogue (`conformance/netpol-cases.yaml`):
//! three namespaces x, y, z with pods a, b, c at pinned addresses, each case's policies (or
//! steps), and the 9×9 reachability matrix expected on TCP and UDP ports 80 and 81.
//!
//! This module reads the catalogue, writes what a case needs into the datastore (namespace
//! profiles as kube-controllers writes them, named ports, the policies, pod labels), probes
//! the matrix with real packets and waits until it matches, timing how long that took. It
//! does not place pods: felixd's one-node suite and the lab's three-node suite do that.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calico_api::AnyResource;
use calico_api::codec::{Strictness, decode_object};
use calico_datastore::ResourceClient;
use calico_netns_harness::NetNs;
use serde_json::Value;

use crate::WithDatastore;
use crate::probe::{Probe, Proto, probe_all};

/// The matrix's rows and columns.
pub const ORDER: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

/// The served ports, with the catalogue's keys.
pub const PORTS: [(Proto, u16, &str); 4] = [
    (Proto::Tcp, 80, "tcp/80"),
    (Proto::Tcp, 81, "tcp/81"),
    (Proto::Udp, 80, "udp/80"),
    (Proto::Udp, 81, "udp/81"),
];

/// Reachability per port key: 9 rows (clients) of 9 booleans (servers).
pub type Grid = BTreeMap<&'static str, Vec<Vec<bool>>>;

/// Why the catalogue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetpolError {
    #[error("reading the conformance catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the conformance catalogue is not valid YAML: {0}")]
    Yaml(String),
    #[error("case {case}: {what}")]
    Case { case: String, what: String },
}

/// What a step does before its matrix is checked.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create or update these objects (Kubernetes NetworkPolicies, stored as Calico's).
    Apply(Vec<AnyResource>),
    /// Delete these NetworkPolicies: (namespace, name).
    Delete(Vec<(String, String)>),
    /// Add labels to a pod (`ns/pod`), as a pod label change would.
    LabelPod {
        pod: String,
        labels: BTreeMap<String, String>,
    },
}

/// A step and the matrix expected after it.
#[derive(Debug, Clone)]
pub struct Step {
    pub action: Action,
    pub expect: Grid,
}

/// A case: one or more steps.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
}

/// The catalogue in this repository.
pub fn catalogue_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/netpol-cases.yaml")
}

/// The pinned address of `ns/pod` in the catalogue's plan (x = 10.244.1.0/24, y = .2, z = .3;
/// a = .10, b = .11, c = .12).
pub fn pod_ip(key: &str) -> Option<String> {
    let (ns, pod) = key.split_once('/')?;
    let third = match ns {
        "x" => 1,
        "y" => 2,
        "z" => 3,
        _ => return None,
    };
    let last = match pod {
        "a" => 10,
        "b" => 11,
        "c" => 12,
        _ => return None,
    };
    Some(format!("10.244.{third}.{last}"))
}

/// Reads every case (static and dynamic) of the catalogue at `path`.
pub fn load(path: &Path) -> Result<Vec<Case>, NetpolError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetpolError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // YAML 1.1 would read the namespace label `ns: y` as `true`; the catalogue means a string.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let doc: Value = serde_saphyr::from_str_with_options(&text, options)
        .map_err(|e| NetpolError::Yaml(e.to_string()))?;
    let mut raw: Vec<Value> = doc["cases"].as_array().cloned().unwrap_or_default();
    raw.extend(doc["dynamic_cases"].as_array().cloned().unwrap_or_default());
    raw.iter().map(parse_case).collect()
}

fn parse_case(case: &Value) -> Result<Case, NetpolError> {
    let name = case["name"].as_str().unwrap_or("?").to_string();
    let err = |what: String| NetpolError::Case {
        case: name.clone(),
        what,
    };
    let steps: Vec<Value> = match case.get("steps") {
        Some(s) => s.as_array().cloned().unwrap_or_default(),
        None => vec![serde_json::json!({
            "action": "create",
            "objects": case["policies"].clone(),
            "expect": case["expect"].clone(),
        })],
    };
    let mut out = Vec::new();
    for step in &steps {
        let action = match step["action"].as_str().unwrap_or("create") {
            "create" | "update" => Action::Apply(
                step["objects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| decode_object(o.clone(), 0, Strictness::Strict))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(format!("a policy does not decode: {e}")))?,
            ),
            "delete" => Action::Delete(
                step["objects_deleted"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        d.as_str()
                            .and_then(|s| s.split_once('/'))
                            .map(|(ns, n)| (ns.to_string(), n.to_string()))
                            .ok_or_else(|| err(format!("{d} is not namespace/name")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "label-pod" => Action::LabelPod {
                pod: step["pod"]
                    .as_str()
                    .ok_or_else(|| err("label-pod without a pod".into()))?
                    .to_string(),
                labels: step["add_labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            },
            other => return Err(err(format!("unknown action {other:?}"))),
        };
        out.push(Step {
            action,
            expect: expected(&step["expect"]).map_err(err)?,
        });
    }
    Ok(Case { name, steps: out })
}

/// The expected matrices of a step (`same-as <key>` resolved).
fn expected(expect: &Value) -> Result<Grid, String> {
    let mut grids = Grid::new();
    for (_, _, key) in PORTS {
        let mut v = &expect[key];
        if let Some(s) = v.as_str() {
            let other = s
                .strip_prefix("same-as ")
                .ok_or_else(|| format!("bad expectation {s:?} for {key}"))?;
            v = &expect[other];
        }
        let rows = ORDER
            .iter()
            .map(|from| {
                v[*from]
                    .as_str()
                    .map(|row| row.chars().map(|c| c == '.').collect())
                    .ok_or_else(|| format!("no row {from} for {key}"))
            })
            .collect::<Result<_, _>>()?;
        grids.insert(key, rows);
    }
    Ok(grids)
}

/// Every cell open: the state between cases.
pub fn all_open() -> Grid {
    PORTS
        .iter()
        .map(|(_, _, k)| (*k, vec![vec![true; 9]; 9]))
        .collect()
}

/// The matrices as the catalogue writes them.
pub fn render(g: &Grid) -> String {
    let mut s = String::new();
    for (k, rows) in g {
        s.push_str(&format!("{k}:\n"));
        for (i, r) in rows.iter().enumerate() {
            let line: String = r.iter().map(|b| if *b { '.' } else { 'X' }).collect();
            s.push_str(&format!("  {} {line}\n", ORDER[i]));
        }
    }
    s
}

/// Probes the four matrices at once. `pods` are the 9 pods in [`ORDER`]: their namespaces
/// and IPv4 addresses. The diagonal is not probed (a pod reaching itself goes over its own
/// loopback, which no CNI polices) and reads open.
pub fn probe(pods: &[(&NetNs, IpAddr)], timeout: Duration) -> Grid {
    assert_eq!(pods.len(), ORDER.len(), "the matrix has 9 pods");
    let mut probes = Vec::new();
    for (proto, port, _) in PORTS {
        for (i, (from, _)) in pods.iter().enumerate() {
            for (j, (_, to)) in pods.iter().enumerate() {
                if i != j {
                    probes.push(Probe {
                        from,
                        to: *to,
                        proto,
                        port,
                    });
                }
            }
        }
    }
    let mut results = probe_all(&probes, timeout).into_iter();
    let mut grids = Grid::new();
    for (_, _, key) in PORTS {
        let rows = (0..9)
            .map(|i| {
                (0..9)
                    .map(|j| i == j || results.next().unwrap_or(false))
                    .collect()
            })
            .collect();
        grids.insert(key, rows);
    }
    grids
}

/// How long a quick round's probes wait: long enough for an open path between namespaces
/// on one machine, short enough to see a change within a tenth of a second or so.
const QUICK: Duration = Duration::from_millis(150);

/// Probes until the matrices match `want` and returns when the matching round began, or
/// the last matrices seen when `within` passed.
///
/// `probe(timeout)` probes every cell at once, so a round takes about one timeout (a
/// blocked cell waits it out). To time convergence finely, rounds are quick (150 ms) until
/// one matches, and a round with the full `timeout` must then confirm it (a quick round can
/// read a slow open path as blocked, never the other way round); every fifth round is a full
/// one in case quick rounds cannot match under load. The time returned is the start of the
/// first matching quick round: the dataplane was in place by then.
pub fn converge(
    mut probe: impl FnMut(Duration) -> Grid,
    want: &Grid,
    within: Duration,
    timeout: Duration,
) -> Result<Duration, Grid> {
    let start = Instant::now();
    let mut matched_at = None;
    for n in 1.. {
        let round = start.elapsed();
        let full = matched_at.is_some() || n % 5 == 0;
        let got = probe(if full { timeout } else { QUICK });
        if &got == want {
            if full {
                return Ok(matched_at.unwrap_or(round));
            }
            matched_at = Some(round);
            continue;
        }
        matched_at = None;
        if start.elapsed() > within {
            return Err(got);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unreachable!("the rounds above run until they return")
}

/// The namespaces' profiles, as kube-controllers writes them: Kubernetes' default allow, and
/// the catalogue's namespace labels for selectors.
pub async fn write_namespaces(rc: &ResourceClient) {
    for ns in ["x", "y", "z"] {
        let labels = [("ns", ns), ("kubernetes.io/metadata.name", ns)];
        rc.apply_any(namespace_profile(ns, &labels))
            .await
            .expect("writing a namespace profile");
    }
}

/// The profile kube-controllers writes for namespace `name` with `labels`: allow both ways,
/// the namespace's labels as `pcns.<key>` for namespace selectors.
pub fn namespace_profile(name: &str, labels: &[(&str, &str)]) -> AnyResource {
    let mut l: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (format!("pcns.{k}"), Value::from(*v)))
        .collect();
    l.insert("pcns.projectcalico.org/name".into(), Value::from(name));
    decode_object(
        serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "Profile",
            "metadata": {"name": format!("kns.{name}")},
            "spec": {
                "ingress": [{"action": "Allow"}],
                "egress": [{"action": "Allow"}],
                "labelsToApply": l,
            },
        }),
        0,
        Strictness::Strict,
    )
    .expect("a valid profile")
}

/// The served ports as named container ports on every endpoint of x, y and z, as the
/// Kubernetes converter writes them.
pub async fn name_ports(rc: &ResourceClient) {
    for ns in ["x", "y", "z"] {
        let list = rc
            .list::<calico_api::resource::WorkloadEndpoint>(Some(ns))
            .await
            .expect("listing endpoints");
        for mut wep in list.items {
            wep.spec.ports = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")]
                .iter()
                .map(|(port, proto)| calico_api::kinds::WorkloadEndpointPort {
                    name: format!("serve-{port}-{}", proto.to_lowercase()),
                    protocol: calico_api::numorstring::Protocol::Name(proto.to_string()),
                    port: *port,
                    host_port: 0,
                    host_ip: String::new(),
                })
                .collect();
            rc.update(wep).await.expect("naming the ports");
        }
    }
}

/// Changes a pod's endpoint labels: adds `add`, removes the keys in `remove`.
async fn relabel(
    rc: &ResourceClient,
    key: &str,
    add: &BTreeMap<String, String>,
    remove: &[String],
) {
    let (ns, pod) = key.split_once('/').expect("ns/pod");
    let list = rc
        .list::<calico_api::resource::WorkloadEndpoint>(Some(ns))
        .await
        .expect("listing endpoints");
    let mut wep = list
        .items
        .into_iter()
        .find(|w| w.spec.pod == pod)
        .unwrap_or_else(|| panic!("no endpoint for pod {key}"));
    for k in remove {
        wep.metadata.labels.remove(k);
    }
    wep.metadata
        .labels
        .extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
    rc.update(wep).await.expect("updating the endpoint");
}

/// Does what `action` says.
pub async fn act(rc: &ResourceClient, action: &Action) {
    match action {
        Action::Apply(objs) => {
            for o in objs {
                rc.apply_any(o.clone()).await.expect("applying a policy");
            }
        }
        Action::Delete(which) => {
            for (ns, n) in which {
                rc.delete_any(
                    calico_api::Kind::NetworkPolicy,
                    Some(ns),
                    &format!("knp.default.{n}"),
                    None,
                )
                .await
                .expect("deleting a policy");
            }
        }
        Action::LabelPod { pod, labels } => relabel(rc, pod, labels, &[]).await,
    }
}

/// Back to the baseline after a case: every NetworkPolicy deleted, labels the case added
/// removed.
pub async fn reset(rc: &ResourceClient, case: &Case) {
    let list = rc
        .list::<calico_api::resource::NetworkPolicy>(None)
        .await
        .expect("listing policies");
    for p in list.items {
        rc.delete_any(
            calico_api::Kind::NetworkPolicy,
            p.metadata.namespace.as_deref(),
            &p.metadata.name,
            None,
        )
        .await
        .expect("deleting a policy");
    }
    for step in &case.steps {
        if let Action::LabelPod { pod, labels } = &step.action {
            let keys: Vec<String> = labels.keys().cloned().collect();
            relabel(rc, pod, &BTreeMap::new(), &keys).await;
        }
    }
}

/// The outcome of running cases.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Time to converge per step matched (`<case>#<step>`).
    pub timings: Vec<(String, Duration)>,
    /// What did not match, with both matrices.
    pub failures: Vec<String>,
}

impl Outcome {
    /// One line per step, slowest first, then the spread.
    pub fn report(&self) -> String {
        let mut t = self.timings.clone();
        t.sort_by_key(|b| std::cmp::Reverse(b.1));
        let mut s = String::new();
        for (name, d) in &t {
            s.push_str(&format!("  {:>6} ms  {name}\n", d.as_millis()));
        }
        if !t.is_empty() {
            let mid = t[t.len() / 2].1;
            s.push_str(&format!(
                "{} steps matched; time to converge: median {} ms, slowest {} ms\n",
                t.len(),
                mid.as_millis(),
                t[0].1.as_millis()
            ));
        }
        s
    }
}

/// Runs `cases` on `lab`: for each step, acts, then probes until the matrices match (the
/// time it took is recorded) or `within` passes; after each case, back to the baseline,
/// which must come back before the next case starts (so that one case's rules cannot make
/// the next pass early). `probe(timeout)` probes the current matrices (see [`converge`]).
pub fn run<L: WithDatastore>(
    lab: &L,
    cases: &[Case],
    mut probe: impl FnMut(Duration) -> Grid,
    within: Duration,
    timeout: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    for case in cases {
        for (i, step) in case.steps.iter().enumerate() {
            lab.with_ds(async |rc| act(&rc, &step.action).await);
            match converge(&mut probe, &step.expect, within, timeout) {
                Ok(t) => out.timings.push((format!("{}#{i}", case.name), t)),
                Err(got) => out.failures.push(format!(
                    "case {} step {i}: expected\n{}got\n{}",
                    case.name,
                    render(&step.expect),
                    render(&got)
                )),
            }
        }
        lab.with_ds(async |rc| reset(&rc, case).await);
        if let Err(g) = converge(&mut probe, &all_open(), within, timeout) {
            out.failures.push(format!(
                "after case {} the baseline did not come back:\n{}",
                case.name,
                render(&g)
            ));
            break;
        }
    }
    out
}
