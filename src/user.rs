//! Who runs Airflow: reads /etc/passwd and /etc/group as files (no NSS: the
//! binary is static), drops root to the service user for good, or — started
//! as an arbitrary non-root UID — gives that UID a passwd entry and a HOME.
//! It never leaves a way back to root open, and never runs Airflow as root
//! unless RUN_AS_ROOT says so.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{getegid, geteuid, getuid, setgroups, setresgid, setresuid, setuid, Gid, Uid};

use crate::env::layers::{Layered, Source};
use crate::error::{code, Failure};
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The service user as the rest of start-up sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// True when we kept root on purpose (RUN_AS_ROOT).
    pub root: bool,
}

/// What the user phase needs to know, already merged from the layers.
pub struct UserRequest<'a> {
    pub passwd_path: &'a Path,
    pub group_path: &'a Path,
    /// ASTRONOMER_USER, and the layer it came from (for messages).
    pub user_name: &'a str,
    pub user_name_source: &'a str,
    /// ASTRONOMER_UID, and its layer.
    pub uid: u32,
    pub uid_source: &'a str,
    pub airflow_home: Option<&'a str>,
    /// AIRFLOW_HOME's name and layer (for messages).
    pub airflow_home_source: &'a str,
    pub run_as_root: bool,
    pub create_user: bool,
    pub no_new_privs: bool,
    /// AIRFLOW__CORE__DEFAULT_IMPERSONATION is set: sudo must keep working.
    pub impersonation: bool,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::config(format!("cannot read {}: {e}", path.display())))
}

/// Establishes the service user. Started as root: drop to it (or keep root
/// with RUN_AS_ROOT). Started as another UID: make sure it has an entry.
pub fn establish(request: &UserRequest<'_>) -> Result<Identity, Failure> {
    if geteuid().is_root() {
        if request.run_as_root {
            tracing::warn!("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true: Airflow runs as root; no privileges are dropped");
            return Ok(Identity {
                name: "root".into(),
                uid: 0,
                gid: 0,
                home: "/root".into(),
                root: true,
            });
        }
        let entry = find_service_user(request)?;
        let groups = parse_group(&read(request.group_path)?);
        drop_privileges(&entry, &groups)?;
        apply_no_new_privs(request);
        tracing::info!(
            user = entry.name,
            uid = entry.uid,
            gid = entry.gid,
            "dropped root to the service user"
        );
        return Ok(Identity {
            name: entry.name,
            uid: entry.uid,
            gid: entry.gid,
            home: entry.home,
            root: false,
        });
    }
    if request.run_as_root {
        tracing::warn!(uid = getuid().as_raw(), "AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true, but started without root; running as the current UID");
    }
    let identity = arbitrary_uid(request)?;
    apply_no_new_privs(request);
    Ok(identity)
}

/// Finds ASTRONOMER_USER with ASTRONOMER_UID; any mismatch is exit 78 that
/// says what was found and how to fix it. CREATE_USER appends the entry.
fn find_service_user(request: &UserRequest<'_>) -> Result<PasswdEntry, Failure> {
    let passwd = parse_passwd(&read(request.passwd_path)?);
    let by_name = passwd.iter().find(|e| e.name == request.user_name);
    let by_uid = passwd.iter().find(|e| e.uid == request.uid);
    let path = request.passwd_path.display();
    match (by_name, by_uid) {
        (Some(entry), _) if entry.uid == request.uid => Ok(entry.clone()),
        (Some(entry), _) => Err(Failure::config(format!(
            "user {} exists in {path} with UID {}, but ASTRONOMER_UID={} (from {}); set ASTRONOMER_UID={} or rebuild the image with --build-arg ASTRONOMER_UID={}",
            entry.name, entry.uid, request.uid, request.uid_source, entry.uid, request.uid
        ))),
        (None, Some(entry)) => Err(Failure::config(format!(
            "UID {} belongs to user {} in {path}, but ASTRONOMER_USER={} (from {}); set ASTRONOMER_USER={} or create the user {} in the image",
            entry.uid, entry.name, request.user_name, request.user_name_source, entry.name, request.user_name
        ))),
        (None, None) if request.create_user => {
            let home = request.airflow_home.unwrap_or("/home/airflow").to_string();
            check_passwd_fields(request, request.user_name, &home)?;
            let entry = PasswdEntry {
                name: request.user_name.to_string(),
                uid: request.uid,
                gid: 0,
                home,
                shell: "/bin/bash".into(),
            };
            append_passwd_entry(request.passwd_path, &entry).map_err(|e| {
                Failure::config(format!(
                    "AIRFLOW_ENTRYPOINT_CREATE_USER=true but {path} cannot be written: {e}"
                ))
            })?;
            tracing::info!(user = entry.name, uid = entry.uid, gid = 0, "created the service user in {path} (CREATE_USER)");
            Ok(entry)
        }
        (None, None) => Err(Failure::config(format!(
            "no user {} and no UID {} in {path}; create it in the image (useradd --uid {} --gid 0 {}), point ASTRONOMER_USER/ASTRONOMER_UID at an existing user, or set AIRFLOW_ENTRYPOINT_CREATE_USER=true",
            request.user_name, request.uid, request.uid, request.user_name
        ))),
    }
}

