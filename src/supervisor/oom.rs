//! Death diagnosis: the container's memory cgroup, found once (before the
//! privilege drop where v1 needs root, else after the spawn), and its
//! OOM-kill counters, watched without polling (inotify on cgroup v2's
//! memory.events, an eventfd on v1's memory.oom_control). The kernel raises
//! the counter before it sends its SIGKILL, so a SIGKILL death seen while
//! the counter rose was the OOM killer's. It only reads cgroup files; it
//! never fails start-up and never signals a process.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hierarchy the memory controller is found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A limit at or above this is "no limit" (v1 writes 2^63 rounded to pages).
const NO_LIMIT: u64 = 1 << 62;

/// How long an OOM kill waits to be matched to a SIGKILL death we reap.
/// The kernel raises the counter, then sends its SIGKILL; the victim has
/// exited (its memory torn down) and been reaped within this in practice.
/// A rise nobody here claims in time was the kill of a process that another
/// process reaps (a Celery pool process): it is counted, and a SIGKILL seen
/// later (a plain `kill -9`) is not called an OOM kill.
const CLAIM_WINDOW: Duration = Duration::from_secs(2);

/// The counters, as last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    oom_kill: u64,
    oom_group_kill: u64,
}

pub struct OomWatch {
    version: CgroupVersion,
    dir: PathBuf,
    limit: u64,
    /// inotify (v2) or eventfd (v1); None where the cgroupfs is read-only
    /// for v1's registration: the counters are then read at each reap.
    notify: Option<OwnedFd>,
    /// The counters when the watch was armed: what came before was not
    /// this entrypoint's (an earlier run in the same cgroup).
    armed: Counters,
    seen: Counters,
    /// OOM kills announced but not yet matched to a process we reaped, and
    /// when the last of them was seen (they expire after CLAIM_WINDOW).
    unclaimed: u64,
    last_rise: Option<Instant>,
    /// The cgroup's lifetime peak when armed (v1 max_usage_in_bytes, v2
    /// memory.peak): a higher one at the end was reached during this run.
    peak_when_armed: Option<u64>,
    /// v2 on Linux 6.12+: memory.peak opened for writing and reset through
    /// this descriptor when armed; reads through it give this run's peak.
    own_peak: Option<fs::File>,
}

/// The memory peak the exit summary can honestly report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peak {
    /// Reached while this entrypoint ran (by everything in the cgroup).
    ThisRun(u64),
    /// The cgroup's lifetime peak, reached before this run; this run's is
    /// at most this, and not known.
    CgroupBefore(u64),
    Unknown,
}

/// What arming found, for the debug log once the child runs: a start-up
/// that fails later must still end in its one line.
static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn note(text: String) {
    if let Ok(mut notes) = NOTES.lock() {
        notes.push(text);
    }
}

/// Writes the notes of `arm` to the debug log (once).
pub fn log_notes() {
    if let Ok(mut notes) = NOTES.lock() {
        for text in notes.drain(..) {
            tracing::debug!("{text}");
        }
    }
}

