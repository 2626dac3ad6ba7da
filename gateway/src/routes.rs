//! The route table: matches a request's host, path and method to a route.
//!
//! Order of precedence: routes with a host before host-less ones, then the longest
//! prefix. Prefixes match on segment boundaries: `/order` matches `/order` and
//! `/order/7`, never `/orders`. Lookup is a scan over a pre-sorted slice: no allocation.

use std::sync::Arc;

use http::Method;

use crate::config::{Rewrite, RouteConfig};
use crate::metrics::RouteMetrics;
use crate::snapshot::Upstream;

/// A route ready to serve: its config plus the upstream and metric handles it uses.
#[derive(Debug)]
pub struct Route {
    /// The validated route config.
    pub config: RouteConfig,
    /// The upstream it forwards to.
    pub upstream: Arc<Upstream>,
    /// Its request counters and latency histogram.
    pub(crate) metrics: RouteMetrics,
}

impl Route {
    /// The path to send upstream, or `None` when it is the incoming one unchanged.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        let Rewrite::Prefix(to) = &self.config.rewrite else {
            return None;
        };
        let rest = if self.config.prefix == "/" {
            path
        } else {
            &path[self.config.prefix.len()..]
        };
        let to = to.trim_end_matches('/');
        let mut out = String::with_capacity(to.len() + rest.len() + 1);
        out.push_str(to);
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        Some(out)
    }
}

/// All routes, sorted by precedence.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Sorts routes by precedence; ties keep file order.
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by(|a, b| {
            let key = |r: &Route| {
                (
                    r.config.host.is_none(),
                    std::cmp::Reverse(r.config.prefix.len()),
                )
            };
            key(a).cmp(&key(b))
        });
        Self { routes }
    }

    /// Routes in precedence order, for `/admin/routes`.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route for a request; `host` is without port, in any case.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            let c = &r.config;
            c.host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|host| host.eq_ignore_ascii_case(h)))
                && prefix_matches(&c.prefix, path)
                && c.methods.as_ref().is_none_or(|ms| ms.contains(method))
        })
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/order", "/order"));
        assert!(prefix_matches("/order", "/order/1"));
        assert!(!prefix_matches("/order", "/orders"));
        assert!(prefix_matches("/", "/anything"));
    }
}
