//! The global allocator: start-up's many small, short-lived allocations are
//! bumped out of a fixed arena in `.bss`; everything after start-up, and
//! whatever does not fit, goes to musl's malloc. musl's mallocng maps and
//! unmaps a page for each small size class it meets, a system call and a
//! page fault each on every container start. At the seal, the arena's pages
//! that no live block touches go back to the kernel. It never fails an
//! allocation that malloc would serve and never hands arena memory to malloc.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Arena size: a plain command's start-up bumps through about half of it;
/// only the pages touched become resident (`.bss` is mapped on demand).
const SIZE: usize = 64 * 1024;
const PAGE: usize = 4096;
const PAGES: usize = SIZE / PAGE;
/// Allocations above this go to malloc even during start-up.
const LARGEST: usize = 8 * 1024;
/// Past the end, so that no block's end ever equals it and nothing fits.
const SEALED: usize = SIZE + 1;

#[repr(C, align(4096))]
struct Bytes(UnsafeCell<[u8; SIZE]>);

/// A bump arena. The newest block can grow, shrink and be given back in
/// place; an older block's bytes stay used until the seal.
pub struct Arena {
    bytes: Bytes,
    /// Offset of the first free byte; `SEALED` once start-up is over.
    next: AtomicUsize,
    /// How many live blocks touch each page.
    live: [AtomicUsize; PAGES],
}

// SAFETY: every byte range of the arena is handed out to one block only
// (the bump offset moves by compare-and-swap); the counters are atomic.
unsafe impl Sync for Arena {}

impl Arena {
    pub const fn new() -> Self {
        Arena {
            bytes: Bytes(UnsafeCell::new([0; SIZE])),
            next: AtomicUsize::new(0),
            live: [const { AtomicUsize::new(0) }; PAGES],
        }
    }

    fn base(&self) -> usize {
        self.bytes.0.get() as usize
    }

    fn offset_of(&self, ptr: *mut u8) -> Option<usize> {
        let offset = (ptr as usize).wrapping_sub(self.base());
        (offset < SIZE).then_some(offset)
    }

