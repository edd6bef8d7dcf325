//! The resource commands (create, apply, replace, delete, get, label, patch) with calicoctl's
//! rules for namespaces and its result lines. Each command returns what it would print, so
//! tests run them against the in-memory datastore.

use calico_api::codec::{Strictness, decode_object, parse_documents};
use calico_api::resource::{AnyResource, Kind};
use calico_datastore::client::normalise_kind;
use calico_datastore::{DatastoreError, ResourceClient};
use serde_json::Value;

use crate::cli::PatchType;
use crate::printer::{Lookups, Output, Printed, render};

/// What a command printed and whether it succeeded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

impl Outcome {
    pub fn failed(stderr: impl Into<String>) -> Outcome {
        let mut stderr = stderr.into();
        if !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        Outcome {
            stdout: String::new(),
            stderr,
            ok: false,
        }
    }
}

/// `-n` / `-A` as given.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub all_namespaces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create { skip_exists: bool },
    Apply,
    Replace,
}

impl Write {
    fn verb(self) -> (&'static str, &'static str) {
        match self {
            Write::Create { .. } => ("create", "created"),
            Write::Apply => ("apply", "applied"),
            Write::Replace => ("replace", "replaced"),
        }
    }
}

/// `Kind(name)` or `Kind(namespace/name)`, as Calico names a resource in messages.
pub fn ident(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace.filter(|n| !n.is_empty() && kind.info().namespaced) {
        Some(ns) => format!("{kind}({ns}/{name})"),
        None => format!("{kind}({name})"),
    }
}

/// One datastore error in calicoctl's words.
fn describe(e: &DatastoreError, id: &str) -> String {
    match e {
        DatastoreError::NotFound { .. } => format!("resource does not exist: {id}"),
        DatastoreError::AlreadyExists { .. } => {
            format!("resource already exists: {id} (use apply or replace to change it)")
        }
        DatastoreError::Conflict { .. } => {
            format!("update conflict: {id}: it changed since it was read; get it again and retry")
        }
        other => format!("{id}: {other}"),
    }
}

/// Fills in or checks a resource's namespace against `-n`/`-A`, as calicoctl does: a
/// namespaced resource without one goes to `-n`, else `default`.
pub fn settle_namespace(r: &mut AnyResource, scope: &Scope) -> Result<(), String> {
    let kind = r.kind();
    let doc_ns = r.metadata().namespace.clone().filter(|n| !n.is_empty());
    if !kind.info().namespaced {
        if doc_ns.is_some() {
            return Err(format!(
                "namespace should not be specified for a non-namespaced resource. {kind} is not a namespaced resource"
            ));
        }
        if scope.namespace.is_some() || scope.all_namespaces {
            return Err(format!("{kind} is not namespaced"));
        }
        return Ok(());
    }
    let ns = match (doc_ns, &scope.namespace) {
        (Some(d), Some(c)) if &d != c => {
            return Err(format!(
                "resource namespace does not match client namespace. {d} != {c}"
            ));
        }
        (Some(d), _) => d,
        (None, Some(c)) => c.clone(),
        (None, None) => "default".to_string(),
    };
    r.metadata_mut().namespace = Some(ns);
    Ok(())
}

fn readonly(kind: Kind, op: &str) -> Option<String> {
    (kind == Kind::ClusterInformation)
        .then(|| format!("operation {op} is not supported on {kind}: resource is readonly"))
}

/// The kind named by the resources, if they are all of one.
fn single_kind(resources: &[AnyResource]) -> Option<Kind> {
    let first = resources.first()?.kind();
    resources.iter().all(|r| r.kind() == first).then_some(first)
}

/// The kind of resources already as stored ([`normalise_kind`]): a Kubernetes
/// NetworkPolicy is reported as the Calico NetworkPolicy it became.
fn kind_label(kind: Option<Kind>) -> String {
    kind.map(|k| format!("'{k}' ")).unwrap_or_default()
}

