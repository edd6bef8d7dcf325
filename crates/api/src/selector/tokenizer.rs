//! Splits a selector into tokens, with Calico's lexical rules (`tokenizer.go`): only space and
//! TAB are whitespace, `has(`, `all(` and `global(` are single tokens, and the word operators
//! (`in`, `not in`, `contains`, `starts with`, `ends with`) are recognised only straight after a
//! label and only when followed by a word boundary.

use super::SelectorError;

/// The longest label a selector may mention.
pub const MAX_LABEL_LENGTH: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    Not,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Has(&'a str),
    LParen,
    RParen,
    And,
    Or,
    Global,
    Eof,
}

/// A token and the byte offset where it starts (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub tok: Tok<'a>,
    pub pos: usize,
}

pub(crate) fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn word_boundary_at(s: &str, i: usize) -> bool {
    s.as_bytes().get(i).is_none_or(|c| !is_ident_char(*c))
}

/// Matches `words` separated by optional whitespace at `i`; returns the end offset.
/// A word boundary is required only after the last word (so `notin` and `startswith` work).
fn cut_words(s: &str, i: usize, words: &[&str]) -> Option<usize> {
    let mut j = i;
    for (n, w) in words.iter().enumerate() {
        if !s[j..].starts_with(w) {
            return None;
        }
        j += w.len();
        if n + 1 < words.len() {
            j = skip_ws(s, j);
        }
    }
    word_boundary_at(s, j).then_some(j)
}

fn cut_ident(s: &str, i: usize) -> Result<(&str, usize), SelectorError> {
    let b = s.as_bytes();
    let mut j = i;
    while j < b.len() && is_ident_char(b[j]) {
        j += 1;
    }
    let ident = &s[i..j];
    if ident.is_empty() {
        return Err(SelectorError::new(s, i, "expected a label name"));
    }
    if ident.len() > MAX_LABEL_LENGTH {
        return Err(SelectorError::new(
            s,
            i,
            format!("label is longer than {MAX_LABEL_LENGTH} characters"),
        ));
    }
    Ok((ident, j))
}

