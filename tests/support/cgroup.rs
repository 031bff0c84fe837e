//! A memory cgroup of the test's own, with a small limit, under this
//! process's memory cgroup (v1 or v2, whichever the machine has), removed
//! with everything in it when the test ends.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct MemoryCgroup {
    dir: PathBuf,
    pub v2: bool,
}

impl MemoryCgroup {
    /// None (and a line why) when the machine has no writable memory
    /// controller; tests then skip, except under CI=true, where they fail.
    pub fn new(tag: &str, limit_bytes: u64) -> Option<MemoryCgroup> {
        let found = own_memory_cgroup();
        let Some((base, v2)) = found else {
            assert!(
                std::env::var("CI").is_err(),
                "no memory cgroup controller under CI"
            );
            eprintln!("skipped: no memory cgroup controller found");
            return None;
        };
        let dir = base.join(format!("ae-test-{tag}-{}", std::process::id()));
        let _ = fs::create_dir(&dir);
        let cgroup = MemoryCgroup { dir, v2 };
        let limit = limit_bytes.to_string();
        if v2 {
            cgroup.write("memory.max", &limit);
            let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        } else {
            cgroup.write("memory.limit_in_bytes", &limit);
            // No swap to escape into: the limit is the limit.
            let _ = fs::write(cgroup.dir.join("memory.memsw.limit_in_bytes"), &limit);
            let _ = fs::write(cgroup.dir.join("memory.swappiness"), "0");
        }
        Some(cgroup)
    }
    fn write(&self, name: &str, value: &str) {
        fs::write(self.dir.join(name), value)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.join(name).display()));
    }
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// Makes `command` start inside this cgroup (the child moves itself in
    /// before exec: writing 0 to cgroup.procs moves the writer).
    pub fn enter_on_spawn(&self, command: &mut Command) {
        let procs =
            std::ffi::CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: open/write/close on a prepared path; no allocation.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    }
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() && fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// This process's memory cgroup directory and whether it is v2.
fn own_memory_cgroup() -> Option<(PathBuf, bool)> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "memory") {
            continue;
        }
        for mount in mountinfo.lines() {
            let (before, after) = mount.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let options = after.nth(1).unwrap_or_default();
            let matches = if v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && options.split(',').any(|o| o == "memory")
            };
            if matches && fields.get(3) == Some(&"/") {
                let dir = PathBuf::from(fields.get(4)?).join(path.trim_start_matches('/'));
                let usable = if v2 {
                    fs::read_to_string(dir.join("cgroup.subtree_control"))
                        .is_ok_and(|c| c.contains("memory"))
                } else {
                    dir.is_dir()
                };
                if usable {
                    return Some((dir, v2));
                }
            }
        }
    }
    None
}
