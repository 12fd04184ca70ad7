//! PromQL query templates: `{{arm}}` is replaced by an arm's label value, escaped for the
//! string literal it stands in (and for a regular expression after `=~` or `!~`), and
//! `{{window}}` by the window's length (`300s`).

use std::sync::Arc;
use std::time::Duration;

use crate::error::{CanaryError, Result};

/// Longest query template accepted, in bytes.
pub const TEMPLATE_LEN_MAX: usize = 4_096;

/// Longest arm label value accepted, in bytes.
pub const LABEL_VALUE_LEN_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The arm's label value, inside a string literal quoted with `quote`; `regex` when the
    /// literal is the right side of `=~` or `!~`.
    Arm {
        quote: char,
        regex: bool,
    },
    Window,
}

/// A validated PromQL template with the placeholders `{{arm}}` (required; only inside a
/// `"…"` or `'…'` string literal, so the value can be escaped) and `{{window}}` (optional;
/// outside string literals, for range selectors).
///
/// ```
/// use std::time::Duration;
/// use canary::QueryTemplate;
///
/// let t = QueryTemplate::new(r#"sum(increase(http_requests_total{version="{{arm}}"}[{{window}}]))"#)?;
/// assert_eq!(
///     t.render(r#"v2 "beta""#, Duration::from_secs(300)),
///     r#"sum(increase(http_requests_total{version="v2 \"beta\""}[300s]))"#
/// );
/// // After =~ the value is a regular expression: its metacharacters are escaped too.
/// let t = QueryTemplate::new(r#"up{pod=~"{{arm}}-.*"}"#)?;
/// assert_eq!(t.render("api.v2", Duration::from_secs(60)), r#"up{pod=~"api\\.v2-.*"}"#);
/// // A placeholder outside a string literal could not be escaped: refused.
/// assert!(QueryTemplate::new("up{version={{arm}}}").is_err());
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryTemplate {
    source: Arc<str>,
    parts: Vec<Part>,
}

impl QueryTemplate {
    /// Parses and validates `template`.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] (field `query`) for an empty template or one longer than
    /// [`TEMPLATE_LEN_MAX`], no `{{arm}}`, an unknown `{{…}}` placeholder, `{{arm}}` outside a
    /// quoted string literal (or inside a raw `` `…` `` one), `{{window}}` inside a string
    /// literal, or an unterminated string literal.
    pub fn new(template: &str) -> Result<Self> {
        let bad = |reason: String| {
            Err(CanaryError::InvalidPolicy {
                field: "query",
                reason: format!("{reason} in {template:?}"),
            })
        };
        if template.trim().is_empty() || template.len() > TEMPLATE_LEN_MAX {
            return bad(format!("a template must be 1..={TEMPLATE_LEN_MAX} bytes"));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        // The open string literal: its quote and whether it follows =~ or !~.
        let mut literal: Option<(char, bool)> = None;
        let mut escaped = false;
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                let Some(end) = after.find("}}") else {
                    return bad("an unterminated {{ placeholder".into());
                };
                let name = after[..end].trim();
                match (name, literal) {
                    ("arm", Some(('`', _))) => {
                        return bad("{{arm}} inside a raw `…` string cannot be escaped".into());
                    }
                    ("arm", Some((quote, regex))) => {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                        parts.push(Part::Arm { quote, regex });
                    }
                    ("arm", None) => {
                        return bad("{{arm}} must be inside a quoted string literal".into());
                    }
                    ("window", None) => {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                        parts.push(Part::Window);
                    }
                    ("window", Some(_)) => {
                        return bad("{{window}} must be outside string literals".into());
                    }
                    (other, _) => return bad(format!("unknown placeholder {{{{{other}}}}}")),
                }
                rest = &after[end + 2..];
                escaped = false;
                continue;
            }
            match literal {
                Some((quote, _)) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' && quote != '`' {
                        escaped = true;
                    } else if c == quote {
                        literal = None;
                    }
                }
                None if matches!(c, '"' | '\'' | '`') => {
                    let before = text.trim_end();
                    let regex = before.ends_with("=~") || before.ends_with("!~");
                    literal = Some((c, regex));
                }
                None => {}
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if literal.is_some() {
            return bad("an unterminated string literal".into());
        }
        parts.push(Part::Text(text));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        if !parts.iter().any(|p| matches!(p, Part::Arm { .. })) {
            return bad("no {{arm}} placeholder (the query would not tell the arms apart)".into());
        }
        Ok(QueryTemplate {
            source: template.into(),
            parts,
        })
    }

    /// The template as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The query for the arm labelled `arm` over a window of `window` (whole seconds, at
    /// least 1).
    #[must_use]
    pub fn render(&self, arm: &str, window: Duration) -> String {
        let mut out = String::with_capacity(self.source.len() + arm.len() * 2);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Arm { quote, regex } => {
                    let value = if *regex {
                        escape_regex(arm)
                    } else {
                        arm.to_owned()
                    };
                    escape_string(&value, *quote, &mut out);
                }
                Part::Window => {
                    out.push_str(&window.as_secs().max(1).to_string());
                    out.push('s');
                }
            }
        }
        out
    }
}

