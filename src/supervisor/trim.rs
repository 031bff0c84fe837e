//! Start-up runs most of the binary once; supervising needs a few pages.
//! After the child is spawned, the executable's clean read-only mappings are
//! dropped from our resident set: MADV_DONTNEED on a private file mapping
//! that was never written only unmaps, and a page touched again is faulted
//! back in from the page cache. A mapping with any private (written) page —
//! RELRO after relocation — is never touched: that would undo relocations.

/// Releases the resident clean text and read-only pages of our executable.
pub fn release_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let exe = exe.to_string_lossy().into_owned();
    // Collected first and dropped together at the very end: code that runs
    // after a drop faults its pages back in (and the kernel maps up to 64 kB
    // around each fault), so nothing but the madvise loop may follow it.
    let mut found = [(0usize, 0usize); 8];
    let mut count = 0;
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first
            .split_once('-')
            .filter(|_| line.ends_with(exe.as_str()))
        {
            let perms = fields.next().unwrap_or("");
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(s), Ok(e)) if !perms.contains('w') => Some((s, e)),
                _ => None,
            };
            continue;
        }
        if first.contains('-') && !first.ends_with(':') {
            current = None; // another mapping's header
            continue;
        }
        // Each mapping's "Anonymous:" line says whether any page was written.
        if first == "Anonymous:" {
            if let Some((start, end)) = current.take() {
                if fields.next() == Some("0") && count < found.len() {
                    found[count] = (start, end);
                    count += 1;
                }
            }
        }
    }
    drop(smaps);
    drop(exe);
    for &(start, end) in &found[..count] {
        drop_pages(start, end);
    }
}

fn drop_pages(start: usize, end: usize) {
    // SAFETY: [start, end) is a whole, non-writable mapping of our own
    // executable with no private (written) pages, so it holds no state that
    // the page cache does not: dropping its pages loses nothing.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}
