//! Artifact keys: blake3 over everything that determines an artifact's content, so equal keys
//! mean reusable results and any change upstream gives a new key downstream.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The 32-byte blake3 identity of an artifact (or of a scene's content), shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactKey(pub [u8; 32]);

impl ArtifactKey {
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn parse(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(|h| ArtifactKey(*h.as_bytes()))
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactKey({})", &self.hex()[..12])
    }
}

impl Serialize for ArtifactKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ArtifactKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ArtifactKey::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a 64-digit hex key")))
    }
}

/// Builds a key from length-prefixed fields, so no two field lists hash alike.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut hasher = KeyHasher(blake3::Hasher::new());
        hasher.field(domain.as_bytes());
        hasher
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn key(&mut self, key: &ArtifactKey) -> &mut Self {
        self.field(&key.0)
    }

    pub fn finish(&self) -> ArtifactKey {
        ArtifactKey(*self.0.finalize().as_bytes())
    }
}

/// JSON with object keys sorted at every level: the same parameters always hash the same,
/// whatever order the YAML or the struct lists them in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// blake3 of a file's content, memory-mapped.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path)?;
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_at_every_level() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, {"p": 1, "q": 2}]}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let ab_c = KeyHasher::new("t").field(b"ab").field(b"c").finish();
        let a_bc = KeyHasher::new("t").field(b"a").field(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn keys_round_trip_through_hex_and_json() {
        let key = KeyHasher::new("t").finish();
        assert_eq!(ArtifactKey::parse(&key.hex()), Some(key));
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<ArtifactKey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<ArtifactKey>("\"zz\"").is_err());
    }
}
