//! Header hygiene: hop-by-hop removal (including headers a client names in
//! `Connection`), `X-Forwarded-*` (extended only for trusted peers) and request ids.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Correlates a request across the gateway, the upstream and the response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Marks a response the gateway made itself, naming the error kind.
pub const X_GATEWAY_ERROR: HeaderName = HeaderName::from_static("x-gateway-error");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Longest request id accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// What one pass over a message's header names found. The rewrites that follow look
/// up only the names that are there: each lookup hashes its name, and most messages
/// carry none of the headers a proxy removes or extends.
///
/// A clear flag is certain: nothing adds a header behind the scan's back. A set flag
/// means "maybe present": hop-by-hop removal may have taken the header since (a client
/// can name any header in `Connection`), so every use of a set flag looks it up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    pub(crate) connection: bool,
    pub(crate) content_length: bool,
    pub(crate) fixed_hop_by_hop: bool,
    proxy_prefixed: bool,
    pub(crate) expect: bool,
    forwarded: bool,
    request_id: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
}

impl Scan {
    /// Scans the names once (each distinct name is seen once).
    pub fn of(headers: &HeaderMap) -> Self {
        let mut s = Scan::default();
        for name in headers.keys() {
            let n = name.as_str();
            // Names are lowercase; dispatching on the first byte keeps this to about
            // one comparison per name.
            match n.as_bytes().first() {
                Some(b'c') => {
                    s.connection |= n == "connection";
                    s.content_length |= n == "content-length";
                }
                // Not `trailer`: it names the trailer fields that follow the body, end
                // to end (RFC 9110 6.6.2), and hyper sends only those it names.
                Some(b't') => s.fixed_hop_by_hop |= n == "te" || n == "transfer-encoding",
                Some(b'u') => s.fixed_hop_by_hop |= n == "upgrade",
                Some(b'k') => s.fixed_hop_by_hop |= n == "keep-alive",
                Some(b'p') => s.proxy_prefixed |= n.starts_with("proxy-"),
                Some(b'e') => s.expect |= n == "expect",
                Some(b'f') => s.forwarded |= n == "forwarded",
                Some(b'x') => match n {
                    "x-request-id" => s.request_id = true,
                    "x-forwarded-for" => s.forwarded_for = true,
                    "x-forwarded-proto" => s.forwarded_proto = true,
                    "x-forwarded-host" => s.forwarded_host = true,
                    _ => {}
                },
                _ => {}
            }
        }
        s
    }
}

/// The transfer codings of a message, over all its `Transfer-Encoding` fields. The
/// gateway decodes `chunked` only, and the field is hop-by-hop: a message with any
/// other coding would go on undecoded and unannounced, so only exactly one `chunked`
/// is accepted, from a client or from an upstream.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TransferCodings {
    /// A `Transfer-Encoding` field came, even an empty one.
    pub(crate) present: bool,
    chunked: u8,
    other: bool,
}

impl TransferCodings {
    /// Adds one field's list (empty elements are allowed, and skipped: RFC 9110 5.6.1).
    pub(crate) fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked = self.chunked.saturating_add(1);
            } else {
                self.other |= !coding.is_empty();
            }
        }
    }

    /// True when the codings are exactly one `chunked`.
    pub(crate) fn is_chunked(&self) -> bool {
        self.chunked == 1 && !self.other
    }

    /// True when `headers` have no `Transfer-Encoding`, or exactly `chunked`.
    pub(crate) fn supported(headers: &HeaderMap) -> bool {
        let mut codings = TransferCodings::default();
        for value in headers.get_all(header::TRANSFER_ENCODING) {
            codings.add(value.as_bytes());
        }
        !codings.present || codings.is_chunked()
    }
}

/// Removes hop-by-hop headers, first those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let scan = Scan::of(headers);
    remove_hop_by_hop_scanned(headers, &scan);
}

