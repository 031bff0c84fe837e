//! Start-up runs most of the binary once; supervising needs a few pages.
//! After the child is spawned, the executable's read-only file-backed
//! mappings are dropped from our resident set (MADV_DONTNEED on a private,
//! never-written file mapping only unmaps: a page touched again is faulted
//! back in from the page cache, one page at a time). Data and heap are never
//! touched here.

/// Releases the resident text and read-only data pages of our executable.
pub fn release_startup_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let exe = exe.to_string_lossy().into_owned();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // Only mappings of our own file that are not writable.
        if perms.contains('w') || !line.ends_with(exe.as_str()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of our executable that is not
        // writable, so it holds no state: dropping its pages loses nothing.
        // MADV_RANDOM first turns off fault-around, which would otherwise map
        // 64 KiB around every page the supervise loop touches again.
        unsafe {
            let addr = start as *mut libc::c_void;
            libc::madvise(addr, end - start, libc::MADV_RANDOM);
            libc::madvise(addr, end - start, libc::MADV_DONTNEED);
        }
    }
}
