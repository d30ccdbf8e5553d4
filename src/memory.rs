//! The allocator's settings, freed memory handed back, and thread stacks.
//!
//! A worker under sustained mixed load allocates and frees buffers of every size from many
//! threads (the blocking pool, Polars' pool, the runtime). glibc's malloc keeps what is freed in
//! per-thread arenas and returns it to the system only from the top of each heap, so free pages
//! in the middle of the arenas stay resident: RSS grew from 380 to 722 MiB over ten minutes of
//! the soak with nothing live behind it. `malloc_trim` releases those pages (it madvises free
//! runs away) without moving anything; every few seconds it keeps RSS close to what is in use.
//!
//! glibc's defaults also hand large blocks straight back: anything over its mmap threshold (which
//! starts at 128 KiB) is its own mapping, unmapped when freed, and the top of a heap is trimmed as
//! soon as 128 KiB of it is free. Polars' kernels allocate and free column buffers of megabytes
//! for every morsel, so each was page-faulted in afresh: a 10-step pipeline on 10M rows spent
//! about a quarter of its CPU time zeroing and faulting pages. [`tune_allocator`] keeps blocks up
//! to 64 MiB in the heaps and leaves freed memory there, and the periodic trim returns it.
//!
//! jemalloc with background purging also kept RSS flat, but its large allocations cost the
//! 1 GiB DoGet a third of its throughput (fresh pages for every 4 MiB block read); glibc reuses
//! them.
//!
//! Threads get 16 MiB stacks ([`THREAD_STACK_BYTES`]) for the expression depth the worker accepts.

use std::time::Duration;

/// How often freed memory is handed back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Largest allocation served from malloc's heaps rather than a mapping of its own.
const MMAP_THRESHOLD: i32 = 64 << 20;
/// Free memory at the top of a heap that malloc keeps rather than trims at once (the periodic
/// trim returns it).
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Stack of every worker thread: the runtime's, the blocking pool's and Polars' pool. Deep
/// expressions recurse one frame or more per level when they are planned, evaluated and dropped;
/// [`crate::ops::sqltext::MAX_DEPTH`] levels took up to 4.2 MiB, which overflowed the usual 2 MiB. The
/// memory is reserved, not used: pages are touched only as deep as a thread recurses.
pub const THREAD_STACK_BYTES: usize = 16 << 20;

/// The machine's physical memory in bytes (16 GiB where it cannot be read).
pub fn physical_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    match (u64::try_from(pages), u64::try_from(size)) {
        (Ok(pages), Ok(size)) if pages > 0 && size > 0 => pages.saturating_mul(size),
        _ => 16 << 30,
    }
}

/// The process's soft limit on open file descriptors; `None` when unlimited or unreadable.
pub fn descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Sets malloc's thresholds for a worker's allocation pattern (glibc only; a no-op elsewhere).
/// Call it first thing in `main`, before other threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    };
}

/// Starts a thread that returns freed heap memory to the system every `period` (glibc only; a
/// no-op elsewhere).
pub fn trim_periodically(period: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("polarway-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                // SAFETY: malloc_trim only releases free memory; it has no preconditions.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        })
        .expect("start the memory trim thread");
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = period;
}
