//! Calico's label selector language: parse, evaluate, print canonically, hash.
//!
//! Grammar (Calico `parser.go`): `||` binds loosest, then `&&`, then any number of `!`;
//! comparisons need a string literal on the right; `in`/`not in` take a set literal that may be
//! empty and may end with a comma. Semantics keep Calico's traps on purpose: `k != "v"` and
//! `k not in {…}` are true when `k` is absent, and an empty selector matches everything.
//!
//! The canonical form ([`Selector::canonical`]) is what Calico hashes into the selector's unique
//! ID (`s:` + base64url(SHA-224)), so equal selectors share ipsets across implementations.

mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha224};

pub use tokenizer::MAX_LABEL_LENGTH;
use tokenizer::{Tok, Token, tokenize};

/// A selector that failed to parse, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {message} (at character {column})")]
pub struct SelectorError {
    pub input: String,
    /// 1-based character column of the problem.
    pub column: usize,
    pub message: String,
}

impl SelectorError {
    fn new(input: &str, byte_pos: usize, message: impl Into<String>) -> SelectorError {
        let column = input
            .get(..byte_pos.min(input.len()))
            .map_or(byte_pos, |p| p.chars().count())
            + 1;
        SelectorError {
            input: input.to_string(),
            column,
            message: message.into(),
        }
    }
}

/// Anything labels can be read from.
pub trait Labels {
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get_label(&self, key: &str) -> Option<&str> {
        (**self).get_label(key)
    }
}

/// Endpoint labels layered over inherited ones (profile `labelsToApply`): the first wins.
#[derive(Debug, Clone, Copy)]
pub struct Layered<'a, A: Labels + ?Sized, B: Labels + ?Sized> {
    pub own: &'a A,
    pub inherited: &'a B,
}

impl<A: Labels + ?Sized, B: Labels + ?Sized> Labels for Layered<'_, A, B> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.own
            .get_label(key)
            .or_else(|| self.inherited.get_label(key))
    }
}

/// A node of the selector tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    All,
    Global,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    /// Values sorted and de-duplicated.
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

impl Node {
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Node::All | Node::Global => true,
            Node::Has(k) => labels.get_label(k).is_some(),
            Node::Eq(k, v) => labels.get_label(k) == Some(v.as_str()),
            Node::Ne(k, v) => labels.get_label(k) != Some(v.as_str()),
            Node::Contains(k, v) => labels.get_label(k).is_some_and(|x| x.contains(v.as_str())),
            Node::StartsWith(k, v) => labels
                .get_label(k)
                .is_some_and(|x| x.starts_with(v.as_str())),
            Node::EndsWith(k, v) => labels.get_label(k).is_some_and(|x| x.ends_with(v.as_str())),
            Node::In(k, set) => labels
                .get_label(k)
                .is_some_and(|x| set.binary_search_by(|s| s.as_str().cmp(x)).is_ok()),
            Node::NotIn(k, set) => labels
                .get_label(k)
                .is_none_or(|x| set.binary_search_by(|s| s.as_str().cmp(x)).is_err()),
            Node::Not(n) => !n.evaluate(labels),
            Node::And(ns) => ns.iter().all(|n| n.evaluate(labels)),
            Node::Or(ns) => ns.iter().any(|n| n.evaluate(labels)),
        }
    }

    fn write_canonical(&self, out: &mut String) {
        fn quoted(out: &mut String, v: &str) {
            let q = if v.contains('"') { '\'' } else { '"' };
            out.push(q);
            out.push_str(v);
            out.push(q);
        }
        fn op(out: &mut String, k: &str, op: &str, v: &str) {
            out.push_str(k);
            out.push_str(op);
            quoted(out, v);
        }
        fn set(out: &mut String, k: &str, op: &str, vs: &[String]) {
            out.push_str(k);
            out.push(' ');
            out.push_str(op);
            out.push_str(" {");
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quoted(out, v);
            }
            out.push('}');
        }
        fn list(out: &mut String, ns: &[Node], sep: &str) {
            out.push('(');
            for (i, n) in ns.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                n.write_canonical(out);
            }
            out.push(')');
        }
        match self {
            Node::All => out.push_str("all()"),
            Node::Global => out.push_str("global()"),
            Node::Has(k) => {
                out.push_str("has(");
                out.push_str(k);
                out.push(')');
            }
            Node::Eq(k, v) => op(out, k, " == ", v),
            Node::Ne(k, v) => op(out, k, " != ", v),
            Node::Contains(k, v) => op(out, k, " contains ", v),
            Node::StartsWith(k, v) => op(out, k, " starts with ", v),
            Node::EndsWith(k, v) => op(out, k, " ends with ", v),
            Node::In(k, vs) => set(out, k, "in", vs),
            Node::NotIn(k, vs) => set(out, k, "not in", vs),
            Node::Not(n) => {
                out.push('!');
                n.write_canonical(out);
            }
            Node::And(ns) => list(out, ns, " && "),
            Node::Or(ns) => list(out, ns, " || "),
        }
    }

    /// Every label name the node mentions.
    pub fn for_each_label<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Node::All | Node::Global => {}
            Node::Has(k)
            | Node::Eq(k, _)
            | Node::Ne(k, _)
            | Node::Contains(k, _)
            | Node::StartsWith(k, _)
            | Node::EndsWith(k, _)
            | Node::In(k, _)
            | Node::NotIn(k, _) => f(k),
            Node::Not(n) => n.for_each_label(f),
            Node::And(ns) | Node::Or(ns) => ns.iter().for_each(|n| n.for_each_label(f)),
        }
    }

    fn map_labels(&self, f: &impl Fn(&str) -> String) -> Node {
        match self {
            Node::All => Node::All,
            Node::Global => Node::Global,
            Node::Has(k) => Node::Has(f(k)),
            Node::Eq(k, v) => Node::Eq(f(k), v.clone()),
            Node::Ne(k, v) => Node::Ne(f(k), v.clone()),
            Node::Contains(k, v) => Node::Contains(f(k), v.clone()),
            Node::StartsWith(k, v) => Node::StartsWith(f(k), v.clone()),
            Node::EndsWith(k, v) => Node::EndsWith(f(k), v.clone()),
            Node::In(k, vs) => Node::In(f(k), vs.clone()),
            Node::NotIn(k, vs) => Node::NotIn(f(k), vs.clone()),
            Node::Not(n) => Node::Not(Box::new(n.map_labels(f))),
            Node::And(ns) => Node::And(ns.iter().map(|n| n.map_labels(f)).collect()),
            Node::Or(ns) => Node::Or(ns.iter().map(|n| n.map_labels(f)).collect()),
        }
    }
}

