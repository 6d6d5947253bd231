//! The allocator of kouiki-mpi's binaries.
//!
//! [`Allocator`] is mimalloc (the server allocates and frees small buffers on every call: HTTP/2
//! frames, TLS records, protobuf messages, the store's 4 KiB pages). By default mimalloc hands
//! memory it no longer uses back to the kernel a second after it was freed; the store frees and
//! reallocates page buffers in bulk at every commit (a commit of an import rewrites hundreds
//! of megabytes of pages), so memory handed back was faulted in again, zeroed by the kernel,
//! moments later (`clear_page` was a tenth of an import's profile). [`retain_freed_memory`]
//! keeps freed memory in the process for reuse instead: resident memory then stays at its peak,
//! which is what to plan for anyway. Measured with `mpi-bench import --persons 1000000`
//! (docs/benchmarks.md).

/// The global allocator: `#[global_allocator] static A: mpi_alloc::Allocator = mpi_alloc::Allocator;`.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay`: its position (counted from 0) in `mi_option_e` of the
/// mimalloc (v3) that `libmimalloc-sys` 0.1.49 builds (`c_src/mimalloc/v3/include/mimalloc.h`).
/// The dependency is pinned so that the position cannot move under this constant.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc reads the same option at start-up; if an
/// operator set it, their value stands.
pub const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// Keeps memory the process frees for its own reuse instead of handing it back to the kernel
/// (unless [`PURGE_DELAY_VARIABLE`] is set). Call it first in `main`, before any other thread
/// starts.
pub fn retain_freed_memory() {
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_none() {
        // SAFETY: `mi_option_set` takes no pointers; mimalloc documents it as not thread-safe,
        // so it is called before the program starts other threads (see above). -1: never purge.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1)
        };
    }
}

/// The value of mimalloc's option at `index`.
fn option(index: libmimalloc_sys::mi_option_t) -> std::ffi::c_long {
    // SAFETY: reading an option takes no pointers; `mi_option_get` may be called any time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(index)
    }
}

/// Whether freed memory stays in the process ([`retain_freed_memory`] was called, or the
/// operator's [`PURGE_DELAY_VARIABLE`] asks for the same): what the binaries report at start.
pub fn retains_freed_memory() -> bool {
    option(PURGE_DELAY) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_mimallocs_purge_delay_and_retaining_sets_it_to_never() {
        // This mimalloc's default purge delay is 1,000 ms (`src/options.c`), and the option
        // after it in the enum (`use_numa_nodes`) defaults to 0: a moved index would read
        // something else.
        if std::env::var_os(PURGE_DELAY_VARIABLE).is_none() {
            assert_eq!(option(PURGE_DELAY), 1000, "not mimalloc's purge delay");
            assert_eq!(
                option(PURGE_DELAY + 1),
                0,
                "the option after the purge delay is not use_numa_nodes"
            );
            assert!(!retains_freed_memory());
            retain_freed_memory();
            assert_eq!(option(PURGE_DELAY), -1);
            assert!(retains_freed_memory());
        }
    }
}