/// A value written into a passwd field must not end the field or the line,
/// nor make the line mean something else (`+name`/`-name` are NIS compat
/// entries, `#` a comment): Some(the reason) otherwise.
fn passwd_field_problem(value: &str, is_name: bool) -> Option<&'static str> {
    if value.contains(':') {
        Some("contains `:`, which separates /etc/passwd fields")
    } else if value.contains(['\n', '\r']) {
        Some("contains a line break, which would add a line to /etc/passwd")
    } else if value.chars().any(char::is_control) {
        Some("contains a control character")
    } else if is_name && value.starts_with(['+', '-', '#']) {
        Some("starts with `+`, `-` or `#`, which /etc/passwd reads as a NIS entry or a comment")
    } else if is_name && value.chars().any(char::is_whitespace) {
        Some("contains white space")
    } else {
        None
    }
}

/// Refuses (exit 78) an ASTRONOMER_USER or AIRFLOW_HOME that cannot be
/// written into /etc/passwd as they are.
fn check_passwd_fields(request: &UserRequest<'_>, name: &str, home: &str) -> Result<(), Failure> {
    if let Some(problem) = passwd_field_problem(name, true) {
        return Err(Failure::config(format!(
            "{}: {name:?} {problem}; set ASTRONOMER_USER to a plain user name such as astro",
            request.user_name_source
        )));
    }
    if let Some(problem) = passwd_field_problem(home, false) {
        return Err(Failure::config(format!(
            "{}: {home:?} {problem}; set AIRFLOW_HOME to a directory path without `:` or line breaks, such as /usr/local/airflow",
            request.airflow_home_source
        )));
    }
    Ok(())
}

fn append_passwd_entry(path: &Path, entry: &PasswdEntry) -> std::io::Result<()> {
    let existing = std::fs::read(path).unwrap_or_default();
    let mut file = OpenOptions::new().append(true).open(path)?;
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        line.push('\n');
    }
    line.push_str(&format!(
        "{}:x:{}:{}:{}:{}:{}\n",
        entry.name, entry.uid, entry.gid, "airflow-entrypoint", entry.home, entry.shell
    ));
    file.write_all(line.as_bytes())
}

/// Supplementary groups (exactly the user's groups in /etc/group, plus its
/// primary group), then the GID, then the UID — and proof that root is gone.
fn drop_privileges(entry: &PasswdEntry, groups: &[GroupEntry]) -> Result<(), Failure> {
    let mut gids: Vec<Gid> = vec![Gid::from_raw(entry.gid)];
    for group in groups.iter().filter(|g| g.members.contains(&entry.name)) {
        if !gids.contains(&Gid::from_raw(group.gid)) {
            gids.push(Gid::from_raw(group.gid));
        }
    }
    let gid = Gid::from_raw(entry.gid);
    let uid = Uid::from_raw(entry.uid);
    // A credential change clears the parent-death signal (which launchers
    // such as `unshare --kill-child` set): keep it across the drop.
    let parent = nix::unistd::getppid();
    let death_signal = parent_death_signal();
    setgroups(&gids).map_err(|e| drop_failure("setgroups", e))?;
    setresgid(gid, gid, gid).map_err(|e| drop_failure("setresgid", e))?;
    setresuid(uid, uid, uid).map_err(|e| drop_failure("setresuid", e))?;
    if death_signal != 0 {
        // SAFETY: prctl with plain integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if nix::unistd::getppid() != parent {
            // The parent died while the signal was off: do what it asked.
            // SAFETY: raise(3) with a plain signal number.
            unsafe { libc::raise(death_signal) };
        }
    }
    if entry.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(Failure::new(
            code::NO_PERMISSION,
            format!(
                "root could be regained after dropping to UID {}; refusing to start",
                entry.uid
            ),
        ));
    }
    Ok(())
}

