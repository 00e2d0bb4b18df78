//! A mapped ring page, shared with a guest (or the local kernel).
//!
//! The guest may change any byte at any time, so every access goes through
//! atomic loads and stores (never a Rust reference to the data, never a
//! plain copy that the compiler may assume stable). Offsets are clamped to
//! the page: nothing outside the mapping is ever touched.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use xenstore_proto::ring::{RingPage, PAGE_SIZE};

/// How a page is given back.
type Unmap = Box<dyn FnOnce(NonNull<u8>)>;

/// One mapped 4 KiB page.
pub struct MappedPage {
    ptr: NonNull<u8>,
    unmap: Option<Unmap>,
}

impl std::fmt::Debug for MappedPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedPage")
            .field("ptr", &self.ptr)
            .finish()
    }
}

impl MappedPage {
    /// Wraps a mapping.
    ///
    /// # Safety
    /// `ptr` must be 4-byte aligned and valid for reads and writes of
    /// [`PAGE_SIZE`] bytes until `unmap` is called (which happens exactly
    /// once, on drop). Other parties may modify the memory concurrently.
    pub unsafe fn from_raw(ptr: NonNull<u8>, unmap: Option<Unmap>) -> MappedPage {
        MappedPage { ptr, unmap }
    }

    /// A private anonymous page (tests, and pages the daemon owns itself).
    pub fn anonymous() -> io::Result<MappedPage> {
        // SAFETY: a fresh anonymous private mapping; no file, no aliasing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let unmap: Unmap = Box::new(|p: NonNull<u8>| {
            // SAFETY: `p` is the address mmap returned for PAGE_SIZE bytes,
            // unmapped once.
            unsafe {
                libc::munmap(p.as_ptr().cast(), PAGE_SIZE);
            }
        });
        // SAFETY: mmap returned a page-aligned mapping of PAGE_SIZE bytes,
        // valid until the munmap above.
        Ok(unsafe { MappedPage::from_raw(ptr, Some(unmap)) })
    }

    fn byte(&self, off: usize) -> Option<&AtomicU8> {
        if off >= PAGE_SIZE {
            return None;
        }
        // SAFETY: `off < PAGE_SIZE`, so the address is inside the mapping,
        // valid for the life of `self` (from_raw's contract). AtomicU8 has
        // the size and alignment of u8, and atomics are the right model
        // for memory another party writes concurrently.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU8>() })
    }

    fn word(&self, off: usize) -> Option<&AtomicU32> {
        if off % 4 != 0 || off + 4 > PAGE_SIZE {
            return None;
        }
        // SAFETY: in bounds (checked), 4-byte aligned (the page is aligned
        // and `off` is a multiple of 4), valid for the life of `self`.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() })
    }

    /// The start of the mapping (for unmapping by the owner's library).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl RingPage for MappedPage {
    fn load_u32(&self, off: usize) -> u32 {
        self.word(off).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn store_u32(&self, off: usize, v: u32) {
        if let Some(w) = self.word(off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.byte(off + i).map_or(0, |b| b.load(Ordering::Relaxed));
        }
    }

    fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, d) in data.iter().enumerate() {
            if let Some(b) = self.byte(off + i) {
                b.store(*d, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for MappedPage {
    fn drop(&mut self) {
        if let Some(f) = self.unmap.take() {
            f(self.ptr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::ring;

    #[test]
    fn ring_over_a_mapped_page() {
        let p = MappedPage::anonymous().unwrap();
        assert_eq!(ring::guest_write(&p, b"hello"), Ok(5));
        let mut out = [0u8; 8];
        assert_eq!(ring::server_read(&p, &mut out), Ok(5));
        assert_eq!(&out[..5], b"hello");
        // Out-of-page offsets are ignored, not followed.
        p.store_u32(PAGE_SIZE, 7);
        assert_eq!(p.load_u32(PAGE_SIZE), 0);
        assert_eq!(p.load_u32(2), 0);
        let mut tail = [1u8; 8];
        p.read_bytes(PAGE_SIZE - 4, &mut tail);
        assert_eq!(&tail[4..], &[0, 0, 0, 0]);
    }
}
