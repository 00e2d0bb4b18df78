//! A byte pool for the committed tree's node records.
//!
//! Each committed node keeps its name, permissions and value as one run of
//! bytes. Runs (or values) that do not fit in the node's slot live here,
//! in size classes of 4 bytes: a class hands out chunks from pages of its own (the
//! first pages small, then up to [`PAGE_BYTES`]), and a freed chunk is
//! reused by the next run of its class. So a run costs its length rounded
//! up to 4 bytes, without the allocator's header and rounding per block,
//! and no page is ever moved (a store filled to a million nodes never
//! copies what it holds). Runs longer than [`MAX_CLASS`] are heap blocks of
//! their own.
//!
//! A run is named by a [`Handle`]; the caller keeps the run's length and
//! gives it back with the handle (the class is a function of the length).

/// Longest run kept in a size class.
pub const MAX_CLASS: usize = 2048;
/// Class sizes are multiples of this.
const GRAIN: usize = 4;
/// Most bytes of one page.
const PAGE_BYTES: usize = 64 * 1024;
/// Chunks of a class's first page; each next page holds twice as many, up
/// to what [`PAGE_BYTES`] holds.
const FIRST_PAGE_CHUNKS: usize = 8;
/// Most chunks a page holds (a handle has 16 bits for the chunk).
const MAX_PAGE_CHUNKS: usize = 1 << 16;
/// Most pages a class has (a handle has 16 bits for the page).
const MAX_PAGES: usize = 1 << 16;

/// Where a run is: a class's page and chunk, or a heap block's number.
pub type Handle = u32;

#[derive(Debug, Default)]
struct Class {
    pages: Vec<Box<[u8]>>,
    /// Chunks of the last page handed out so far.
    used: usize,
    /// Freed chunks, reused first.
    free: Vec<Handle>,
}

/// The pool (see the module documentation).
#[derive(Debug, Default)]
pub struct Blobs {
    classes: Vec<Class>,
    big: Vec<Option<Box<[u8]>>>,
    big_free: Vec<Handle>,
}

/// The chunk size and class number of a run of `len` bytes (at least 1),
/// or `None` for a heap block.
fn class_of(len: usize) -> Option<(usize, usize)> {
    if len == 0 || len > MAX_CLASS {
        return None;
    }
    let size = len.div_ceil(GRAIN) * GRAIN;
    Some((size, size / GRAIN - 1))
}

fn page_chunks(size: usize, page: usize) -> usize {
    let cap = (PAGE_BYTES / size).clamp(1, MAX_PAGE_CHUNKS);
    FIRST_PAGE_CHUNKS
        .checked_shl(u32::try_from(page).unwrap_or(u32::MAX))
        .unwrap_or(usize::MAX)
        .min(cap)
}

impl Blobs {
    /// An empty pool.
    pub fn new() -> Blobs {
        Blobs::default()
    }

