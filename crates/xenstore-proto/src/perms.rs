//! Node permissions: an ordered, non-empty list of `(access, domid)`
//! entries. The first entry names the owner and gives the default access
//! of every domain not listed; the rest are an access-control list, first
//! match wins.
//!
//! Wire form (GET_PERMS reply, SET_PERMS request): one letter
//! (`n` none, `r` read, `w` write, `b` both) immediately followed by the
//! domid in decimal, each entry NUL-terminated.

use crate::error::XsError;
use crate::number::strtol_full;
use std::fmt;

/// Access granted by one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`
    None,
    /// `r`
    Read,
    /// `w`: write only, reading is not implied.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    /// Parses a wire letter.
    pub fn from_letter(c: u8) -> Option<Access> {
        Some(match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }

    /// Grants reading.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Grants writing.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// What the entry grants.
    pub access: Access,
    /// Whom it names.
    pub domid: u32,
    /// Server-side marker, never on the wire: the entry names a domain that
    /// did not exist (or is newer than the node), and is skipped by access
    /// checks but still listed.
    pub ignored: bool,
}

impl Perm {
    /// An entry that is not ignored.
    pub const fn new(access: Access, domid: u32) -> Perm {
        Perm {
            access,
            domid,
            ignored: false,
        }
    }

    /// Parses one wire entry (`r5`, `b0x10`): a letter, then a number in C
    /// `strtol(.., 0)` syntax that must fill the rest of the string.
    /// Numbers outside `u32` are `EINVAL`; negative ones wrap as in C.
    pub fn parse(s: &[u8]) -> Result<Perm, XsError> {
        let (&letter, num) = s.split_first().ok_or(XsError::Einval)?;
        let access = Access::from_letter(letter).ok_or(XsError::Einval)?;
        let v = strtol_full(num).ok_or(XsError::Einval)?;
        let domid = if v < 0 {
            i32::try_from(v).map_err(|_| XsError::Einval)? as u32
        } else {
            u32::try_from(v).map_err(|_| XsError::Einval)?
        };
        Ok(Perm::new(access, domid))
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// A node's permission list; never empty.
///
/// Up to two entries (the owner and one ACL entry: nearly every node) are
/// kept inline, so a node's permissions cost no allocation of their own.
#[derive(Clone)]
pub struct PermList(Entries);

/// Entries kept inline when there are at most [`INLINE`].
const INLINE: usize = 2;

#[derive(Clone)]
enum Entries {
    Inline { len: u8, items: [Perm; INLINE] },
    Heap(Box<[Perm]>),
}

impl PartialEq for PermList {
    fn eq(&self, other: &PermList) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for PermList {}

impl std::hash::Hash for PermList {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.entries().hash(state);
    }
}

impl fmt::Debug for PermList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PermList").field(&self.entries()).finish()
    }
}

impl PermList {
    /// The list `n<owner>`.
    pub fn owned_by(owner: u32, default: Access) -> PermList {
        let p = Perm::new(default, owner);
        PermList(Entries::Inline {
            len: 1,
            items: [p, p],
        })
    }

    /// A list from borrowed entries (a heap block only past two
    /// entries); `None` if empty.
    pub fn from_slice(v: &[Perm]) -> Option<PermList> {
        match *v {
            [] => None,
            [a] => Some(PermList(Entries::Inline {
                len: 1,
                items: [a, a],
            })),
            [a, b] => Some(PermList(Entries::Inline {
                len: 2,
                items: [a, b],
            })),
            _ => Some(PermList(Entries::Heap(v.into()))),
        }
    }

    /// A list from entries; `None` if empty.
    pub fn from_vec(v: Vec<Perm>) -> Option<PermList> {
        if v.len() > INLINE {
            Some(PermList(Entries::Heap(v.into_boxed_slice())))
        } else {
            PermList::from_slice(&v)
        }
    }

    /// Parses the entries of a SET_PERMS request (strings without NULs).
    pub fn parse<'a, I: IntoIterator<Item = &'a [u8]>>(items: I) -> Result<PermList, XsError> {
        let v = items
            .into_iter()
            .map(Perm::parse)
            .collect::<Result<Vec<_>, _>>()?;
        PermList::from_vec(v).ok_or(XsError::Einval)
    }