/// A parsed selector with its canonical text and unique ID.
#[derive(Debug, Clone)]
pub struct Selector {
    root: Node,
    canonical: String,
    unique_id: String,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}
impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        Selector::parse(s)
    }
}

impl Selector {
    /// Parses a selector; an empty or blank one means `all()`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let tokens = tokenize(input)?;
        let root = if matches!(tokens[0].tok, Tok::Eof) {
            Node::All
        } else {
            let mut p = Parser {
                input,
                tokens: &tokens,
                pos: 0,
            };
            let node = p.or_expr()?;
            let rest = &tokens[p.pos];
            if !matches!(rest.tok, Tok::Eof) {
                return Err(SelectorError::new(
                    input,
                    rest.pos,
                    "unexpected content at end of selector",
                ));
            }
            node
        };
        Ok(Selector::from_node(root))
    }

    /// Builds a selector from a tree (used by rewrites such as namespace scoping).
    pub fn from_node(root: Node) -> Selector {
        let mut canonical = String::new();
        root.write_canonical(&mut canonical);
        let unique_id = unique_id("s", &canonical);
        Selector {
            root,
            canonical,
            unique_id,
        }
    }

    pub fn all() -> Selector {
        Selector::from_node(Node::All)
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Calico's canonical spelling (`Normalise`).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// `s:` + base64url(SHA-224(`s:` + canonical)), Calico's `UniqueID`.
    pub fn unique_id(&self) -> &str {
        &self.unique_id
    }

    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.root.evaluate(labels)
    }

    /// Whether the selector is exactly `all()` (matches everything).
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// Whether `global()` appears anywhere in the selector.
    pub fn mentions_global(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::Global => true,
                Node::Not(n) => walk(n),
                Node::And(ns) | Node::Or(ns) => ns.iter().any(walk),
                _ => false,
            }
        }
        walk(&self.root)
    }

    /// A copy with every label name prefixed (Calico's `PrefixVisitor`): namespace selectors
    /// become `pcns.` selectors over endpoint labels, service-account ones `pcsa.`.
    pub fn with_label_prefix(&self, prefix: &str) -> Selector {
        Selector::from_node(self.root.map_labels(&|k| format!("{prefix}{k}")))
    }

    /// `self && other`, flattening nested ANDs and dropping `all()` terms.
    pub fn and(&self, other: &Selector) -> Selector {
        let mut terms = Vec::new();
        for n in [&self.root, &other.root] {
            match n {
                Node::All => {}
                Node::And(ns) => terms.extend(ns.iter().cloned()),
                n => terms.push(n.clone()),
            }
        }
        Selector::from_node(match terms.len() {
            0 => Node::All,
            1 => terms.remove(0),
            _ => Node::And(terms),
        })
    }
}

