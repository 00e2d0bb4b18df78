//! Number parsing, with the leniency each field has in C xenstored.
//!
//! * Domids are strict: plain decimal, at most 65535. (C's `strtoul` also
//!   takes leading blanks, a `+` and the empty string as 0; we refuse
//!   those, as the protocol digest recommends.)
//! * Fields C reads with `atoi` (watch depth, DIRECTORY_PART offset,
//!   feature masks, quota values, event channel ports) use [`atoi`]: leading
//!   blanks, an optional sign, digits, and junk gives 0. Overflow saturates
//!   instead of being undefined.
//! * Permission domids use [`strtol_full`]: C `strtol(s, &end, 0)` that must
//!   consume the whole, non-empty string.

use crate::error::XsError;

/// Largest domid accepted on the wire.
pub const DOMID_WIRE_MAX: u32 = 65535;

/// A strict decimal domid: `[0-9]+`, at most 65535.
pub fn parse_domid(s: &[u8]) -> Result<u32, XsError> {
    let v = parse_decimal_u64(s).ok_or(XsError::Einval)?;
    if v > u64::from(DOMID_WIRE_MAX) {
        return Err(XsError::Einval);
    }
    Ok(v as u32)
}

/// Strict unsigned decimal (`[0-9]+`), `None` on junk or overflow.
pub fn parse_decimal_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// C `atoi`, saturating at the bounds of `i64`.
pub fn atoi(s: &[u8]) -> i64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = i64::from(s[i] - b'0');
        v = v.saturating_mul(10).saturating_add(d);
        i += 1;
    }
    if neg {
        -v
    } else {
        v
    }
}

/// C `strtol(s, &end, 0)` that must consume all of a non-empty `s`:
/// optional blanks and sign, then `0x` hex, leading-`0` octal, or decimal.
pub fn strtol_full(s: &[u8]) -> Option<i64> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let rest = &s[i..];
    let (radix, digits) = if rest.len() > 2 && (rest.starts_with(b"0x") || rest.starts_with(b"0X"))
    {
        (16, &rest[2..])
    } else if rest.len() > 1 && rest[0] == b'0' {
        (8, &rest[1..])
    } else {
        (10, rest)
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)?;
        v = v.checked_mul(i64::from(radix))?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domids() {
        assert_eq!(parse_domid(b"0"), Ok(0));
        assert_eq!(parse_domid(b"65535"), Ok(65535));
        assert_eq!(parse_domid(b"65536"), Err(XsError::Einval));
        assert_eq!(parse_domid(b"70000"), Err(XsError::Einval));
        assert_eq!(parse_domid(b"abc"), Err(XsError::Einval));
        assert_eq!(parse_domid(b""), Err(XsError::Einval));
        assert_eq!(parse_domid(b"-1"), Err(XsError::Einval));
        assert_eq!(
            parse_domid(b"99999999999999999999999"),
            Err(XsError::Einval)
        );
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b"  -3x"), -3);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"99999999999999999999999999"), i64::MAX);
    }

    #[test]
    fn strtol_base0() {
        assert_eq!(strtol_full(b"5"), Some(5));
        assert_eq!(strtol_full(b"0x10"), Some(16));
        assert_eq!(strtol_full(b"010"), Some(8));
        assert_eq!(strtol_full(b"0"), Some(0));
        assert_eq!(strtol_full(b"-2"), Some(-2));
        assert_eq!(strtol_full(b""), None);
        assert_eq!(strtol_full(b"5x"), None);
        assert_eq!(strtol_full(b"08"), None);
        assert_eq!(strtol_full(b"0x"), None);
    }
}