/// A kernel file (cgroupfs, procfs) read whole: one buffer of 4 kB up
/// front, growing only when needed. `fs::read_to_string` asks fstat for a
/// size (0 for these files) and then reads in 32-byte steps, several
/// syscalls for what one read returns; this runs on every container start.
fn read_small(path: impl AsRef<Path>) -> std::io::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    // Opened with O_CLOEXEC directly: std's File::open adds an fcntl call.
    let path = std::ffi::CString::new(path.as_ref().as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path; the fd is owned by the File from here.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let file = unsafe { fs::File::from_raw_fd(fd) };
    let mut bytes: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity());
        }
        let start = bytes.len();
        let spare = bytes.capacity() - start;
        // SAFETY: read writes at most `spare` bytes into the spare capacity,
        // and only the bytes it reports are made part of the vector.
        let n = unsafe {
            libc::read(
                file.as_raw_fd(),
                bytes.as_mut_ptr().add(start) as *mut libc::c_void,
                spare,
            )
        };
        match n {
            0 => break,
            // SAFETY: the kernel wrote these n bytes (n <= spare).
            n if n > 0 => unsafe { bytes.set_len(start + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// When the watch is armed. Arming reads the limit (v1's memory.stat is
/// generated on every read, tens of microseconds) and the counters; none of
/// that has to come before the child, so it runs once the child is spawned,
/// while the child execs. Only v1's registration needs root
/// (cgroup.event_control is mode 0200): when the entrypoint will drop root,
/// that file is opened before the drop and written after the spawn.
pub enum Plan {
    Off,
    /// Found before the privilege drop.
    Located(Located),
    /// Found and armed after the spawn (no drop ahead, or not root at all).
    Deferred,
}

impl Plan {
    /// `drops_root`: the entrypoint runs as root and will switch to the
    /// service user before the child starts.
    pub fn before_start(wanted: bool, drops_root: bool) -> Plan {
        match (wanted, drops_root) {
            (false, _) => Plan::Off,
            (true, false) => Plan::Deferred,
            (true, true) => locate().map_or(Plan::Off, Plan::Located),
        }
    }

    /// Arms the watch (after the child's spawn); None, with one debug line
    /// saying why, when there is nothing to watch. An OOM kill in the
    /// microseconds between the spawn and this call is not named.
    pub fn arm(self) -> Option<OomWatch> {
        let located = match self {
            Plan::Off => return None,
            Plan::Located(located) => located,
            Plan::Deferred => locate()?,
        };
        let Located {
            version,
            dir,
            control,
            peak,
        } = located;
        match OomWatch::open_with(version, dir, control, peak) {
            Ok(watch) => Some(watch),
            Err(why) => {
                note(format!("OOM diagnosis off: {why}"));
                None
            }
        }
    }
}

/// This process's memory cgroup, and (v1, as root) its registration file
/// opened for writing.
pub struct Located {
    version: CgroupVersion,
    dir: PathBuf,
    control: Option<fs::File>,
    /// v2: memory.peak opened for writing while still root (after the drop
    /// only its owner may); None where it cannot be (before Linux 6.12 it
    /// is read-only, and a read-only cgroupfs refuses it too).
    peak: Option<fs::File>,
}

/// Finds the memory cgroup of this process; None (with one debug line
/// saying why) when there is none.
fn locate() -> Option<Located> {
    let cgroup = read_small("/proc/self/cgroup").ok()?;
    let found = usual_place(&cgroup).or_else(|| {
        let mountinfo = read_small("/proc/self/mountinfo").ok()?;
        find_memory_cgroup(&cgroup, &mountinfo)
    });
    let Some((version, dir)) = found else {
        note("OOM diagnosis off: no memory cgroup controller found".into());
        return None;
    };
    let control = (version == CgroupVersion::V1 && nix::unistd::geteuid().is_root())
        .then(|| {
            fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.event_control"))
                .ok()
        })
        .flatten();
    let peak = (version == CgroupVersion::V2)
        .then(|| open_peak_for_reset(&dir))
        .flatten();
    Some(Located {
        version,
        dir,
        control,
        peak,
    })
}

/// The cheap first guess (mountinfo is long to generate): the hierarchy
/// mounted where Docker, Kubernetes and systemd mount it, taken only when
/// that directory really lists this process.
fn usual_place(cgroup: &str) -> Option<(CgroupVersion, PathBuf)> {
    let memory_line = cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (version, dir) = match memory_line {
        Some(path) => (
            CgroupVersion::V1,
            join_cgroup("/sys/fs/cgroup/memory", "/", path)?,
        ),
        None => {
            let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
            (CgroupVersion::V2, join_cgroup("/sys/fs/cgroup", "/", path)?)
        }
    };
    let me = std::process::id().to_string();
    let lists_us =
        read_small(dir.join("cgroup.procs")).is_ok_and(|procs| procs.lines().any(|p| p == me));
    let usable = match version {
        CgroupVersion::V1 => lists_us,
        CgroupVersion::V2 => lists_us && has_memory_controller(&dir),
    };
    usable.then_some((version, dir))
}

/// The directory of our memory cgroup, from /proc/self/cgroup and
/// /proc/self/mountinfo: the v1 memory hierarchy, else the v2 unified one
/// when its root lists `memory`. Works both in a private cgroup namespace
/// (path `/`) and in the host's (path `/docker/ID`, mount root `/` or the
/// container's own directory).
pub fn find_memory_cgroup(cgroup: &str, mountinfo: &str) -> Option<(CgroupVersion, PathBuf)> {
    let mut v1_path = None;
    let mut v2_path = None;
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2_path = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path);
        }
    }
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mut after = after.split(' ');
        let fstype = after.next().unwrap_or_default();
        let super_options = after.nth(1).unwrap_or_default();
        let (version, path) = match (fstype, v1_path, v2_path) {
            ("cgroup", Some(path), _) if super_options.split(',').any(|o| o == "memory") => {
                (CgroupVersion::V1, path)
            }
            ("cgroup2", _, Some(path)) if v1_path.is_none() => (CgroupVersion::V2, path),
            _ => continue,
        };
        let dir = join_cgroup(&unescape(mount_point), &unescape(root), path)?;
        if version == CgroupVersion::V2 && !has_memory_controller(&dir) {
            return None;
        }
        return Some((version, dir));
    }
    None
}

