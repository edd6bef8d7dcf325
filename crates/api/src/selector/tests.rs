//! The selector table: every row is a selector, label sets it must match and label sets it must
//! not match. Rows cover each operator, Calico's traps (absent labels under `!=` and `not in`),
//! precedence, negation parity, quoting and whitespace rules.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn labels(spec: &str) -> BTreeMap<String, String> {
    // "a=b,c=d" ; "" = no labels
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `""` is no label sets; otherwise `;`-separated sets, where an empty entry is "no labels".
fn cases(field: &str) -> Vec<&str> {
    if field.is_empty() {
        Vec::new()
    } else {
        field.split(';').map(str::trim).collect()
    }
}

/// (selector, must match, must not match); label sets separated by `;`.
const TABLE: &[(&str, &str, &str)] = &[
    ("", "; a=b", ""),
    ("all()", "; a=b", ""),
    (" all( ) ", "; a=b", ""),
    ("global()", "; a=b", ""),
    ("!all()", "", "; a=b"),
    ("has(a)", "a=b; a=", "; b=a"),
    ("has( a )", "a=x", "b=x"),
    ("!has(a)", "; b=a", "a=b; a="),
    ("! has(a)", "b=1", "a=1"),
    ("!!has(a)", "a=1", "b=1"),
    ("!!!has(a)", "b=1", "a=1"),
    ("a == 'b'", "a=b; a=b,c=d", "; a=c; a=; c=b"),
    ("a == \"b\"", "a=b", "a=B"),
    ("a=='b'", "a=b", "a=c"),
    ("a == ''", "a=", "; a=x"),
    ("a != 'b'", "a=c; ; c=d; a=", "a=b"),
    ("a!='b'", "a=c", "a=b"),
    ("!a == 'b'", "a=c; ", "a=b"),
    ("!(a == 'b')", "a=c; ", "a=b"),
    ("a in {'b', 'c'}", "a=b; a=c", "; a=d; b=b"),
    ("a in {\"b\"}", "a=b", "a=c"),
    ("a in {}", "", "; a=; a=b"),
    ("a in {'b',}", "a=b", "a=c"),
    ("a in { 'b' , 'c' , }", "a=c", "a=d"),
    ("a not in {'b', 'c'}", "a=d; ; x=b", "a=b; a=c"),
    ("a notin {'b'}", "a=c; ", "a=b"),
    ("a not  in {'b'}", "a=c", "a=b"),
    ("a not in {}", "; a=b; a=", ""),
    ("a contains 'bc'", "a=abcd; a=bc", "a=ab; ; b=bc"),
    ("a contains ''", "a=; a=x", "; b=x"),
    ("a starts with 'ab'", "a=abc; a=ab", "a=cab; "),
    ("a startswith 'ab'", "a=abc", "a=ba"),
    ("a starts  with 'x'", "a=xy", "a=yx"),
    ("a ends with 'yz'", "a=xyz; a=yz", "a=yzx; "),
    ("a endswith 'z'", "a=xyz", "a=zx"),
    ("a == 'b' && c == 'd'", "a=b,c=d", "a=b; c=d; a=b,c=e"),
    ("a == 'b' || c == 'd'", "a=b; c=d; a=b,c=d", "; a=c,c=e"),
    ("a == 'b' && c == 'd' && e == 'f'", "a=b,c=d,e=f", "a=b,c=d"),
    ("a == 'b' || c == 'd' || e == 'f'", "e=f", "a=x"),
    (
        "a == 'b' || c == 'd' && e == 'f'",
        "a=b; c=d,e=f",
        "c=d; e=f",
    ),
    (
        "(a == 'b' || c == 'd') && e == 'f'",
        "a=b,e=f; c=d,e=f",
        "a=b; c=d; e=f",
    ),
    (
        "a == 'b' && (c == 'd' || e == 'f')",
        "a=b,c=d; a=b,e=f",
        "a=b; c=d,e=f",
    ),
    ("!(a == 'b' && c == 'd')", "a=b; c=d; ", "a=b,c=d"),
    ("!(a == 'b' || c == 'd')", "; a=c", "a=b; c=d"),
    ("!a == 'b' && !c == 'd'", "; a=x,c=y", "a=b; c=d"),
    ("((a == 'b'))", "a=b", "a=c"),
    ("(((has(a))))", "a=", ""),
    ("has(a) && !has(b)", "a=1", "a=1,b=2; "),
    ("has(a) || has(b)", "a=1; b=1", "; c=1"),
    ("all() && has(a)", "a=1", ""),
    ("all() || has(a)", "; b=1", ""),
    ("!all() || has(a)", "a=1", "; b=1"),
    (
        "app.kubernetes.io/name == 'web'",
        "app.kubernetes.io/name=web",
        "app=web",
    ),
    (
        "projectcalico.org/namespace == 'x'",
        "projectcalico.org/namespace=x",
        "projectcalico.org/namespace=y",
    ),
    (
        "has(projectcalico.org/orchestrator)",
        "projectcalico.org/orchestrator=k8s",
        "",
    ),
    ("a_b-c.d/e == 'v'", "a_b-c.d/e=v", "a_b-c.d/e=w"),
    ("a == 'b c'", "", "a=b"),
    ("a == \"it's\"", "", "a=its"),
    ("a == 'say \"hi\"'", "", "a=hi"),
    ("a\t==\t'b'", "a=b", "a=c"),
    (
        "pcns.ns == 'x' && pod == 'a'",
        "pcns.ns=x,pod=a",
        "pcns.ns=y,pod=a",
    ),
    (
        "pcns.ns in {'x', 'y'} && pod != 'a'",
        "pcns.ns=x,pod=b; pcns.ns=y",
        "pcns.ns=x,pod=a; pcns.ns=z",
    ),
    (
        "a in {'1', '2'} || b not in {'3'}",
        "a=1; b=4; ",
        "b=3; a=3,b=3",
    ),
    ("!(a in {'x'})", "a=y; ", "a=x"),
    ("!a in {'x'}", "a=y; ", "a=x"),
    ("!(a not in {'x'})", "a=x", "a=y; "),
    ("!(a != 'x')", "a=x", "a=y; "),
    ("!(a contains 'x')", "a=y; ", "a=xy"),
    (
        "a == 'b' && !has(c) || d == 'e'",
        "a=b; d=e; a=b,c=1,d=e",
        "a=b,c=1",
    ),
    (
        "role == 'db' && tier in {'back', 'data'} && !has(deprecated)",
        "role=db,tier=back",
        "role=db,tier=front; role=db,tier=data,deprecated=",
    ),
    (
        "env != 'prod' && env != 'staging'",
        "env=dev; ",
        "env=prod; env=staging",
    ),
    ("env not in {'prod', 'staging'}", "env=dev; ", "env=prod"),
    ("has(a) && a != ''", "a=x", "a=; "),
    (
        "x == '1' && (y == '2' || (z == '3' && !has(w)))",
        "x=1,y=2; x=1,z=3",
        "x=1,z=3,w=; x=1",
    ),
    ("a == 'A'", "a=A", "a=a"),
    ("A == 'a'", "A=a", "a=a"),
    ("a contains 'B'", "a=xBx", "a=xbx"),
    ("a in {'b'} && a in {'c'}", "", "a=b; a=c"),
    ("a in {'b', 'c'} && a not in {'c'}", "a=b", "a=c; "),
    ("!global()", "", "; a=1"),
    ("has(a) || !has(a)", "; a=1", ""),
    ("a == 'b' || !(a == 'b')", "; a=b; a=c", ""),
    ("(a == 'b') || (c == 'd')", "c=d", "a=c"),
];

