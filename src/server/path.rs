//! Refuses request targets that could mean different things to tollgate and to an upstream,
//! before any routing (SPEC F1): dot segments, encoded slashes and dots, backslashes, empty
//! segments, control characters, bad or non-UTF-8 percent-encoding.
//!
//! What passes is forwarded byte for byte as received, so the upstream sees exactly the path
//! that was routed and authorized.

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
    #[error("the path contains a control character or space")]
    ControlCharacter,
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    #[error("the path is not valid UTF-8 once decoded")]
    NotUtf8,
}

/// Checks a raw (still percent-encoded) path. The trailing segment may be empty (`/objects/`).
pub fn check(raw: &str) -> Result<(), PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
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
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return Err(PathError::DotSegment),
            "" if n != last => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(())
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

    #[test]
    fn plain_paths_pass() {
        for ok in [
            "/",
            "/svc/storage/objects/a.txt",
            "/a/b/",
            "/a%20b",
            "/caf%C3%A9",
            "/x~y-z_1",
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
        ];
        for (path, expected) in cases {
            assert_eq!(check(path), Err(expected), "{path}");
        }
    }
}
