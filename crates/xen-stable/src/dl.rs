//! Loading a shared library and resolving versioned symbols
//! (`dlopen`/`dlvsym`).

use crate::XenError;
use std::ffi::{c_void, CStr, CString};
use std::path::Path;

/// A loaded library. It stays loaded for the life of this value; function
/// pointers taken from it must not outlive it (the backends keep the
/// `Library` next to the pointers).
#[derive(Debug)]
pub struct Library {
    handle: *mut c_void,
    /// The file name, for messages.
    pub name: &'static str,
}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a pointer to a NUL-terminated string
    // owned by the loader, valid until the next dl* call on this thread;
    // we copy it at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown loader error".to_owned()
    } else {
        // SAFETY: see above: non-NULL and NUL-terminated.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Library {
    /// Loads `name` (e.g. `libxenevtchn.so.1`) from `dir`, or from the
    /// loader's search path when `dir` is `None`.
    pub fn open(
        name: &'static str,
        since: &'static str,
        dir: Option<&Path>,
    ) -> Result<Library, XenError> {
        let path = match dir {
            Some(d) => d.join(name).to_string_lossy().into_owned(),
            None => name.to_owned(),
        };
        let missing = |detail: String| XenError::Missing {
            lib: name,
            since,
            detail,
        };
        let c = CString::new(path).map_err(|_| missing("path contains a NUL byte".into()))?;
        // SAFETY: `c` is a valid NUL-terminated string. Loading runs the
        // library's initialisers; these are Xen's own libraries (or the
        // simulator's stand-ins), loaded on purpose.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(missing(dlerror_text()));
        }
        Ok(Library { handle, name })
    }

    /// The address of `symbol` at `version`, as an untyped pointer.
    pub fn symbol(
        &self,
        symbol: &'static str,
        version: &'static str,
    ) -> Result<*mut c_void, XenError> {
        let err = || XenError::Symbol {
            lib: self.name,
            symbol,
            version,
        };
        let s = CString::new(symbol).map_err(|_| err())?;
        let v = CString::new(version).map_err(|_| err())?;
        // SAFETY: `handle` is a live handle from dlopen (closed only in
        // Drop); both strings are NUL-terminated.
        let p = unsafe { libc::dlvsym(self.handle, s.as_ptr(), v.as_ptr()) };
        if p.is_null() {
            Err(err())
        } else {
            Ok(p)
        }
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: `handle` came from a successful dlopen and is closed once.
        // Owners drop the library only after the function pointers taken
        // from it.
        unsafe {
            libc::dlclose(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_it_and_the_xen_version() {
        let e = Library::open(
            "libxenmanage.so.1",
            "4.21",
            Some(Path::new("/nonexistent-dir")),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("libxenmanage.so.1"), "{msg}");
        assert!(msg.contains("Xen 4.21"), "{msg}");
    }

    #[test]
    fn versioned_symbols_of_libc() {
        // libc.so.6 exports versioned symbols: a stand-in for the check.
        let l = Library::open("libc.so.6", "-", None).expect("libc");
        assert!(
            l.symbol("getpid", "GLIBC_2.2.5").is_ok() || l.symbol("getpid", "GLIBC_2.17").is_ok()
        );
        assert!(matches!(
            l.symbol("getpid", "VERS_9.9"),
            Err(XenError::Symbol { .. })
        ));
        assert!(matches!(
            l.symbol("no_such_function", "GLIBC_2.2.5"),
            Err(XenError::Symbol { .. })
        ));
    }
}