/// create / apply / replace of resources read from files.
pub async fn write(
    rc: &ResourceClient,
    op: Write,
    resources: Vec<AnyResource>,
    scope: &Scope,
) -> Outcome {
    let (verb, past) = op.verb();
    let resources: Vec<AnyResource> = resources.into_iter().map(normalise_kind).collect();
    let total = resources.len();
    let kind = single_kind(&resources);
    let mut ok = 0usize;
    let mut errs: Vec<String> = Vec::new();
    for mut r in resources {
        if let Err(e) = settle_namespace(&mut r, scope) {
            errs.push(e);
            continue;
        }
        let op_name = match op {
            Write::Create { .. } => "create or apply",
            Write::Apply => "apply",
            Write::Replace => "apply or replace",
        };
        if let Some(e) = readonly(r.kind(), op_name) {
            errs.push(e);
            continue;
        }
        let id = ident(
            r.kind(),
            r.metadata().namespace.as_deref(),
            &r.metadata().name,
        );
        let result = match op {
            Write::Create { skip_exists } => match rc.create_any(r).await {
                Err(DatastoreError::AlreadyExists { .. }) if skip_exists => Ok(()),
                other => other.map(|_| ()),
            },
            Write::Apply => rc.apply_any(r).await.map(|_| ()),
            Write::Replace => replace_one(rc, r).await,
        };
        match result {
            Ok(()) => ok += 1,
            Err(e) => errs.push(describe(&e, &id)),
        }
    }
    let what = kind_label(kind);
    if errs.is_empty() {
        return Outcome {
            stdout: format!("Successfully {past} {ok} {what}resource(s)\n"),
            stderr: String::new(),
            ok: true,
        };
    }
    let joined = format!("[{}]", errs.join(" "));
    if ok == 0 {
        return Outcome::failed(match (total, kind) {
            (1, _) => format!("failed to {verb} {what}resource: {joined}"),
            (_, Some(_)) => format!("failed to {verb} any {what}resources: {joined}"),
            (_, None) => format!("failed to {verb} any resources: {joined}"),
        });
    }
    Outcome {
        stdout: format!("Partial success: {past} the first {ok} out of {total} {what}resources:\n"),
        stderr: format!("hit error: {joined}\n"),
        ok: false,
    }
}

/// replace: the object must exist; without a resourceVersion the current one is used.
async fn replace_one(rc: &ResourceClient, mut r: AnyResource) -> Result<(), DatastoreError> {
    let ns = r.metadata().namespace.clone();
    let current = rc
        .get_any(r.kind(), ns.as_deref(), &r.metadata().name)
        .await?;
    if r.metadata().resource_version.is_empty() {
        r.metadata_mut().resource_version = current.metadata().resource_version.clone();
    }
    rc.update_any(r).await.map(|_| ())
}

/// Resources named on the command line: `KIND NAME...`.
pub fn named(kind: &str, names: &[String]) -> Result<(Kind, Vec<String>), String> {
    let k = Kind::from_cli_name(kind).ok_or_else(|| unknown_kind(kind))?;
    if names.iter().any(String::is_empty) {
        return Err("resource name may not be empty".into());
    }
    Ok((k, names.to_vec()))
}

/// Calico's "not supported" message, with the kinds that are.
pub fn unknown_kind(kind: &str) -> String {
    let mut valid: Vec<&str> = Kind::ALL
        .iter()
        .filter(|k| k.info().api_version == calico_api::resource::API_VERSION)
        .map(|k| k.info().kind)
        .collect();
    valid.sort_unstable();
    valid.dedup();
    format!(
        "resource type '{kind}' is not supported; use one of: {} (any case, plural or short name such as ipp, gnp, hep, wep)",
        valid.join(", ")
    )
}

/// Namespace for a by-name operation on a kind.
fn namespace_for(kind: Kind, scope: &Scope) -> Result<Option<String>, String> {
    if !kind.info().namespaced {
        if scope.namespace.is_some() || scope.all_namespaces {
            return Err(format!("{kind} is not namespaced"));
        }
        return Ok(None);
    }
    Ok(Some(
        scope.namespace.clone().unwrap_or_else(|| "default".into()),
    ))
}

/// delete by name or of the resources in files.
pub async fn delete(
    rc: &ResourceClient,
    targets: Vec<AnyResource>,
    scope: &Scope,
    skip_not_exists: bool,
) -> Outcome {
    let targets: Vec<AnyResource> = targets.into_iter().map(normalise_kind).collect();
    let kind = single_kind(&targets);
    let mut ok = 0usize;
    let mut errs = Vec::new();
    for mut r in targets {
        let k = r.kind();
        if let Err(e) = settle_namespace(&mut r, scope) {
            errs.push(e);
            continue;
        }
        let ns = r.metadata().namespace.clone();
        let name = r.metadata().name.clone();
        if let Some(e) = readonly(k, "delete") {
            errs.push(e);
            continue;
        }
        match rc.delete_any(k, ns.as_deref(), &name, None).await {
            Ok(_) => ok += 1,
            Err(DatastoreError::NotFound { .. }) if skip_not_exists => ok += 1,
            Err(e) => errs.push(describe(&e, &ident(k, ns.as_deref(), &name))),
        }
    }
    let what = kind_label(kind);
    let mut out = Outcome {
        ok: errs.is_empty(),
        ..Outcome::default()
    };
    if ok > 0 {
        out.stdout = format!("Successfully deleted {ok} {what}resource(s)\n");
    }
    for e in errs {
        out.stderr
            .push_str(&format!("Failed to delete {what}resource: {e}\n"));
    }
    out
}

