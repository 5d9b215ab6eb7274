//! The global allocator of this crate's unit tests: the system allocator, counting the bytes
//! held by the calling thread, so that a test can measure what a structure it builds costs
//! (`range::memtable`'s bytes-per-key bound) without other tests' threads in the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (a free of memory another thread
    /// allocated counts here too: measure only what the thread builds and drops itself).
    static HELD_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    // `try_with`: during thread teardown the slot may be gone; such frees are not measured.
    let _ = HELD_BYTES.try_with(|h| h.set(h.get() + bytes));
}

// SAFETY: every call is forwarded to `System` with the same layout; the counting touches
// only a thread-local integer (no allocation, no lock).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bytes the calling thread holds now (allocated minus freed since it started).
pub fn held_bytes() -> i64 {
    HELD_BYTES.with(Cell::get)
}