/// [`remove_hop_by_hop`] with the names already scanned.
pub fn remove_hop_by_hop_scanned(headers: &mut HeaderMap, scan: &Scan) {
    if scan.connection {
        remove_connection(headers);
    }
    if scan.fixed_hop_by_hop {
        for name in [header::TE, header::TRANSFER_ENCODING, header::UPGRADE] {
            headers.remove(name);
        }
        headers.remove("keep-alive");
    }
    if scan.proxy_prefixed {
        // `Proxy-*`, including `Proxy-Connection`: names only known by their prefix.
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Removes `Connection` and the headers it names; one lookup reads and removes it.
fn remove_connection(headers: &mut HeaderMap) {
    let header::Entry::Occupied(connection) = headers.entry(header::CONNECTION) else {
        return;
    };
    let mut named: Vec<HeaderName> = Vec::new();
    for value in connection.iter() {
        let bytes = value.as_bytes();
        // The common values name nothing to remove: no split, no allocation.
        if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // Tokens that are removed anyway, or are not headers, cost nothing.
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    drop(connection.remove_entry_mult());
    for name in named {
        headers.remove(name);
    }
}

/// Whether a peer's own forwarding headers may be believed.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// The fields the gateway sets on a request going upstream. The upstream encoder
/// writes them after the client's own fields instead of their going into the header
/// map: an insertion hashes its name and may grow the map, only for the encoder to
/// read the field straight back out (four of them were ~4 % of the proxy's work per
/// request). Any value the client sent under one of these names that the gateway
/// replaces has been removed from the map.
#[derive(Debug, Default)]
pub struct Added {
    /// `Host`, when the request has none of its own left to forward as it is; the
    /// encoder writes it first, right after the request line (RFC 9112 3.2).
    pub(crate) host: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    /// `X-Request-Id`, the id the gateway settled on for the request.
    pub(crate) request_id: Option<HeaderValue>,
}

impl Added {
    /// Calls `f` with each field there is but `Host`, by its lowercase name: the
    /// fields that follow the client's own.
    pub fn each(&self, mut f: impl FnMut(&'static str, &HeaderValue)) {
        let fields = [
            ("x-forwarded-for", &self.forwarded_for),
            ("x-forwarded-proto", &self.forwarded_proto),
            ("x-forwarded-host", &self.forwarded_host),
            ("x-request-id", &self.request_id),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                f(name, value);
            }
        }
    }

    /// Sets the request id, dropping any the client sent (the id chosen may be the
    /// client's own, or one made because the client's was unfit).
    pub fn set_request_id(&mut self, headers: &mut HeaderMap, scan: &Scan, id: HeaderValue) {
        if scan.request_id {
            headers.remove(X_REQUEST_ID);
        }
        self.request_id = Some(id);
    }
}

/// Decides `X-Forwarded-For/Proto/Host`. From a trusted peer the existing chain is
/// extended and its proto/host kept; from anyone else they are replaced. What the
/// gateway sets goes into the returned [`Added`]; a client's value it replaces or
/// refuses is removed from `headers`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    scan: &Scan,
    peer_ip: &HeaderValue,
    trusted: bool,
    proto: &'static str,
    host: Option<HeaderValue>,
) -> Added {
    let chain = if trusted && scan.forwarded_for {
        joined(headers, &X_FORWARDED_FOR, b", ")
    } else {
        None
    };
    let xff = match chain {
        Some(mut v) => {
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_ip.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| peer_ip.clone())
        }
        None => peer_ip.clone(),
    };
    let mut added = Added {
        forwarded_for: Some(replace(headers, scan.forwarded_for, X_FORWARDED_FOR, xff)),
        ..Added::default()
    };
    let proto = HeaderValue::from_static(proto);
    if trusted {
        // A trusted proxy's proto and host stand.
        added.forwarded_proto =
            unless_present(headers, scan.forwarded_proto, &X_FORWARDED_PROTO, proto);
        added.forwarded_host =
            host.and_then(|h| unless_present(headers, scan.forwarded_host, &X_FORWARDED_HOST, h));
    } else {
        added.forwarded_proto = Some(replace(
            headers,
            scan.forwarded_proto,
            X_FORWARDED_PROTO,
            proto,
        ));
        match host {
            Some(h) => {
                added.forwarded_host =
                    Some(replace(headers, scan.forwarded_host, X_FORWARDED_HOST, h));
            }
            None if scan.forwarded_host => drop(headers.remove(X_FORWARDED_HOST)),
            None => {}
        }
        // RFC 7239 `Forwarded` from an untrusted peer cannot be checked: drop it.
        if scan.forwarded {
            headers.remove(FORWARDED);
        }
    }
    added
}

/// `value`, to add unless the header is there; looks only when the scan saw it.
fn unless_present(
    headers: &HeaderMap,
    maybe: bool,
    name: &HeaderName,
    value: HeaderValue,
) -> Option<HeaderValue> {
    (!maybe || !headers.contains_key(name)).then_some(value)
}

/// `value`, to add in place of the header's values, which go when the scan saw some.
fn replace(
    headers: &mut HeaderMap,
    present: bool,
    name: HeaderName,
    value: HeaderValue,
) -> HeaderValue {
    if present {
        headers.remove(name);
    }
    value
}

/// Joins an HTTP/2 request's `cookie` fields into one, with "; " (RFC 9113 8.2.3): h2
/// clients split them for compression, and HTTP/1.1 allows a single field.
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    // Valid values joined by "; " are a valid value.
    if let Some(Ok(one)) = joined(headers, &header::COOKIE, b"; ")
        .map(|v| HeaderValue::from_maybe_shared(Bytes::from(v)))
    {
        headers.insert(header::COOKIE, one);
    }
}

