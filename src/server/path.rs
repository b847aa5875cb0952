//! The one canonical form of a request path (SPEC F1), made before any routing, and the
//! refusal of targets that could mean different things to tollgate and to an upstream: dot
//! segments (also with a `;` parameter, `..;`), encoded slashes and dots (also double-encoded,
//! `%252e`), backslashes, empty segments, control characters, raw non-ASCII bytes, bad or
//! non-UTF-8 percent-encoding.
//!
//! Canonical means: percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits,
//! `-`, `_`, `~`) are decoded, `%2E` excepted (refused, like every encoded dot); every other
//! `%XX` stays encoded with upper-case hex. Routing, Cedar's `context.path` and the upstream
//! all get that one string, so a policy on `/objects/secret/*` cannot be walked around with
//! `%73ecret`. Whether a `;` (a path parameter to Tomcat, Jetty and others) may pass, and
//! whether case is folded for routing and Cedar, are per-service choices the pipeline applies
//! ([`has_params`], [`fold_case`]).
//!
//! One pass over the path; a path without `%` is borrowed, never copied.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path may not contain `.` or `..` segments")]
    DotSegment,
    #[error("the path may not contain empty segments (`//`)")]
    EmptySegment,
    #[error("the path may not contain encoded `/`, `\\` or `.` characters")]
    EncodedSeparator,
    #[error("the path may not contain `\\`")]
    Backslash,
    #[error("the path contains a raw non-ASCII byte; percent-encode it")]
    NotAscii,
    #[error("the path contains a control character or space")]
    ControlCharacter,
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    #[error("the path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error(
        "service `{service}` does not accept `;` path parameters; percent-encode a literal `;` as `%3B`"
    )]
    PathParameter { service: String },
}

/// Checks a raw (still percent-encoded) path and returns its canonical form. The trailing
/// segment may be empty (`/objects/`).
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let bytes = raw.as_bytes();
    // Only escapes change anything; without one the path is its own canonical form.
    let escaped = bytes.contains(&b'%');
    let mut canonical = String::with_capacity(if escaped { bytes.len() } else { 0 });
    // The fully decoded bytes, to check UTF-8 and double encoding (escaped paths only).
    let mut decoded = Vec::with_capacity(if escaped { bytes.len() } else { 0 });
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
                let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let value = hi * 16 + lo;
                match value {
                    b'/' | b'\\' | b'.' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    _ => decoded.push(value),
                }
                if is_unreserved(value) {
                    canonical.push(char::from(value));
                } else {
                    canonical.push('%');
                    canonical.push(char::from(hex_digit_upper(hi)));
                    canonical.push(char::from(hex_digit_upper(lo)));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            0x80.. => return Err(PathError::NotAscii),
            _ => {
                if escaped {
                    decoded.push(b);
                    canonical.push(char::from(b));
                }
                i += 1;
            }
        }
    }
    if escaped {
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::NotUtf8);
        }
        // Double encoding: an upstream (or a framework in front of it) that decodes once more
        // would see a separator or a dot that was never checked here.
        if decoded.windows(3).any(|w| {
            matches!(w, [b'%', hi, lo] if matches!(
                hex_value(*hi).zip(hex_value(*lo)).map(|(h, l)| h * 16 + l),
                Some(b'/' | b'\\' | b'.')
            ))
        }) {
            return Err(PathError::EncodedSeparator);
        }
    }
    // Decoding never creates or removes a `/`, `.` or `;`, so the raw segments are the
    // canonical ones as far as these checks go.
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        // `..;x` is `..` to servers that strip path parameters (Tomcat, Jetty and others).
        let bare = segment.split(';').next().unwrap_or_default();
        match bare {
            "." | ".." => return Err(PathError::DotSegment),
            "" if segments.peek().is_some() => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(if escaped {
        Cow::Owned(canonical)
    } else {
        Cow::Borrowed(raw)
    })
}

/// Whether a canonical path carries `;` path parameters (refused unless the service allows
/// them: an upstream that strips them would serve another path than the one decided on).
pub fn has_params(canonical: &str) -> bool {
    canonical.contains(';')
}

/// The case-folded form of a canonical path, for routing and Cedar on services with
/// `case_insensitive_paths`: ASCII letters outside `%XX` escapes in lower case (escapes keep
/// their upper-case hex). Borrowed when nothing changes.
pub fn fold_case(canonical: &str) -> Cow<'_, str> {
    let bytes = canonical.as_bytes();
    let mut i = 0;
    let mut folded: Option<Vec<u8>> = None;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            i += 3;
            continue;
        }
        if b.is_ascii_uppercase() {
            let out = folded.get_or_insert_with(|| bytes.to_vec());
            if let Some(c) = out.get_mut(i) {
                *c = b.to_ascii_lowercase();
            }
        }
        i += 1;
    }
    match folded.map(String::from_utf8) {
        Some(Ok(s)) => Cow::Owned(s),
        // Only ASCII letters were changed, so this cannot fail; keep the input if it did.
        Some(Err(_)) | None => Cow::Borrowed(canonical),
    }
}

/// The upper-case hex digit of a nibble (`value` < 16).
fn hex_digit_upper(value: u8) -> u8 {
    if value < 10 {
        b'0' + value
    } else {
        b'A' + (value - 10)
    }
}