    fn count(&self, offset: usize, size: usize, up: bool) {
        let first = offset / PAGE;
        let last = ((offset + size.max(1) - 1) / PAGE).min(PAGES - 1);
        for page in &self.live[first..=last] {
            if up {
                page.fetch_add(1, Ordering::Relaxed);
            } else {
                page.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A block from the arena, or null when it does not fit (or is sealed).
    fn bump(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LARGEST {
            return std::ptr::null_mut();
        }
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            if next > SIZE {
                return std::ptr::null_mut();
            }
            let start = (self.base() + next).next_multiple_of(layout.align()) - self.base();
            let end = start + layout.size();
            if end > SIZE {
                return std::ptr::null_mut();
            }
            match self
                .next
                .compare_exchange_weak(next, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.count(start, layout.size(), true);
                    return (self.base() + start) as *mut u8;
                }
                Err(seen) => next = seen,
            }
        }
    }

    /// Gives back an arena block (false: `ptr` is not the arena's).
    fn give_back(&self, ptr: *mut u8, size: usize) -> bool {
        let Some(offset) = self.offset_of(ptr) else {
            return false;
        };
        self.count(offset, size, false);
        // The newest block's bytes can be bumped out again.
        let _ =
            self.next
                .compare_exchange(offset + size, offset, Ordering::AcqRel, Ordering::Relaxed);
        true
    }

    /// Resizes an arena block in place: the newest one to any size that
    /// fits, any one to a smaller size. None: `ptr` is not the arena's;
    /// Some(false): it cannot be done in place.
    fn resize_in_place(&self, ptr: *mut u8, old: usize, new: usize) -> Option<bool> {
        let offset = self.offset_of(ptr)?;
        let moved = new <= LARGEST
            && offset + new <= SIZE
            && self
                .next
                .compare_exchange(
                    offset + old,
                    offset + new,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok();
        if !moved && new > old {
            return Some(false);
        }
        self.count(offset, old, false);
        self.count(offset, new, true);
        Some(true)
    }

    /// Start-up is over: later blocks all come from malloc, and the pages
    /// no live block touches are handed back to the kernel. Returns how
    /// many were.
    ///
    /// Invariant: no other thread may be allocating while this runs. A
    /// `bump` on another thread counts its block's pages only after its
    /// compare-and-swap succeeded, so between the two a page in use still
    /// reads as free here and would be dropped under it (its bytes turn to
    /// zeros). The callers seal on the main thread once the probe threads
    /// have ended; `seal` (the process's) also checks, and keeps the pages
    /// when another thread is alive after all.
    /// With `drop_pages` false the arena is sealed and its pages kept.
    pub fn seal(&self, drop_pages: bool) -> usize {
        let used = self.next.swap(SEALED, Ordering::AcqRel).min(SIZE);
        if !drop_pages {
            return 0;
        }
        let mut dropped = 0;
        for (index, live) in self.live.iter().enumerate().take(used.div_ceil(PAGE)) {
            if live.load(Ordering::Acquire) == 0 {
                // SAFETY: a whole page of the arena that no live block
                // touches and that is never handed out again; it reads as
                // zeros if anything touches it.
                unsafe {
                    libc::madvise(
                        (self.base() + index * PAGE) as *mut libc::c_void,
                        PAGE,
                        libc::MADV_DONTNEED,
                    );
                }
                dropped += 1;
            }
        }
        dropped
    }
}

static ARENA: Arena = Arena::new();

/// Seals the process's arena (see `Arena::seal`): its free pages go back
/// to the kernel only while this is the process's one thread. A probe
/// thread still alive (one stuck in the resolver outlives its wait) means
/// the arena is sealed but its pages are kept: a few kB, never a race.
pub fn seal() {
    let alone = thread_count() == Some(1);
    if !alone {
        // Not an error: a probe thread may outlive its wait in the resolver.
        tracing::debug!("another thread is alive at the seal: the arena's pages are kept");
    }
    ARENA.seal(alone);
}

/// The process's thread count, from /proc/self/stat (field 20); one read
/// at the seal, once in the process's life.
fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends at the last ')': the
    // state is field 3, so the thread count is the 18th of these.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(17)?.parse().ok()
}

pub struct StartupArena;

#[global_allocator]
static ALLOCATOR: StartupArena = StartupArena;

// SAFETY: arena blocks are disjoint, aligned as asked and inside the arena;
// other blocks are malloc's, freed and resized by malloc only.
unsafe impl GlobalAlloc for StartupArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = ARENA.bump(layout);
        if ptr.is_null() {
            // SAFETY: forwarded as received.
            unsafe { System.alloc(layout) }
        } else {
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !ARENA.give_back(ptr, layout.size()) {
            // SAFETY: a block malloc gave us, with its layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match ARENA.resize_in_place(ptr, layout.size(), new_size) {
            // SAFETY: a block malloc gave us, with its layout.
            None => unsafe { System.realloc(ptr, layout, new_size) },
            Some(true) => ptr,
            Some(false) => {
                // SAFETY: the caller guarantees a valid non-zero new size
                // for the old alignment.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as in `alloc`.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least `layout.size()`
                    // bytes and are disjoint (the old one is still live).
                    unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
                    ARENA.give_back(ptr, layout.size());
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn the_newest_block_is_given_back_and_resized_in_place() {
        static A: Arena = Arena::new();
        let a = A.bump(layout(100));
        let b = A.bump(layout(100));
        assert!(!a.is_null() && b as usize >= a as usize + 100);
        assert!(A.give_back(b, 100));
        assert_eq!(A.bump(layout(100)), b, "the newest block's bytes come back");
        assert_eq!(A.resize_in_place(b, 100, 3000), Some(true));
        assert_eq!(
            A.resize_in_place(a, 100, 200),
            Some(false),
            "a is not the newest"
        );
        assert_eq!(
            A.resize_in_place(a, 100, 50),
            Some(true),
            "shrinking works anywhere"
        );
        let c = A.bump(layout(16));
        assert!(c as usize >= b as usize + 3000);
        assert_eq!(A.resize_in_place(std::ptr::null_mut(), 1, 2), None);
    }

    #[test]
    fn blocks_are_aligned_and_big_or_late_ones_do_not_fit() {
        static A: Arena = Arena::new();
        A.bump(layout(3));
        let aligned = A.bump(Layout::from_size_align(64, 64).unwrap());
        assert_eq!(aligned as usize % 64, 0);
        assert!(A.bump(layout(LARGEST + 1)).is_null());
        while !A.bump(layout(LARGEST)).is_null() {}
        assert!(A.bump(layout(LARGEST)).is_null(), "full");
    }

    #[test]
    fn the_thread_count_is_read() {
        let before = thread_count().unwrap();
        assert!(before >= 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(thread_count().unwrap() > before.min(1));
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn a_seal_that_may_not_drop_pages_still_seals() {
        static A: Arena = Arena::new();
        let a = A.bump(layout(PAGE));
        assert!(A.give_back(a, PAGE));
        assert_eq!(A.seal(false), 0);
        assert!(A.bump(layout(8)).is_null(), "sealed");
    }

    #[test]
    fn the_seal_drops_only_pages_without_live_blocks() {
        static A: Arena = Arena::new();
        let keep = A.bump(layout(PAGE)); // page 0
        let gone = A.bump(layout(2 * PAGE)); // pages 1-2
        let last = A.bump(layout(16)); // page 3, live
        assert!(!keep.is_null() && !gone.is_null() && !last.is_null());
        // SAFETY: blocks of this arena, written within their sizes.
        unsafe {
            keep.write_bytes(1, PAGE);
            gone.write_bytes(2, 2 * PAGE);
            last.write_bytes(3, 16);
        }
        assert!(A.give_back(gone, 2 * PAGE));
        assert_eq!(A.seal(true), 2, "pages 1-2 are free");
        // SAFETY: live blocks of this arena, read within their sizes.
        unsafe {
            assert_eq!(*keep.add(PAGE - 1), 1);
            assert_eq!(*last.add(15), 3);
            assert_eq!(*gone.add(PAGE), 0, "a dropped page reads as zeros");
        }
        assert!(
            A.bump(layout(8)).is_null(),
            "sealed: nothing more from the arena"
        );
        assert!(A.give_back(last, 16));
        assert!(
            A.bump(layout(8)).is_null(),
            "a give-back does not unseal it"
        );
        assert_eq!(A.resize_in_place(keep, PAGE, PAGE + 1), Some(false));
    }
}