    /// Stores `bytes` and returns where.
    pub fn alloc(&mut self, bytes: &[u8]) -> Handle {
        if let Some((size, c)) = class_of(bytes.len()) {
            if let Some(h) = self.alloc_in_class(size, c) {
                if let Some(chunk) = self.chunk_mut(h, bytes.len()) {
                    chunk.copy_from_slice(bytes);
                    return h;
                }
            }
        }
        let block: Box<[u8]> = bytes.into();
        match self.big_free.pop() {
            Some(h) => {
                if let Some(slot) = self.big.get_mut(h as usize) {
                    *slot = Some(block);
                }
                h
            }
            None => {
                self.big.push(Some(block));
                u32::try_from(self.big.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn alloc_in_class(&mut self, size: usize, c: usize) -> Option<Handle> {
        if self.classes.len() <= c {
            self.classes.resize_with(c + 1, Class::default);
        }
        let class = &mut self.classes[c];
        if let Some(h) = class.free.pop() {
            return Some(h);
        }
        let last = class.pages.len().checked_sub(1);
        let room = last.is_some_and(|p| class.used < page_chunks(size, p));
        if !room {
            if class.pages.len() >= MAX_PAGES {
                return None;
            }
            let chunks = page_chunks(size, class.pages.len());
            class
                .pages
                .push(vec![0u8; chunks * size].into_boxed_slice());
            class.used = 0;
        }
        let page = class.pages.len() - 1;
        let h = (u32::try_from(page).ok()? << 16) | u32::try_from(class.used).ok()?;
        class.used += 1;
        Some(h)
    }

    fn chunk_range(h: Handle, size: usize) -> (usize, std::ops::Range<usize>) {
        let page = (h >> 16) as usize;
        let at = (h & 0xFFFF) as usize * size;
        (page, at..at + size)
    }

    fn chunk_mut(&mut self, h: Handle, len: usize) -> Option<&mut [u8]> {
        let (size, c) = class_of(len)?;
        let (page, range) = Blobs::chunk_range(h, size);
        self.classes
            .get_mut(c)?
            .pages
            .get_mut(page)?
            .get_mut(range)?
            .get_mut(..len)
    }

    /// The run of `len` bytes at `h` (empty if there is none: a caller
    /// error, never input).
    pub fn get(&self, h: Handle, len: usize) -> &[u8] {
        let found = match class_of(len) {
            Some((size, c)) => {
                let (page, range) = Blobs::chunk_range(h, size);
                self.classes
                    .get(c)
                    .and_then(|class| class.pages.get(page))
                    .and_then(|p| p.get(range))
                    .and_then(|chunk| chunk.get(..len))
            }
            None => self
                .big
                .get(h as usize)
                .and_then(|b| b.as_deref())
                .filter(|b| b.len() == len),
        };
        debug_assert!(found.is_some(), "no run of {len} bytes at {h:#x}");
        found.unwrap_or_default()
    }

    /// Gives back the run of `len` bytes at `h`.
    pub fn free(&mut self, h: Handle, len: usize) {
        match class_of(len) {
            Some((_, c)) => {
                if let Some(class) = self.classes.get_mut(c) {
                    class.free.push(h);
                }
            }
            None => {
                if let Some(slot) = self.big.get_mut(h as usize) {
                    if slot.take().is_some() {
                        self.big_free.push(h);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_every_class_and_beyond_round_trip_and_are_reused() {
        let mut b = Blobs::new();
        let mut held = Vec::new();
        for len in (1..=MAX_CLASS + 100).step_by(7) {
            for k in 0..20u8 {
                let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(k)).collect();
                held.push((b.alloc(&bytes), bytes));
            }
        }
        for (h, bytes) in &held {
            assert_eq!(b.get(*h, bytes.len()), &bytes[..]);
        }
        // Freed runs are handed out again, and the others are untouched.
        let (gone, kept): (Vec<_>, Vec<_>) =
            held.into_iter().enumerate().partition(|(i, _)| i % 3 == 0);
        for (_, (h, bytes)) in &gone {
            b.free(*h, bytes.len());
        }
        // Last freed, first reused.
        for (_, (h, bytes)) in gone.iter().rev() {
            let again = b.alloc(bytes);
            assert_eq!(again, *h, "a freed run of {} bytes is reused", bytes.len());
        }
        for (_, (h, bytes)) in &kept {
            assert_eq!(b.get(*h, bytes.len()), &bytes[..]);
        }
    }

    #[test]
    fn pages_grow_and_never_pass_their_bound() {
        for size in [4, 24, 512, MAX_CLASS] {
            let mut total = 0;
            for p in 0..40 {
                let n = page_chunks(size, p);
                assert!(n >= 1 && n * size <= PAGE_BYTES.max(size) && n <= MAX_PAGE_CHUNKS);
                total += n;
            }
            assert!(total > 40);
        }
    }
}
