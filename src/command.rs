//! COMMAND → what to execute: finds the program on the child's PATH the way
//! a shell would, and tells "not found" (127) from "not executable" (126)
//! by looking at the file itself.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::error::{code, Failure};

/// A command ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub program: PathBuf,
    pub argv0: OsString,
    pub args: Vec<OsString>,
}

/// Airflow subcommands that need the metadata database (components and
/// DB-using commands), per the Airflow 2 and 3 CLIs.
const USES_DATABASE: &[&str] = &[
    "scheduler",
    "webserver",
    "api-server",
    "triggerer",
    "dag-processor",
    "worker",
    "flower",
    "standalone",
    "celery",
    "kerberos",
    "db",
    "users",
    "roles",
    "connections",
    "variables",
    "pools",
    "dags",
    "tasks",
    "jobs",
    "sync-perm",
    "assets",
    "backfill",
    "internal-api",
    "fab-db",
];

/// The Airflow subcommand COMMAND runs: `scheduler` given bare, or
/// `airflow scheduler`. None for other programs.
pub fn airflow_subcommand(command: &[OsString]) -> Option<(&str, &[OsString])> {
    let (first, rest) = command.split_first()?;
    let first = first.to_str()?;
    if first == "airflow" || first.ends_with("/airflow") {
        let (sub, rest) = rest.split_first()?;
        return Some((sub.to_str()?, rest));
    }
    is_airflow_command(first).then_some((first, rest))
}

/// Names that are run as `airflow NAME` when given bare.
pub fn is_airflow_command(name: &str) -> bool {
    USES_DATABASE.contains(&name)
        || matches!(
            name,
            "config"
                | "info"
                | "version"
                | "cheat-sheet"
                | "providers"
                | "plugins"
                | "rotate-fernet-key"
        )
}

/// COMMAND after the Airflow rules: bare Airflow names run as `airflow
/// NAME`, with the version-aware renames; everything else as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub argv: Vec<OsString>,
    /// One line for the log when a rename applied.
    pub note: Option<String>,
    /// A Celery worker: its default signal scope is `child` (warm shutdown).
    pub celery_worker: bool,
    /// Signals go to the main process only by default: Celery workers (warm
    /// shutdown) and `standalone` (a SIGINT to its whole group leaves it
    /// hanging; told alone, it stops its components itself).
    pub child_scope: bool,
    /// `standalone` treats SIGTERM as a crash (it exits at once and leaves
    /// its ~40 children behind) and SIGINT as the request to stop: TERM is
    /// forwarded as INT unless SIGNAL_MAP says otherwise.
    pub term_as_int: bool,
}

/// `major`: the installed Airflow's major version (3 when unknown).
pub fn plan(command: &[OsString], major: u32) -> Planned {
    let mut note = None;
    let argv: Vec<OsString> = match command.split_first() {
        Some((first, rest)) if first.to_str().is_some_and(is_airflow_command) => {
            let name = first.to_str().unwrap_or_default();
            let renamed: &[&str] = match (name, major) {
                ("webserver", 3..) => &["api-server"],
                ("api-server", 0..=2) => &["webserver"],
                ("worker", _) => &["celery", "worker"],
                ("flower", _) => &["celery", "flower"],
                _ => &[],
            };
            let mut argv = vec![OsString::from("airflow")];
            if renamed.is_empty() {
                argv.push(first.clone());
            } else {
                note = Some(format!(
                    "`{name}` runs `airflow {}` on Airflow {major}",
                    renamed.join(" ")
                ));
                argv.extend(renamed.iter().map(OsString::from));
            }
            argv.extend(rest.iter().cloned());
            argv
        }
        _ => command.to_vec(),
    };
    let celery_worker = matches!(
        airflow_subcommand(&argv),
        Some(("celery", rest)) if rest.first().and_then(|a| a.to_str()) == Some("worker")
    );
    let child_scope = celery_worker || matches!(airflow_subcommand(&argv), Some(("standalone", _)));
    let term_as_int = matches!(airflow_subcommand(&argv), Some(("standalone", _)));
    Planned {
        argv,
        note,
        celery_worker,
        child_scope,
        term_as_int,
    }
}

/// True when COMMAND needs the metadata database (so it waits for it).
pub fn uses_metadata_database(command: &[OsString]) -> bool {
    airflow_subcommand(command).is_some_and(|(sub, _)| USES_DATABASE.contains(&sub))
}

/// True when COMMAND needs the Celery broker: a worker or flower, or a
/// scheduler whose executor list names a Celery executor.
pub fn uses_celery_broker(command: &[OsString], executor: Option<&str>) -> bool {
    match airflow_subcommand(command) {
        Some(("worker" | "flower", _)) => true,
        Some(("celery", rest)) => rest
            .first()
            .and_then(|a| a.to_str())
            .is_some_and(|a| matches!(a, "worker" | "flower")),
        Some(("scheduler", _)) => executor.is_some_and(|list| {
            list.split(',').any(|e| {
                let name = e.trim().rsplit('.').next().unwrap_or("");
                name.starts_with("Celery")
            })
        }),
        _ => false,
    }
}

/// The shell's default when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn resolve(command: &[OsString], path_var: Option<&OsStr>) -> Result<Resolved, Failure> {
    let Some((name, args)) = command.split_first() else {
        return Err(Failure::usage(
            "no COMMAND given; usage: airflow-entrypoint [OPTIONS] [--] COMMAND [ARGS...] (see --help)",
        ));
    };
    Ok(Resolved {
        program: find_program(name, path_var)?,
        argv0: name.clone(),
        args: args.to_vec(),
    })
}