/// Calico's `hash.MakeUniqueID`: `prefix:` + unpadded base64url of SHA-224 of `prefix:content`.
pub fn unique_id(prefix: &str, content: &str) -> String {
    let mut h = Sha224::new();
    h.update(prefix.as_bytes());
    h.update(b":");
    h.update(content.as_bytes());
    format!(
        "{prefix}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
    )
}

struct Parser<'a, 't> {
    input: &'a str,
    tokens: &'t [Token<'a>],
    pos: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> &Token<'a> {
        // The token list always ends with Eof and the parser never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> &Token<'a> {
        let t = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err(&self, tok: &Token<'_>, msg: impl Into<String>) -> SelectorError {
        SelectorError::new(self.input, tok.pos, msg)
    }

    fn or_expr(&mut self) -> Result<Node, SelectorError> {
        let mut terms = vec![self.and_expr()?];
        while matches!(self.peek().tok, Tok::Or) {
            self.bump();
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Node::Or(terms)
        })
    }

    fn and_expr(&mut self) -> Result<Node, SelectorError> {
        let mut terms = vec![self.unary()?];
        while matches!(self.peek().tok, Tok::And) {
            self.bump();
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Node::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Node, SelectorError> {
        let mut negated = false;
        while matches!(self.peek().tok, Tok::Not) {
            self.bump();
            negated = !negated;
        }
        let node = self.primary()?;
        Ok(if negated {
            Node::Not(Box::new(node))
        } else {
            node
        })
    }

    fn string(&mut self, after: &str) -> Result<String, SelectorError> {
        let t = self.bump().clone();
        match t.tok {
            Tok::Str(s) => Ok(s.to_string()),
            _ => Err(self.err(
                &t,
                format!("expected a quoted string after {after} (e.g. \"value\")"),
            )),
        }
    }

    fn primary(&mut self) -> Result<Node, SelectorError> {
        let t = self.bump().clone();
        match t.tok {
            Tok::Has(k) => Ok(Node::Has(k.to_string())),
            Tok::All => Ok(Node::All),
            Tok::Global => Ok(Node::Global),
            Tok::LParen => {
                let inner = self.or_expr()?;
                let close = self.bump().clone();
                if matches!(close.tok, Tok::RParen) {
                    Ok(inner)
                } else {
                    Err(self.err(&close, "expected )"))
                }
            }
            Tok::Label(k) => {
                let k = k.to_string();
                let op = self.bump().clone();
                match op.tok {
                    Tok::Eq => Ok(Node::Eq(k, self.string("==")?)),
                    Tok::Ne => Ok(Node::Ne(k, self.string("!=")?)),
                    Tok::Contains => Ok(Node::Contains(k, self.string("contains")?)),
                    Tok::StartsWith => Ok(Node::StartsWith(k, self.string("starts with")?)),
                    Tok::EndsWith => Ok(Node::EndsWith(k, self.string("ends with")?)),
                    Tok::In | Tok::NotIn => {
                        let set = self.set_literal()?;
                        Ok(if matches!(op.tok, Tok::In) {
                            Node::In(k, set)
                        } else {
                            Node::NotIn(k, set)
                        })
                    }
                    Tok::Eof => {
                        Err(self.err(&op, "unexpected end of selector looking for an operator"))
                    }
                    _ => Err(self.err(&op, format!("expected == or != after label {k:?}"))),
                }
            }
            Tok::Eof => Err(self.err(&t, "unexpected end of selector")),
            _ => Err(self.err(&t, "unexpected token")),
        }
    }

    fn set_literal(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.bump().clone();
        if !matches!(open.tok, Tok::LBrace) {
            return Err(self.err(&open, "expected a set literal such as {\"a\", \"b\"}"));
        }
        let mut values = Vec::new();
        while let Tok::Str(s) = self.peek().tok {
            values.push(s.to_string());
            self.bump();
            if matches!(self.peek().tok, Tok::Comma) {
                self.bump();
            } else {
                break;
            }
        }
        let close = self.bump().clone();
        if !matches!(close.tok, Tok::RBrace) {
            return Err(self.err(&close, "expected } to close the set"));
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

#[cfg(test)]
mod tests;
