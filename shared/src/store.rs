//! The artifact store: where big things live while the state machine passes their keys.
//!
//! Step Functions state is capped at 256 KiB, so dumps, chunk plans and reports are written here
//! and referenced by key (`runs/<run id>/…`). In AWS the store is an S3 bucket (the Distributed
//! Maps read their items from it too); locally (and in tests) it is a directory. Writes are
//! atomic: a reader never sees half a file (a rename locally, inherent in an S3 `PutObject`).
//! Both stores accept the same keys, so an artifact written by one function can be named in the
//! state and read by another. Objects in the bucket are sealed and checked (see [`crate::seal`]);
//! the directory is private to its user.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::seal::{self, SealKey, SealedItem};

/// Where artifacts are kept.
#[derive(Debug, Clone)]
pub enum ArtifactStore {
    /// A local directory (the CLI and tests).
    Local(LocalStore),
    /// An S3 bucket (the deployed functions).
    S3(S3Store),
}

impl ArtifactStore {
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self::Local(LocalStore { root: root.into(), key: Arc::default() })
    }

    /// A bucket, through a client built once per process (see [`crate::aws::Clients`]). With a
    /// seal key (the functions), every object written is sealed and every object read must carry
    /// a matching seal; without one (the CLI showing a report), objects are read unchecked and
    /// nothing that needs a seal can be written.
    pub fn s3(client: aws_sdk_s3::Client, bucket: impl Into<String>, key: Option<SealKey>) -> Self {
        Self::S3(S3Store { client, bucket: bucket.into(), key })
    }

    /// Where an artifact is, for a person: an absolute path locally, `s3://bucket/key` in S3.
    pub fn location(&self, key: &str) -> String {
        match self {
            Self::Local(s) => {
                std::path::absolute(s.root.join(key)).unwrap_or_else(|_| s.root.join(key)).display().to_string()
            }
            Self::S3(s) => s.url(key),
        }
    }

    /// The key items are sealed with: the deployment's, or the local store's own.
    pub async fn seal_key(&self) -> Result<SealKey> {
        match self {
            Self::Local(s) => s.seal_key().await,
            Self::S3(s) => s.key.clone().ok_or_else(|| Error::Store {
                key: format!("s3://{}", s.bucket),
                reason: format!("no seal key: set {} to the deployment's seal secret", seal::SEAL_SECRET_VAR),
            }),
        }
    }

    /// Seals the items of a run's list before it is stored for a Map state.
    pub async fn seal_items<T: SealedItem>(&self, run: &str, items: &mut [T]) -> Result<()> {
        seal::seal_items(&self.seal_key().await?, run, items);
        Ok(())
    }

    /// Checks an item a Map state handed over (see [`crate::seal`]).
    pub async fn check_item<T: SealedItem>(&self, run: &str, item: &T) -> Result<()> {
        seal::check_item(&self.seal_key().await?, run, item)
    }

    pub async fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        match self {
            Self::Local(s) => s.put(key, data).await,
            Self::S3(s) => s.put(key, data).await,
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    /// An object Step Functions wrote (a `ResultWriter` export), read without a seal check: it
    /// carries none. Only for what is shown or reported, never for what is run.
    pub async fn get_bytes_unsealed(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::S3(s) => S3Store { key: None, ..s.clone() }.get(key).await,
        }
    }

    /// Keys under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self {
            Self::Local(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix, None).await,
        }
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let data = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::Store { key: key.to_string(), reason: e.to_string() })?;
        self.put_bytes(key, &data).await
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let data = self.get_bytes(key).await?;
        serde_json::from_slice(&data).map_err(|e| Error::Store { key: key.to_string(), reason: e.to_string() })
    }

    /// Like [`ArtifactStore::get_json`], `None` when no artifact has the key; any other failure
    /// (access denied, throttled, unreadable) is an error, never taken for "nothing there" — a
    /// log of what to undo read as empty would leave the undoing undone.
    pub async fn get_json_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let data = match self {
            Self::Local(s) => s.get_opt(key).await?,
            Self::S3(s) => s.get_opt(key).await?,
        };
        data.map(|d| {
            serde_json::from_slice(&d).map_err(|e| Error::Store { key: key.to_string(), reason: e.to_string() })
        })
        .transpose()
    }
}

