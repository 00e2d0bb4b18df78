//! The local domain's own ring (dom0 bootstrap): Linux exposes it in xenfs
//! as `/proc/xen/xsd_kva` (mmap one page) and its event channel port as the
//! decimal text of `/proc/xen/xsd_port`. Paths are parameters so that the
//! simulator (and other OSes' file names) can be used.

use crate::page::MappedPage;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use xenstore_proto::ring::PAGE_SIZE;

/// Default path of the ring page.
pub const XSD_KVA: &str = "/proc/xen/xsd_kva";
/// Default path of the port.
pub const XSD_PORT: &str = "/proc/xen/xsd_port";

/// Parses the port file's content: decimal, surrounding blanks allowed.
pub fn parse_port(text: &str) -> io::Result<u32> {
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad port {text:?}")))
}

/// Reads the local domain's xenstore event channel port.
pub fn read_port(path: &Path) -> io::Result<u32> {
    parse_port(&std::fs::read_to_string(path)?)
}

/// Maps the local domain's ring page (shared, read-write).
pub fn map_kva(path: &Path) -> io::Result<MappedPage> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    // SAFETY: mapping one page of an open file descriptor, shared,
    // read-write; the kernel validates the request. The mapping outlives
    // the descriptor, as mmap allows.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
    let unmap = Box::new(|p: NonNull<u8>| {
        // SAFETY: the address and length mmap gave us, unmapped once.
        unsafe {
            libc::munmap(p.as_ptr().cast(), PAGE_SIZE);
        }
    });
    // SAFETY: a page-aligned shared mapping of PAGE_SIZE bytes, valid
    // until the munmap above; the kernel (or simulator) writes it too.
    Ok(unsafe { MappedPage::from_raw(ptr, Some(unmap)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::ring::{self, RingPage};

    #[test]
    fn port_file() {
        assert_eq!(parse_port("7\n").unwrap(), 7);
        assert!(parse_port("x").is_err());
        assert!(parse_port("").is_err());
    }

    #[test]
    fn kva_is_a_shared_mapping() {
        let dir = std::env::temp_dir().join(format!("xsd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kva = dir.join("xsd_kva");
        std::fs::write(&kva, vec![0u8; PAGE_SIZE]).unwrap();
        let a = map_kva(&kva).unwrap();
        let b = map_kva(&kva).unwrap();
        // The guest side writes through one mapping, the server reads
        // through the other.
        ring::guest_write(&a, b"ping").unwrap();
        let mut out = [0u8; 4];
        assert_eq!(ring::server_read(&b, &mut out), Ok(4));
        assert_eq!(&out, b"ping");
        assert_eq!(a.load_u32(ring::REQ_CONS), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
