//! Test harness: runs the real binary as PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc --kill-child`) or as a plain
//! subreaper, with generous time bounds, and kills everything it started
//! when a test ends — also when it fails.
#![allow(dead_code)]

pub mod airflow;
pub mod cgroup;
pub mod servers;
pub mod wire_bytes;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test: `ENTRYPOINT_UNDER_TEST` when set (CI points it at
/// the shipped musl build), else the one cargo built for this test run.
pub fn bin() -> PathBuf {
    match std::env::var_os("ENTRYPOINT_UNDER_TEST") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_airflow-entrypoint")),
    }
}

/// True when the test may run. Without root (namespaces, privilege
/// changes) it prints why and skips — except under CI=true, where it fails.
pub fn needs_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (PID namespaces), and CI=true does not allow skipping");
    }
    eprintln!("SKIPPED {test}: needs root for PID namespaces");
    false
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("aep-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        // Readable and writable for a dropped service user too.
        let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777));
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How to run the entrypoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a fresh PID namespace with its own /proc.
    Pid1,
    /// A plain process (it becomes a child subreaper).
    Subreaper,
}

pub struct Run {
    command: Command,
    dir: TempDir,
    mode: Mode,
}

impl Run {
    pub fn new(mode: Mode, tag: &str) -> Run {
        let dir = TempDir::new(tag);
        let mut command = match mode {
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                    .arg(bin());
                c
            }
            Mode::Subreaper => Command::new(bin()),
        };
        command
            .env_remove("AIRFLOW_ENTRYPOINT_LOG_FORMAT")
            // The machine has no astro user: supervisor tests keep root.
            // Tests of the user drop use `Run::with_users` instead.
            .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
            .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
            .env("T", dir.path())
            // The temp dir, not the checkout: a dropped user may not be
            // able to enter a root-only clone (Airflow 2's gunicorn chdirs
            // back to its start directory).
            .current_dir(dir.path())
            .stdin(Stdio::null());
        Run { command, dir, mode }
    }
    /// PID 1 of a new PID and mount namespace whose /etc/passwd and
    /// /etc/group are bind-mounted from the given texts (the machine's own
    /// files are never touched). `as_uid` starts the entrypoint as that
    /// non-root UID (GID 0, no groups), like Kubernetes' runAsUser.
    pub fn with_users(
        tag: &str,
        passwd: &str,
        group: &str,
        passwd_mode: u32,
        as_uid: Option<u32>,
    ) -> Run {
        let dir = TempDir::new(tag);
        let etc = dir.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("passwd"), passwd).unwrap();
        fs::write(etc.join("group"), group).unwrap();
        fs::set_permissions(
            etc.join("passwd"),
            std::os::unix::fs::PermissionsExt::from_mode(passwd_mode),
        )
        .unwrap();
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--mount-proc", "--mount", "--kill-child", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && exec \"$@\"")
            .arg("sh")
            .arg(etc.join("passwd"))
            .arg(etc.join("group"));
        if let Some(uid) = as_uid {
            command.args([
                "setpriv",
                &format!("--reuid={uid}"),
                "--regid=0",
                "--clear-groups",
            ]);
        }
        command
            .arg(bin())
            .env_remove("AIRFLOW_ENTRYPOINT_LOG_FORMAT")
            .env_remove("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT")
            .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
            .env("HOME", "/root")
            .env("T", dir.path())
            // The temp dir, not the checkout: a dropped user may not be
            // able to enter a root-only clone (Airflow 2's gunicorn chdirs
            // back to its start directory).
            .current_dir(dir.path())
            .stdin(Stdio::null());
        Run {
            command,
            dir,
            mode: Mode::Pid1,
        }
    }
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.command.args(args);
        self
    }
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }
    /// `sh -c SCRIPT` as the command; `$T` is the test's temp dir.
    pub fn shell(self, script: &str) -> Self {
        self.args(["--", "sh", "-c", script])
    }
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }
    pub fn start(mut self) -> Running {
        let stdout = fs::File::create(self.dir.join("stdout")).expect("stdout file");
        let stderr = fs::File::create(self.dir.join("stderr")).expect("stderr file");
        self.command.stdout(stdout).stderr(stderr).process_group(0);
        let child = self.command.spawn().expect("start the entrypoint");
        Running {
            child,
            dir: self.dir,
            mode: self.mode,
            status: None,
        }
    }
    /// Starts and waits for the exit, at most `bound`.
    pub fn run(self, bound: Duration) -> Finished {
        let mut running = self.start();
        let status = running.wait(bound);
        running.finish(status)
    }
}

pub struct Running {
    child: Child,
    pub dir: TempDir,
    mode: Mode,
    status: Option<ExitStatus>,
}

pub struct Finished {
    /// Files the run left in its temp dir (read before it was removed).
    pub files: std::collections::BTreeMap<String, String>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub stdout: String,
}

