//! The node's facts from the Puppet server's fact cache, so group rules judge the facts the
//! agent submitted. Puppet Server 7 stores them with its `json` facts terminus as
//! `<server_datadir>/facts/<certname>.json` before it runs the ENC; older servers (and the
//! `yaml` terminus) keep `<vardir>/yaml/facts/<certname>.yaml`. One directory is read, for
//! either file, JSON first.
//!
//! The agent writes these facts, so anything in them is its own claim: a `trusted` key in
//! them is dropped here, and `$trusted` comes only from the node's certificate (`trusted`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::domain::Certname;

/// The agent's facts for `certname` from the cache in `dir`, without `trusted`; `None` when
/// the cache holds neither file for it.
pub(super) fn cached_facts(
    dir: &Path,
    certname: &Certname,
) -> Result<Option<Map<String, Value>>, String> {
    let json = dir.join(format!("{certname}.json"));
    let values = match read(&json)? {
        Some(text) => from_json(&text).map_err(|why| format!("{}: {why}", json.display()))?,
        None => {
            let yaml = dir.join(format!("{certname}.yaml"));
            match read(&yaml)? {
                Some(text) => {
                    from_yaml(&text).map_err(|why| format!("{}: {why}", yaml.display()))?
                }
                None => return Ok(None),
            }
        }
    };
    let Value::Object(mut facts) = values else {
        return Err(format!(
            "the facts of {certname} in {}: values is not a map",
            dir.display()
        ));
    };
    facts.remove("trusted");
    Ok(Some(facts))
}

fn read(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Puppet's JSON terminus writes `Puppet::Node::Facts#to_data_hash`:
/// `{"name": ..., "values": {...}, "timestamp": ..., "expiration": ...}`.
fn from_json(text: &str) -> Result<Value, String> {
    let mut document: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    document
        .get_mut("values")
        .map(Value::take)
        .ok_or_else(|| "no values".to_owned())
}

/// Puppet's YAML terminus writes a `!ruby/object:Puppet::Node::Facts` document with `name`
/// and `values`.
fn from_yaml(text: &str) -> Result<Value, String> {
    let document: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let mut document = untagged(document);
    let values = document
        .get_mut("values")
        .map(std::mem::take)
        .ok_or_else(|| "no values".to_owned())?;
    serde_json::to_value(values).map_err(|e| e.to_string())
}

/// The YAML without its Ruby type tags.
fn untagged(value: serde_norway::Value) -> serde_norway::Value {
    use serde_norway::Value;
    match value {
        Value::Tagged(tagged) => untagged(tagged.value),
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| (untagged(k), untagged(v)))
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(untagged).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certname() -> Certname {
        Certname::parse("web01.example.com").unwrap()
    }

    #[test]
    fn reads_json_first_then_yaml_and_drops_trusted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cached_facts(dir.path(), &certname()), Ok(None));
        std::fs::write(
            dir.path().join("web01.example.com.yaml"),
            "--- !ruby/object:Puppet::Node::Facts\nname: web01.example.com\nvalues:\n  kernel: Linux\n  trusted:\n    extensions:\n      pp_role: db\n",
        )
        .unwrap();
        let from_yaml = cached_facts(dir.path(), &certname()).unwrap().unwrap();
        assert_eq!(
            Value::Object(from_yaml),
            serde_json::json!({"kernel": "Linux"})
        );
        std::fs::write(
            dir.path().join("web01.example.com.json"),
            r#"{"name":"web01.example.com","values":{"kernel":"Darwin","trusted":{"certname":"x"}},"timestamp":"2026-01-01T00:00:00.000000000+00:00"}"#,
        )
        .unwrap();
        let from_json = cached_facts(dir.path(), &certname()).unwrap().unwrap();
        assert_eq!(
            Value::Object(from_json),
            serde_json::json!({"kernel": "Darwin"})
        );
    }

    #[test]
    fn a_broken_cache_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web01.example.com.json");
        for text in ["{", r#"{"name":"web01.example.com"}"#, r#"{"values":[1]}"#] {
            std::fs::write(&path, text).unwrap();
            let why = cached_facts(dir.path(), &certname()).unwrap_err();
            assert!(why.contains("web01.example.com"), "{why}");
        }
    }
}
