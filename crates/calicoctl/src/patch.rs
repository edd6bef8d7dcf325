//! The patch formats of `calicoctl patch -t`: pure functions from a resource's JSON and a
//! patch to the patched JSON. Never touches the datastore.
//!
//! Calico documents `strategic` (the default), `merge` and `json`; its implementation
//! always applies a Kubernetes strategic merge patch. Calico's types declare no list merge
//! keys, so a strategic merge patch of them is an RFC 7386 merge patch plus the `$patch`
//! directive, which is what `strategic` does here; `merge` is RFC 7386 and `json` is
//! RFC 6902, as their names promise.

use serde_json::Value;

use crate::cli::PatchType;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error(
        "a {kind} patch must be a JSON (or YAML) object, e.g. '{{\"spec\":{{\"disabled\":true}}}}'"
    )]
    NotAnObject { kind: &'static str },
    #[error(
        "a json patch must be a list of operations, e.g. '[{{\"op\":\"add\",\"path\":\"/spec/disabled\",\"value\":true}}]'"
    )]
    NotAList,
    #[error("json patch operation {index}: {reason}")]
    Operation { index: usize, reason: String },
    #[error(
        "strategic merge patch directive {directive}: {value} is not supported; use $patch: replace or $patch: delete, or -t json"
    )]
    Directive { directive: String, value: String },
}

/// Applies `patch` to `target` in the format `kind`.
pub fn apply(kind: PatchType, target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let (name, directives) = match kind {
        PatchType::Merge => ("merge", false),
        PatchType::Strategic => ("strategic", true),
        PatchType::Json => return json_patch(target, patch),
    };
    if !patch.is_object() {
        return Err(PatchError::NotAnObject { kind: name });
    }
    merge(target, patch, directives)
}

/// RFC 7386 merge patch: objects merge key by key, `null` deletes, anything else replaces.
/// With `directives`, a strategic merge patch of types without list merge keys: an object
/// may also carry `$patch: replace` (it replaces the target object) or `$patch: delete` (it
/// removes it), and any other `$` key is refused.
fn merge(target: &mut Value, patch: &Value, directives: bool) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if directives {
        match p.get("$patch") {
            None => {}
            Some(Value::String(d)) if d == "replace" => {
                let mut replacement = p.clone();
                replacement.remove("$patch");
                *target = Value::Object(replacement);
                return Ok(());
            }
            Some(Value::String(d)) if d == "delete" => {
                *target = Value::Null;
                return Ok(());
            }
            Some(other) => {
                return Err(PatchError::Directive {
                    directive: "$patch".into(),
                    value: other.to_string(),
                });
            }
        }
        if let Some(k) = p.keys().find(|k| k.starts_with('$')) {
            return Err(PatchError::Directive {
                directive: k.clone(),
                value: p[k].to_string(),
            });
        }
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
                continue;
            }
            let slot = t.entry(k.clone()).or_insert(Value::Null);
            merge(slot, v, directives)?;
            // `$patch: delete` below.
            if slot.is_null() {
                t.remove(k);
            }
        }
    }
    Ok(())
}

/// RFC 6902 JSON patch: operations applied in order; any failure leaves `target` unchanged.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::NotAList);
    };
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        one_op(&mut doc, op).map_err(|reason| PatchError::Operation { index, reason })?;
    }
    *target = doc;
    Ok(())
}

fn one_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let field = |name: &str| {
        op.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("needs a string \"{name}\""))
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| "needs a \"value\"".to_string())
    };
    let path = field("path")?;
    match field("op")? {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            let slot = pointer_mut(doc, path)?;
            *slot = value()?;
            Ok(())
        }
        "move" => {
            let from = field("from")?;
            if path.starts_with(&format!("{from}/")) {
                return Err(format!("cannot move {from} into itself ({path})"));
            }
            let v = remove(doc, from)?;
            add(doc, path, v)
        }
        "copy" => {
            let from = field("from")?;
            let v = pointer_mut(doc, from)?.clone();
            add(doc, path, v)
        }
        "test" => {
            let want = value()?;
            let got = pointer_mut(doc, path)?;
            if *got == want {
                Ok(())
            } else {
                Err(format!("test failed: {path} is {got}, not {want}"))
            }
        }
        other => Err(format!(
            "unknown op {other:?}; use add, remove, replace, move, copy or test"
        )),
    }
}

