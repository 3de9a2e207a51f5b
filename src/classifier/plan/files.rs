//! Where each object of a tree has its file: `environments/<cluster>/<environment>.yaml`,
//! `node_groups/<name>.yaml`, `nodes/<certname>.yaml`, names encoded for any file system.

use serde::Serialize;

use crate::domain::{Environment, Node, NodeGroup};
use crate::store::Key;
use crate::store::RecordKind;
use crate::store::enc::{ENVIRONMENT, NODE, NODE_GROUP};

/// What a file name may hold as it is; anything else is percent-encoded.
const FILE_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b' ');

/// The longest file name (without `.yaml`) a tree holds: most file systems take 255 bytes.
const MAX_FILE_STEM: usize = 255 - ".yaml".len();
/// Hex digits of the name's hash a shortened file name ends with.
const NAME_HASH_HEX: usize = 16;

/// The file name (without `.yaml`) of an object's name: the name percent-encoded. A name
/// whose encoding is too long for a file system (a 253-character certname with `%`s, a group
/// name in another script: 3 bytes a character, 9 encoded) is cut, at a whole escape, and
/// ends with `~` and a hash of the whole name: `~` is never left as it is by the encoding, so
/// no name's file is another's shortened one. The full name is in the file, as always, and a
/// file must be where its name puts it, so import reads both spellings alike.
pub fn file_name(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, FILE_NAME).to_string();
    if encoded.len() <= MAX_FILE_STEM {
        return encoded;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut keep = MAX_FILE_STEM - 1 - NAME_HASH_HEX;
    // Not inside an escape: `%` and its two hex digits go whole.
    while encoded.as_bytes()[..keep]
        .iter()
        .rev()
        .take(2)
        .any(|b| *b == b'%')
    {
        keep -= 1;
    }
    format!("{}~{}", &encoded[..keep], &hash[..NAME_HASH_HEX])
}

/// An object kind a tree holds.
pub trait Object: Serialize + Clone + PartialEq {
    const KIND: &'static RecordKind;
    fn key(&self) -> Key;
    fn path(&self) -> String;
}

impl Object for Environment {
    const KIND: &'static RecordKind = &ENVIRONMENT;
    fn key(&self) -> Key {
        let cluster = self.puppet_cluster_name.as_str();
        Key::two(self.environment_name.as_str(), cluster)
    }
    fn path(&self) -> String {
        let (env, cluster) = (&self.environment_name, &self.puppet_cluster_name);
        format!(
            "environments/{}/{}.yaml",
            file_name(cluster.as_str()),
            file_name(env.as_str())
        )
    }
}

impl Object for NodeGroup {
    const KIND: &'static RecordKind = &NODE_GROUP;
    fn key(&self) -> Key {
        Key::one(self.name.as_str())
    }
    fn path(&self) -> String {
        format!("node_groups/{}.yaml", file_name(self.name.as_str()))
    }
}

impl Object for Node {
    const KIND: &'static RecordKind = &NODE;
    fn key(&self) -> Key {
        Key::one(self.unique_name.as_str())
    }
    fn path(&self) -> String {
        format!("nodes/{}.yaml", file_name(self.unique_name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn long_names_get_short_distinct_file_names_that_cut_no_escape() {
        assert_eq!(file_name("web01.example.com"), "web01.example.com");
        assert_eq!(file_name("All Nodes (EU)"), "All Nodes %28EU%29");
        for name in [
            "é".repeat(255),
            "a".repeat(253),
            format!("{}%", "x".repeat(300)),
        ] {
            let file = file_name(&name);
            assert!(file.len() + ".yaml".len() <= 255, "{} bytes", file.len());
            let (cut, hash) = file.rsplit_once('~').expect("a hash");
            assert_eq!(hash.len(), 16);
            assert!(
                !cut.ends_with('%') && !cut[..cut.len() - 1].ends_with('%'),
                "{cut}"
            );
            assert_eq!(file, file_name(&name), "the same name, the same file");
        }
        // Two names alike in their first 250 bytes still get two files.
        let (a, b) = (
            format!("{}a", "x".repeat(300)),
            format!("{}b", "x".repeat(300)),
        );
        assert_ne!(file_name(&a), file_name(&b));
        // `~` in a name is encoded, so a short name never looks like a shortened one.
        assert_eq!(file_name("a~b"), "a%7Eb");
    }
}
