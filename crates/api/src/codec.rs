//! Reading and writing resources as YAML or JSON, the way calicoctl does.
//!
//! A document may hold one object, a `<Kind>List` (or generic `List`) with `items`, or an array
//! of objects; a stream may hold many `---`-separated documents. Decoding is strict by
//! default: a field the kind does not have is an error naming its path, as calicoctl's
//! "field in document is not recognized or is in the wrong location". Every error says which
//! document it is about and, for YAML, the line and column.
//!
//! YAML is decoded straight into the typed structs (not through an untyped tree) because YAML's
//! scalar typing would otherwise corrupt strings: as in `kubectl`, `ns: y` and `version: 1.10`
//! under `labels` are the strings `"y"` and `"1.10"`, not a boolean and the number 1.1.

use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::resource::{AnyResource, Kind};

/// Why a stream of documents could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: u64,
        column: u64,
        message: String,
    },
    #[error("document {doc}: {message}")]
    MissingTypeInfo { doc: usize, message: String },
    #[error(
        "document {doc}: resource type {api_version}/{kind} is not supported; known kinds are {known}"
    )]
    UnknownKind {
        doc: usize,
        api_version: String,
        kind: String,
        known: String,
    },
    #[error("document {doc}{object}: {path}{at}: {message}")]
    InvalidField {
        doc: usize,
        /// ` (IPPool "p1")` when known.
        object: String,
        path: String,
        /// ` (line 4, column 14)` when known.
        at: String,
        message: String,
    },
    #[error(
        "document {doc}{object}: field in document is not recognized or is in the wrong location: {path}"
    )]
    UnknownField {
        doc: usize,
        object: String,
        path: String,
    },
}

/// How unknown fields are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Unknown fields are errors (user input).
    Strict,
    /// Unknown fields are dropped (data written by another Calico version).
    Lenient,
}

/// Decodes a stream of YAML or JSON documents into resources, strictly.
pub fn decode_documents(text: &str) -> Result<Vec<AnyResource>, DecodeError> {
    decode_documents_with(text, Strictness::Strict)
}

pub fn decode_documents_with(
    text: &str,
    strictness: Strictness,
) -> Result<Vec<AnyResource>, DecodeError> {
    let trimmed = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    let mut out = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, doc) in parse_json_documents(text)?.into_iter().enumerate() {
            decode_value_into(doc, i + 1, strictness, &mut out)?;
        }
        return Ok(out);
    }
    // First pass: syntax, and the shape of each document (which kinds, where).
    let values = serde_saphyr::from_multiple::<Value>(text).map_err(yaml_syntax_error)?;
    let texts = split_yaml_documents(text);
    let mut doc_no = 0;
    let mut texts = texts.into_iter().filter(|d| !is_blank_yaml(d.text));
    for value in values {
        let Some(doc_text) = texts.next() else { break };
        if value.is_null() {
            continue;
        }
        doc_no += 1;
        let shape = shape_of(&value, doc_no)?;
        // Second pass: the typed decode, straight from the YAML text.
        let mut failure = None;
        let decoded =
            serde_saphyr::with_deserializer_from_str(doc_text.text, |de| {
                match run_seed(de, &shape, &value, doc_no, strictness) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => {
                        failure = Some(e);
                        Ok(None)
                    }
                }
            });
        // A typed failure stops the decode part-way, so the wrapper's own complaint about
        // unread content is not the interesting error.
        if let Some(mut e) = failure {
            if let DecodeError::InvalidField { at, .. } = &mut e {
                shift_location(at, doc_text.first_line);
            }
            return Err(e);
        }
        if let Some(v) = decoded.map_err(yaml_syntax_error)? {
            out.extend(v);
        }
    }
    Ok(out)
}

/// The body of one `---`-separated YAML document, and the 0-based line it starts on.
#[derive(Debug, Clone, Copy)]
struct YamlDoc<'a> {
    text: &'a str,
    first_line: u64,
}

/// Splits a YAML stream at document markers (`---` and `...` at the start of a line).
fn split_yaml_documents(text: &str) -> Vec<YamlDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u64;
    let mut offset = 0usize;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare.trim_end() == "...";
        if is_start || is_end {
            docs.push(YamlDoc {
                text: &text[start..offset],
                first_line: start_line,
            });
            if is_start && bare.len() > 3 {
                // Content after `--- ` on the marker line belongs to the new document.
                start = offset + 4;
                start_line = line_no as u64;
            } else {
                start = offset + line.len();
                start_line = line_no as u64 + 1;
            }
        }
        offset += line.len();
    }
    docs.push(YamlDoc {
        text: &text[start..],
        first_line: start_line,
    });
    docs
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

fn shift_location(at: &mut String, lines: u64) {
    // `at` is " (line N, column M)" relative to the document.
    if let Some(rest) = at.strip_prefix(" (line ")
        && let Some((n, tail)) = rest.split_once(',')
        && let Ok(n) = n.parse::<u64>()
    {
        *at = format!(" (line {}, {tail}", n + lines).replace(",  ", ", ");
    }
}

