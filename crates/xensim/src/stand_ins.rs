//! Where the stand-in libraries are, and how to present them under their
//! sonames (a directory given to `--xen-lib-dir`).

use std::io;
use std::path::{Path, PathBuf};

/// The stand-ins the workspace builds (`lib<name>.so`), each used as
/// `lib<name>.so.1`.
pub const ALL: [&str; 4] = ["libxenevtchn", "libxengnttab", "libxenmanage", "libxencall"];

/// Makes `into` hold `<lib>.so.1` links to `built/<lib>.so` for each of
/// [`ALL`] but `without` (a host whose Xen lacks a library, as Xen before
/// 4.21 lacks libxenmanage). Returns `into`.
pub fn link(built: &Path, into: &Path, without: &[&str]) -> io::Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    for lib in ALL {
        let link = into.join(format!("{lib}.so.1"));
        let _ = std::fs::remove_file(&link);
        if without.contains(&lib) {
            continue;
        }
        let so = built.join(format!("{lib}.so"));
        if !so.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not found: the stand-ins are built by `cargo build --workspace`",
                    so.display()
                ),
            ));
        }
        std::os::unix::fs::symlink(&so, &link)?;
    }
    Ok(into.to_path_buf())
}
