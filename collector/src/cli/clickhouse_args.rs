//! The flags every command that talks to ClickHouse shares.

use std::path::{Path, PathBuf};

use clap::Args;
use tollgate::config::ClickHouseConfig;
use tollgate::sink::clickhouse::migrate::check_name;
use tollgate::sink::clickhouse::Connection;

use super::BadInput;

/// Where ClickHouse is and who to be there.
#[derive(Debug, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP(S) URL.
    #[arg(long = "clickhouse", value_name = "URL")]
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
    /// An unusable CA file or password file is bad input (exit 2) before any
    /// work starts.
    pub fn connection(&self) -> anyhow::Result<Option<Connection>> {
        match &self.url {
            Some(url) => self.connection_to(url, "--clickhouse").map(Some),
            None => Ok(None),
        }
    }

    /// The connection to `url`, given by the flag `url_flag`, with these
    /// arguments' database, user, password and CA.
    pub fn connection_to(&self, url: &str, url_flag: &str) -> anyhow::Result<Connection> {
        let config = ClickHouseConfig {
            url: url.to_owned(),
            database: self.database.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
        };
        config.connection(Path::new(".")).map_err(|e| {
            let flag = match e.field {
                "url" => url_flag,
                "database" => "--database",
                "password_file" => "--password-file",
                "ca_file" => "--ca-file",
                other => other,
            };
            BadInput(format!("{flag}: {}", e.message)).into()
        })
    }
}

/// A database or cluster name, checked because it is written into SQL.
pub fn parse_name(what: &'static str, text: &str) -> Result<String, String> {
    check_name(what, text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}