    /// The owner (first entry's domid).
    pub fn owner(&self) -> u32 {
        self.first().domid
    }

    /// The default access of unlisted domains (first entry's letter).
    pub fn default_access(&self) -> Access {
        self.first().access
    }

    fn first(&self) -> Perm {
        match &self.0 {
            Entries::Inline { items, .. } => items[0],
            // Never empty: from_vec keeps empty lists out.
            Entries::Heap(v) => v.first().copied().unwrap_or(Perm::new(Access::None, 0)),
        }
    }

    /// All entries, owner first.
    pub fn entries(&self) -> &[Perm] {
        match &self.0 {
            Entries::Inline { len, items } => &items[..usize::from(*len)],
            Entries::Heap(v) => v,
        }
    }

    /// All entries, mutably. The list stays non-empty.
    pub fn entries_mut(&mut self) -> &mut [Perm] {
        match &mut self.0 {
            Entries::Inline { len, items } => &mut items[..usize::from(*len)],
            Entries::Heap(v) => v,
        }
    }

    /// Replaces the owner's domid.
    pub fn set_owner(&mut self, domid: u32) {
        if let Some(first) = self.entries_mut().first_mut() {
            first.domid = domid;
            first.ignored = false;
        }
    }

    /// Drops the non-first entries naming `domid`; true if any was dropped.
    pub fn strip(&mut self, domid: u32) -> bool {
        let before = self.len();
        let mut first = true;
        let kept: Vec<Perm> = self
            .entries()
            .iter()
            .copied()
            .filter(|p| {
                let keep = first || p.domid != domid;
                first = false;
                keep
            })
            .collect();
        if kept.len() == before {
            return false;
        }
        if let Some(l) = PermList::from_vec(kept) {
            *self = l;
        }
        true
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Always false; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The wire form: every entry followed by a NUL.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * 6);
        for p in self.entries() {
            out.extend_from_slice(p.to_string().as_bytes());
            out.push(0);
        }
        out
    }
}

impl fmt::Display for PermList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.entries().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_entries() {
        assert_eq!(Perm::parse(b"r5"), Ok(Perm::new(Access::Read, 5)));
        assert_eq!(Perm::parse(b"b0x10"), Ok(Perm::new(Access::Both, 16)));
        assert_eq!(Perm::parse(b"n0"), Ok(Perm::new(Access::None, 0)));
        for bad in [&b"x5"[..], b"r", b"r5x", b"", b"R5", b"r99999999999"] {
            assert_eq!(Perm::parse(bad), Err(XsError::Einval), "{bad:?}");
        }
    }

    #[test]
    fn wire_round_trip() {
        let l = PermList::parse([&b"r5"[..], b"w2", b"b3"]).unwrap();
        assert_eq!(l.to_wire(), b"r5\0w2\0b3\0");
        assert_eq!(l.owner(), 5);
        assert_eq!(l.default_access(), Access::Read);
        assert!(PermList::parse(Vec::<&[u8]>::new()).is_err());
    }

    #[test]
    fn short_and_long_lists_behave_alike() {
        for n in 1..6u32 {
            let v: Vec<Perm> = (0..n).map(|d| Perm::new(Access::Read, d)).collect();
            let mut l = PermList::from_vec(v.clone()).unwrap();
            assert_eq!(l.entries(), v.as_slice());
            assert_eq!(l.len(), v.len());
            assert_eq!(l.owner(), 0);
            l.entries_mut()[0].access = Access::Write;
            assert_eq!(l.default_access(), Access::Write);
            l.set_owner(9);
            assert_eq!(l.owner(), 9);
            // Stripping every ACL entry leaves the owner, inline or not.
            for d in 1..n {
                assert!(l.strip(d));
            }
            assert_eq!(l.len(), 1);
            assert_eq!(l, PermList::owned_by(9, Access::Write));
        }
        assert!(PermList::from_vec(Vec::new()).is_none());
    }

    #[test]
    fn strip_keeps_owner() {
        let mut l = PermList::parse([&b"n5"[..], b"r5", b"r7", b"w5"]).unwrap();
        assert!(l.strip(5));
        assert_eq!(l.to_wire(), b"n5\0r7\0");
        assert!(!l.strip(9));
    }
}