/// A bare resource of `kind` carrying only its name (and namespace): a by-name target.
pub fn stub(kind: Kind, namespace: Option<String>, name: &str) -> Result<AnyResource, String> {
    let mut v = serde_json::json!({
        "apiVersion": kind.info().api_version,
        "kind": kind.info().kind,
        "metadata": {"name": name},
    });
    if let Some(ns) = namespace {
        v["metadata"]["namespace"] = Value::String(ns);
    }
    decode_object(v, 0, Strictness::Lenient).map_err(|e| e.to_string())
}

/// What `get` should fetch.
#[derive(Debug, Clone)]
pub enum GetTarget {
    List(Kind),
    Names(Kind, Vec<String>),
    Resources(Vec<AnyResource>),
}

/// get: a list, names, or the resources of files, printed as asked.
pub async fn get(
    rc: &ResourceClient,
    target: GetTarget,
    scope: &Scope,
    output: &Output,
    export: bool,
) -> Outcome {
    if scope.all_namespaces && scope.namespace.is_some() {
        return Outcome::failed(
            "cannot use both --namespace and --all-namespaces flags at the same time",
        );
    }
    let mut results = Vec::new();
    let mut errs = Vec::new();
    let mut wanted: Vec<(Kind, Option<String>, String)> = Vec::new();
    match target {
        GetTarget::List(kind) => {
            let ns = if kind.info().namespaced && !scope.all_namespaces {
                Some(scope.namespace.clone().unwrap_or_else(|| "default".into()))
            } else if !kind.info().namespaced && (scope.namespace.is_some() || scope.all_namespaces)
            {
                return Outcome::failed(format!(
                    "failed to get resources: {kind} is not namespaced"
                ));
            } else {
                None
            };
            match rc.list_any(kind, ns.as_deref()).await {
                Ok(l) => results.push(Printed::List {
                    kind,
                    items: l.items,
                    revision: l.revision,
                }),
                Err(e) => {
                    return Outcome::failed(format!("failed to get resources: {e}"));
                }
            }
        }
        GetTarget::Names(kind, names) => {
            if kind.info().namespaced && scope.all_namespaces {
                return Outcome::failed(
                    "cannot use --all-namespace flag for getting a single resource",
                );
            }
            match namespace_for(kind, scope) {
                Ok(ns) => wanted.extend(names.into_iter().map(|n| (kind, ns.clone(), n))),
                Err(e) => errs.push(e),
            }
        }
        GetTarget::Resources(rs) => {
            for mut r in rs.into_iter().map(normalise_kind) {
                match settle_namespace(&mut r, scope) {
                    Ok(()) => wanted.push((
                        r.kind(),
                        r.metadata().namespace.clone(),
                        r.metadata().name.clone(),
                    )),
                    Err(e) => errs.push(e),
                }
            }
        }
    }
    for (kind, ns, name) in wanted {
        match rc.get_any(kind, ns.as_deref(), &name).await {
            Ok(mut r) => {
                if export {
                    let m = r.metadata_mut();
                    m.namespace = None;
                    m.uid.clear();
                    m.resource_version.clear();
                    m.creation_timestamp = None;
                    m.deletion_timestamp = None;
                }
                results.push(Printed::One(r));
            }
            Err(e) => errs.push(describe(&e, &ident(kind, ns.as_deref(), &name))),
        }
    }
    let lookups = lookups_for(rc, &results, output).await;
    let show_ns = scope.all_namespaces || scope.namespace.is_some();
    let mut out = Outcome {
        ok: errs.is_empty(),
        ..Outcome::default()
    };
    if !results.is_empty() || matches!(output, Output::Ps | Output::Wide) {
        match render(&results, output, show_ns, &lookups) {
            Ok(s) => out.stdout = s,
            Err(e) => return Outcome::failed(e),
        }
    }
    for e in errs {
        out.stderr.push_str(&e);
        out.stderr.push('\n');
    }
    out
}

async fn lookups_for(rc: &ResourceClient, results: &[Printed], output: &Output) -> Lookups {
    let nodes = results.iter().any(|r| match r {
        Printed::List { kind, .. } => *kind == Kind::Node,
        Printed::One(o) => o.kind() == Kind::Node,
    });
    if !nodes || !matches!(output, Output::Wide | Output::CustomColumns(_)) {
        return Lookups::default();
    }
    let asn = match rc.get_any(Kind::BgpConfiguration, None, "default").await {
        Ok(AnyResource::BgpConfiguration(b)) => b
            .spec
            .as_number
            .map_or_else(|| "64512".to_string(), |a| a.to_string()),
        Err(DatastoreError::NotFound { .. }) | Ok(_) => "64512".into(),
        Err(_) => "unknown".into(),
    };
    Lookups {
        default_asn: Some(asn),
    }
}