pub fn tokenize(s: &str) -> Result<Vec<Token<'_>>, SelectorError> {
    let b = s.as_bytes();
    let mut out: Vec<Token<'_>> = Vec::new();
    let mut i = 0;
    loop {
        i = skip_ws(s, i);
        if i >= b.len() {
            out.push(Token {
                tok: Tok::Eof,
                pos: i,
            });
            return Ok(out);
        }
        let start = i;
        let after_label = matches!(
            out.last(),
            Some(Token {
                tok: Tok::Label(_),
                ..
            })
        );
        let tok = match b[i] {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            q @ (b'"' | b'\'') => {
                let rest = &s[i + 1..];
                let end = rest
                    .find(q as char)
                    .ok_or_else(|| SelectorError::new(s, i, "unterminated string"))?;
                i += end + 2;
                Tok::Str(&rest[..end])
            }
            b'{' => {
                i += 1;
                Tok::LBrace
            }
            b'}' => {
                i += 1;
                Tok::RBrace
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'=' => {
                if s[i..].starts_with("==") {
                    i += 2;
                    Tok::Eq
                } else {
                    return Err(SelectorError::new(
                        s,
                        i,
                        "expected == (a single = is not an operator)",
                    ));
                }
            }
            b'!' => {
                if s[i..].starts_with("!=") {
                    i += 2;
                    Tok::Ne
                } else {
                    i += 1;
                    Tok::Not
                }
            }
            b'&' => {
                if s[i..].starts_with("&&") {
                    i += 2;
                    Tok::And
                } else {
                    return Err(SelectorError::new(
                        s,
                        i,
                        "expected && (a single & is not an operator)",
                    ));
                }
            }
            b'|' => {
                if s[i..].starts_with("||") {
                    i += 2;
                    Tok::Or
                } else {
                    return Err(SelectorError::new(
                        s,
                        i,
                        "expected || (a single | is not an operator)",
                    ));
                }
            }
            _ if after_label => {
                let ops: [(&[&str], Tok<'_>); 5] = [
                    (&["contains"], Tok::Contains),
                    (&["starts", "with"], Tok::StartsWith),
                    (&["ends", "with"], Tok::EndsWith),
                    (&["not", "in"], Tok::NotIn),
                    (&["in"], Tok::In),
                ];
                let found = ops
                    .into_iter()
                    .find_map(|(words, tok)| cut_words(s, i, words).map(|end| (end, tok)));
                match found {
                    Some((end, tok)) => {
                        i = end;
                        tok
                    }
                    None => {
                        let label = match out.last() {
                            Some(Token {
                                tok: Tok::Label(l), ..
                            }) => *l,
                            _ => "",
                        };
                        return Err(SelectorError::new(
                            s,
                            i,
                            format!(
                                "expected an operator after label {label:?} (==, !=, in, not in, contains, starts with, ends with)"
                            ),
                        ));
                    }
                }
            }
            _ => {
                if let Some(rest) = s[i..].strip_prefix("has(") {
                    let j = skip_ws(s, s.len() - rest.len());
                    let (ident, j) = cut_ident(s, j)?;
                    let j = skip_ws(s, j);
                    if b.get(j) != Some(&b')') {
                        return Err(SelectorError::new(s, j, "no closing ')' after has("));
                    }
                    i = j + 1;
                    Tok::Has(ident)
                } else if let Some(tok) = [("all(", Tok::All), ("global(", Tok::Global)]
                    .into_iter()
                    .find(|(p, _)| s[i..].starts_with(p))
                {
                    let (prefix, tok) = tok;
                    let j = skip_ws(s, i + prefix.len());
                    if b.get(j) != Some(&b')') {
                        return Err(SelectorError::new(
                            s,
                            j,
                            format!("no closing ')' after {prefix}"),
                        ));
                    }
                    i = j + 1;
                    tok
                } else {
                    let (ident, j) = cut_ident(s, i)?;
                    i = j;
                    Tok::Label(ident)
                }
            }
        };
        out.push(Token { tok, pos: start });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok<'_>> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn word_operators_only_follow_labels() {
        assert_eq!(
            kinds("a in {'x'}"),
            vec![
                Tok::Label("a"),
                Tok::In,
                Tok::LBrace,
                Tok::Str("x"),
                Tok::RBrace,
                Tok::Eof
            ]
        );
        assert_eq!(kinds("a notin {}")[1], Tok::NotIn);
        assert_eq!(kinds("a not  in {}")[1], Tok::NotIn);
        assert_eq!(kinds("a startswith 'x'")[1], Tok::StartsWith);
        // "inx" is not "in" followed by a boundary.
        assert!(tokenize("a inx {}").is_err());
        // A label after a label is an error, not two labels.
        assert!(tokenize("a b").is_err());
    }

    #[test]
    fn function_tokens_allow_inner_whitespace_only() {
        assert_eq!(kinds("has( a.b/c )")[0], Tok::Has("a.b/c"));
        assert_eq!(kinds("all( )")[0], Tok::All);
        assert_eq!(kinds("global()")[0], Tok::Global);
        // "has (" is a label "has" and then an unexpected "(".
        assert_eq!(kinds("has (x)")[0], Tok::Label("has"));
    }

    #[test]
    fn newline_is_not_whitespace() {
        assert!(tokenize("a == 'b'\n").is_err());
        assert!(tokenize("a == 'b'\t").is_ok());
    }

    #[test]
    fn strings_have_no_escapes() {
        assert_eq!(kinds(r#"a == "it's""#)[2], Tok::Str("it's"));
        assert_eq!(kinds("a == ''")[2], Tok::Str(""));
        assert!(tokenize("a == 'x").is_err());
    }
}
