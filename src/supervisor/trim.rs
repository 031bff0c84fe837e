//! Start-up runs most of the binary once; supervising needs a few pages.
//! After the child is spawned, the executable's clean read-only mappings are
//! dropped from our resident set: MADV_DONTNEED on a private file mapping
//! that was never written only unmaps, and a page touched again is faulted
//! back in from the page cache. A mapping with any private (written) page —
//! RELRO after relocation — is never touched: that would undo relocations.

/// Hands the inbox the clean text and read-only mappings of our
/// executable, to be dropped right before its next sleep.
pub fn release_startup_pages(inbox: &crate::signals::SignalInbox) {
    let (found, count) = startup_pages();
    inbox.drop_pages_before_sleep(&found[..count]);
}

/// The clean text and read-only mappings of our executable, as (start,
/// length).
fn startup_pages() -> ([(usize, usize); 8], usize) {
    let mut found = [(0usize, 0usize); 8];
    let mut count = 0;
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return (found, count);
    };
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return (found, count);
    };
    let exe = exe.to_string_lossy().into_owned();
    // Collected first and dropped together by the inbox right before it
    // sleeps: code that runs after a drop faults its pages back in (and the
    // kernel maps up to 64 kB around each fault).
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
                    found[count] = (start, end - start);
                    count += 1;
                }
            }
        }
    }
    (found, count)
}
