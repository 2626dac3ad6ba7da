//! Raw file structs -> validated [`Config`]: types, ranges and cross-references.
//!
//! All problems are collected rather than stopping at the first, so one edit fixes a
//! file. Each problem carries the line and key of the value at fault.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::Method;
use toml::Spanned;

use super::file::{self, FileConfig, Size};
use super::locate::{key_at, line_of};
use super::{
    defaults, Config, ConnectionConfig, DiscoveryConfig, Listen, Log, LogFormat, Problem, Rewrite,
    RouteConfig, Server, UpstreamConfig,
};

/// Upper bound for `connect_concurrency`: far above any sane setting, far below the
/// semaphore's own limit.
const MAX_CONNECT_CONCURRENCY: usize = 65_535;

/// Upper bound for every duration: timers this far out are "never", and deadlines
/// computed from them must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses and validates; returns every problem found.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
    let raw: FileConfig = toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let config = v.config(raw, path);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line);
        Err(v.problems)
    }
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim().to_owned();
    let span = e.span().unwrap_or(0..0);
    let mut key = if span.is_empty() {
        String::new()
    } else {
        key_at(text, span.start)
    };
    // A missing key has no span of its own; toml points at its table (empty: the root).
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        key = if key.is_empty() {
            missing.to_owned()
        } else {
            format!("{key}.{missing}")
        };
    }
    Problem {
        line: line_of(text, span.start),
        key,
        message,
    }
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let start = at.span().start;
        self.problems.push(Problem {
            line: line_of(self.text, start),
            key: key_at(self.text, start),
            message: message.into(),
        });
    }

    /// A problem with no value to point at: point at the table header instead.
    fn problem_at_header(&mut self, header: &str, key: String, message: impl Into<String>) {
        let offset = self.text.find(header).unwrap_or(0);
        self.problems.push(Problem {
            line: line_of(self.text, offset),
            key,
            message: message.into(),
        });
    }

    fn config(&mut self, raw: FileConfig, path: &Path) -> Config {
        let listen = Listen {
            proxy: self.socket_addr(&raw.listen.proxy),
            admin: self.socket_addr(&raw.listen.admin),
        };
        if listen.proxy == listen.admin && listen.proxy.port() != 0 {
            self.problem(
                &raw.listen.admin,
                "the admin and proxy listeners use the same address",
            );
        }
        let server = self.server(&raw.server);
        let log = Log {
            format: match raw.log.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
                None | Some((_, "human")) => LogFormat::Human,
                Some((_, "json")) => LogFormat::Json,
                Some((f, other)) => {
                    self.problem(
                        f,
                        format!("unknown log format `{other}`: use \"human\" or \"json\""),
                    );
                    LogFormat::Human
                }
            },
            access_log: raw.log.access_log.unwrap_or(true),
        };
        let upstreams = raw
            .upstreams
            .iter()
            .map(|(name, u)| {
                let name: Arc<str> = Arc::from(name.as_str());
                (name.clone(), self.upstream(name, u))
            })
            .collect::<BTreeMap<_, _>>();
        let routes = self.routes(&raw.routes, &upstreams, server.max_request_body);
        Config {
            source: path.to_path_buf(),
            listen,
            server,
            log,
            upstreams,
            routes,
        }
    }

    fn server(&mut self, raw: &file::Server) -> Server {
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .filter_map(|p| {
                let text = p.get_ref();
                let parsed = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(net) => Some(net),
                    Err(_) => {
                        self.problem(p, format!("`{text}` is not an IP address or CIDR block"));
                        None
                    }
                }
            })
            .collect();
        Server {
            shutdown_grace: self.duration(&raw.shutdown_grace, defaults::SHUTDOWN_GRACE),
            client_idle_timeout: self
                .positive_duration(&raw.client_idle_timeout, defaults::CLIENT_IDLE_TIMEOUT),
            client_send_timeout: self
                .positive_duration(&raw.client_send_timeout, defaults::CLIENT_SEND_TIMEOUT),
            max_request_body: self.size(&raw.max_request_body, defaults::MAX_REQUEST_BODY),
            max_request_headers: usize::try_from(self.size(
                &raw.max_request_headers,
                defaults::MAX_REQUEST_HEADERS as u64,
            ))
            .unwrap_or(usize::MAX),
            trusted_proxies,
            io_uring: raw.io_uring.unwrap_or(true),
        }
    }

    fn upstream(&mut self, name: Arc<str>, raw: &file::Upstream) -> UpstreamConfig {
        let header = format!("[upstreams.{name}]");
        let endpoints = match &raw.endpoints {
            None => {
                self.problem_at_header(
                    &header,
                    format!("upstreams.{name}.endpoints"),
                    "an upstream needs `endpoints`",
                );
                Vec::new()
            }
            Some(list) => {
                // An empty list is allowed: it takes an upstream out of service (503).
                let mut seen = HashSet::new();
                list.get_ref()
                    .iter()
                    .filter_map(|e| {
                        let authority = self.authority(e)?;
                        if !seen.insert(authority.clone()) {
                            self.problem(e, format!("endpoint `{authority}` is listed twice"));
                            return None;
                        }
                        Some(authority)
                    })
                    .collect()
            }
        };
        let max_idle = match &raw.max_idle_per_endpoint {
            None => defaults::MAX_IDLE_PER_ENDPOINT,
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or_else(|_| {
                self.problem(n, "must be zero or more");
                defaults::MAX_IDLE_PER_ENDPOINT
            }),
        };
        let connect_concurrency = match &raw.connect_concurrency {
            None => defaults::CONNECT_CONCURRENCY,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n) if (1..=MAX_CONNECT_CONCURRENCY).contains(&n) => n,
                _ => {
                    self.problem(
                        n,
                        format!("must be between 1 and {MAX_CONNECT_CONCURRENCY}"),
                    );
                    defaults::CONNECT_CONCURRENCY
                }
            },
        };
        let connection = ConnectionConfig {
            connect_timeout: self
                .positive_duration(&raw.connect_timeout, defaults::CONNECT_TIMEOUT),
            request_timeout: self
                .positive_duration(&raw.request_timeout, defaults::REQUEST_TIMEOUT),
            idle_timeout: self.positive_duration(&raw.idle_timeout, defaults::IDLE_TIMEOUT),
            max_idle_per_endpoint: max_idle,
            connect_concurrency,
        };
        UpstreamConfig {
            name,
            discovery: DiscoveryConfig::Static(endpoints),
            connection,
        }
    }

    fn routes(
        &mut self,
        raw: &[file::Route],
        upstreams: &BTreeMap<Arc<str>, UpstreamConfig>,
        default_body: u64,
    ) -> Vec<RouteConfig> {
        let mut names = HashSet::new();
        let mut matches = HashSet::new();
        let mut routes = Vec::with_capacity(raw.len());
        for r in raw {
            let name = r.name.get_ref();
            if name.is_empty() {
                self.problem(&r.name, "a route needs a non-empty name");
            } else if !names.insert(name.clone()) {
                self.problem(&r.name, format!("route name `{name}` is used twice"));
            }
            let prefix = self.prefix(&r.prefix);
            let host = r.host.as_ref().map(|h| {
                let host = h.get_ref().to_ascii_lowercase();
                if host.is_empty() || host.contains(['/', ' ', ':']) {
                    self.problem(
                        h,
                        format!("`{host}` is not a host name (no port, no scheme)"),
                    );
                }
                host
            });
            let methods = r.methods.as_ref().map(|ms| {
                ms.iter()
                    .filter_map(|m| {
                        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                            Ok(method) => Some(method),
                            Err(_) => {
                                self.problem(m, format!("`{}` is not an HTTP method", m.get_ref()));
                                None
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            });
            if let Some(ms) = &r.methods {
                if ms.is_empty() {
                    self.problem(&r.name, "`methods` is empty: omit it to match every method");
                }
            }
            let upstream = r.upstream.get_ref();
            if !upstreams.contains_key(upstream.as_str()) {
                self.problem(
                    &r.upstream,
                    format!("route `{name}` names upstream `{upstream}`, which is not defined under [upstreams]"),
                );
            }
            let rewrite = match (&r.rewrite, r.strip_prefix) {
                (Some(to), true) => {
                    self.problem(to, "use either `rewrite` or `strip_prefix`, not both");
                    Rewrite::Keep
                }
                (Some(to), false) => {
                    if !to.get_ref().starts_with('/') {
                        self.problem(to, "`rewrite` must start with `/`");
                    }
                    Rewrite::Prefix(to.get_ref().clone())
                }
                (None, true) => Rewrite::Prefix("/".to_owned()),
                (None, false) => Rewrite::Keep,
            };
            let key = (
                host.clone(),
                prefix.clone(),
                methods
                    .clone()
                    .map(|mut m| {
                        m.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                        m
                    })
                    .map(|m| m.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
            );
            if !matches.insert(key) {
                self.problem(&r.prefix, format!("another route already matches host {:?} and prefix `{prefix}` with the same methods", host));
            }
            routes.push(RouteConfig {
                name: Arc::from(name.as_str()),
                host,
                prefix,
                methods,
                upstream: Arc::from(upstream.as_str()),
                rewrite,
                max_request_body: match &r.max_request_body {
                    Some(_) => self.size(&r.max_request_body, default_body),
                    None => default_body,
                },
            });
        }
        routes
    }

    fn prefix(&mut self, raw: &Spanned<String>) -> String {
        let p = raw.get_ref();
        if !p.starts_with('/') {
            self.problem(raw, format!("prefix `{p}` must start with `/`"));
        }
        if p.contains(['?', '#', ' ']) {
            self.problem(
                raw,
                format!("prefix `{p}` must be a plain path (no query, fragment or spaces)"),
            );
        }
        // `/order/` and `/order` match the same requests; keep one form.
        if p.len() > 1 {
            p.trim_end_matches('/').to_owned()
        } else {
            p.clone()
        }
    }

    fn socket_addr(&mut self, raw: &Spanned<String>) -> SocketAddr {
        raw.get_ref().parse().unwrap_or_else(|_| {
            self.problem(
                raw,
                format!(
                    "`{}` is not an address such as 127.0.0.1:8000",
                    raw.get_ref()
                ),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn authority(&mut self, raw: &Spanned<String>) -> Option<Authority> {
        let text = raw.get_ref();
        match text.parse::<Authority>() {
            Ok(a)
                if a.port_u16().is_some_and(|p| p != 0)
                    && !a.host().is_empty()
                    && !text.contains('@') =>
            {
                Some(a)
            }
            _ => {
                self.problem(
                    raw,
                    format!("endpoint `{text}` must be host:port, such as 127.0.0.1:8001"),
                );
                None
            }
        }
    }

    fn duration(&mut self, raw: &Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if d <= MAX_DURATION => d,
            Ok(_) => {
                self.problem(raw, "must be at most 365 days");
                default
            }
            Err(e) => {
                self.problem(
                    raw,
                    format!(
                        "`{}` is not a duration such as \"2s\" or \"500ms\": {e}",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn positive_duration(&mut self, raw: &Option<Spanned<String>>, default: Duration) -> Duration {
        let d = self.duration(raw, default);
        if d.is_zero() {
            if let Some(raw) = raw {
                self.problem(raw, "must be greater than zero");
            }
            return default;
        }
        d
    }

    fn size(&mut self, raw: &Option<Spanned<Size>>, default: u64) -> u64 {
        let Some(raw) = raw else { return default };
        let parsed = match raw.get_ref() {
            Size::Bytes(n) => u64::try_from(*n).ok(),
            Size::Text(t) => parse_size(t),
        };
        parsed.unwrap_or_else(|| {
            self.problem(
                raw,
                "not a size: write bytes as a number or a string such as \"64MiB\", \"16KiB\"",
            );
            default
        })
    }
}

/// Parses "1024", "16KiB", "64MiB", "1GiB", "10KB", "5MB", "1GB".
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[listen]
proxy = "127.0.0.1:8000"
admin = "127.0.0.1:9000"

[upstreams.orders]
endpoints = ["127.0.0.1:8001", "orders.internal:8001"]

[[routes]]
name = "orders"
prefix = "/order/"
upstream = "orders"
strip_prefix = true
"#;

    fn problems(text: &str) -> Vec<Problem> {
        parse(text, Path::new("gw.toml")).expect_err("should be rejected")
    }

    #[test]
    fn accepts_a_good_file_and_fills_defaults() {
        let c = parse(GOOD, Path::new("gw.toml")).unwrap();
        assert_eq!(c.routes[0].prefix, "/order");
        assert_eq!(c.routes[0].rewrite, Rewrite::Prefix("/".into()));
        assert_eq!(c.server.max_request_body, defaults::MAX_REQUEST_BODY);
        let u = &c.upstreams["orders"];
        assert_eq!(u.connection.idle_timeout, defaults::IDLE_TIMEOUT);
        let DiscoveryConfig::Static(eps) = &u.discovery;
        assert_eq!(eps.len(), 2);
    }

    #[test]
    fn unknown_keys_are_rejected_with_line_and_key() {
        let text = GOOD.replace("strip_prefix = true", "strip_prefix = true\nretries = 3");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 14);
        assert_eq!(p[0].key, "routes[0].retries");
        assert!(p[0].message.contains("unknown field"), "{}", p[0].message);
    }

    #[test]
    fn a_route_to_an_undefined_upstream_is_named() {
        let text = GOOD.replace("upstream = \"orders\"", "upstream = \"ordres\"");
        let p = problems(&text);
        assert_eq!(p[0].line, 12);
        assert_eq!(p[0].key, "routes[0].upstream");
        assert!(p[0].message.contains("ordres"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = GOOD
            .replace("127.0.0.1:8000", "nowhere")
            .replace("\"127.0.0.1:8001\"", "\"127.0.0.1\"")
            .replace(
                "[upstreams.orders]",
                "[upstreams.orders]\nconnect_timeout = \"soon\"\nconnect_concurrency = 0",
            );
        let p = problems(&text);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.proxy",
                "upstreams.orders.connect_timeout",
                "upstreams.orders.connect_concurrency",
                "upstreams.orders.endpoints"
            ]
        );
    }

    #[test]
    fn absurd_numbers_are_refused_not_carried_into_timers() {
        let text = GOOD.replace(
            "[upstreams.orders]",
            "[upstreams.orders]\nrequest_timeout = \"300000000000y\"\nconnect_concurrency = 4000000000000000000",
        );
        let p = problems(&text);
        let found: Vec<_> = p
            .iter()
            .map(|p| (p.key.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "upstreams.orders.request_timeout",
                    "must be at most 365 days"
                ),
                (
                    "upstreams.orders.connect_concurrency",
                    "must be between 1 and 65535"
                ),
            ]
        );
    }

    #[test]
    fn zero_client_timeouts_are_refused_and_the_defaults_are_hypers_and_nginxs() {
        let c = parse(GOOD, Path::new("gw.toml")).unwrap();
        assert_eq!(c.server.client_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.server.client_send_timeout, Duration::from_secs(60));
        let p = problems(&format!(
            "[server]\nclient_idle_timeout = \"0s\"\nclient_send_timeout = \"0ms\"\n{GOOD}"
        ));
        let found: Vec<_> = p
            .iter()
            .map(|p| (p.line, p.key.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "server.client_idle_timeout", "must be greater than zero"),
                (3, "server.client_send_timeout", "must be greater than zero")
            ]
        );
    }

    #[test]
    fn missing_sections_and_type_errors_are_located() {
        let p = problems("[server]\nshutdown_grace = \"1s\"\n");
        assert_eq!(p[0].key, "listen");
        let p = problems(&GOOD.replace("strip_prefix = true", "strip_prefix = \"yes\""));
        assert_eq!(
            (p[0].line, p[0].key.as_str()),
            (13, "routes[0].strip_prefix")
        );
    }

    #[test]
    fn duplicate_routes_and_names_are_rejected() {
        let dup = format!(
            "{GOOD}\n[[routes]]\nname = \"orders\"\nprefix = \"/order\"\nupstream = \"orders\"\n"
        );
        let p = problems(&dup);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.key.starts_with("routes[1].")));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
    }
}