fn parse_json_documents(text: &str) -> Result<Vec<Value>, DecodeError> {
    let mut docs = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let v = v.map_err(|e| DecodeError::Syntax {
            line: e.line() as u64,
            column: e.column() as u64,
            message: json_message(&e),
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Splits a YAML/JSON stream into untyped documents (empty documents are skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DecodeError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return parse_json_documents(text);
    }
    let docs = serde_saphyr::from_multiple::<Value>(text).map_err(yaml_syntax_error)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The library's message without its own "error: line X column Y:" prefix or snippet.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let msg = match first.find(": ") {
        Some(i) if first.starts_with("line ") => &first[i + 2..],
        _ => first,
    };
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn yaml_syntax_error(e: serde_saphyr::Error) -> DecodeError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    DecodeError::Syntax {
        line,
        column,
        message: yaml_message(&e),
    }
}

/// What a document holds, learnt from an untyped first pass.
#[derive(Debug, Clone)]
enum Shape {
    One(Kind),
    Many(Vec<Shape>),
    /// A `List` object; the shapes of its `items`.
    List(Vec<Shape>),
}

fn shape_of(value: &Value, doc: usize) -> Result<Shape, DecodeError> {
    shape_with_default(value, doc, None)
}

fn shape_with_default(
    value: &Value,
    doc: usize,
    default: Option<(&str, &str)>,
) -> Result<Shape, DecodeError> {
    match value {
        Value::Array(items) => Ok(Shape::Many(
            items
                .iter()
                .map(|v| shape_with_default(v, doc, None))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(map) => {
            let get = |k: &str| map.get(k).and_then(Value::as_str);
            let kind = get("kind").or(default.map(|d| d.1)).unwrap_or("");
            if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
                let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
                let api = get("apiVersion").unwrap_or("");
                let items = match map.get("items") {
                    Some(Value::Array(items)) => items.as_slice(),
                    Some(Value::Null) | None => &[],
                    Some(_) => {
                        return Err(DecodeError::MissingTypeInfo {
                            doc,
                            message: format!("{kind}: items must be a list"),
                        });
                    }
                };
                return Ok(Shape::List(
                    items
                        .iter()
                        .map(|v| shape_with_default(v, doc, item_kind.map(|k| (api, k))))
                        .collect::<Result<_, _>>()?,
                ));
            }
            let api_version = get("apiVersion").or(default.map(|d| d.0));
            match (api_version, get("kind").or(default.map(|d| d.1))) {
                (Some(a), Some(k)) => Kind::from_type(a, k).map(Shape::One).ok_or_else(|| {
                    DecodeError::UnknownKind {
                        doc,
                        api_version: a.to_string(),
                        kind: k.to_string(),
                        known: Kind::ALL
                            .iter()
                            .map(|k| k.info().kind)
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                }),
                _ => Err(DecodeError::MissingTypeInfo {
                    doc,
                    message: "apiVersion and kind are required (e.g. apiVersion: projectcalico.org/v3, kind: IPPool)".into(),
                }),
            }
        }
        other => Err(DecodeError::MissingTypeInfo {
            doc,
            message: format!(
                "expected a resource object, found {}",
                match other {
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "something else",
                }
            ),
        }),
    }
}

/// Describes the object a path points into, e.g. ` (IPPool "p1")`, using the untyped tree.
fn describe_object(value: &Value, path: &str) -> String {
    let mut v = value;
    // Walk leading `[n]` / `items[n]` segments to the object the path is inside.
    let mut rest = path;
    loop {
        if let Some(r) = rest.strip_prefix("items")
            && let Some(next) = v.get("items")
        {
            v = next;
            rest = r.trim_start_matches('.');
            continue;
        }
        if let Some(r) = rest.strip_prefix('[')
            && let Some((n, r)) = r.split_once(']')
            && let Ok(n) = n.parse::<usize>()
            && let Some(next) = v.get(n)
        {
            v = next;
            rest = r.trim_start_matches('.');
            continue;
        }
        break;
    }
    let kind = v.get("kind").and_then(Value::as_str);
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n:?})"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    }
}

struct ShapeSeed<'a> {
    shape: &'a Shape,
    out: &'a mut Vec<AnyResource>,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.shape {
            Shape::One(kind) => {
                self.out.push(AnyResource::deserialize_kind(*kind, d)?);
                Ok(())
            }
            Shape::Many(items) => d.deserialize_seq(SeqOfShapes {
                items,
                out: self.out,
            }),
            Shape::List(items) => d.deserialize_map(ListObject {
                items,
                out: self.out,
            }),
        }
    }
}

struct SeqOfShapes<'a> {
    items: &'a [Shape],
    out: &'a mut Vec<AnyResource>,
}

impl<'de> Visitor<'de> for SeqOfShapes<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of resources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for shape in self.items {
            if seq
                .next_element_seed(ShapeSeed {
                    shape,
                    out: &mut *self.out,
                })?
                .is_none()
            {
                break;
            }
        }
        // The first pass saw exactly these items; drain anything unexpected without loss.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(())
    }
}

