//! Where Parquet parts go: the local disk (the default) or an S3-compatible
//! object store (`store: s3://bucket/prefix`). Both make a part appear whole
//! or not at all: locally by fsync and rename, on S3 because a PUT is atomic
//! (an object is readable only once its whole body has arrived). Training
//! reads a store on S3 through a local mirror of its parts, fetched before
//! each run (only the parts it does not have yet), and scans the mirror
//! lazily with polars like the local store.

use crate::config::S3Settings;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where parts are written.
pub enum Sink {
    /// Under this folder.
    Local(PathBuf),
    /// In a bucket.
    S3(S3Sink),
}

/// A bucket and a prefix in it.
pub struct S3Sink {
    store: AmazonS3,
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// The endpoint, for messages.
    endpoint: String,
}

impl Sink {
    /// The store `url` names (`s3://bucket/prefix`), or the local folder
    /// `root` when there is none.
    pub fn open(url: Option<&str>, s3: &S3Settings, root: &Path) -> Result<Self, String> {
        match url {
            None => Ok(Sink::Local(root.to_path_buf())),
            Some(url) => S3Sink::open(url, s3).map(Sink::S3),
        }
    }

    /// Writes `bytes` as part `key` (`table/hour=…/part-….parquet`); the
    /// local store streams instead (see [`Sink::local_path`]).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Sink::Local(root) => {
                vigil_core::file::write_atomic(&root.join(key), &bytes).map_err(|e| e.to_string())
            }
            Sink::S3(s3) => block(s3.put(key, bytes)),
        }
    }

    /// The file of part `key` when the store is local.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match self {
            Sink::Local(root) => Some(root.join(key)),
            Sink::S3(_) => None,
        }
    }

    /// Where part `key` is, for messages.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Sink::Local(root) => root.join(key).display().to_string(),
            Sink::S3(s3) => format!("{}/{key}", s3.url),
        }
    }

    /// A folder holding every part, for reading with polars: the store's
    /// own folder, or `mirror` brought up to date with the bucket.
    pub fn readable(&self, mirror: &Path) -> Result<PathBuf, String> {
        match self {
            Sink::Local(root) => Ok(root.clone()),
            Sink::S3(s3) => {
                block(s3.mirror(mirror))?;
                Ok(mirror.to_path_buf())
            }
        }
    }

    /// Checks at start that the store can be reached: a clear error naming
    /// the endpoint otherwise.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Sink::Local(_) => Ok(()),
            Sink::S3(s3) => s3.check().await,
        }
    }
}

impl S3Sink {
    fn open(url: &str, s: &S3Settings) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("store: {url:?} is not s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // The usual AWS variables first, then what the config says.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let mut client = ClientOptions::new();
        if let Some(e) = &s.endpoint {
            b = b.with_endpoint(e);
            client = client.with_allow_http(e.starts_with("http://"));
        }
        if let Some(r) = &s.region {
            b = b.with_region(r);
        }
        if let Some(k) = &s.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &s.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let timeout = Duration::from_secs(s.timeout_secs);
        // (Client options carry allow_http: set once, all together.)
        b = b
            .with_client_options(client.with_timeout(timeout).with_connect_timeout(timeout))
            // A part that cannot be written soon fails its roll, which is
            // tried again later with its rows: no need to retry for minutes.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: timeout * 2,
                ..Default::default()
            });
        let endpoint = s
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT").ok())
            .unwrap_or_else(|| "AWS".into());
        let store = b
            .build()
            .map_err(|e| format!("store {url} (endpoint {endpoint}): {e}"))?;
        Ok(Self {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            url: url.trim_end_matches('/').to_string(),
            endpoint,
        })
    }

    fn key(&self, key: &str) -> Key {
        match self.prefix.as_str() {
            "" => Key::from(key),
            p => Key::from(format!("{p}/{key}")),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(&self.key(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("{} at {}: {e}", self.url, self.endpoint))
    }

    async fn check(&self) -> Result<(), String> {
        let prefix = self.key("");
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "the store {} at endpoint {} cannot be reached: {e}",
                    self.url, self.endpoint
                )
            })
    }

    /// Fetches every part `dir` lacks (or holds in another version) and
    /// removes those the bucket no longer has.
    async fn mirror(&self, dir: &Path) -> Result<(), String> {
        let index_path = dir.join("mirror.json");
        let mut index: BTreeMap<String, String> = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let err = |e: object_store::Error| format!("{} at {}: {e}", self.url, self.endpoint);
        let prefix = self.key("");
        let strip = match self.prefix.as_str() {
            "" => 0,
            p => p.len() + 1,
        };
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(err)?;
        let mut seen = BTreeMap::new();
        for meta in listed {
            let full = meta.location.to_string();
            let rel = full.get(strip..).unwrap_or_default().to_string();
            if !rel.ends_with(".parquet") {
                continue;
            }
            let version = format!("{}:{}", meta.e_tag.unwrap_or_default(), meta.size);
            let path = dir.join(&rel);
            if index.get(&rel) != Some(&version) || !path.exists() {
                let bytes = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(err)?
                    .bytes()
                    .await
                    .map_err(err)?;
                vigil_core::file::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
            }
            seen.insert(rel, version);
        }
        for gone in index.keys().filter(|k| !seen.contains_key(*k)) {
            let _ = std::fs::remove_file(dir.join(gone));
        }
        index = seen;
        let text = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        vigil_core::file::write_atomic(&index_path, &text).map_err(|e| e.to_string())
    }
}

/// Runs `fut` to completion from blocking code: on the runtime of the
/// blocking thread it is on, or on a small one of its own.
fn block<T>(fut: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(fut),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(fut),
    }
}
