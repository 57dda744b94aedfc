//! glibc's allocator, set for a process of many threads that allocate
//! records on one thread and free them on another.
//!
//! By default glibc gives each thread that allocates its own arena (up to
//! eight per core), and raises the size above which it maps memory
//! directly each time such a mapping is freed, up to 32 MiB. Both keep
//! freed memory in the process: batches freed on one thread leave holes
//! in arenas that other threads never reuse, and large buffers (fetch
//! responses, batches of records) end up inside the arenas, where their
//! pages are not given back. Measured on the aggregate building 1M keys
//! (`docs/performance.md`, "State memory"), the two settings below take
//! its peak from about 258 to 225 MiB, at the same speed; fewer arenas
//! than four made the workers wait on each other's locks.

/// Large allocations are mapped (and unmapped when freed) above this size.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;
/// Arenas shared by all threads.
const ARENA_MAX: i32 = 4;

/// Sets the allocator up, unless the user's environment already does
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`), which glibc has read.
/// Called first in `main`, before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only changes the allocator's parameters; it is
        // called before any other thread exists.
        unsafe {
            if !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            }
            if !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
            }
        }
    }
}
