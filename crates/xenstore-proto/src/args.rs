//! Splitting a payload into its arguments.
//!
//! Payloads are NUL-terminated strings, except WRITE whose value is raw
//! bytes after the path. The helpers here apply C xenstored's rules: a
//! single-argument request must be exactly one string whose NUL is the last
//! byte; multi-argument requests count NULs and ignore anything after the
//! last one.

use crate::error::XsError;

/// The only argument of a single-argument request (READ, DIRECTORY,
/// GET_PERMS, MKDIR, RM, TRANSACTION_END, GET_DOMAIN_PATH, RELEASE, ...),
/// without its NUL. Anything but one string ending in the payload's last
/// byte is `EINVAL`.
pub fn one_arg(payload: &[u8]) -> Result<&[u8], XsError> {
    match payload.iter().position(|&b| b == 0) {
        Some(nul) if nul + 1 == payload.len() => Ok(&payload[..nul]),
        _ => Err(XsError::Einval),
    }
}

/// The NUL-terminated strings of a payload, without their NULs. Bytes after
/// the last NUL are ignored.
pub fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some(nul) = rest.iter().position(|&b| b == 0) {
        out.push(&rest[..nul]);
        rest = &rest[nul + 1..];
    }
    out
}

/// Exactly `n` NUL-terminated strings (trailing bytes after the last NUL
/// ignored), or `EINVAL`.
pub fn exactly<const N: usize>(payload: &[u8]) -> Result<[&[u8]; N], XsError> {
    let v = strings(payload);
    <[&[u8]; N]>::try_from(v).map_err(|_| XsError::Einval)
}

/// The path and value of a WRITE: the path up to the first NUL, the value
/// every byte after it (binary, possibly empty). No NUL is `EINVAL`.
pub fn write_args(payload: &[u8]) -> Result<(&[u8], &[u8]), XsError> {
    let nul = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or(XsError::Einval)?;
    Ok((&payload[..nul], &payload[nul + 1..]))
}

/// Bytes as text for logs: NULs shown as spaces, non-printables escaped.
pub fn printable(payload: &[u8]) -> String {
    let mut s = String::with_capacity(payload.len());
    for &b in payload {
        match b {
            0 => s.push(' '),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_arg_rules() {
        assert_eq!(one_arg(b"/a\0"), Ok(&b"/a"[..]));
        assert_eq!(one_arg(b"\0"), Ok(&b""[..]));
        assert_eq!(one_arg(b""), Err(XsError::Einval));
        assert_eq!(one_arg(b"/a"), Err(XsError::Einval));
        assert_eq!(one_arg(b"/a\0/b\0"), Err(XsError::Einval));
        assert_eq!(one_arg(b"/a\0x"), Err(XsError::Einval));
    }

    #[test]
    fn strings_ignore_trailing_bytes() {
        assert_eq!(strings(b"a\0b\0junk"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(strings(b"junk"), Vec::<&[u8]>::new());
        assert_eq!(strings(b"\0\0"), vec![&b""[..], &b""[..]]);
    }

    #[test]
    fn exactly_n() {
        assert_eq!(exactly::<2>(b"a\0b\0"), Ok([&b"a"[..], &b"b"[..]]));
        assert_eq!(exactly::<2>(b"a\0"), Err(XsError::Einval));
        assert_eq!(exactly::<2>(b"a\0b\0c\0"), Err(XsError::Einval));
    }

    #[test]
    fn write_value_is_binary() {
        assert_eq!(
            write_args(b"/p\0\0\x01\0"),
            Ok((&b"/p"[..], &b"\0\x01\0"[..]))
        );
        assert_eq!(write_args(b"/p\0"), Ok((&b"/p"[..], &b""[..])));
        assert_eq!(write_args(b"/p"), Err(XsError::Einval));
    }
}