/// Looks `name` up like execvp: a name with a slash is taken as a path; else
/// the first executable regular file in PATH wins. A file that is found but
/// not executable is remembered and reported as 126 when nothing better is.
pub fn find_program(name: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, Failure> {
    let shown = name.to_string_lossy();
    if name.is_empty() {
        return Err(Failure::new(
            code::NOT_FOUND,
            "command not found: (empty name)",
        ));
    }
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match check(&path) {
            Check::Executable => Ok(path),
            Check::Missing => Err(Failure::new(
                code::NOT_FOUND,
                format!("command not found: {shown}"),
            )),
            Check::NotExecutable(why) => Err(not_executable(&path, why)),
        };
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut not_executable_candidate = None;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        match check(&candidate) {
            Check::Executable => return Ok(candidate),
            Check::Missing => {}
            Check::NotExecutable(why) => {
                not_executable_candidate.get_or_insert((candidate, why));
            }
        }
    }
    match not_executable_candidate {
        Some((path, why)) => Err(not_executable(&path, why)),
        None => Err(Failure::new(
            code::NOT_FOUND,
            format!(
                "command not found: {shown} (searched PATH={}); install it or give its full path",
                path_var.to_string_lossy()
            ),
        )),
    }
}

enum Check {
    Executable,
    Missing,
    NotExecutable(&'static str),
}

fn check(path: &Path) -> Check {
    let Ok(meta) = std::fs::metadata(path) else {
        return Check::Missing;
    };
    if meta.is_dir() {
        return Check::NotExecutable("it is a directory");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Check::NotExecutable("it has no execute permission (chmod +x)");
    }
    if access(path, AccessFlags::X_OK).is_err() {
        return Check::NotExecutable("this user may not execute it");
    }
    Check::Executable
}

fn not_executable(path: &Path, why: &str) -> Failure {
    Failure::new(
        code::NOT_EXECUTABLE,
        format!("command not executable: {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path() {
        let found = find_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))).unwrap();
        assert_eq!(found, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn missing_is_127_and_directory_is_126() {
        let e = find_program(OsStr::new("no-such-cmd-xyz"), Some(OsStr::new("/bin"))).unwrap_err();
        assert_eq!(e.exit_code, 127);
        assert!(e.message.starts_with("command not found: no-such-cmd-xyz"));
        let e = find_program(OsStr::new("/tmp"), None).unwrap_err();
        assert_eq!(e.exit_code, 126);
    }

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn bare_airflow_names_are_mapped_by_version() {
        let p = plan(&argv(&["webserver", "--port", "8080"]), 3);
        assert_eq!(p.argv, argv(&["airflow", "api-server", "--port", "8080"]));
        assert!(p.note.is_some());
        assert_eq!(
            plan(&argv(&["api-server"]), 2).argv,
            argv(&["airflow", "webserver"])
        );
        assert_eq!(
            plan(&argv(&["webserver"]), 2).argv,
            argv(&["airflow", "webserver"])
        );
        let w = plan(&argv(&["worker"]), 3);
        assert_eq!(w.argv, argv(&["airflow", "celery", "worker"]));
        assert!(w.celery_worker);
        assert!(plan(&argv(&["airflow", "celery", "worker"]), 3).celery_worker);
        assert_eq!(
            plan(&argv(&["airflow", "webserver"]), 3).argv,
            argv(&["airflow", "webserver"])
        );
        assert_eq!(
            plan(&argv(&["bash", "-c", "x"]), 3).argv,
            argv(&["bash", "-c", "x"])
        );
        assert!(!plan(&argv(&["scheduler"]), 3).celery_worker);
        assert!(!plan(&argv(&["scheduler"]), 3).child_scope);
        assert!(plan(&argv(&["standalone"]), 3).term_as_int);
        assert!(plan(&argv(&["standalone"]), 3).child_scope);
        assert!(!plan(&argv(&["scheduler"]), 3).term_as_int);
        assert!(!plan(&argv(&["api-server"]), 3).child_scope);
    }

    #[test]
    fn which_commands_use_the_database_and_broker() {
        assert!(uses_metadata_database(&argv(&["scheduler"])));
        assert!(uses_metadata_database(&argv(&["airflow", "db", "migrate"])));
        assert!(!uses_metadata_database(&argv(&["version"])));
        assert!(!uses_metadata_database(&argv(&["bash", "-c", "x"])));
        assert!(uses_celery_broker(&argv(&["worker"]), None));
        assert!(uses_celery_broker(&argv(&["celery", "worker"]), None));
        assert!(!uses_celery_broker(
            &argv(&["scheduler"]),
            Some("LocalExecutor")
        ));
        assert!(uses_celery_broker(
            &argv(&["scheduler"]),
            Some("LocalExecutor,CeleryExecutor")
        ));
        assert!(uses_celery_broker(
            &argv(&["scheduler"]),
            Some("CeleryKubernetesExecutor")
        ));
        assert!(uses_celery_broker(
            &argv(&["scheduler"]),
            Some("airflow.providers.celery.executors.celery_executor.CeleryExecutor")
        ));
    }

    #[test]
    fn no_command_is_a_usage_error() {
        assert_eq!(resolve(&[], None).unwrap_err().exit_code, 64);
    }
}