/// The parent-death signal in force (0: none).
fn parent_death_signal() -> libc::c_int {
    let mut signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer we pass.
    unsafe {
        libc::prctl(
            libc::PR_GET_PDEATHSIG,
            &mut signal as *mut libc::c_int,
            0,
            0,
            0,
        )
    };
    signal
}

fn drop_failure(call: &str, errno: Errno) -> Failure {
    let why = match errno {
        Errno::EPERM => "not permitted: the container lacks CAP_SETUID/CAP_SETGID (check the pod's securityContext or --cap-drop)",
        Errno::EINVAL => "the ID is not valid in this user namespace (check the namespace's uid/gid map)",
        Errno::EAGAIN => "the target user has reached its process limit (RLIMIT_NPROC)",
        _ => "unexpected error",
    };
    Failure::new(
        code::NO_PERMISSION,
        format!("dropping privileges failed in {call}: {errno}: {why}"),
    )
}

fn apply_no_new_privs(request: &UserRequest<'_>) {
    if !request.no_new_privs {
        tracing::info!("PR_SET_NO_NEW_PRIVS not set (AIRFLOW_ENTRYPOINT_NO_NEW_PRIVS=false)");
        return;
    }
    if request.impersonation {
        tracing::info!("PR_SET_NO_NEW_PRIVS not set: AIRFLOW__CORE__DEFAULT_IMPERSONATION needs sudo for run_as_user");
        return;
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        tracing::warn!(error = %e, "could not set PR_SET_NO_NEW_PRIVS");
    }
}

/// Started as a non-root UID (Kubernetes runAsUser, OpenShift): no drop.
/// Give the UID a passwd entry when it has none and the file is writable.
fn arbitrary_uid(request: &UserRequest<'_>) -> Result<Identity, Failure> {
    let uid = getuid().as_raw();
    let gid = getegid().as_raw();
    let text = std::fs::read_to_string(request.passwd_path).unwrap_or_default();
    let passwd = parse_passwd(&text);
    if let Some(entry) = passwd.iter().find(|e| e.uid == uid) {
        return Ok(Identity {
            name: entry.name.clone(),
            uid,
            gid,
            home: entry.home.clone(),
            root: false,
        });
    }
    let name = if passwd.iter().any(|e| e.name == request.user_name) {
        "default".to_string()
    } else {
        request.user_name.to_string()
    };
    let home = request.airflow_home.unwrap_or("/tmp").to_string();
    check_passwd_fields(request, &name, &home)?;
    let entry = PasswdEntry {
        name: name.clone(),
        uid,
        gid: 0,
        home: home.clone(),
        shell: "/bin/bash".into(),
    };
    match append_passwd_entry(request.passwd_path, &entry) {
        Ok(()) => tracing::info!(
            user = name,
            uid,
            home,
            "added a passwd entry for this arbitrary UID (Python's getpass and Airflow need one)"
        ),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => tracing::warn!(
            uid,
            "UID {uid} has no entry in {}, and the file system is read-only (--read-only, readOnlyRootFilesystem); Python's getpass may fail. Add the user at build time, or mount a passwd file that has it",
            request.passwd_path.display()
        ),
        Err(e) => tracing::warn!(
            uid,
            error = %e,
            "UID {uid} has no entry in {} and it is not writable; Python's getpass may fail. Make /etc/passwd group-writable for GID 0 in the image (chmod g=u /etc/passwd) or add the user at build time",
            request.passwd_path.display()
        ),
    }
    Ok(Identity {
        name,
        uid,
        gid,
        home,
        root: false,
    })
}