/// All values of a header joined with `separator` (a client may send it on several
/// lines: a list joins with ", ", HTTP/2's cookie pieces with "; ").
fn joined(headers: &HeaderMap, name: &HeaderName, separator: &[u8]) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(separator);
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

/// Generates request ids: a random per-process prefix and a counter, 32 hex digits.
///
/// Ids are made in blocks: each thread takes [`IDS_PER_BLOCK`] numbers of the counter
/// at a time and writes their ids into one buffer, which each id then shares, so a
/// proxied request costs no allocation of its own for its id (one buffer and its shared
/// header serve 16 requests). An id keeps its whole block alive: a request that lasts
/// (a long poll, a slow upload) holds 512 bytes where an id of its own took ~48, which
/// is small beside the ~15 KB a client connection keeps. Ids stay unique; across
/// threads they are not in order.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

/// Ids written per block (512 bytes): the counter's last hex digit.
const IDS_PER_BLOCK: u64 = 16;
/// Hex digits per id: the prefix's 16 and the counter's 16.
const ID_LEN: usize = 32;

/// One thread's ready-made ids, for the generator whose prefix they carry.
struct Block {
    prefix: u64,
    ids: Bytes,
    /// Ids of it handed out.
    used: usize,
}

thread_local! {
    static BLOCK: RefCell<Block> = const {
        RefCell::new(Block {
            prefix: 0,
            ids: Bytes::new(),
            used: 0,
        })
    };
}

impl RequestIds {
    /// A generator with a random prefix, so ids from restarts do not collide.
    pub fn new() -> Self {
        Self {
            prefix: rand::random(),
            counter: AtomicU64::new(0),
        }
    }

    /// The client's id when it is sane, else a fresh one.
    pub fn for_request(&self, headers: &HeaderMap, scan: &Scan) -> HeaderValue {
        if let Some(v) = scan.request_id.then(|| headers.get(X_REQUEST_ID)).flatten() {
            let ok = !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
            if ok {
                return v.clone();
            }
        }
        self.next()
    }

    fn next(&self) -> HeaderValue {
        let id = BLOCK
            .try_with(|block| {
                let mut block = block.borrow_mut();
                // Another generator's block (another gateway in this process) is
                // replaced as a used-up one is.
                if block.prefix != self.prefix || (block.used + 1) * ID_LEN > block.ids.len() {
                    *block = self.block();
                }
                let at = block.used * ID_LEN;
                block.used += 1;
                block.ids.slice(at..at + ID_LEN)
            })
            // The thread is ending: a block of its own for this one.
            .unwrap_or_else(|_| self.block().ids.slice(..ID_LEN));
        // Hex digits are always a valid header value.
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }

    /// Takes the next [`IDS_PER_BLOCK`] numbers and writes their ids. The counter
    /// only ever moves by whole blocks, so a block's first number is a multiple of 16
    /// and its ids differ in the last hex digit only.
    fn block(&self) -> Block {
        let first = self.counter.fetch_add(IDS_PER_BLOCK, Ordering::Relaxed);
        debug_assert_eq!(first % IDS_PER_BLOCK, 0);
        let mut id = [0u8; ID_LEN];
        id[..16].copy_from_slice(&hex(self.prefix));
        id[16..].copy_from_slice(&hex(first));
        let mut ids = Vec::with_capacity(IDS_PER_BLOCK as usize * ID_LEN);
        for last in &HEX_DIGITS[..IDS_PER_BLOCK as usize] {
            id[ID_LEN - 1] = *last;
            ids.extend_from_slice(&id);
        }
        Block {
            prefix: self.prefix,
            ids: Bytes::from(ids),
            used: 0,
        }
    }
}

