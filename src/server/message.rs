//! Checks on a request head that hyper does not make, run before anything else looks at the
//! request: one well-formed `Host` (RFC 9112 §3.2), one way of framing the body (no
//! `Content-Length` beside `Transfer-Encoding`, §6.3), and the configured header size as an
//! exact limit (hyper's own buffer limit is approximate: it can take up to about twice as much).
//!
//! hyper 1.x already frames a message that has both length headers by `Transfer-Encoding`
//! alone, drops the `Content-Length` and closes the connection after answering (RFC 9112 §6.1),
//! so the length check here does not fire today: it is kept as belt and braces, a second line
//! that holds if that ever changes (docs/hardening.md, "Security review", item 17).
//!
//! Each of these is a way for two HTTP implementations to read one message differently
//! (request smuggling, host confusion), so each is refused, never repaired.

use http::{HeaderMap, Method, Version, header};

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the request target must be a path starting with `/`")]
    NotOriginForm,
    #[error("an HTTP/1.1 request must carry exactly one `Host` header")]
    HostCount,
    #[error("the `Host` header must be a host name or address with an optional port")]
    HostMalformed,
    #[error("`Content-Length` and `Transfer-Encoding` may not both be sent")]
    AmbiguousLength,
    #[error("the request head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
}

/// Checks the head of a request whose target is `path`.
pub fn check(
    method: &Method,
    version: Version,
    path: &str,
    headers: &HeaderMap,
    max_head_bytes: usize,
) -> Result<(), MessageError> {
    // Request line plus every field line as sent: `name: value\r\n`.
    let head_bytes = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + method.as_str().len()
        + path.len()
        + 12;
    if head_bytes > max_head_bytes {
        return Err(MessageError::HeadTooLarge {
            limit: max_head_bytes,
        });
    }
    if !path.starts_with('/') {
        return Err(MessageError::NotOriginForm);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(MessageError::HostCount),
        // HTTP/2 names the host in `:authority` (hyper puts it in the URI), not in `Host`.
        (None, None) if version == Version::HTTP_11 => return Err(MessageError::HostCount),
        (None, None) => {}
        (Some(host), None) => {
            let valid = host
                .to_str()
                .ok()
                .filter(|h| !h.is_empty() && !h.contains('@'))
                .filter(|h| {
                    // `http` parses a port lazily: check it is a number here.
                    let after_ip6 = h.rsplit(']').next().unwrap_or_default();
                    after_ip6
                        .split_once(':')
                        .is_none_or(|(_, port)| port.parse::<u16>().is_ok())
                })
                .and_then(|h| h.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| a.as_str().len() == host.len());
            if !valid {
                return Err(MessageError::HostMalformed);
            }
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(MessageError::AmbiguousLength);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                http::HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        map
    }

    fn run(version: Version, pairs: &[(&str, &str)]) -> Result<(), MessageError> {
        check(&Method::GET, version, "/a", &head(pairs), 64 * 1024)
    }

    #[test]
    fn ordinary_heads_pass() {
        for host in ["example.com", "example.com:8080", "127.0.0.1", "[::1]:1"] {
            assert_eq!(run(Version::HTTP_11, &[("host", host)]), Ok(()), "{host}");
        }
        assert_eq!(run(Version::HTTP_10, &[]), Ok(()));
        assert_eq!(
            run(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", "chunked")]
            ),
            Ok(())
        );
    }

    #[test]
    fn confusing_heads_are_refused() {
        use MessageError::*;
        let cases: [(&[(&str, &str)], MessageError); 8] = [
            (&[], HostCount),
            (&[("host", "a"), ("host", "a")], HostCount),
            (&[("host", "a"), ("host", "b")], HostCount),
            (&[("host", "")], HostMalformed),
            (&[("host", "a/b")], HostMalformed),
            (&[("host", "u@a")], HostMalformed),
            (&[("host", "a:http")], HostMalformed),
            (
                &[
                    ("host", "a"),
                    ("content-length", "1"),
                    ("transfer-encoding", "chunked"),
                ],
                AmbiguousLength,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(run(Version::HTTP_11, pairs), Err(expected), "{pairs:?}");
        }
        let big = "v".repeat(70 * 1024);
        assert_eq!(
            run(Version::HTTP_11, &[("host", "a"), ("x-big", &big)]),
            Err(HeadTooLarge { limit: 64 * 1024 })
        );
        assert_eq!(
            check(
                &Method::OPTIONS,
                Version::HTTP_11,
                "*",
                &head(&[("host", "a")]),
                1 << 16
            ),
            Err(NotOriginForm)
        );
    }
}