#[test]
fn table_of_selectors_matches_expected_label_sets() {
    assert!(TABLE.len() >= 80, "the table must keep at least 80 cases");
    for (sel, yes, no) in TABLE {
        let parsed = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel:?} must parse: {e}"));
        for set in cases(yes) {
            let l = labels(set);
            assert!(parsed.evaluate(&l), "{sel:?} must match {l:?}");
        }
        for set in cases(no) {
            let l = labels(set);
            assert!(!parsed.evaluate(&l), "{sel:?} must not match {l:?}");
        }
        // The canonical form means the same thing.
        let again = Selector::parse(parsed.canonical()).unwrap();
        assert_eq!(
            again.root(),
            parsed.root(),
            "{sel:?} canonical {:?}",
            parsed.canonical()
        );
    }
}

#[test]
fn canonical_forms_and_unique_ids_match_calico() {
    // Expected UIDs are the values Calico computes for these selectors.
    let cases = [
        (
            "",
            "all()",
            Some("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ),
        (
            " all() ",
            "all()",
            Some("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ),
        (
            " (all() )",
            "all()",
            Some("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ),
        (
            "! (has( b)||! has(a ))",
            "!(has(b) || !has(a))",
            Some("s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
        ),
        (
            "! (a == \"b\"&&! c != \"d\")",
            "!(a == \"b\" && !c != \"d\")",
            Some("s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
        ),
        ("a == \"'\"", "a == \"'\"", None),
        ("a == '\"'", "a == '\"'", None),
        ("a startswith '\"'", "a starts with '\"'", None),
        ("a endswith \"'\"", "a ends with \"'\"", None),
        ("a!='\"'", "a != '\"'", None),
        (
            "a in {\"d\", \"a\", \"b\"}",
            "a in {\"a\", \"b\", \"d\"}",
            None,
        ),
        (
            "a in {\"z\", \"z\", \"x\", \"y\", \"x\", \"a\"}",
            "a in {\"a\", \"x\", \"y\", \"z\"}",
            None,
        ),
        ("a in {}", "a in {}", None),
        ("a notin {'x'}", "a not in {\"x\"}", None),
        ("!!has(a)", "has(a)", None),
        ("!(k == 'v')", "!k == \"v\"", None),
        ("k == 'v' && x == 'y'", "(k == \"v\" && x == \"y\")", None),
        ("k == 'v' || has(x)", "(k == \"v\" || has(x))", None),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            "!(!((k == \"v\" && has(t)) || all()) && a in {\"b\", \"c\"})",
            None,
        ),
    ];
    for (input, canonical, uid) in cases {
        let s = Selector::parse(input).unwrap();
        assert_eq!(s.canonical(), canonical, "canonical form of {input:?}");
        let again = Selector::parse(canonical).unwrap();
        assert_eq!(again.canonical(), canonical);
        assert_eq!(again.unique_id(), s.unique_id());
        if let Some(uid) = uid {
            assert_eq!(s.unique_id(), uid, "unique ID of {input:?}");
        }
    }
}

#[test]
fn malformed_selectors_are_rejected_with_a_position() {
    let bad = [
        ("a = 'b'", "expected =="),
        ("a == b", "quoted string"),
        ("a == 1", "quoted string"),
        ("a & b", "&&"),
        ("a | b", "||"),
        ("a == 'b", "unterminated"),
        ("has(a", "no closing"),
        ("has()", "label name"),
        ("all(x)", "no closing"),
        ("(a == 'b'", "expected )"),
        ("a == 'b')", "unexpected content"),
        ("a in 'b'", "set literal"),
        ("a in {'b'", "expected }"),
        ("a in {b}", "expected }"),
        ("a", "end of selector"),
        ("a b", "operator after label"),
        ("a == 'b' &&", "end of selector"),
        ("&& a == 'b'", "unexpected token"),
        ("a == 'b'\n", "label name"),
        ("!", "end of selector"),
        ("a inn {}", "operator after label"),
        ("a == 'b' c == 'd'", "unexpected content"),
    ];
    for (input, needle) in bad {
        let e = Selector::parse(input).expect_err(input);
        let msg = e.to_string();
        assert!(
            msg.contains(needle),
            "{input:?}: {msg:?} should mention {needle:?}"
        );
        assert!(e.column >= 1);
    }
    let long = format!("has({})", "a".repeat(MAX_LABEL_LENGTH + 1));
    assert!(Selector::parse(&long).is_err());
}

#[test]
fn prefixing_rewrites_every_label() {
    let s = Selector::parse("a == 'x' && (has(b) || c in {'1'})").unwrap();
    assert_eq!(
        s.with_label_prefix("pcns.").canonical(),
        "(pcns.a == \"x\" && (has(pcns.b) || pcns.c in {\"1\"}))"
    );
}

#[test]
fn and_flattens_and_drops_all() {
    let a = Selector::parse("a == 'x' && b == 'y'").unwrap();
    let b = Selector::parse("c == 'z'").unwrap();
    assert_eq!(
        a.and(&b).canonical(),
        "(a == \"x\" && b == \"y\" && c == \"z\")"
    );
    assert_eq!(Selector::all().and(&b).canonical(), "c == \"z\"");
}

fn arb_label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("app.kubernetes.io/name".to_string()),
        "[a-z][a-z0-9_./-]{0,6}",
    ]
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9 '\"]{0,5}".prop_filter("one kind of quote", |s| !(s.contains('"')
            && s.contains('\'')))
    ]
}

fn arb_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Node::All),
        Just(Node::Global),
        arb_label().prop_map(Node::Has),
        (arb_label(), arb_value()).prop_map(|(k, v)| Node::Eq(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Node::Ne(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Node::Contains(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Node::StartsWith(k, v)),
        (arb_label(), arb_value()).prop_map(|(k, v)| Node::EndsWith(k, v)),
        (arb_label(), prop::collection::btree_set(arb_value(), 0..4))
            .prop_map(|(k, v)| Node::In(k, v.into_iter().collect())),
        (arb_label(), prop::collection::btree_set(arb_value(), 0..4))
            .prop_map(|(k, v)| Node::NotIn(k, v.into_iter().collect())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
            prop::collection::vec(inner, 2..4).prop_map(Node::Or),
        ]
    })
}

proptest! {
    #[test]
    fn canonical_print_reparses_to_the_same_tree(node in arb_node()) {
        // Double negation collapses when parsed; normalise the generated tree the same way.
        fn collapse(n: Node) -> Node {
            match n {
                Node::Not(inner) => match collapse(*inner) {
                    Node::Not(x) => *x,
                    other => Node::Not(Box::new(other)),
                },
                Node::And(ns) => Node::And(ns.into_iter().map(collapse).collect()),
                Node::Or(ns) => Node::Or(ns.into_iter().map(collapse).collect()),
                other => other,
            }
        }
        let node = collapse(node);
        let sel = Selector::from_node(node.clone());
        let parsed = Selector::parse(sel.canonical()).unwrap();
        prop_assert_eq!(parsed.root(), &node);
        prop_assert_eq!(parsed.unique_id(), sel.unique_id());
    }

    #[test]
    fn evaluation_is_unchanged_by_canonical_round_trip(
        node in arb_node(),
        l in prop::collection::btree_map(arb_label(), arb_value(), 0..4),
    ) {
        let sel = Selector::from_node(node);
        let parsed = Selector::parse(sel.canonical()).unwrap();
        prop_assert_eq!(sel.evaluate(&l), parsed.evaluate(&l));
    }

    #[test]
    fn parser_never_panics(input in ".{0,40}") {
        let _ = Selector::parse(&input);
    }
}