/// RFC 3986 §2.3, minus `.`: an encoded dot is refused, never decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(), PathError> {
        canonicalize(raw).map(|_| ())
    }

    #[test]
    fn canonical_form_decodes_unreserved_and_upper_cases_the_rest() {
        for (raw, canonical) in [
            ("/objects/%73ecret/x", "/objects/secret/x"),
            ("/a%7e%41%5F%2d", "/a~A_-"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%3bb%3B", "/a%3Bb%3B"),
            ("/100%25", "/100%25"),
            ("/a%2541", "/a%2541"),
            ("/plain/path", "/plain/path"),
            ("/a;b", "/a;b"),
        ] {
            assert_eq!(canonicalize(raw).as_deref(), Ok(canonical), "{raw}");
        }
        assert!(matches!(canonicalize("/plain"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn case_folding_leaves_escapes_alone() {
        assert_eq!(
            fold_case("/Objects/SECRET%C3%A9x"),
            "/objects/secret%C3%A9x"
        );
        assert!(matches!(fold_case("/objects/a%C3"), Cow::Borrowed(_)));
        assert!(has_params("/a;b") && !has_params("/a%3Bb"));
    }

    #[test]
    fn plain_paths_pass() {
        for ok in [
            "/",
            "/svc/storage/objects/a.txt",
            "/a/b/",
            "/a%20b",
            "/caf%C3%A9",
            "/x~y-z_1",
            "/a;b",
            "/a/...",
            "/100%25",
            "/a%2541",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        let cases = [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/a//b", PathError::EmptySegment),
            ("/a/%2e%2e/b", PathError::EncodedSeparator),
            ("/a/%2E/b", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%0d%0ab", PathError::ControlCharacter),
            ("/a%zz", PathError::BadPercentEncoding),
            ("/a%2", PathError::BadPercentEncoding),
            ("/a%ff", PathError::NotUtf8),
            ("a/b", PathError::NotAbsolute),
            ("/a/%252e%252e/b", PathError::EncodedSeparator),
            ("/a%252Fb", PathError::EncodedSeparator),
            ("/a%255cb", PathError::EncodedSeparator),
            ("/a/..;/b", PathError::DotSegment),
            ("/a/..;x=1/b", PathError::DotSegment),
            ("/a/.;/b", PathError::DotSegment),
            ("/a/%c0%ae%c0%ae/b", PathError::NotUtf8),
            ("/caf\u{e9}", PathError::NotAscii),
        ];
        for (path, expected) in cases {
            assert_eq!(check(path), Err(expected), "{path}");
        }
    }
}

/// Property tests: `check` never panics, and what it accepts means one thing to every reader:
/// decoding once (or twice, for an upstream that decodes again) yields the same segments, none
/// of them a dot segment. `PROPTEST_CASES` raises the case count (docs/hardening.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn check(raw: &str) -> Result<(), PathError> {
        canonicalize(raw).map(|_| ())
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2048),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn tricky_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(";".to_owned()),
            Just("%".to_owned()),
            Just("%25".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%c0%ae".to_owned()),
            Just("%e2%80%ae".to_owned()),
            Just("\\".to_owned()),
            Just("2e".to_owned()),
            Just("2f".to_owned()),
            "[a-z0-9]{1,3}",
            "%[0-9a-fA-F]{2}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..14).prop_map(|p| format!("/{}", p.concat()))
    }

    fn decode(bytes: &[u8]) -> Vec<u8> {
        percent_encoding::percent_decode(bytes).collect()
    }

    fn segments(path: &[u8]) -> Vec<&[u8]> {
        path.split(|b| *b == b'/').collect()
    }

    fn is_dot(segment: &[u8]) -> bool {
        let bare = segment.split(|b| *b == b';').next().unwrap_or_default();
        bare == b"." || bare == b".."
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn accepted_paths_mean_the_same_once_or_twice_decoded(raw in tricky_path()) {
            if check(&raw).is_ok() {
                let once = decode(raw.as_bytes());
                let twice = decode(&once);
                prop_assert!(std::str::from_utf8(&once).is_ok());
                prop_assert!(!once.iter().any(|b| b.is_ascii_control() || *b == b'\\'));
                prop_assert!(!twice.contains(&b'\\'));
                let raw_segments = segments(raw.as_bytes()).len();
                prop_assert_eq!(segments(&once).len(), raw_segments, "an encoded slash passed");
                prop_assert_eq!(segments(&twice).len(), raw_segments, "a double-encoded slash passed");
                for decoded in [&once, &twice] {
                    let all = segments(decoded);
                    prop_assert!(!all.iter().any(|s| is_dot(s)), "a dot segment passed: {}", raw);
                    let inner = all.len().saturating_sub(2);
                    prop_assert!(!all.iter().skip(1).take(inner).any(|s| s.is_empty()), "an empty segment passed: {}", raw);
                }
            }
        }

        #[test]
        fn any_string_gets_an_answer(raw in any::<String>()) {
            let _ = check(&raw);
        }

        #[test]
        fn canonical_form_is_a_fixed_point_and_means_the_same(raw in tricky_path()) {
            if let Ok(canonical) = canonicalize(&raw) {
                let again = canonicalize(&canonical);
                prop_assert_eq!(again.as_deref(), Ok(&*canonical));
                prop_assert_eq!(decode(canonical.as_bytes()), decode(raw.as_bytes()));
                let folded = fold_case(&canonical);
                let refolded = canonicalize(&folded);
                prop_assert_eq!(refolded.as_deref(), Ok(&*folded));
            }
        }
    }
}
