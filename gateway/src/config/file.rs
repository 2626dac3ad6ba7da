//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Nothing here is validated beyond TOML types; unknown keys are rejected. Values a
//! later check may complain about are `Spanned`, so the error can name their line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Listen,
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) log: Log,
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listen {
    pub(crate) proxy: Spanned<String>,
    pub(crate) admin: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) shutdown_grace: Option<Spanned<String>>,
    pub(crate) client_idle_timeout: Option<Spanned<String>>,
    pub(crate) client_send_timeout: Option<Spanned<String>>,
    pub(crate) max_request_body: Option<Spanned<Size>>,
    pub(crate) max_request_headers: Option<Spanned<Size>>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
    pub(crate) io_uring: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Log {
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) request_timeout: Option<Spanned<String>>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) max_idle_per_endpoint: Option<Spanned<i64>>,
    pub(crate) connect_concurrency: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: Spanned<String>,
    pub(crate) prefix: Spanned<String>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) methods: Option<Vec<Spanned<String>>>,
    pub(crate) upstream: Spanned<String>,
    #[serde(default)]
    pub(crate) strip_prefix: bool,
    pub(crate) rewrite: Option<Spanned<String>>,
    pub(crate) max_request_body: Option<Spanned<Size>>,
}

/// A byte size written as a number of bytes or a string such as "64MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Size {
    Bytes(i64),
    Text(String),
}
