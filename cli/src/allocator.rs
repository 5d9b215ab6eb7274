//! The process's allocator: mimalloc, built without transparent huge pages.
//!
//! Why mimalloc: under callgrind, glibc's `malloc`, `free` and `malloc_consolidate` were 40 %
//! of a node's instructions per durable put (`docs/benchmarks.md`).
//!
//! Why no huge pages (the `no_thp` feature): mimalloc asks for them
//! (`madvise(MADV_HUGEPAGE)`) on its arenas, and on a machine whose THP setting is `madvise`
//! (Debian's default) each touched 2 MiB became resident whole: a 1-node cluster's node was
//! 32 MiB resident idle instead of 18, 136 MiB instead of 70 under a TTL-put load, and kept
//! twice as much resident once those keys had expired (`docs/benchmarks.md`, "Memory after
//! expiry").
//!
//! Why [`thread_upkeep`]: mimalloc keeps pages per thread, and a page emptied by frees (a
//! key's entry, a request's buffers, often freed on another thread than the one that
//! allocated them) goes back to the OS only when its owning thread next collects, which it
//! does as it allocates. A node whose keys have all expired is mostly idle, and kept a third
//! to a half of what a TTL load had added. So every runtime thread asks for a collection at
//! most once a second: tokio's workers when they park, the node's actor threads from a timer
//! (`ampstore_node::node::set_thread_upkeep`).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least time between two collections on one thread.
pub const THREAD_UPKEEP_INTERVAL_MIN: Duration = Duration::from_secs(1);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    static LAST_UPKEEP: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Lets mimalloc hand back this thread's emptied pages (and the process's due purges), at
/// most once per [`THREAD_UPKEEP_INTERVAL_MIN`] per thread; a cheap no-op in between.
pub fn thread_upkeep() {
    let now = Instant::now();
    let due = LAST_UPKEEP.with(|last| {
        let due = last.get().is_none_or(|t| now.duration_since(t) >= THREAD_UPKEEP_INTERVAL_MIN);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: `mi_collect` takes no pointers and may be called on any thread at any time;
        // `false` asks for the normal collection (no forced purge of every arena).
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