/// mount point + (path below the mount's root).
fn join_cgroup(mount_point: &str, root: &str, path: &str) -> Option<PathBuf> {
    let relative = if root == "/" {
        path
    } else if path == root {
        ""
    } else if let Some(rest) = path.strip_prefix(root).filter(|r| r.starts_with('/')) {
        rest
    } else if path == "/" {
        // A private cgroup namespace over a mount of its own directory.
        ""
    } else {
        return None;
    };
    let mut dir = PathBuf::from(mount_point);
    for part in relative.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
    }
    Some(dir)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// v2: the memory controller is on when our cgroup has memory.events (the
/// root cgroup has none, and neither has a subtree without `+memory`).
fn has_memory_controller(dir: &Path) -> bool {
    dir.join("memory.events").is_file()
}

impl OomWatch {
    /// Arms the watch on the cgroup in `dir` (also used by tests, on a
    /// directory tree they write). Err says why there is nothing to watch.
    #[cfg(test)]
    pub fn open(version: CgroupVersion, dir: PathBuf) -> Result<OomWatch, String> {
        Self::open_with(version, dir, None, None)
    }

    /// As `open`, with v1's cgroup.event_control already open for writing
    /// (else it is opened here).
    fn open_with(
        version: CgroupVersion,
        dir: PathBuf,
        control: Option<fs::File>,
        peak: Option<fs::File>,
    ) -> Result<OomWatch, String> {
        let limit = read_limit(version, &dir)
            .ok_or_else(|| format!("no memory limit readable in {}", dir.display()))?;
        if limit >= NO_LIMIT {
            return Err(format!("no memory limit set on {}", dir.display()));
        }
        let seen = read_counters(version, &dir)
            .ok_or_else(|| format!("no OOM counter readable in {}", dir.display()))?;
        let notify = match version {
            CgroupVersion::V2 => Some(inotify_on(&dir.join("memory.events"))?),
            CgroupVersion::V1 => match eventfd_on(&dir, control) {
                Ok(fd) => Some(fd),
                Err(why) => {
                    note(format!(
                        "no OOM notifications ({why}); OOM kills are read from the counter when a process is reaped"
                    ));
                    None
                }
            },
        };
        let peak_file = match version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        };
        let peak_when_armed = read_number(&dir.join(peak_file));
        let own_peak = match version {
            // v1's max_usage_in_bytes can only be reset for everyone, and
            // the cgroup is not ours alone (docker exec, a restarted
            // process, the kubelet's view): it is only read.
            CgroupVersion::V1 => None,
            CgroupVersion::V2 => peak.or_else(|| open_peak_for_reset(&dir)),
        }
        .and_then(reset_own_peak);
        note(format!(
            "watching the memory cgroup {} ({}, limit {}) for OOM kills; {} earlier OOM kill(s) not counted; peak {}",
            dir.display(),
            match version {
                CgroupVersion::V1 => "v1",
                CgroupVersion::V2 => "v2",
            },
            human_bytes(limit),
            seen.oom_kill,
            if own_peak.is_some() {
                "of this run (memory.peak reset for this descriptor)"
            } else {
                "of this run only if it passes the cgroup's earlier one"
            }
        ));
        Ok(OomWatch {
            version,
            dir,
            limit,
            notify,
            armed: seen,
            seen,
            unclaimed: 0,
            last_rise: None,
            peak_when_armed,
            own_peak,
        })
    }

    /// What the supervisor's poll waits on, besides the signals.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.notify.as_ref().map(|fd| fd.as_fd())
    }

    /// The notification fd was readable: consume it and look at the counters.
    pub fn on_notification(&mut self) {
        if let Some(fd) = &self.notify {
            let mut buf = [0u8; 512];
            while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        }
        self.refresh();
    }

    /// Re-reads the counters; logs one line for every rise. Notifications
    /// coalesce, so this works from the differences.
    fn refresh(&mut self) {
        let Some(now) = read_counters(self.version, &self.dir) else {
            return;
        };
        let new_kills = now.oom_kill.saturating_sub(self.seen.oom_kill);
        let group_kills = now.oom_group_kill.saturating_sub(self.seen.oom_group_kill);
        self.seen = now;
        self.expire_unclaimed();
        if new_kills == 0 && group_kills == 0 {
            return;
        }
        self.unclaimed += new_kills;
        self.last_rise = Some(Instant::now());
        let usage = self.usage();
        let detail = format!(
            "limit {}, usage {}, {}",
            human_bytes(self.limit),
            usage.map_or("unknown".into(), human_bytes),
            self.peak().describe()
        );
        if group_kills > 0 {
            tracing::error!(
                oom_kills = new_kills,
                oom_group_kills = group_kills,
                "the kernel's OOM killer killed the whole cgroup (memory.oom.group) in this container ({detail})"
            );
        } else {
            tracing::error!(
                oom_kills = new_kills,
                "the kernel's OOM killer killed {new_kills} process(es) in this container ({detail})"
            );
        }
    }

    /// A process we reaped died of SIGKILL: true when an OOM kill accounts
    /// for it (the counter rose and no other death has claimed the rise).
    pub fn claim_sigkill_death(&mut self) -> bool {
        self.refresh();
        if self.unclaimed == 0 {
            return false;
        }
        self.unclaimed -= 1;
        true
    }

    /// Forgets OOM kills that no death reaped here claimed in CLAIM_WINDOW.
    fn expire_unclaimed(&mut self) {
        let stale = self.last_rise.is_some_and(|at| at.elapsed() > CLAIM_WINDOW);
        if stale && self.unclaimed > 0 {
            tracing::debug!(
                oom_kills = self.unclaimed,
                "OOM kill(s) of a process another process reaps (not named); a SIGKILL from now on is not theirs"
            );
            self.unclaimed = 0;
        }
    }

    /// OOM kills since the watch was armed (the cgroup's counter counts its
    /// whole life, earlier runs in it included).
    pub fn kills_seen(&self) -> u64 {
        self.seen.oom_kill.saturating_sub(self.armed.oom_kill)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn usage(&self) -> Option<u64> {
        read_number(&self.dir.join(match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        }))
    }

    /// This run's peak where the kernel can tell it: through our own reset
    /// memory.peak descriptor (v2, Linux 6.12+), or when the cgroup's
    /// lifetime peak rose while we ran (then it was reached in this run).
    /// Otherwise the cgroup's lifetime peak, labelled as such.
    pub fn peak(&self) -> Peak {
        if let Some(mut file) = self.own_peak.as_ref() {
            if let Some(peak) = read_from_start(&mut file) {
                return Peak::ThisRun(peak);
            }
        }
        let lifetime = read_number(&self.dir.join(match self.version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        }));
        match (lifetime, self.peak_when_armed) {
            (Some(now), Some(armed)) if now > armed => Peak::ThisRun(now),
            // An OOM kill in this run means usage reached the limit in this
            // run, whatever an earlier run reached.
            (Some(now), Some(_)) if self.kills_seen() > 0 && now >= self.limit => {
                Peak::ThisRun(self.limit)
            }
            (Some(now), Some(_)) => Peak::CgroupBefore(now),
            _ => Peak::Unknown,
        }
    }
}

