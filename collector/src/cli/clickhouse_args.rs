//! The flags every command that talks to ClickHouse shares.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tollgate::sink::clickhouse::migrate::check_name;
use tollgate::sink::clickhouse::{Connection, PasswordSource};

use super::BadInput;

/// Where ClickHouse is and who to be there.
#[derive(Debug, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP(S) URL.
    #[arg(long = "clickhouse", value_name = "URL", value_parser = parse_url)]
    pub url: Option<String>,
    /// Database for tollgate's tables.
    #[arg(long, default_value = "tollgate", value_parser = |s: &str| parse_name("database", s))]
    pub database: String,
    /// ClickHouse user.
    #[arg(long, default_value = "default")]
    pub user: String,
    /// Read the password from this file (e.g. a mounted Secret). Otherwise
    /// TOLLGATE_CLICKHOUSE_PASSWORD is used if set.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// PEM file of certificate authorities to trust for an https:// URL
    /// (e.g. a private CA), in addition to the public WebPKI roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

impl ClickHouseArgs {
    /// The connection, with the password read; `None` without `--clickhouse`.
    pub fn connection(&self) -> anyhow::Result<Option<Connection>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let password = match (
            &self.password_file,
            std::env::var("TOLLGATE_CLICKHOUSE_PASSWORD"),
        ) {
            (Some(path), _) => PasswordSource::File(path.clone()),
            (None, Ok(value)) => PasswordSource::Environment(value),
            (None, Err(_)) => PasswordSource::None,
        };
        let connection = Connection {
            url: url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: password
                .read()
                .with_context(|| format!("cannot read the ClickHouse password ({password:?})"))?,
            ca_file: self.ca_file.clone(),
        };
        // Build a client now, so that an unusable CA file is bad input
        // (exit 2) before any work starts.
        connection.client().map_err(|e| BadInput(e.to_string()))?;
        Ok(Some(connection))
    }
}

fn parse_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A database or cluster name, checked because it is written into SQL.
pub fn parse_name(what: &'static str, text: &str) -> Result<String, String> {
    check_name(what, text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}