struct ListObject<'a> {
    items: &'a [Shape],
    out: &'a mut Vec<AnyResource>,
}

impl<'de> Visitor<'de> for ListObject<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a List object with items")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(ItemsSeed {
                    items: self.items,
                    out: &mut *self.out,
                })?;
            } else {
                // apiVersion, kind, metadata of the list itself: read, not needed.
                map.next_value::<Value>()?;
            }
        }
        Ok(())
    }
}

struct ItemsSeed<'a> {
    items: &'a [Shape],
    out: &'a mut Vec<AnyResource>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.items.is_empty() {
            // `items: null` or `items: []`.
            Value::deserialize(d)?;
            return Ok(());
        }
        d.deserialize_seq(SeqOfShapes {
            items: self.items,
            out: self.out,
        })
    }
}

use serde::Deserialize as _;

/// Runs the typed decode of one document, tracking the path of any error and every field the
/// types do not know.
fn run_seed<'de, D>(
    d: D,
    shape: &Shape,
    value: &Value,
    doc: usize,
    strictness: Strictness,
) -> Result<Vec<AnyResource>, DecodeError>
where
    D: Deserializer<'de>,
    D::Error: ErrorLocation,
{
    let mut unknown: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let mut out = Vec::new();
    let result = {
        let mut on_ignored = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let ignoring = serde_ignored::Deserializer::new(d, &mut on_ignored);
        let tracked = serde_path_to_error::Deserializer::new(ignoring, &mut track);
        ShapeSeed {
            shape,
            out: &mut out,
        }
        .deserialize(tracked)
    };
    if let Err(e) = result {
        let path = track.path().to_string();
        return Err(DecodeError::InvalidField {
            doc,
            object: describe_object(value, &path),
            path: if path == "?" {
                String::from("(document)")
            } else {
                path
            },
            at: e.location_text(),
            message: e.message_text(),
        });
    }
    if strictness == Strictness::Strict
        && let Some(path) = unknown.into_iter().next()
    {
        let path = normalise_ignored_path(&path);
        return Err(DecodeError::UnknownField {
            doc,
            object: describe_object(value, &path),
            path,
        });
    }
    Ok(out)
}

/// serde_ignored prints sequence indexes as `.0.`; use `[0]` like the other paths.
fn normalise_ignored_path(p: &str) -> String {
    let mut out = String::new();
    for seg in p.split('.') {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Location and message of a deserialisation error, for both input formats.
trait ErrorLocation: de::Error {
    fn location_text(&self) -> String;
    fn message_text(&self) -> String;
}

impl ErrorLocation for serde_saphyr::Error {
    fn location_text(&self) -> String {
        self.location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default()
    }
    fn message_text(&self) -> String {
        yaml_message(self)
    }
}

impl ErrorLocation for serde_json::Error {
    fn location_text(&self) -> String {
        String::new()
    }
    fn message_text(&self) -> String {
        json_message(self)
    }
}

/// Decodes one parsed document (an object, a list object or an array) into resources.
pub fn decode_value(
    value: Value,
    doc: usize,
    strictness: Strictness,
) -> Result<Vec<AnyResource>, DecodeError> {
    let mut out = Vec::new();
    decode_value_into(value, doc, strictness, &mut out)?;
    Ok(out)
}

fn decode_value_into(
    value: Value,
    doc: usize,
    strictness: Strictness,
    out: &mut Vec<AnyResource>,
) -> Result<(), DecodeError> {
    let shape = shape_of(&value, doc)?;
    out.extend(run_seed(value.clone(), &shape, &value, doc, strictness)?);
    Ok(())
}

/// Decodes a single object whose `apiVersion` and `kind` say what it is.
pub fn decode_object(
    value: Value,
    doc: usize,
    strictness: Strictness,
) -> Result<AnyResource, DecodeError> {
    let mut all = decode_value(value, doc, strictness)?;
    match (all.pop(), all.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(DecodeError::MissingTypeInfo {
            doc,
            message: "expected exactly one resource".into(),
        }),
    }
}

/// Decodes a resource of a known kind from the JSON a datastore holds. Fields this version
/// does not know are dropped (the data may have been written by a newer Calico).
pub fn decode_stored(kind: Kind, bytes: &[u8]) -> Result<AnyResource, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let r = AnyResource::deserialize_kind(kind, &mut de)?;
    de.end()?;
    Ok(r)
}

/// One value as YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, EncodeError> {
    serde_saphyr::to_string(value).map_err(|e| EncodeError(e.to_string()))
}

/// Several values as one `---`-separated YAML stream.
pub fn to_yaml_documents<T: Serialize>(values: &[T]) -> Result<String, EncodeError> {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(v)?);
    }
    Ok(out)
}

/// One value as pretty JSON.
pub fn to_json_pretty<T: Serialize + ?Sized>(value: &T) -> Result<String, EncodeError> {
    serde_json::to_string_pretty(value).map_err(|e| EncodeError(e.to_string()))
}

/// Encoding failed (only possible for values with non-string map keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode: {0}")]
pub struct EncodeError(pub String);

#[cfg(test)]
mod tests;
