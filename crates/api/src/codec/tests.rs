use super::*;
use crate::resource::Resource;

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p1
spec:
  cidr: 10.1.0.0/16
";

#[test]
fn yaml_strings_keep_their_text_like_kubectl() {
    let text = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: s
  labels:
    ns: y
    version: 1.10
    enabled: yes
    count: 010
spec:
  nets: [10.0.0.0/8]
";
    let r = decode_documents(text).unwrap();
    let labels = &r[0].metadata().labels;
    assert_eq!(labels["ns"], "y");
    assert_eq!(labels["version"], "1.10");
    assert_eq!(labels["enabled"], "yes");
    assert_eq!(labels["count"], "010");
}

#[test]
fn multi_document_streams_skip_empty_documents() {
    let text = format!(
        "# leading comment\n---\n{POOL}---\n# nothing here\n---\n{}\n...\n",
        POOL.replace("p1", "p2")
    );
    let r = decode_documents(&text).unwrap();
    let names: Vec<_> = r.iter().map(|x| x.metadata().name.clone()).collect();
    assert_eq!(names, ["p1", "p2"]);
}

#[test]
fn list_kinds_and_arrays_expand_to_their_items() {
    let typed = "apiVersion: projectcalico.org/v3
kind: IPPoolList
metadata: {resourceVersion: '5'}
items:
- metadata: {name: a}
  spec: {cidr: 10.0.0.0/24}
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: b}
  spec: {cidr: 10.0.1.0/24}
";
    let r = decode_documents(typed).unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|x| x.kind() == Kind::IpPool));

    let generic = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 5}},
        {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint", "metadata": {"name": "h"}, "spec": {"node": "n", "interfaceName": "eth0"}}
    ]}"#;
    let r = decode_documents(generic).unwrap();
    assert_eq!(
        r.iter().map(AnyResource::kind).collect::<Vec<_>>(),
        [Kind::Tier, Kind::HostEndpoint]
    );

    let array = format!(
        "- {}\n- {}",
        "{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: a}}",
        "{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: b}}"
    );
    assert_eq!(decode_documents(&array).unwrap().len(), 2);
}

#[test]
fn json_input_is_accepted_including_concatenated_values() {
    let text = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.0.0.0/24"}}
{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"b"},"spec":{"cidr":"10.0.1.0/24"}}"#;
    assert_eq!(decode_documents(text).unwrap().len(), 2);
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: [p1\nspec: {}\n";
    match decode_documents(text).unwrap_err() {
        DecodeError::Syntax {
            line,
            column,
            message,
        } => {
            assert!(line >= 4, "line {line}");
            assert!(column >= 1);
            assert!(!message.is_empty());
        }
        other => panic!("expected a syntax error, got {other}"),
    }
    let json = "{\"apiVersion\": \"projectcalico.org/v3\",\n \"kind\": }";
    match decode_documents(json).unwrap_err() {
        DecodeError::Syntax { line, .. } => assert_eq!(line, 2),
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_path_unless_lenient() {
    let text = POOL.replace(
        "  cidr: 10.1.0.0/16\n",
        "  cidr: 10.1.0.0/16\n  blocksize: 24\n",
    );
    let e = decode_documents(&text).unwrap_err().to_string();
    assert!(e.contains("not recognized"), "{e}");
    assert!(e.contains("spec.blocksize"), "{e}");
    assert!(e.contains("IPPool \"p1\""), "{e}");
    assert!(decode_documents_with(&text, Strictness::Lenient).is_ok());

    let nested = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  ingress:
  - action: Allow
    source: {selectr: all()}
";
    let e = decode_documents(nested).unwrap_err().to_string();
    assert!(e.contains("spec.ingress[0].source.selectr"), "{e}");
}

#[test]
fn wrong_types_name_the_field_and_the_line() {
    // The second document has the error on its 7th line, line 14 of the stream.
    let text = format!(
        "{POOL}---\n{}",
        POOL.replace(
            "  cidr: 10.1.0.0/16\n",
            "  cidr: 10.1.0.0/16\n  blockSize: big\n"
        )
    );
    let e = decode_documents(&text).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("document 2 (IPPool \"p1\"): spec.blockSize (line 14, column 14): invalid"),
        "{msg}"
    );
    let e = decode_documents(&POOL.replace("10.1.0.0/16", "10.1.0.0/16\n  natOutgoing: maybe"))
        .unwrap_err();
    assert!(e.to_string().contains("spec.natOutgoing"), "{e}");
    let e = decode_documents(&POOL.replace(
        "  cidr: 10.1.0.0/16\n",
        "  cidr: 10.1.0.0/16\n  ipipMode: Sometimes\n",
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("spec.ipipMode") && msg.contains("Sometimes") && msg.contains("CrossSubnet"),
        "{msg}"
    );
}

#[test]
fn missing_or_unknown_type_information_is_explained() {
    let e = decode_documents("metadata: {name: x}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("apiVersion and kind are required"), "{e}");
    let e =
        decode_documents("apiVersion: projectcalico.org/v3\nkind: IPPol\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("IPPol") && e.contains("IPPool"), "{e}");
    let e = decode_documents("just a string\n").unwrap_err().to_string();
    assert!(e.contains("expected a resource object"), "{e}");
    let e = decode_documents("apiVersion: projectcalico.org/v3\nkind: IPPool\nspec: {cidr: 1.0.0.0/8}\nmetadata: {name: x}\napiVersion: again\n").unwrap_err().to_string();
    assert!(e.contains("duplicate"), "{e}");
}

#[test]
fn kubernetes_network_policy_is_recognised_by_its_api_version() {
    let text = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";
    let r = decode_documents(text).unwrap();
    assert_eq!(r[0].kind(), Kind::K8sNetworkPolicy);
    let calico = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {selector: all()}\n";
    assert_eq!(
        decode_documents(calico).unwrap()[0].kind(),
        Kind::NetworkPolicy
    );
}

#[test]
fn yaml_output_reads_back_identically() {
    let mut r = decode_documents(POOL).unwrap().remove(0);
    r.apply_defaults();
    let yaml = to_yaml(&r).unwrap();
    let again = decode_documents(&yaml).unwrap().remove(0);
    assert_eq!(again, r);
    let json = to_json_pretty(&r).unwrap();
    assert_eq!(decode_documents(&json).unwrap().remove(0), r);
    let two = to_yaml_documents(&[r.clone(), r.clone()]).unwrap();
    assert_eq!(decode_documents(&two).unwrap().len(), 2);
    if let AnyResource::IpPool(p) = &r {
        assert!(p.validate().is_ok());
    }
}
