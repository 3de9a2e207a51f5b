//! YAML for Puppet's exec node terminus. Puppet reads it with Ruby's YAML 1.1 parser (Psych on
//! libyaml), which turns plain `on`, `yes`, `0755`, `1_000` or `12:30` into booleans and
//! numbers. So every string (keys included) is written double-quoted, and numbers in a form
//! YAML 1.1 reads back as the same number. Psych merges a `<<` key even when quoted, so that
//! key is tagged `!!str`; and libyaml refuses keys longer than `MAX_KEY` characters as written,
//! so the store refuses such keys before they are kept.

use std::fmt::Write;

use serde_json::{Map, Number, Value};

/// A JSON value as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::from("---\n");
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

/// The longest key libyaml reads, as written (quotes and escapes included).
pub const MAX_KEY: usize = 1024;

/// Whether `key` is short enough, once written, for libyaml to read it.
pub fn key_fits(key: &str) -> bool {
    key_text(key).chars().count() <= MAX_KEY
}

/// A key as written: double-quoted, and tagged as a plain string where Psych would merge it.
fn key_text(key: &str) -> String {
    if key == "<<" {
        format!("!!str {}", quote(key))
    } else {
        quote(key)
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for value in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        write_value(out, value, indent);
    }
}

/// The rest of a line after `key:` or `-`: a scalar, or a nested block on the next lines.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => quote(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Integers as they are; floats always with a `.` and a signed exponent, which YAML 1.1's
/// float pattern requires (`1e-7` would otherwise come back as a string).
fn number(n: &Number) -> String {
    let text = n.to_string();
    if n.is_f64() {
        let (mantissa, exponent) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
            None => (text.clone(), None),
        };
        let mantissa = if mantissa.contains('.') {
            mantissa
        } else {
            format!("{mantissa}.0")
        };
        return match exponent {
            Some(e) if e.starts_with(['-', '+']) => format!("{mantissa}e{e}"),
            Some(e) => format!("{mantissa}e+{e}"),
            None => mantissa,
        };
    }
    text
}

/// A double-quoted YAML scalar; anything that is not a printable character is escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_with_quoted_strings() {
        let doc = to_yaml(&json!({
            "classes": {"ntp": {"servers": ["a", "b"]}, "roles::web": {}},
            "environment": "production",
            "parameters": {"on": "yes", "mode": "0755", "n": 3, "x": null, "list": [], "nested": [{"a": 1}, [true]]}
        }));
        assert_eq!(
            doc,
            "---\n\
             \"classes\":\n  \"ntp\":\n    \"servers\":\n      - \"a\"\n      - \"b\"\n  \"roles::web\": {}\n\
             \"environment\": \"production\"\n\
             \"parameters\":\n  \"list\": []\n  \"mode\": \"0755\"\n  \"n\": 3\n  \"nested\":\n    -\n      \"a\": 1\n    -\n      - true\n  \"on\": \"yes\"\n  \"x\": null\n"
        );
    }

    #[test]
    fn floats_keep_a_yaml_1_1_form() {
        let n = |v: f64| number(&Number::from_f64(v).unwrap());
        assert_eq!(n(1.5), "1.5");
        assert_eq!(n(2.0), "2.0");
        assert_eq!(n(1e-7), "1.0e-7");
        assert_eq!(n(1.5e300), "1.5e+300");
        assert_eq!(number(&Number::from(-12)), "-12");
    }

    #[test]
    fn odd_characters_are_escaped() {
        assert_eq!(quote("a\"b\\c\nd\te"), r#""a\"b\\c\nd\te""#);
        assert_eq!(
            quote("\u{7f}\u{0}\u{2028}é日"),
            "\"\\u007f\\u0000\\u2028é日\""
        );
    }

    #[test]
    fn a_merge_key_is_only_a_string() {
        assert_eq!(
            to_yaml(&json!({"<<": {"a": 1}})),
            "---\n!!str \"<<\":\n  \"a\": 1\n"
        );
        assert!(key_fits(&"k".repeat(1022)) && !key_fits(&"k".repeat(1023)));
        assert!(!key_fits(&"\u{1}".repeat(200)), "escapes count as written");
    }

    #[test]
    fn empty_documents() {
        assert_eq!(to_yaml(&json!({})), "---\n{}\n");
        assert_eq!(to_yaml(&json!("x")), "---\n\"x\"\n");
    }
}