/// Artifacts as files under a root directory; keys are relative paths.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Read from (or created as) [`LOCAL_KEY_FILE`] on first use.
    key: Arc<tokio::sync::OnceCell<SealKey>>,
}

/// The local store's seal key, a 0600 file at its root (not an artifact: never listed).
pub const LOCAL_KEY_FILE: &str = ".seal-key";

impl LocalStore {
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn seal_key(&self) -> Result<SealKey> {
        self.key.get_or_try_init(|| async { self.load_or_create_key() }).await.cloned()
    }

    /// Reads the key file, or creates it: written whole to a private file, then linked into
    /// place, so that of two processes starting at once one key wins and both use it.
    fn load_or_create_key(&self) -> Result<SealKey> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.root.join(LOCAL_KEY_FILE);
        let io_err = |e: std::io::Error| Error::Store { key: LOCAL_KEY_FILE.to_string(), reason: e.to_string() };
        let read = |path: &Path| -> Result<SealKey> {
            let bytes = std::fs::read(path).map_err(io_err)?;
            SealKey::from_bytes(&bytes).ok_or_else(|| Error::Store {
                key: path.display().to_string(),
                reason: "not a seal key (32 bytes): remove it to have a new one made".to_string(),
            })
        };
        if path.exists() {
            return read(&path);
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root).map_err(io_err)?;
        let key = SealKey::generate();
        let tmp = self.root.join(format!("{LOCAL_KEY_FILE}.tmp-{}", rand::random::<u32>()));
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err)?;
        file.write_all(key.bytes()).and_then(|()| file.sync_all()).map_err(io_err)?;
        drop(file);
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
            Err(e) => Err(io_err(e)),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Artifacts hold schemas, plans and reports of production databases: directories are created
    /// 0700 and files 0600, whatever the umask.
    async fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.path(key)?;
        let io_err = |e: std::io::Error| Error::Store { key: key.to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", rand::random::<u32>()));
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err)?;
        file.write_all(data).map_err(io_err)?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await.map_err(io_err)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(|e| Error::Store { key: key.to_string(), reason: e.to_string() })
    }

    async fn get_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Store { key: key.to_string(), reason: e.to_string() }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Store { key: prefix.to_string(), reason: e.to_string() }),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| Error::Store { key: prefix.to_string(), reason: e.to_string() })?
            {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) && !key.contains(".tmp-") && !key.starts_with(LOCAL_KEY_FILE) {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Refuses keys that could escape the store's root or that name the same object two ways:
/// empty, absolute, or with an empty, `.` or `..` segment.
fn validate_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(())
    } else {
        Err(Error::Store { key: key.to_string(), reason: "not a valid artifact key".to_string() })
    }
}