/// The value at JSON pointer `path` (RFC 6901).
fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, String> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    doc.pointer_mut(path)
        .ok_or_else(|| format!("path {path} does not exist"))
}

/// The parent of `path` and the last token, unescaped.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let Some((parent_path, last)) = path.rsplit_once('/') else {
        return Err(if path.is_empty() {
            "the whole document cannot be the target; name a field".to_string()
        } else {
            format!("path {path:?} must start with '/'")
        });
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    Ok((pointer_mut(doc, parent_path)?, last))
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, v);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("index {last} is outside the list at {path}"))?
            };
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!("the parent of {path} is not an object or a list")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (p, last) = parent(doc, path)?;
    let gone = match p {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    };
    gone.ok_or_else(|| format!("path {path} does not exist"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn pool() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"cidr": "10.0.0.0/16", "allowedUses": ["Workload", "Tunnel"]}})
    }

    #[test]
    fn merge_and_strategic_patches_merge_objects_and_replace_lists() {
        for kind in [PatchType::Merge, PatchType::Strategic] {
            let mut v = pool();
            let p = json!({"spec": {"disabled": true, "allowedUses": ["Tunnel"]}, "metadata": {"labels": {"a": null}}});
            apply(kind, &mut v, &p).unwrap();
            assert_eq!(v["spec"]["disabled"], json!(true));
            assert_eq!(v["spec"]["allowedUses"], json!(["Tunnel"]));
            assert_eq!(v["metadata"]["labels"], json!({}));
            assert!(apply(kind, &mut v, &json!([1])).is_err());
        }
    }

    #[test]
    fn strategic_patches_honour_the_patch_directive() {
        let mut v = pool();
        let p = json!({"metadata": {"labels": {"$patch": "replace", "b": "2"}}});
        apply(PatchType::Strategic, &mut v, &p).unwrap();
        assert_eq!(v["metadata"]["labels"], json!({"b": "2"}));
        apply(
            PatchType::Strategic,
            &mut v,
            &json!({"metadata": {"labels": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert!(v["metadata"].get("labels").is_none(), "{v}");
        let e = apply(
            PatchType::Strategic,
            &mut v,
            &json!({"spec": {"$retainKeys": ["cidr"]}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("$retainKeys"), "{e}");
    }

    #[test]
    fn json_patches_apply_rfc_6902_operations_all_or_nothing() {
        let mut v = pool();
        let ops = json!([
            {"op": "replace", "path": "/spec/cidr", "value": "10.1.0.0/16"},
            {"op": "add", "path": "/spec/allowedUses/-", "value": "LoadBalancer"},
            {"op": "remove", "path": "/spec/allowedUses/0"},
            {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"},
            {"op": "copy", "from": "/spec/cidr", "path": "/spec/old"},
            {"op": "move", "from": "/spec/old", "path": "/spec/moved"},
            {"op": "test", "path": "/spec/moved", "value": "10.1.0.0/16"},
        ]);
        apply(PatchType::Json, &mut v, &ops).unwrap();
        assert_eq!(
            v["spec"],
            json!({"cidr": "10.1.0.0/16", "allowedUses": ["Tunnel", "LoadBalancer"], "moved": "10.1.0.0/16"})
        );
        assert_eq!(v["metadata"]["labels"]["x/y"], json!("z"));
        let before = v.clone();
        let bad = json!([
            {"op": "replace", "path": "/spec/cidr", "value": "10.9.0.0/16"},
            {"op": "remove", "path": "/spec/nosuch"},
        ]);
        let e = apply(PatchType::Json, &mut v, &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "json patch operation 1: path /spec/nosuch does not exist"
        );
        assert_eq!(v, before, "a failed patch changes nothing");
        assert_eq!(
            apply(PatchType::Json, &mut v, &json!({"spec": {}})),
            Err(PatchError::NotAList)
        );
    }
}
