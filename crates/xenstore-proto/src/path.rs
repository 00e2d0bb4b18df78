//! Node paths: validation, resolution of relative paths, and the small
//! path algebra the store needs (parent, depth, ancestry).
//!
//! Rules (the same in C xenstored and oxenstored for normal paths):
//! * allowed bytes are `A-Z a-z 0-9 - / _ @`;
//! * no empty path, no empty component (`//`), no trailing `/` except the
//!   root itself;
//! * there is no normalisation: `.` is simply an invalid byte;
//! * a path starting with `/` is absolute, one starting with `@` is special
//!   (`@introduceDomain`, `@releaseDomain`, and their `/<domid>` forms),
//!   anything else is relative to the connection's home
//!   (`/local/domain/<domid>`).
//!
//! Canonical paths are plain ASCII `String`s; every function here that
//! returns one has validated it.

use crate::error::XsError;

/// The prefix of every domain's home path.
pub const DOMAIN_PREFIX: &str = "/local/domain/";

/// A request path after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical absolute (or special) path.
    pub path: String,
    /// The request gave a relative path.
    pub relative: bool,
}

impl Resolved {
    /// A special `@` path.
    pub fn is_special(&self) -> bool {
        self.path.starts_with('@')
    }
}

fn valid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Checks the byte and slash rules on an already absolute or special path.
pub fn validate(p: &[u8]) -> Result<(), XsError> {
    if p.is_empty() || !p.iter().all(|&b| valid_byte(b)) {
        return Err(XsError::Einval);
    }
    if p == b"/" {
        return Ok(());
    }
    if p.ends_with(b"/") || p.windows(2).any(|w| w == b"//") {
        return Err(XsError::Einval);
    }
    if p[0] != b'/' && p[0] != b'@' {
        return Err(XsError::Einval);
    }
    Ok(())
}

/// The home path of a domain.
pub fn domain_home(domid: u32) -> String {
    format!("{DOMAIN_PREFIX}{domid}")
}

/// Resolves a request path against the connection's home (`base`, e.g.
/// `/local/domain/0`). Special paths are returned as they are; whether an
/// operation accepts them is the caller's business.
pub fn resolve(raw: &[u8], base: &str) -> Result<Resolved, XsError> {
    match raw.first() {
        None => Err(XsError::Einval),
        Some(b'/') | Some(b'@') => {
            validate(raw)?;
            Ok(Resolved {
                path: ascii(raw),
                relative: false,
            })
        }
        Some(_) => {
            let mut full = Vec::with_capacity(base.len() + 1 + raw.len());
            full.extend_from_slice(base.as_bytes());
            full.push(b'/');
            full.extend_from_slice(raw);
            validate(&full)?;
            Ok(Resolved {
                path: ascii(&full),
                relative: true,
            })
        }
    }
}

fn ascii(b: &[u8]) -> String {
    // Only called after `validate`, which admits ASCII bytes only.
    b.iter().map(|&c| c as char).collect()
}

/// The path as a client that registered `relative` should see it: with the
/// connection's `base` and the following `/` removed.
pub fn relative_to<'a>(path: &'a str, base: &str) -> &'a str {
    path.strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(path)
}

/// The part of `path` that the path-length quota measures: what follows
/// `/local/domain/<domid>/` when the path starts so (domid of at most five
/// digits), else the whole path.
pub fn measured_len(path: &str) -> usize {
    if let Some(rest) = path.strip_prefix(DOMAIN_PREFIX) {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
            return rest.len() - digits - 1;
        }
    }
    path.len()
}

/// The parent of a canonical path: `None` for `/` and for a special path
/// with no `/`.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

/// The last component of a canonical path (`""` for the root).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a child name to a canonical path.
pub fn child(path: &str, name: &str) -> String {
    if path == "/" {
        format!("/{name}")
    } else {
        format!("{path}/{name}")
    }
}

/// Number of components: 0 for `/`, 1 for `/a`, 2 for `/a/b`.
pub fn depth(path: &str) -> usize {
    if path == "/" {
        0
    } else {
        path.bytes().filter(|&b| b == b'/').count()
    }
}

/// True if `path` equals `ancestor` or lies below it component-wise
/// (`/a/b` is below `/a`, `/ab` is not). Every normal path is below `/`;
/// special paths are below only their own prefix.
pub fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(ancestor) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// The ancestors of a canonical path, nearest first, ending with `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(parent(path), |p| parent(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/local/domain/5";

    #[test]
    fn valid_absolute() {
        for p in ["/", "/a", "/a@b_c-D9", "/local/domain/0/x"] {
            assert_eq!(resolve(p.as_bytes(), BASE).unwrap().path, p);
        }
    }

    #[test]
    fn invalid() {
        for p in [
            "", "/a/", "//a", "/a//b", "/a b", "/a.b", "/a:b", "/\u{e4}", "@x/", "a/", "a//b",
        ] {
            assert_eq!(resolve(p.as_bytes(), BASE), Err(XsError::Einval), "{p:?}");
        }
        assert_eq!(resolve(b"/a\0", BASE), Err(XsError::Einval));
        assert_eq!(resolve(&[b'/', 0xff], BASE), Err(XsError::Einval));
    }

    #[test]
    fn relative() {
        let r = resolve(b"data/x", BASE).unwrap();
        assert_eq!(r.path, "/local/domain/5/data/x");
        assert!(r.relative);
        assert_eq!(relative_to(&r.path, BASE), "data/x");
    }

    #[test]
    fn special() {
        let r = resolve(b"@releaseDomain", BASE).unwrap();
        assert!(r.is_special());
        assert!(resolve(b"@foo bar", BASE).is_err());
        assert!(resolve(b"@x/y", BASE).is_ok());
    }

    #[test]
    fn algebra() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(parent("@releaseDomain"), None);
        assert_eq!(parent("@releaseDomain/5"), Some("@releaseDomain"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/a/b"), 2);
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/x", "/"));
        assert!(!is_at_or_below("@releaseDomain", "/"));
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
    }

    #[test]
    fn measured() {
        assert_eq!(measured_len("/local/domain/5/abc"), 3);
        assert_eq!(measured_len("/local/domain/12345/ab"), 2);
        assert_eq!(measured_len("/local/domain/123456/ab"), 23);
        assert_eq!(measured_len("/vm/x"), 5);
        assert_eq!(measured_len("/local/domain/5"), 15);
    }
}