/// Artifacts as objects in an S3 bucket; keys are object keys.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: Option<SealKey>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl S3Store {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`, for errors.
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Writes the object, sealed when the store has a key.
    async fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        let mut request = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(data.to_vec()));
        if let Some(seal_key) = &self.key {
            request = request.metadata(seal::OBJECT_METADATA, seal_key.seal(key, data));
        }
        // Boxed: the SDK's futures are deep types, and every step's future would carry them.
        Box::pin(request.send()).await.map_err(|e| crate::aws::sdk_error("s3:PutObject", &self.url(key), e))?;
        Ok(())
    }

    async fn get_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        validate_key(key)?;
        match Box::pin(self.client.get_object().bucket(&self.bucket).key(key).send()).await {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(crate::aws::sdk_error("s3:GetObject", &self.url(key), e)),
            Ok(out) => self.checked_body(key, out).await.map(Some),
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let out = match Box::pin(self.client.get_object().bucket(&self.bucket).key(key).send()).await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(Error::Store {
                    key: key.to_string(),
                    reason: format!("no such object in bucket {}", self.bucket),
                });
            }
            Err(e) => return Err(crate::aws::sdk_error("s3:GetObject", &self.url(key), e)),
        };
        self.checked_body(key, out).await
    }

    /// The object's bytes, after checking its seal when the store has a key.
    async fn checked_body(
        &self,
        key: &str,
        out: aws_sdk_s3::operation::get_object::GetObjectOutput,
    ) -> Result<Vec<u8>> {
        let seal = out.metadata().and_then(|m| m.get(seal::OBJECT_METADATA)).cloned();
        let body = out.body.collect().await.map_err(|e| Error::Store {
            key: key.to_string(),
            reason: format!("reading the object from bucket {} failed: {e}", self.bucket),
        })?;
        let data = body.into_bytes().to_vec();
        if let Some(seal_key) = &self.key {
            seal_key.check(key, &data, seal.as_deref(), &self.url(key))?;
        }
        Ok(data)
    }

    /// Keys under `prefix`, sorted, following every page of `ListObjectsV2` (`page_size` keys a
    /// page, S3's default of 1,000 when `None`).
    pub async fn list(&self, prefix: &str, page_size: Option<i32>) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_max_keys(page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = Box::pin(pages.next()).await {
            let page = page.map_err(|e| crate::aws::sdk_error("s3:ListObjectsV2", &self.url(prefix), e))?;
            out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        // S3 lists in UTF-8 binary order already; sorting keeps the contract independent of it.
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (ArtifactStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("pgferry-store-{}", rand::random::<u64>()));
        (ArtifactStore::local(&dir), dir)
    }

    #[tokio::test]
    async fn json_round_trips_and_lists_by_prefix() {
        let (store, dir) = temp_store();
        store.put_json("runs/r1/copy/c1.json", &serde_json::json!({"rows": 1})).await.unwrap();
        store.put_json("runs/r1/copy/c2.json", &serde_json::json!({"rows": 2})).await.unwrap();
        store.put_json("runs/r2/plan.json", &serde_json::json!([])).await.unwrap();
        let keys = store.list("runs/r1/copy/").await.unwrap();
        assert_eq!(keys, vec!["runs/r1/copy/c1.json", "runs/r1/copy/c2.json"]);
        let v: serde_json::Value = store.get_json("runs/r1/copy/c2.json").await.unwrap();
        assert_eq!(v["rows"], 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn artifacts_are_readable_by_their_user_only_and_a_missing_one_is_none() {
        use std::os::unix::fs::PermissionsExt;
        let (store, dir) = temp_store();
        store.put_json("runs/r1/schema/pre-data-report.json", &serde_json::json!({})).await.unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.join("runs/r1/schema/pre-data-report.json")), 0o600);
        assert_eq!(mode(dir.join("runs/r1/schema")), 0o700);
        assert_eq!(mode(dir.join("runs")), 0o700);
        let none: Option<serde_json::Value> = store.get_json_opt("runs/r1/absent.json").await.unwrap();
        assert!(none.is_none());
        // Unreadable is an error, not "nothing there".
        std::fs::create_dir_all(dir.join("runs/r1/dir.json")).unwrap();
        assert!(store.get_json_opt::<serde_json::Value>("runs/r1/dir.json").await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let (store, _dir) = temp_store();
        for key in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(store.put_bytes(key, b"x").await.is_err(), "{key}");
        }
    }

    #[tokio::test]
    async fn a_missing_artifact_names_its_key() {
        let (store, _dir) = temp_store();
        let err = store.get_bytes("runs/none/plan.json").await.unwrap_err();
        assert!(err.to_string().contains("runs/none/plan.json"), "{err}");
    }
}
