use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Result, StoreError};

/// An opaque pagination cursor: the position after the last item returned, tagged with the
/// backend and listing it belongs to so that a cursor from elsewhere is refused.
#[derive(Serialize, Deserialize)]
pub struct Cursor<K> {
    #[serde(rename = "b")]
    backend: String,
    #[serde(rename = "l")]
    listing: String,
    #[serde(rename = "k")]
    key: K,
}

impl<K: Serialize + DeserializeOwned> Cursor<K> {
    pub fn encode(backend: &str, listing: &str, key: K) -> String {
        let cursor = Cursor {
            backend: backend.to_owned(),
            listing: listing.to_owned(),
            key,
        };
        let json = serde_json::to_vec(&cursor).expect("cursor keys serialize");
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(backend: &str, listing: &str, text: &str) -> Result<K> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor)?;
        let cursor: Cursor<K> =
            serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
        if cursor.backend != backend || cursor.listing != listing {
            return Err(StoreError::InvalidCursor);
        }
        Ok(cursor.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let text = Cursor::encode("embedded", "nodes", "web01".to_owned());
        assert_eq!(
            Cursor::<String>::decode("embedded", "nodes", &text).unwrap(),
            "web01"
        );
    }

    #[test]
    fn refuses_foreign_and_tampered_cursors() {
        let text = Cursor::encode("embedded", "nodes", "web01".to_owned());
        for (backend, listing, text) in [
            ("embedded", "node_groups", text.as_str()),
            ("dynamodb", "nodes", text.as_str()),
            ("embedded", "nodes", "not a cursor!"),
            ("embedded", "nodes", "e30"),
            ("embedded", "nodes", ""),
        ] {
            assert!(matches!(
                Cursor::<String>::decode(backend, listing, text),
                Err(StoreError::InvalidCursor)
            ));
        }
    }
}
