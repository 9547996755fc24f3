//! The runtime of a long-running role on a small box: glibc's allocator
//! limited to two arenas (by default it keeps up to eight per core, one per
//! thread that ever allocated, and each keeps what it freed: resident
//! memory that only grows), and at most four blocking threads (tensor work,
//! the uplink buffer's disk I/O), which tokio would otherwise let grow to
//! 512, each with an arena of its own.

/// A multi-threaded tokio runtime set up as above.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
}

/// The one unsafe call in core: `mallopt` only sets an allocator tunable,
/// before any thread but this one exists.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