impl Peak {
    /// `peak 1.9 GiB`, or the cgroup's, said plainly.
    pub fn describe(self) -> String {
        match self {
            Peak::ThisRun(bytes) => format!("peak {}", human_bytes(bytes)),
            Peak::CgroupBefore(bytes) => format!(
                "peak of this run unknown, the cgroup's {} was reached before it",
                human_bytes(bytes)
            ),
            Peak::Unknown => "peak unknown".into(),
        }
    }

    /// This run's peak in bytes, 0 when unknown (the JSON `memory_peak`).
    pub fn this_run(self) -> u64 {
        match self {
            Peak::ThisRun(bytes) => bytes,
            _ => 0,
        }
    }
}

/// v2: memory.peak opened for reading and writing, for a per-descriptor
/// reset; None when the kernel (before 6.12: read-only file) or the mount
/// (read-only, or not ours) does not allow it.
fn open_peak_for_reset(dir: &Path) -> Option<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("memory.peak"))
        .ok()
}

/// Linux 6.12+: any write to memory.peak resets the peak seen through that
/// descriptor to the current usage, for that descriptor only (other
/// readers keep the cgroup's lifetime peak). None when the write fails
/// (a cgroup namespace's root refuses it under nsdelegate).
fn reset_own_peak(mut file: fs::File) -> Option<fs::File> {
    use std::io::Write;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    // SAFETY: statfs is plain data that fstatfs fills in.
    let mut fs_info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer for the call.
    let on_cgroup2 = unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs_info) } == 0
        && fs_info.f_type as i64 == CGROUP2_SUPER_MAGIC;
    // Only the kernel's file: anything else (a test's tree) is just read.
    if !on_cgroup2 {
        return None;
    }
    file.write_all(b"reset\n").ok().map(|()| file)
}

