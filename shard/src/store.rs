//! Dataset URLs: one way to reach a dataset on local disk or in a bucket.
//!
//! Everything that reads or writes datasets and checkpoints takes an `Arc<dyn ObjectStore>` plus a
//! prefix inside it, rather than a file-system path, so that local disk, S3 (and S3-compatible
//! servers), GCS and Azure are the same code path. Credentials come the usual way for each cloud
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*` environment variables); an S3-compatible server is reached with
//! [`StoreOptions::endpoint`] (or `AWS_ENDPOINT_URL`).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

/// How to open a store beyond what the URL says.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); plain `http` is allowed then.
    pub endpoint: Option<String>,
    /// Create a local directory if it does not exist (for writers).
    pub create_local: bool,
    /// Retries of a failed request before giving up (default 10).
    pub max_retries: Option<usize>,
    /// How long a bucket connection may stay silent (no byte of a response) before the request
    /// fails and is retried; `None`: `D2AE_STORE_IDLE_TIMEOUT` (seconds) or
    /// [`DEFAULT_IDLE_TIMEOUT`]. Retries of one request stop after twice this, so a server that
    /// stops answering is reported within about a minute, not after minutes of silence.
    pub idle_timeout: Option<Duration>,
}

/// The default of [`StoreOptions::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl StoreOptions {
    /// The idle timeout in force: the option, else `D2AE_STORE_IDLE_TIMEOUT`, else the default.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
            .or_else(|| {
                std::env::var("D2AE_STORE_IDLE_TIMEOUT")
                    .ok()?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0)
                    .map(Duration::from_secs_f64)
            })
            .unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }
}

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`, for
/// messages, logs and saved configurations: an endpoint may carry credentials, and they must not
/// end up in a terminal scroll-back, a `config.json` or a checkpoint.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; userinfo at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    out.push_str(user);
                    out.push_str(":***");
                } else {
                    out.push_str(userinfo);
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// An opened dataset location: the store and the prefix of the dataset inside it.
#[derive(Debug, Clone)]
pub struct DatasetLocation {
    /// The URL as given by the user, for messages.
    pub url: String,
    /// The store holding the dataset.
    pub store: Arc<dyn ObjectStore>,
    /// The dataset root inside the store (empty for a local directory, the key prefix in a bucket).
    pub prefix: Path,
    /// The local directory when the dataset is on local disk.
    pub local_dir: Option<PathBuf>,
}

/// Why [`DatasetLocation::read_index`] found no usable `index.json`.
#[derive(Debug, thiserror::Error)]
pub enum ReadIndexError {
    /// The store could not be read (`NotFound` when the dataset has no index).
    #[error(transparent)]
    Store(object_store::Error),
    /// The file is there but is not an index we can use.
    #[error(transparent)]
    Index(crate::index::IndexError),
}

impl DatasetLocation {
    /// Read and parse the dataset's `index.json` in one request, refusing one over
    /// [`crate::MAX_INDEX_BYTES`] from its size before reading a byte of it.
    pub async fn read_index(&self) -> Result<crate::DatasetIndex, ReadIndexError> {
        let found = self
            .store
            .get(&self.child(crate::INDEX_FILE))
            .await
            .map_err(ReadIndexError::Store)?;
        if found.meta.size > crate::MAX_INDEX_BYTES {
            return Err(ReadIndexError::Index(crate::index::IndexError::TooLarge {
                bytes: found.meta.size,
            }));
        }
        let bytes = found.bytes().await.map_err(ReadIndexError::Store)?;
        crate::DatasetIndex::from_json(&bytes).map_err(ReadIndexError::Index)
    }

    /// The object path of `name` under the dataset root; `/` in `name` separates directories,
    /// the same with and without a prefix.
    pub fn child(&self, name: &str) -> Path {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// A location for the sub-directory `name` of this one (e.g. a run's `checkpoints/`).
    pub fn subdir(&self, name: &str) -> DatasetLocation {
        DatasetLocation {
            url: format!("{}/{}", self.url.trim_end_matches('/'), name),
            store: Arc::clone(&self.store),
            prefix: self.child(name),
            local_dir: self.local_dir.as_ref().map(|d| d.join(name)),
        }
    }
}

/// Errors opening a dataset URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported URL scheme {scheme:?} in {url:?} (use a path, file://, s3://, gs:// or az://)"
    )]
    UnsupportedScheme { url: String, scheme: String },
    #[error("invalid dataset URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("local directory {path} does not exist")]
    MissingDirectory { path: PathBuf },
    #[error("cannot create local directory {path}: {source}")]
    CreateDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
}

/// Open a dataset (or run directory) URL: a local path, `file://`, `s3://`, `gs://` or `az://`.
pub fn open_dataset(url: &str, options: &StoreOptions) -> Result<DatasetLocation, StoreError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return open_local(url, FsPath::new(url), options);
    };
    match scheme {
        "file" => open_local(url, FsPath::new(rest), options),
        "s3" | "gs" | "az" | "abfs" | "azure" => open_bucket(url, scheme, rest, options),
        other => Err(StoreError::UnsupportedScheme {
            url: url.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

fn open_local(
    url: &str,
    dir: &FsPath,
    options: &StoreOptions,
) -> Result<DatasetLocation, StoreError> {
    if !dir.exists() {
        if options.create_local {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDirectory {
                path: dir.to_owned(),
                source,
            })?;
        } else {
            return Err(StoreError::MissingDirectory {
                path: dir.to_owned(),
            });
        }
    }
    let dir = dir
        .canonicalize()
        .map_err(|source| StoreError::CreateDirectory {
            path: dir.to_owned(),
            source,
        })?;
    let store = LocalFileSystem::new_with_prefix(&dir).map_err(|source| StoreError::Open {
        url: url.to_owned(),
        source,
    })?;
    Ok(DatasetLocation {
        url: url.to_owned(),
        store: Arc::new(store),
        prefix: Path::from(""),
        local_dir: Some(dir),
    })
}

fn retry_config(options: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: options.max_retries.unwrap_or(10),
        retry_timeout: (2 * options.idle_timeout()).min(Duration::from_secs(180)),
    }
}

/// HTTP client settings: a silent connection fails after the idle timeout (reads reset it, so a
/// long download at any speed is fine); the whole-request limit only catches the pathological.
fn client_options(options: &StoreOptions) -> ClientOptions {
    ClientOptions::new()
        .with_read_timeout(options.idle_timeout())
        .with_connect_timeout(options.idle_timeout().min(Duration::from_secs(10)))
        .with_timeout(Duration::from_secs(3600))
}

fn open_bucket(
    url: &str,
    scheme: &str,
    rest: &str,
    options: &StoreOptions,
) -> Result<DatasetLocation, StoreError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "no bucket name".into(),
        });
    }
    let open_err = |source| StoreError::Open {
        url: url.to_owned(),
        source,
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config(options))
                .with_client_options(client_options(options));
            let endpoint = options
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            Arc::new(builder.build().map_err(open_err)?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config(options))
                .with_client_options(client_options(options))
                .build()
                .map_err(open_err)?,
        ),
        _ => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry_config(options))
                .with_client_options(client_options(options))
                .build()
                .map_err(open_err)?,
        ),
    };
    Ok(DatasetLocation {
        url: url.to_owned(),
        store,
        prefix: Path::from(prefix.trim_matches('/')),
        local_dir: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_dataset(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        let b = open_dataset(
            &format!("file://{}", dir.path().display()),
            &StoreOptions::default(),
        )
        .unwrap();
        assert_eq!(a.local_dir, b.local_dir);
        assert_eq!(a.child("index.json").as_ref(), "index.json");
        assert_eq!(a.child("val/a.png").as_ref(), "val/a.png");
    }

    #[test]
    fn missing_local_directory_is_an_error_unless_creating() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new/sub");
        let url = target.to_str().unwrap();
        assert!(matches!(
            open_dataset(url, &StoreOptions::default()),
            Err(StoreError::MissingDirectory { .. })
        ));
        let opts = StoreOptions {
            create_local: true,
            ..Default::default()
        };
        open_dataset(url, &opts).unwrap();
        assert!(target.is_dir());
    }

    #[test]
    fn bucket_urls_keep_their_prefix() {
        let opts = StoreOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let loc = open_dataset("s3://bucket/some/prefix/", &opts).unwrap();
        assert_eq!(loc.prefix.as_ref(), "some/prefix");
        assert_eq!(loc.child("index.json").as_ref(), "some/prefix/index.json");
        assert_eq!(loc.subdir("ckpt").prefix.as_ref(), "some/prefix/ckpt");
        assert_eq!(loc.child("val/a.png").as_ref(), "some/prefix/val/a.png");
    }

    #[test]
    fn credentials_in_urls_are_redacted_everywhere_in_a_text() {
        assert_eq!(
            redact_credentials("cannot reach http://ann:s3cret@host:9000/b/k: refused"),
            "cannot reach http://ann:***@host:9000/b/k: refused"
        );
        assert_eq!(
            redact_credentials(r#"{"endpoint":"https://u:p%40ss@h","x":"s3://b/k"}"#),
            r#"{"endpoint":"https://u:***@h","x":"s3://b/k"}"#
        );
        assert_eq!(
            redact_credentials("token only http://tok@h/ and a@b in prose"),
            "token only http://tok@h/ and a@b in prose"
        );
        assert_eq!(redact_credentials("no urls"), "no urls");
        assert_eq!(redact_credentials("x://"), "x://");
    }

    #[test]
    fn idle_timeout_has_a_default_and_an_override() {
        let opts = StoreOptions {
            idle_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        };
        assert_eq!(opts.idle_timeout(), Duration::from_millis(1500));
        assert_eq!(retry_config(&opts).retry_timeout, Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_oversized_index_is_refused_from_its_size_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Sparse: the size says 256 MiB + 1, no byte of it is written or read.
        std::fs::File::create(dir.path().join(crate::INDEX_FILE))
            .unwrap()
            .set_len(crate::MAX_INDEX_BYTES + 1)
            .unwrap();
        let loc = open_dataset(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        assert!(matches!(
            loc.read_index().await,
            Err(ReadIndexError::Index(
                crate::index::IndexError::TooLarge { .. }
            ))
        ));
        let empty = tempfile::tempdir().unwrap();
        let loc = open_dataset(empty.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        assert!(matches!(
            loc.read_index().await,
            Err(ReadIndexError::Store(object_store::Error::NotFound { .. }))
        ));
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert!(matches!(
            open_dataset("ftp://x/y", &StoreOptions::default()),
            Err(StoreError::UnsupportedScheme { .. })
        ));
    }
}
