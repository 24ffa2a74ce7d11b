//! ClickHouse: the connection settings, and the schema tollgate owns there
//! ([`migrate`]).

pub mod migrate;
mod native;
mod writer;

pub use writer::ClickHouseSink;

use std::path::PathBuf;

/// How to reach ClickHouse. The password is never logged or printed.
#[derive(Clone)]
pub struct Connection {
    /// `http://host:8123` or `https://host:8443`.
    pub url: String,
    /// Database holding tollgate's tables.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// PEM file of extra certificate authorities to trust for `https`
    /// (a private CA), beside the public WebPKI roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Where a password comes from: the `TOLLGATE_CLICKHOUSE_PASSWORD`
/// environment variable, or a file (e.g. a mounted Kubernetes Secret).
#[derive(Clone)]
pub enum PasswordSource {
    /// No password (ClickHouse's default user on loopback).
    None,
    /// An environment variable's value.
    Environment(String),
    /// A file's content, trailing newline removed.
    File(PathBuf),
}

/// Names the source, never the secret.
impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::None => f.write_str("no password"),
            PasswordSource::Environment(_) => f.write_str("TOLLGATE_CLICKHOUSE_PASSWORD"),
            PasswordSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl PasswordSource {
    /// Read the password.
    pub fn read(&self) -> std::io::Result<Option<String>> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::Environment(value) => Ok(Some(value.clone())),
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_owned())),
        }
    }
}

/// The CA file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {path} as a CA file: {detail}")]
pub struct CaFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub detail: String,
}

impl Connection {
    /// A client for this connection (LZ4 compression on the wire is the
    /// crate's default; TLS for `https` URLs, trusting the CA file if one is
    /// set). A CA file that cannot be used is an error, never a silent
    /// fallback to the public roots alone.
    pub fn client(&self) -> Result<::clickhouse::Client, CaFileError> {
        let client = self
            .base_client()?
            .with_url(&self.url)
            .with_user(&self.user);
        Ok(match &self.password {
            Some(password) => client.with_password(password),
            None => client,
        })
    }

    /// The crate's own client, or, with a CA file, one whose TLS trusts
    /// that file's certificates as well as the WebPKI roots.
    fn base_client(&self) -> Result<::clickhouse::Client, CaFileError> {
        let Some(path) = &self.ca_file else {
            return Ok(::clickhouse::Client::default());
        };
        let error = |detail: String| CaFileError {
            path: path.clone(),
            detail,
        };
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| error(e.to_string()))? {
            let cert = cert.map_err(|e| error(e.to_string()))?;
            roots.add(cert).map_err(|e| error(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(error("it holds no PEM certificate".to_owned()));
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(::clickhouse::Client::with_http_client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        ))
    }
}

/// ClickHouse could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Nothing answered, or not like ClickHouse.
    #[error("cannot reach ClickHouse at {url}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the client reported.
        source: ::clickhouse::error::Error,
    },
    /// ClickHouse refused the user or password.
    #[error("ClickHouse at {url} refused the credentials of user {user:?}")]
    Credentials {
        /// The URL.
        url: String,
        /// The user.
        user: String,
        /// What ClickHouse said.
        source: ::clickhouse::error::Error,
    },
}

/// Check that `client` reaches ClickHouse and is let in.
pub async fn check(
    client: &::clickhouse::Client,
    connection: &Connection,
) -> Result<(), ConnectionError> {
    match client.query("SELECT 1").fetch_one::<u8>().await {
        Ok(_) => Ok(()),
        Err(source) => {
            let text = source.to_string();
            if ["Code: 516", "AUTHENTICATION_FAILED", "Code: 192"]
                .iter()
                .any(|c| text.contains(c))
            {
                Err(ConnectionError::Credentials {
                    url: connection.url.clone(),
                    user: connection.user.clone(),
                    source,
                })
            } else {
                Err(ConnectionError::Unreachable {
                    url: connection.url.clone(),
                    source,
                })
            }
        }
    }
}