impl Running {
    /// The host PID of the entrypoint process itself.
    pub fn entrypoint_pid(&self) -> i32 {
        let own = self.child.id() as i32;
        match self.mode {
            Mode::Subreaper => own,
            Mode::Pid1 => {
                let found = wait_until(Duration::from_secs(10), || {
                    children_of(own).first().copied()
                });
                found.expect("the entrypoint did not appear under unshare")
            }
        }
    }
    pub fn signal(&self, signal: i32) {
        let pid = self.entrypoint_pid();
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(pid, signal) };
    }
    /// Sends each signal in turn and waits until the child has appended its
    /// name to $T/got, in that order.
    pub fn expect_recorded_in_order(&self, signals: &[(i32, &str)]) {
        for (i, (signal, name)) in signals.iter().enumerate() {
            self.signal(*signal);
            let got = wait_until(Duration::from_secs(20), || {
                let got = self.dir.read("got");
                (got.lines().count() > i).then_some(got)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name} never reached the child; stderr:\n{}",
                    self.dir.read("stderr")
                )
            });
            assert_eq!(got.lines().nth(i), Some(*name), "{got}");
        }
    }
    /// Waits for a file under the temp dir to exist (and be non-empty).
    pub fn wait_file(&mut self, name: &str, bound: Duration) -> String {
        let path = self.dir.join(name);
        let found = wait_until(bound, || {
            fs::read_to_string(&path).ok().filter(|s| !s.is_empty())
        });
        match found {
            Some(text) => text,
            None => {
                let state = self.child.try_wait().ok().flatten();
                panic!(
                    "{name} did not appear within {bound:?}; entrypoint status {state:?}; stderr:\n{}",
                    self.dir.read("stderr")
                )
            }
        }
    }
    /// Waits for the exit, at most `bound`; on time-out kills and panics.
    pub fn wait(&mut self, bound: Duration) -> ExitStatus {
        let child = &mut self.child;
        match wait_until(bound, || child.try_wait().ok().flatten()) {
            Some(status) => {
                self.status = Some(status);
                status
            }
            None => {
                self.kill();
                panic!(
                    "the entrypoint did not exit within {bound:?}; stderr:\n{}",
                    self.dir.read("stderr")
                )
            }
        }
    }
    /// Waits for the exit (at most `bound`) and collects the output.
    pub fn finish_within(mut self, bound: Duration) -> Finished {
        let status = self.wait(bound);
        self.finish(status)
    }
    /// The launcher's own PID (unshare, or the entrypoint itself).
    pub fn launcher_pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Collects the output of an exited run (the temp dir goes with `self`).
    pub fn finish(self, status: ExitStatus) -> Finished {
        use std::os::unix::process::ExitStatusExt;
        let mut this = self;
        this.status = Some(status);
        let mut files = std::collections::BTreeMap::new();
        if let Ok(entries) = fs::read_dir(this.dir.path()) {
            for entry in entries.flatten() {
                if let (Some(name), Ok(text)) = (
                    entry.file_name().to_str().map(String::from),
                    fs::read_to_string(entry.path()),
                ) {
                    files.insert(name, text);
                }
            }
        }
        Finished {
            files,
            code: status.code(),
            signal: status.signal(),
            stderr: this.dir.read("stderr"),
            stdout: this.dir.read("stdout"),
        }
    }
    fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        // The namespace's init first: unshare's --kill-child does not reach
        // an entrypoint that dropped privileges (a credential change clears
        // the parent-death signal), and the namespace dies with its init.
        for init in children_of(pgid) {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
        // SAFETY: kill(2) with plain integers. The whole process group of
        // unshare/entrypoint; with --kill-child the namespace dies with it.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

impl Finished {
    /// A file the run wrote under $T, trimmed ("" when absent).
    pub fn file(&self, name: &str) -> &str {
        self.files.get(name).map(|s| s.trim()).unwrap_or("")
    }
    /// Panics with stderr when the exit code is not `expected`.
    pub fn expect_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code (signal {:?}); stderr:\n{}",
            self.signal,
            self.stderr
        );
        self
    }
}

/// Polls `check` every 5 ms until it yields a value or `bound` passes.
pub fn wait_until<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + bound;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    if let Ok(text) = fs::read_to_string(path) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    Vec::new()
}

/// The PIDs of every process on the machine, from /proc.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every process below `pid` (children, their children, ...), host PIDs.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut frontier = children_of(pid);
    while let Some(next) = frontier.pop() {
        found.push(next);
        frontier.extend(children_of(next));
    }
    found
}

/// The host PID of the process that is `ns_pid` inside the namespace whose
/// init has host PID `init`, found through NSpid in /proc/PID/status.
pub fn host_pid(init: i32, ns_pid: i32) -> Option<i32> {
    let mut frontier = vec![init];
    while let Some(pid) = frontier.pop() {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|p| p.parse::<i32>().ok());
        if nspid == Some(ns_pid) {
            return Some(pid);
        }
        frontier.extend(children_of(pid));
    }
    None
}

/// True while a process with this host PID exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`: (status, body), or None
/// when nothing answers.
pub fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The venv with a real Airflow of `version`, made by scripts/airflow-venv
/// (scripts/test runs it first). None — and a printed reason — when it is
/// missing outside CI; under CI=true a missing venv fails the test.
pub fn airflow_venv(version: &str, test: &str) -> Option<PathBuf> {
    let base = std::env::var("AIRFLOW_VENV_DIR")
        .unwrap_or_else(|_| "/opt/airflow-entrypoint/venvs".into());
    let venv = PathBuf::from(base).join(format!("airflow-{version}"));
    if venv.join("bin/airflow").exists() {
        return Some(venv);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: no Airflow {version} venv at {} (scripts/airflow-venv {version})",
            venv.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: no Airflow {version} venv at {}; run scripts/airflow-venv {version}",
        venv.display()
    );
    None
}

/// `--wait-only` for the metadata database at `url`, 20 s budget.
pub fn wait_db(url: &str) -> Run {
    Run::new(Mode::Subreaper, "wait")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "20")
        .arg("--wait-only")
}

/// Fails when `secret` appears in the run's stdout or stderr.
pub fn assert_no_secret(f: &Finished, secret: &str) {
    assert!(
        !f.stderr.contains(secret) && !f.stdout.contains(secret),
        "the password leaked:\n{}{}",
        f.stdout,
        f.stderr
    );
}
