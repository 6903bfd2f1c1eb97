//! Giving freed heap back to the operating system after the rare, large, short-lived
//! allocations: a full list (every object decoded, then dropped) and a catch-up sweep.
//!
//! glibc keeps freed memory in its per-thread arenas and returns only what sits at the top of
//! each heap; the rest stays resident though nothing uses it. `malloc_trim(0)` releases the
//! free pages of every arena. It is cheap next to the list or sweep it follows, and never
//! runs on the request path.

/// Returns free heap pages to the OS (glibc only; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists,
    // under the allocator's own locks, and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Many small blocks freed except every 64th: the freed memory is scattered below live
    /// blocks, so glibc cannot give it back by moving the top of the heap; only a trim can.
    #[test]
    fn freed_memory_between_live_blocks_is_returned() {
        let handle = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..96 * 1024).map(|_| vec![1u8; 1024]).collect();
            let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
            drop(blocks);
            let before = rss_anon_kib();
            super::release_free_memory();
            let after = rss_anon_kib();
            assert_eq!(kept.len(), 1536);
            (before, after)
        });
        let (before, after) = handle.join().unwrap();
        assert!(
            before.saturating_sub(after) > 48 * 1024,
            "RssAnon {before} KiB -> {after} KiB: expected the ~96 MiB freed to go back"
        );
    }
}
