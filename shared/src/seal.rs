//! Seals: what the deployment's functions wrote can be told from what anyone else wrote.
//!
//! The state machine passes work between functions through the artifact bucket: chunk plans,
//! post-data statements, dumps, logs of what to undo. Whoever may `s3:PutObject` into the bucket
//! could otherwise rewrite a post-data item's SQL, which a function then runs with the target
//! master's credentials, or shrink a chunk plan so that copy and verification both skip rows and
//! the run still reports "equal". So every object a function writes to the bucket carries an
//! HMAC-SHA256 of its key and bytes (object metadata `pgferry-seal`), and every Map item (a chunk,
//! a post-data item) carries one of its run, kind and contents, because the Map states hand items
//! to the functions without a function reading the object. Readers check the seal before using
//! anything; a missing or wrong seal is [`Error::Tampered`] (`Pgferry.Tampered`).
//!
//! The key is the deployment's: a Secrets Manager secret the template generates and only the
//! functions' role may read (`PGFERRY_SEAL_SECRET`). Locally the store is a directory only its user
//! may read or write (0700); its key is a 0600 file in it, so local runs seal their items the same
//! way and a resumed run checks them.

use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use serde::Serialize;

use crate::error::{Error, Result};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The Secrets Manager secret (ARN or name) whose text keys the seals of the bucket's artifacts;
/// required with an artifact bucket (`PGFERRY_ARTIFACT_BUCKET`).
pub const SEAL_SECRET_VAR: &str = "PGFERRY_SEAL_SECRET";

/// The metadata key of an S3 object's seal (sent as `x-amz-meta-pgferry-seal`).
pub const OBJECT_METADATA: &str = "pgferry-seal";

/// A deployment's sealing key. Never printed.
#[derive(Clone)]
pub struct SealKey(Arc<[u8; 32]>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(Arc::new(rand::random()))
    }

    /// The key derived from a secret's text (the template generates 64 random characters).
    pub fn from_secret(text: &str) -> Result<Self> {
        if text.trim().len() < 32 {
            return Err(Error::job("the seal secret must hold at least 32 characters"));
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.trim().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(&digest);
        Ok(Self(Arc::new(key)))
    }

    /// Raw key bytes (the local store's key file).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(|key| Self(Arc::new(key)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, name: &str, data: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        // The name's length first: ("ab", "c…") and ("a", "bc…") must not seal alike.
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(data);
        mac
    }

    /// The seal of `data` written under `name`, as lowercase hex.
    pub fn seal(&self, name: &str, data: &[u8]) -> String {
        hex(&self.mac(name, data).finalize().into_bytes())
    }

    /// Checks `seal` (in constant time); `key` names the artifact in the error.
    pub fn check(&self, name: &str, data: &[u8], seal: Option<&str>, key: &str) -> Result<()> {
        let tampered = |reason: &str| Error::Tampered { key: key.to_string(), reason: reason.to_string() };
        let seal = seal.ok_or_else(|| tampered("it carries no seal"))?;
        let bytes = unhex(seal).ok_or_else(|| tampered("its seal is malformed"))?;
        self.mac(name, data).verify_slice(&bytes).map_err(|_| tampered("its seal does not match its contents"))
    }
}

/// A Map item that carries its own seal.
pub trait SealedItem: Serialize + Clone {
    /// What the item is, part of what is sealed (a chunk cannot pass for a post-data item).
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn seal_slot(&mut self) -> &mut Option<String>;
}

/// The bytes sealed for an item: its JSON without the seal, under its run and kind.
fn item_name_and_bytes<T: SealedItem>(run: &str, item: &T) -> (String, Vec<u8>) {
    let mut bare = item.clone();
    *bare.seal_slot() = None;
    let bytes = serde_json::to_vec(&bare).expect("an item serializes");
    (format!("{run}/{}/{}", T::KIND, item.id()), bytes)
}

/// Seals every item of a run's list before it is stored.
pub fn seal_items<T: SealedItem>(key: &SealKey, run: &str, items: &mut [T]) {
    for item in items {
        let (name, bytes) = item_name_and_bytes(run, item);
        *item.seal_slot() = Some(key.seal(&name, &bytes));
    }
}

/// Checks an item received from a Map state.
pub fn check_item<T: SealedItem>(key: &SealKey, run: &str, item: &T) -> Result<()> {
    let (name, bytes) = item_name_and_bytes(run, item);
    let mut with_seal = item.clone();
    let seal = with_seal.seal_slot().take();
    key.check(&name, &bytes, seal.as_deref(), &format!("runs/{name}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[derive(Debug, Clone, Serialize)]
    struct Item {
        id: String,
        sql: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seal: Option<String>,
    }

    impl SealedItem for Item {
        const KIND: &'static str = "item";
        fn id(&self) -> &str {
            &self.id
        }
        fn seal_slot(&mut self) -> &mut Option<String> {
            &mut self.seal
        }
    }

    fn items() -> Vec<Item> {
        vec![
            Item { id: "index-0001".into(), sql: "CREATE INDEX a ON t (a)".into(), seal: None },
            Item { id: "index-0002".into(), sql: "CREATE INDEX b ON t (b)".into(), seal: None },
        ]
    }

    #[test]
    fn a_sealed_item_passes_and_any_change_is_tampering() {
        let key = SealKey::generate();
        let mut list = items();
        seal_items(&key, "run-1", &mut list);
        for item in &list {
            check_item(&key, "run-1", item).unwrap();
        }
        let mut rewritten = list[0].clone();
        rewritten.sql = "DROP TABLE t".into();
        let err = check_item(&key, "run-1", &rewritten).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tampered);
        assert_eq!(err.kind().step_error_name(), "Pgferry.Tampered");
        assert!(err.to_string().contains("runs/run-1/item/index-0001"), "{err}");
        // Another run's item, another key, no seal, a forged seal: all refused.
        assert!(check_item(&key, "run-2", &list[0]).is_err());
        assert!(check_item(&SealKey::generate(), "run-1", &list[0]).is_err());
        let mut unsealed = list[0].clone();
        unsealed.seal = None;
        assert!(check_item(&key, "run-1", &unsealed).unwrap_err().to_string().contains("no seal"));
        let mut forged = list[0].clone();
        forged.seal = Some("zz".repeat(32));
        assert!(check_item(&key, "run-1", &forged).unwrap_err().to_string().contains("malformed"));
        // Seals are per item: one item's seal does not fit another.
        let mut swapped = list[1].clone();
        swapped.seal = list[0].seal.clone();
        assert!(check_item(&key, "run-1", &swapped).is_err());
    }

    #[test]
    fn names_and_data_are_not_confused() {
        let key = SealKey::generate();
        assert_ne!(key.seal("ab", b"c"), key.seal("a", b"bc"));
        let seal = key.seal("runs/r/plan.json", b"{}");
        key.check("runs/r/plan.json", b"{}", Some(&seal), "runs/r/plan.json").unwrap();
        assert!(key.check("runs/r/chunks.json", b"{}", Some(&seal), "k").is_err());
    }

    #[test]
    fn the_key_from_a_secret_is_stable_and_never_printed() {
        let text = "x".repeat(64);
        let a = SealKey::from_secret(&text).unwrap();
        let b = SealKey::from_secret(&text).unwrap();
        assert_eq!(a.seal("n", b"d"), b.seal("n", b"d"));
        assert_eq!(format!("{a:?}"), "SealKey(…)");
        assert!(SealKey::from_secret("short").is_err());
    }
}
