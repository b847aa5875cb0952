//! Header hygiene between client and upstream (SPEC F2).
//!
//! Towards the upstream: hop-by-hop headers (and those a `Connection` header names),
//! `Authorization`, `Proxy-*`, every client-sent `X-Tollgate-*`, every header whose name
//! contains `_` (CGI and WSGI read `X_Tollgate_Account` as `HTTP_X_TOLLGATE_ACCOUNT`, nginx
//! drops them by default) and the override headers (they would let an upstream run a method or
//! path that was never authorized) are removed, whoever the peer; forwarding headers are set
//! from the peer, believing the client's own only when the peer is a trusted proxy. Towards
//! the client: hop-by-hop headers are removed.
//!
//! One pass over the header names; nothing is allocated unless something is removed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_TOLLGATE_ACCOUNT: HeaderName = HeaderName::from_static("x-tollgate-account");
pub const X_TOLLGATE_USER: HeaderName = HeaderName::from_static("x-tollgate-user");
pub const X_TOLLGATE_IDENTITY: HeaderName = HeaderName::from_static("x-tollgate-identity");

/// Hop-by-hop headers of RFC 9110 §7.6.1, plus the non-standard ones proxies still see.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that name another method, path, client address or front end than the one that was
/// decided on (SPEC F2). `Forwarded` is here too: the gateway sets `X-Forwarded-*` only.
const OVERRIDES: [&str; 11] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "forwarded",
];

/// Removes hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client's headers for the upstream.
pub fn to_upstream(headers: &mut HeaderMap, peer: IpAddr, peer_trusted: bool) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    let refused: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_refused(k.as_str()))
        .cloned()
        .collect();
    for name in refused {
        headers.remove(name);
    }

    let original_host = headers.remove(header::HOST);
    if peer_trusted {
        let chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let value = if chain.is_empty() {
            peer.to_string()
        } else {
            format!("{chain}, {peer}")
        };
        set(headers, X_FORWARDED_FOR, &value);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = original_host
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
    } else {
        set(headers, X_FORWARDED_FOR, &peer.to_string());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

/// A client header that never reaches an upstream, from any peer (names are lower case).
fn is_refused(name: &str) -> bool {
    name.starts_with("x-tollgate-") || name.contains('_') || OVERRIDES.contains(&name)
}

/// Prepares an upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("host", "gw.example"),
            ("x-tollgate-account", "999999999999"),
            ("X-Tollgate-Whatever", "x"),
            ("authorization", "Bearer secret"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        to_upstream(
            &mut h,
            "10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}")),
            false,
        );
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.1.2.3"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        assert_eq!(
            h.get("x-forwarded-host").map(|v| v.as_bytes()),
            Some(&b"gw.example"[..])
        );
        for gone in [
            "forwarded",
            "x-tollgate-account",
            "x-tollgate-whatever",
            "authorization",
            "connection",
            "x-custom",
            "te",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn underscore_and_override_headers_are_removed_from_any_peer() {
        for trusted in [false, true] {
            let mut h = map(&[
                ("x_tollgate_account", "999999999999"),
                ("my_header", "1"),
                ("x-http-method-override", "DELETE"),
                ("x-original-url", "/admin"),
                ("forwarded", "for=1.2.3.4"),
                ("true-client-ip", "1.2.3.4"),
                ("x-kept", "1"),
            ]);
            to_upstream(
                &mut h,
                "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
                trusted,
            );
            for gone in OVERRIDES
                .iter()
                .copied()
                .chain(["x_tollgate_account", "my_header"])
            {
                assert!(!h.contains_key(gone), "{gone} (trusted: {trusted})");
            }
            assert!(h.contains_key("x-kept"));
        }
    }

    #[test]
    fn trusted_peer_extends_the_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        to_upstream(
            &mut h,
            "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            true,
        );
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"1.1.1.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
    }
}