/// A number from the start of an open kernel file (read again each time).
fn read_from_start(file: &mut &fs::File) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn read_number(path: &Path) -> Option<u64> {
    let text = read_small(path).ok()?;
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// v2: memory.max; v1: memory.stat's hierarchical_memory_limit, the
/// smallest limit of the cgroup and its ancestors (the kernel's minimum
/// includes the cgroup's own memory.limit_in_bytes, which is read only
/// where memory.stat lacks the line).
fn read_limit(version: CgroupVersion, dir: &Path) -> Option<u64> {
    match version {
        CgroupVersion::V2 => read_number(&dir.join("memory.max")),
        CgroupVersion::V1 => read_small(dir.join("memory.stat"))
            .ok()
            .and_then(|stat| key_value(&stat, "hierarchical_memory_limit"))
            .or_else(|| read_number(&dir.join("memory.limit_in_bytes"))),
    }
}

fn read_counters(version: CgroupVersion, dir: &Path) -> Option<Counters> {
    let (file, group_key) = match version {
        CgroupVersion::V2 => ("memory.events", Some("oom_group_kill")),
        CgroupVersion::V1 => ("memory.oom_control", None),
    };
    let text = read_small(dir.join(file)).ok()?;
    Some(Counters {
        oom_kill: key_value(&text, "oom_kill")?,
        oom_group_kill: group_key.and_then(|k| key_value(&text, k)).unwrap_or(0),
    })
}

/// `KEY N` lines (memory.events, memory.oom_control, memory.stat).
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn inotify_on(file: &Path) -> Result<OwnedFd, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(file.as_os_str().as_bytes())
        .map_err(|_| format!("bad path {}", file.display()))?;
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(format!("inotify: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a valid fd and a NUL-terminated path that outlives the call.
    let watch = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) };
    if watch < 0 {
        return Err(format!(
            "inotify on {}: {}",
            file.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(owned)
}

/// v1: an eventfd that the kernel signals on every OOM of the cgroup,
/// registered by writing "EVENTFD OOM_CONTROL_FD" to cgroup.event_control.
fn eventfd_on(dir: &Path, registration: Option<fs::File>) -> Result<OwnedFd, String> {
    let control = fs::File::open(dir.join("memory.oom_control"))
        .map_err(|e| format!("memory.oom_control: {e}"))?;
    // SAFETY: eventfd takes an initial value and flags only.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let line = format!("{} {}", owned.as_raw_fd(), control.as_raw_fd());
    let written = match registration {
        Some(mut file) => std::io::Write::write_all(&mut file, line.as_bytes()),
        None => fs::write(dir.join("cgroup.event_control"), line),
    };
    written.map_err(|e| format!("cgroup.event_control: {e}"))?;
    // The registration holds its own reference to memory.oom_control.
    Ok(owned)
}

/// 2.0 GiB, 512.0 MiB, 1.9 GiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn v1_in_the_hosts_cgroup_namespace() {
        let cgroup = "4:memory:/docker/abc\n1:cpu:/\n0::/\n";
        assert_eq!(
            find_memory_cgroup(cgroup, V1_MOUNTS),
            Some((
                CgroupVersion::V1,
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc")
            ))
        );
    }

    #[test]
    fn v1_with_the_containers_own_directory_mounted() {
        // Docker on v1: the mount's root is the container's cgroup.
        let mounts =
            "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n";
        for path in ["/docker/abc", "/"] {
            let cgroup = format!("9:memory:{path}\n");
            assert_eq!(
                find_memory_cgroup(&cgroup, mounts),
                Some((CgroupVersion::V1, PathBuf::from("/sys/fs/cgroup/memory"))),
                "{path}"
            );
        }
        assert_eq!(find_memory_cgroup("9:memory:/elsewhere\n", mounts), None);
    }

    #[test]
    fn v2_is_found_only_with_its_memory_controller() {
        let dir = std::env::temp_dir().join(format!("ae-oom-v2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("kubepods/pod1")).unwrap();
        let mounts = format!("30 23 0:27 / {} rw - cgroup2 cgroup2 rw\n", dir.display());
        let cgroup = "0::/kubepods/pod1\n";
        assert_eq!(find_memory_cgroup(cgroup, &mounts), None);
        fs::write(dir.join("kubepods/pod1/memory.events"), "oom_kill 0\n").unwrap();
        assert_eq!(
            find_memory_cgroup(cgroup, &mounts),
            Some((CgroupVersion::V2, dir.join("kubepods/pod1")))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn mount_points_with_escaped_spaces() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\"), "/x\\");
    }

    #[test]
    fn unknown_layouts_give_nothing() {
        assert_eq!(find_memory_cgroup("", V1_MOUNTS), None);
        assert_eq!(find_memory_cgroup("4:memory:/a\n", ""), None);
        assert_eq!(find_memory_cgroup("garbage", "garbage"), None);
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(512), "512 B");
    }

    /// A cgroup that already saw OOM kills (an earlier run in it): only the
    /// rises after arming are this run's, and a rise that no reaped death
    /// claims within CLAIM_WINDOW is forgotten.
    #[test]
    fn only_kills_after_arming_count_and_unclaimed_ones_expire() {
        let dir = std::env::temp_dir().join(format!("ae-oom-armed-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let events = |kills: u64| format!("oom 5\noom_kill {kills}\noom_group_kill 0\n");
        fs::write(dir.join("memory.events"), events(4)).unwrap();
        fs::write(dir.join("memory.max"), format!("{}\n", 64u64 << 20)).unwrap();
        fs::write(dir.join("memory.peak"), format!("{}\n", 64u64 << 20)).unwrap();
        let mut watch = OomWatch::open(CgroupVersion::V2, dir.clone()).unwrap();
        assert_eq!(
            watch.kills_seen(),
            0,
            "the earlier run's kills are not ours"
        );
        assert_eq!(watch.peak(), Peak::CgroupBefore(64 << 20));
        assert!(!watch.claim_sigkill_death());
        fs::write(dir.join("memory.events"), events(5)).unwrap();
        watch.on_notification();
        assert_eq!(watch.kills_seen(), 1);
        // The earlier run's peak is the limit; this run's OOM kill reached
        // it again.
        assert_eq!(watch.peak(), Peak::ThisRun(64 << 20));
        // As if the rise had been seen longer ago than the window.
        watch.last_rise = Instant::now().checked_sub(CLAIM_WINDOW * 2);
        assert!(
            !watch.claim_sigkill_death(),
            "a SIGKILL long after an unclaimed OOM kill is not one"
        );
        assert_eq!(watch.kills_seen(), 1, "still counted");
        let _ = fs::remove_dir_all(&dir);
    }

    /// The v2 path on a directory tree the test writes (this machine may
    /// have no cgroup2 memory controller): a real inotify on memory.events,
    /// coalesced rises counted from the differences, group kills named.
    #[test]
    fn v2_events_from_a_written_tree() {
        let dir = std::env::temp_dir().join(format!("ae-oom-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let events = |kills: u64, group: u64| {
            format!("low 0\nhigh 0\nmax 3\noom 2\noom_kill {kills}\noom_group_kill {group}\n")
        };
        fs::write(dir.join("memory.events"), events(0, 0)).unwrap();
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert!(
            OomWatch::open(CgroupVersion::V2, dir.clone()).is_err(),
            "no limit: off"
        );
        fs::write(dir.join("memory.max"), format!("{}\n", 64u64 << 20)).unwrap();
        fs::write(dir.join("memory.current"), format!("{}\n", 63u64 << 20)).unwrap();
        fs::write(dir.join("memory.peak"), format!("{}\n", 64u64 << 20)).unwrap();
        let mut watch = OomWatch::open(CgroupVersion::V2, dir.clone()).unwrap();
        let fd = watch.fd().unwrap().as_raw_fd();
        let readable = |fd: i32| {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack.
            unsafe { libc::poll(&mut pfd, 1, 2000) == 1 }
        };
        // Two kills in one write: one notification, two victims to claim.
        fs::write(dir.join("memory.events"), events(2, 0)).unwrap();
        assert!(readable(fd), "inotify did not fire");
        watch.on_notification();
        assert_eq!(watch.kills_seen(), 2);
        assert!(watch.claim_sigkill_death());
        assert!(watch.claim_sigkill_death());
        assert!(
            !watch.claim_sigkill_death(),
            "a third SIGKILL is not an OOM kill"
        );
        assert!(!readable_now(fd));
        fs::write(dir.join("memory.events"), events(3, 1)).unwrap();
        assert!(readable(fd));
        watch.on_notification();
        assert_eq!(watch.kills_seen(), 3);
        assert_eq!(watch.usage(), Some(63 << 20));
        // Not risen since arming, but this run's OOM kills reached the limit.
        assert_eq!(watch.peak(), Peak::ThisRun(64 << 20));
        fs::write(dir.join("memory.peak"), format!("{}\n", 65u64 << 20)).unwrap();
        assert_eq!(watch.peak(), Peak::ThisRun(65 << 20));
        let _ = fs::remove_dir_all(&dir);

        fn readable_now(fd: i32) -> bool {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack.
            unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
        }
    }
}