/// label: set, overwrite or remove one label of one resource.
pub async fn label(
    rc: &ResourceClient,
    kind_arg: &str,
    name: &str,
    label: &str,
    overwrite: bool,
    remove: bool,
    scope: &Scope,
) -> Outcome {
    let (kind, _) = match named(kind_arg, &[name.to_string()]) {
        Ok(k) => k,
        Err(e) => return Outcome::failed(format!("failed to get {kind_arg} {name}, error {e}")),
    };
    let ns = match namespace_for(kind, scope) {
        Ok(ns) => ns,
        Err(e) => return Outcome::failed(format!("failed to get {kind_arg} {name}, error {e}")),
    };
    let (key, value) = if remove {
        (label.to_string(), String::new())
    } else {
        match label.split_once('=') {
            Some((k, v)) if !k.is_empty() => (k.to_string(), v.to_string()),
            _ => {
                return Outcome::failed(format!(
                    "invalid label {label}; write it as key=value (or the key alone with --remove)"
                ));
            }
        }
    };
    let mut r = match rc.get_any(kind, ns.as_deref(), name).await {
        Ok(r) => r,
        Err(DatastoreError::NotFound { .. }) => {
            return Outcome::failed(format!("{kind_arg} {name} not found"));
        }
        Err(e) => return Outcome::failed(format!("failed to get {kind_arg} {name}, error {e}")),
    };
    let labels = &mut r.metadata_mut().labels;
    let existed = labels.contains_key(&key);
    let msg = if remove {
        if labels.remove(&key).is_none() {
            return Outcome::failed(format!(
                "cannot remove label of {kind_arg} {name}, key {key} does not exist"
            ));
        }
        format!("Successfully removed label {key} from {kind_arg} {name}")
    } else {
        if let Some(old) = labels.get(&key)
            && *old != value
            && !overwrite
        {
            return Outcome::failed(format!(
                "failed to update label of {kind_arg} {name}, key {key} is already present. please use '--overwrite' to set a new value"
            ));
        }
        labels.insert(key.clone(), value);
        if existed {
            format!("Successfully updated label {key} on {kind_arg} {name}")
        } else {
            format!("Successfully set label {key} on {kind_arg} {name}")
        }
    };
    match rc.update_any(r).await {
        Ok(_) => Outcome {
            stdout: msg + "\n",
            stderr: String::new(),
            ok: true,
        },
        Err(e) => Outcome::failed(format!(
            "failed to update {kind_arg} {name}, label not changed: {e}"
        )),
    }
}

/// patch: a patch of `patch_type` (JSON, or YAML) applied to one resource, which must
/// still be valid afterwards; see [`crate::patch`].
pub async fn patch(
    rc: &ResourceClient,
    kind_arg: &str,
    name: &str,
    patch_text: &str,
    patch_type: PatchType,
    scope: &Scope,
) -> Outcome {
    let (kind, _) = match named(kind_arg, &[name.to_string()]) {
        Ok(k) => k,
        Err(e) => return Outcome::failed(e),
    };
    let ns = match namespace_for(kind, scope) {
        Ok(ns) => ns,
        Err(e) => return Outcome::failed(e),
    };
    let patch_value = match parse_documents(patch_text) {
        Ok(mut docs) if docs.len() == 1 => docs.remove(0),
        Ok(_) => return Outcome::failed("hit error: the patch must be one JSON or YAML document"),
        Err(e) => {
            return Outcome::failed(format!(
                "hit error: the patch is not valid JSON or YAML: {e}"
            ));
        }
    };
    let id = ident(kind, ns.as_deref(), name);
    let current = match rc.get_any(kind, ns.as_deref(), name).await {
        Ok(r) => r,
        Err(e) => return Outcome::failed(format!("hit error: {}", describe(&e, &id))),
    };
    let mut v = match serde_json::to_value(&current) {
        Ok(v) => v,
        Err(e) => return Outcome::failed(format!("hit error: {e}")),
    };
    if let Err(e) = crate::patch::apply(patch_type, &mut v, &patch_value) {
        return Outcome::failed(format!("hit error: {e}"));
    }
    // The identity is not the patch's to change.
    v["metadata"]["name"] = Value::String(name.to_string());
    v["metadata"]["resourceVersion"] = Value::String(current.metadata().resource_version.clone());
    let patched = match decode_object(v, 0, Strictness::Strict) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::failed(format!(
                "hit error: creating resource from patched data: {e}"
            ));
        }
    };
    match rc.update_any(patched).await {
        Ok(_) => Outcome {
            stdout: format!("Successfully patched 1 '{kind}' resource\n"),
            stderr: String::new(),
            ok: true,
        },
        Err(e) => Outcome::failed(format!(
            "hit error: updating existing resource: {}",
            describe(&e, &id)
        )),
    }
}

#[cfg(test)]
mod golden_tables;
#[cfg(test)]
mod tests;