/// Lowercase hex digits, by value.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `word` as 16 lowercase hex digits.
fn hex(word: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, digit) in out.iter_mut().enumerate() {
        *digit = HEX_DIGITS[((word >> (60 - 4 * j)) & 0xf) as usize];
    }
    out
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// A request's headers from peer 10.0.0.9 as the proxy rewrites them: one scan,
    /// hop-by-hop removal, then `X-Forwarded-*`.
    fn forwarded(pairs: &[(&str, &str)], trusted: bool, host: Option<&'static str>) -> HeaderMap {
        let mut h = map(pairs);
        let scan = Scan::of(&h);
        remove_hop_by_hop_scanned(&mut h, &scan);
        let ip = HeaderValue::from_static("10.0.0.9");
        let added = set_forwarded(
            &mut h,
            &scan,
            &ip,
            trusted,
            "http",
            host.map(HeaderValue::from_static),
        );
        with(h, &added)
    }

    /// The headers as the upstream gets them: the map, then what the gateway adds.
    fn with(mut h: HeaderMap, added: &Added) -> HeaderMap {
        added.each(|name, value| {
            h.append(HeaderName::from_static(name), value.clone());
        });
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, X-Forwarded-For"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-anything", "y"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);

        // Without `Connection`; and `Connection` on two lines.
        let mut h = map(&[("proxy-connection", "keep-alive"), ("te", "x"), ("a", "1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a"]);
        let mut h = map(&[
            ("connection", "close"),
            ("connection", "x-one"),
            ("x-one", "1"),
            ("a", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn forwarded_for_is_replaced_for_strangers_and_extended_for_trusted() {
        let h = forwarded(
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=1.1.1.1"),
            ],
            false,
            Some("shop.example"),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert!(!h.contains_key("forwarded"));

        let h = forwarded(
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("x-forwarded-proto", "https"),
            ],
            true,
            None,
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_scan_gone_stale_by_removal_still_gives_the_right_headers() {
        // The client names its own X-Forwarded-* as hop-by-hop: removed before they
        // are extended, though the scan saw them.
        let h = forwarded(
            &[
                ("connection", "x-forwarded-for, x-forwarded-host"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
            ],
            true,
            None,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["x-forwarded-proto"], "http");

        // Trusted, naming its own proto and host in `Connection`: those go, and the
        // gateway's own take their place.
        let h = forwarded(
            &[
                ("connection", "x-forwarded-proto, x-forwarded-host"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "front.example"),
            ],
            true,
            Some("shop.example"),
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");

        // Untrusted, no Host to forward: a client's X-Forwarded-Host goes.
        let h = forwarded(
            &[("x-forwarded-host", "evil.example"), ("a", "1")],
            false,
            None,
        );
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    }

    /// The rewrites done the plain way, looking every header up, for comparison with
    /// the scanned ones. The same rules: `close` and `keep-alive` in `Connection` are
    /// options, not header names; a value that is not visible ASCII names nothing.
    fn forwarded_plainly(
        mut h: HeaderMap,
        trusted: bool,
        host: Option<HeaderValue>,
        ip: &HeaderValue,
    ) -> HeaderMap {
        let mut named = Vec::new();
        for value in h.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        let fixed = [
            "connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
        ];
        let names: Vec<HeaderName> = h.keys().cloned().collect();
        for name in names {
            if fixed.contains(&name.as_str())
                || name.as_str().starts_with("proxy-")
                || named.contains(&name)
            {
                h.remove(&name);
            }
        }

        let prior: Vec<&[u8]> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let xff = if trusted && !prior.is_empty() {
            let mut chain = prior.join(&b", "[..]);
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&chain).unwrap()
        } else {
            ip.clone()
        };
        h.insert(X_FORWARDED_FOR, xff);
        let proto = HeaderValue::from_static("http");
        if trusted {
            if !h.contains_key(&X_FORWARDED_PROTO) {
                h.insert(X_FORWARDED_PROTO, proto);
            }
            if let Some(host) = host {
                if !h.contains_key(&X_FORWARDED_HOST) {
                    h.insert(X_FORWARDED_HOST, host);
                }
            }
        } else {
            h.insert(X_FORWARDED_PROTO, proto);
            match host {
                Some(host) => drop(h.insert(X_FORWARDED_HOST, host)),
                None => drop(h.remove(&X_FORWARDED_HOST)),
            }
            h.remove(&FORWARDED);
        }
        h
    }

    /// Random request headers drawn from the names the rewrites care about, with
    /// repeats, `Connection` lists naming any of them in any case, and odd bytes.
    fn random_headers(rng: &mut impl rand::Rng) -> HeaderMap {
        const NAMES: &[&str] = &[
            "connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "expect",
            "forwarded",
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "host",
            "close",
            "x-a",
            "trailer",
            "content-length",
            "cache-control",
        ];
        let mut h = HeaderMap::new();
        for _ in 0..rng.random_range(0..12) {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            let value = if name == "connection" || rng.random_ratio(1, 8) {
                let tokens: Vec<String> = (0..rng.random_range(0..4))
                    .map(|_| {
                        let t = NAMES[rng.random_range(0..NAMES.len())];
                        let t = if rng.random() {
                            t.to_ascii_uppercase()
                        } else {
                            t.to_owned()
                        };
                        if rng.random_ratio(1, 4) {
                            format!(" {t} ")
                        } else {
                            t
                        }
                    })
                    .collect();
                tokens.join(",").into_bytes()
            } else if rng.random_ratio(1, 10) {
                b"caf\xe9".to_vec()
            } else {
                format!("v{}", rng.random_range(0..100)).into_bytes()
            };
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(&value).unwrap(),
            );
        }
        h
    }

    /// The scan only decides which lookups run: whatever the headers, the scanned
    /// rewrites must give exactly what looking every header up gives.
    #[test]
    fn scanned_rewrites_match_plain_lookups_on_random_headers() {
        use rand::{Rng, SeedableRng};
        let ip = HeaderValue::from_static("10.0.0.9");
        for seed in 0..20_000u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let original = random_headers(&mut rng);
            let trusted: bool = rng.random();
            let host = rng
                .random_ratio(2, 3)
                .then(|| HeaderValue::from_static("shop.example"));

            let mut scanned = original.clone();
            let scan = Scan::of(&scanned);
            remove_hop_by_hop_scanned(&mut scanned, &scan);
            let added = set_forwarded(&mut scanned, &scan, &ip, trusted, "http", host.clone());
            let scanned = with(scanned, &added);
            let plain = forwarded_plainly(original.clone(), trusted, host, &ip);
            assert_eq!(
                scanned, plain,
                "seed {seed}, trusted {trusted}, headers {original:?}"
            );
            assert_eq!(scan.expect, original.contains_key(header::EXPECT));
            assert_eq!(
                scan.content_length,
                original.contains_key(header::CONTENT_LENGTH)
            );
        }
    }

    #[test]
    fn trust_handles_mapped_ipv4() {
        let nets: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(is_trusted("::ffff:127.0.0.1".parse().unwrap(), &nets));
        assert!(!is_trusted("10.0.0.1".parse().unwrap(), &nets));
    }

    #[test]
    fn request_ids_are_unique_and_client_ids_kept_when_sane() {
        let ids = RequestIds::new();
        let none = HeaderMap::new();
        let a = ids.for_request(&none, &Scan::of(&none));
        let b = ids.for_request(&none, &Scan::of(&none));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        // The counter's part of consecutive ids counts up, across blocks too.
        let first = ids.for_request(&none, &Scan::of(&none));
        let count = |id: &HeaderValue| {
            let digits = id.to_str().expect("ascii");
            u64::from_str_radix(&digits[16..], 16).expect("hex")
        };
        for i in 1..=IDS_PER_BLOCK * 20 {
            let id = ids.for_request(&none, &Scan::of(&none));
            assert_eq!(count(&id), count(&first) + i, "{id:?}");
            assert_eq!(
                id.to_str().expect("ascii")[..16],
                first.to_str().expect("ascii")[..16]
            );
        }
        // Past a block, on several threads, and with another generator in between.
        let other = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        (0..IDS_PER_BLOCK * 3)
                            .map(|i| {
                                if i % 50 == 0 {
                                    other.for_request(&none, &Scan::of(&none));
                                }
                                ids.for_request(&none, &Scan::of(&none))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for thread in threads {
                for id in thread.join().expect("thread") {
                    let id = id.to_str().expect("ascii").to_owned();
                    assert_eq!(id.len(), 32, "{id}");
                    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                    assert_eq!(id[..16], a.to_str().expect("ascii")[..16], "{id}");
                    assert!(seen.insert(id.clone()), "{id} twice");
                }
            }
        });
        assert!(!seen.contains(a.to_str().expect("ascii")));
        let kept = map(&[("x-request-id", "abc-1")]);
        assert_eq!(ids.for_request(&kept, &Scan::of(&kept)), "abc-1");
        let long = "a".repeat(200);
        let replaced = map(&[("x-request-id", &long)]);
        assert_ne!(
            ids.for_request(&replaced, &Scan::of(&replaced)),
            long.as_str()
        );
    }
}