/// Where the real files live; tests bind-mount their own over them.
pub fn passwd_path() -> PathBuf {
    PathBuf::from("/etc/passwd")
}

pub fn group_path() -> PathBuf {
    PathBuf::from("/etc/group")
}

/// The user phase: drops root (or settles an arbitrary UID), sets the umask,
/// and exports HOME, USER, LOGNAME and AIRFLOW_HOME for everything started
/// afterwards.
pub fn become_service_user(settings: &Settings, layers: &mut Layered) -> Result<Identity, Failure> {
    let user_name = layers.get("ASTRONOMER_USER").unwrap_or("astro").to_string();
    let uid_text = layers.get("ASTRONOMER_UID").unwrap_or("5000").to_string();
    let uid: u32 = uid_text.trim().parse().map_err(|_| {
        Failure::config(format!(
            "{}={uid_text:?} is not a UID; expected a number such as 5000",
            layers.describe("ASTRONOMER_UID")
        ))
    })?;
    let passwd = passwd_path();
    let group = group_path();
    let identity = establish(&UserRequest {
        passwd_path: &passwd,
        group_path: &group,
        user_name: &user_name,
        user_name_source: &layers.describe("ASTRONOMER_USER"),
        uid,
        uid_source: &layers.describe("ASTRONOMER_UID"),
        airflow_home: layers.get("AIRFLOW_HOME"),
        airflow_home_source: &layers.describe("AIRFLOW_HOME"),
        run_as_root: settings.run_as_root,
        create_user: settings.create_user,
        no_new_privs: settings.no_new_privs,
        impersonation: layers.get("AIRFLOW__CORE__DEFAULT_IMPERSONATION").is_some(),
    })?;
    if !identity.root {
        let from_passwd = || Source::Derived("the service user's passwd entry".into());
        layers.set("HOME", identity.home.clone(), from_passwd());
        layers.set("USER", identity.name.clone(), from_passwd());
        layers.set("LOGNAME", identity.name.clone(), from_passwd());
    }
    if layers.get("AIRFLOW_HOME").is_none() {
        let home = layers
            .get("HOME")
            .unwrap_or(&identity.home)
            .trim_end_matches('/')
            .to_string();
        layers.set(
            "AIRFLOW_HOME",
            format!("{home}/airflow"),
            Source::Derived("Airflow's default, ~/airflow of the service user".into()),
        );
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(settings.umask));
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_lines_parse_and_junk_is_skipped() {
        let p = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\nastro:x:5000:0::/usr/local/airflow:/bin/bash\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].uid, 5000);
        assert_eq!(p[1].home, "/usr/local/airflow");
        let g = parse_group("root:x:0:\nastro:x:5000:\ndocker:x:999:astro,bob\nx:y\n");
        assert_eq!(g.len(), 3);
        assert_eq!(g[2].members, vec!["astro".to_string(), "bob".to_string()]);
    }

    #[test]
    fn values_that_would_corrupt_passwd_are_refused() {
        for name in [
            "astro:x:0:0",
            "astro\nroot2::0:0::/root:/bin/sh",
            "astro\r",
            "+astro",
            "-astro",
            "#astro",
            "as tro",
            "a\u{1b}b",
        ] {
            assert!(passwd_field_problem(name, true).is_some(), "{name:?}");
        }
        for home in ["/a:b", "/home\nroot2::0:0::/:/bin/sh", "/x\0"] {
            assert!(passwd_field_problem(home, false).is_some(), "{home:?}");
        }
        for name in ["astro", "airflow", "default", "user.name", "a_b-c", "svc$"] {
            assert_eq!(passwd_field_problem(name, true), None, "{name:?}");
        }
        for home in ["/usr/local/airflow", "/opt/airflow", "/home/a b", "/tmp"] {
            assert_eq!(passwd_field_problem(home, false), None, "{home:?}");
        }
    }
}