/// Checks an arm's label value: 1..=[`LABEL_VALUE_LEN_MAX`] bytes, no NUL.
pub(crate) fn validate_label_value(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > LABEL_VALUE_LEN_MAX || value.contains('\0') {
        return Err(CanaryError::InvalidPolicy {
            field,
            reason: format!("a label value must be 1..={LABEL_VALUE_LEN_MAX} bytes without NUL"),
        });
    }
    Ok(())
}

/// Escapes RE2 metacharacters so the value matches itself only.
fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes `value` for a PromQL string literal quoted with `quote`.
fn escape_string(value: &str, quote: char, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, arm: &str, expect: &str) {
        let t = QueryTemplate::new(template).unwrap();
        assert_eq!(t.render(arm, Duration::from_secs(90)), expect, "{template}");
    }

    #[test]
    fn renders_and_escapes() {
        check(r#"up{v="{{arm}}"}"#, "a", r#"up{v="a"}"#);
        check(r#"up{v="{{arm}}"}"#, r#"a"b\c"#, r#"up{v="a\"b\\c"}"#);
        check("up{v='{{arm}}'}", r#"it's "x""#, r#"up{v='it\'s "x"'}"#);
        check(r#"up{v="{{arm}}"}"#, "a\nb\u{1}", r#"up{v="a\nb\u0001"}"#);
        check(r#"up{v=~"{{arm}}"}"#, "a.b|c", r#"up{v=~"a\\.b\\|c"}"#);
        check(r#"up{v !~ "x-{{arm}}"}"#, "(1)", r#"up{v !~ "x-\\(1\\)"}"#);
        check(
            r#"sum(rate(x{v="{{ arm }}"}[{{window}}])) / sum(rate(y{v="{{arm}}"}[{{window}}]))"#,
            "c",
            r#"sum(rate(x{v="c"}[90s])) / sum(rate(y{v="c"}[90s]))"#,
        );
        // A quote escaped inside the template's own literal does not end it.
        check(r#"up{v="\"{{arm}}"}"#, "a", r#"up{v="\"a"}"#);
        let t = QueryTemplate::new(r#"up{v="{{arm}}"}[{{window}}]"#).unwrap();
        assert_eq!(t.render("a", Duration::ZERO), r#"up{v="a"}[1s]"#);
    }

    #[test]
    fn refuses_templates_it_cannot_escape() {
        for bad in [
            "",
            "up",
            "up{v={{arm}}}",
            "up{v=`{{arm}}`}",
            r#"up{v="{{window}}"}"#,
            r#"up{v="{{arm}}"}[{{range}}]"#,
            r#"up{v="{{arm}}"#,
            r#"up{v="{{arm"}"#,
        ] {
            assert!(
                matches!(
                    QueryTemplate::new(bad),
                    Err(CanaryError::InvalidPolicy { field: "query", .. })
                ),
                "{bad:?}"
            );
        }
        assert!(
            QueryTemplate::new(&format!(
                r#"up{{v="{{{{arm}}}}"}}{}"#,
                " ".repeat(TEMPLATE_LEN_MAX)
            ))
            .is_err()
        );
    }

    /// Reads a PromQL string literal's body (quoted with `quote`) back as PromQL's lexer
    /// does; `None` for an unescaped quote or an unknown escape.
    fn unescape(body: &str, quote: char) -> Option<String> {
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c if c == quote => out.push(c),
                    _ => return None,
                },
                c if c == quote => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    const META: &str = "\\.+*?()|[]{}^$";

    proptest::proptest! {
        /// Any label value renders into a literal that reads back as itself, and as a
        /// regular expression matches only itself.
        #[test]
        fn every_value_reads_back(value in "\\PC{0,40}|[\\\\\"'.*+?()|\\[\\]{}^$\n\t\u{1}a-z]{0,20}") {
            for quote in ['"', '\''] {
                let t = QueryTemplate::new(&format!("up{{v={quote}{{{{arm}}}}{quote}}}")).unwrap();
                let out = t.render(&value, Duration::from_secs(1));
                let body = &out["up{v=\"".len()..out.len() - 2];
                let read = unescape(body, quote);
                proptest::prop_assert_eq!(read.as_deref(), Some(value.as_str()));
                let t = QueryTemplate::new(&format!("up{{v=~{quote}{{{{arm}}}}{quote}}}")).unwrap();
                let out = t.render(&value, Duration::from_secs(1));
                let pattern = unescape(&out["up{v=~\"".len()..out.len() - 2], quote).unwrap();
                // Every metacharacter is escaped: removing the escapes gives the value back.
                let mut literal = String::new();
                let mut chars = pattern.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        let next = chars.next().unwrap();
                        proptest::prop_assert!(META.contains(next), "{next:?} escaped");
                        literal.push(next);
                    } else {
                        proptest::prop_assert!(!META.contains(c), "{c:?} unescaped");
                        literal.push(c);
                    }
                }
                proptest::prop_assert_eq!(literal, value.clone());
            }
        }
    }
}
