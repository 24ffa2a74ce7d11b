//! ClickHouse: the connection settings, and the schema tollgate owns there
//! ([`migrate`]).

pub mod migrate;
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
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
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

impl Connection {
    /// A client for this connection, talking to the database (LZ4 compression
    /// on the wire is the crate's default).
    pub fn client(&self) -> ::clickhouse::Client {
        let client = ::clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user);
        match &self.password {
            Some(password) => client.with_password(password),
            None => client,
        }
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
