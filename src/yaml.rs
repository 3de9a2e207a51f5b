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

/// A YAML document read as JSON, refused if it expands to more values than its text holds.
///
/// An alias (`*a`) repeats what its anchor (`&a`) holds wherever it appears, so a few KiB of
/// aliases of aliases expand to billions of values ("billion laughs"), all allocated before
/// any size check could see them. Without aliases every value takes at least one byte of its
/// text, so a document may hold at most as many values as it has bytes: the reader counts each
/// value as it is made and stops at that count, with memory no larger than the text's.
pub fn from_yaml(text: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed as _;
    let left = std::cell::Cell::new(text.len() + 1);
    let deserializer = serde_norway::Deserializer::from_str(text);
    Counted { left: &left }
        .deserialize(deserializer)
        .map_err(|e| e.to_string())
}

/// What a value read through [`Counted`] reports when the count is spent.
const EXPANDS: &str = "expands to more values than its text holds: YAML aliases (*name) that \
    repeat what their anchor (&name) holds are not read";

/// Reads one value as JSON, counting it and everything in it against `left`.
struct Counted<'c> {
    left: &'c std::cell::Cell<usize>,
}

impl Counted<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => Err(E::custom(EXPANDS)),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value that JSON can hold")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Counted { left: self.left })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.take()?;
            let value = map.next_value_seed(Counted { left: self.left })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod reading {
    use serde_json::json;

    use super::from_yaml;

    #[test]
    fn a_document_reads_as_serde_norway_reads_it() {
        let text = "name: web\nclasses:\n  ntp: {servers: [a, b]}\n  nginx: {}\nweight: 1.5\n\
                    count: 3\non: yes\nempty:\nlist: []\nnested: [[[]]]\n";
        let expected: serde_json::Value = serde_norway::from_str(text).unwrap();
        assert_eq!(from_yaml(text).unwrap(), expected);
        assert_eq!(from_yaml("[]").unwrap(), json!([]));
        assert_eq!(from_yaml("x").unwrap(), json!("x"));
    }

    #[test]
    fn an_alias_that_repeats_more_than_the_text_holds_is_refused_as_it_expands() {
        // Nine levels of ten: 10^9 values from about 300 bytes.
        let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let prev = level - 1;
            let refs = vec![format!("*l{prev}"); 10].join(", ");
            bomb.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        let refused = from_yaml(&bomb).unwrap_err();
        assert!(refused.contains("YAML aliases"), "{refused}");
        // A small alias that stays within the text's size is read: an anchor used once.
        let once = "a: &a [1, 2]\nb: *a\n";
        assert_eq!(from_yaml(once).unwrap(), json!({"a": [1, 2], "b": [1, 2]}));
    }
}
