//! Airflow's component names: which bare names run as `airflow NAME`, the
//! version-aware renames (webserver ↔ api-server, worker → celery worker),
//! each component's default signal handling, and which commands need the
//! database or the broker. It only reads argv; it never looks at files.

use std::ffi::OsString;

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
    /// It needs the metadata database (so WAIT=auto waits for it).
    pub needs_database: bool,
    /// It needs the Celery broker; `plan` leaves it false, as it does not
    /// know the executor: see `uses_celery_broker`.
    pub needs_broker: bool,
    /// The command the component really runs: `argv`, or for `bash -c
    /// "exec airflow scheduler"` (the Helm chart's form) the exec'd one.
    pub component: Vec<OsString>,
}

/// For `bash -c "exec WORDS"` or `sh -c "exec WORDS"` (the Helm chart's
/// `args`), WORDS: the command the shell becomes. None when the script is
/// anything more than one plain exec (a pipe, `;`, `&&`, an expansion).
pub fn shell_exec_target(command: &[OsString]) -> Option<Vec<OsString>> {
    let [shell, flag, script] = command else {
        return None;
    };
    let shell = std::path::Path::new(shell).file_name()?.to_str()?;
    if !matches!(shell, "bash" | "sh" | "dash") || flag != "-c" {
        return None;
    }
    // The chart writes some as `exec \<newline>airflow ...`: a backslash
    // before a newline is removed by the shell (a line continuation).
    let script = script.to_str()?.replace("\\\n", "");
    if script.contains(|c: char| ";|&<>$`()\n{}*?[]~#".contains(c)) {
        return None;
    }
    let words = crate::shell_words::split(&script).ok()?;
    let (exec, rest) = words.split_first()?;
    if exec != "exec" || rest.is_empty() || rest[0].contains('=') {
        return None;
    }
    Some(rest.iter().map(OsString::from).collect())
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
    // Through `bash -c "exec airflow celery worker"` the worker is still a
    // worker: signal scope, broker and health follow what the shell becomes.
    let component = shell_exec_target(&argv)
        .map(|inner| plan(&inner, major).argv)
        .unwrap_or_else(|| argv.clone());
    let celery_worker = matches!(
        airflow_subcommand(&component),
        Some(("celery", rest)) if rest.first().and_then(|a| a.to_str()) == Some("worker")
    );
    let child_scope =
        celery_worker || matches!(airflow_subcommand(&component), Some(("standalone", _)));
    let term_as_int = matches!(airflow_subcommand(&argv), Some(("standalone", _)));
    // `bash` and `python` wait for the database first, as in the official
    // image (its entrypoint checks the database before any command).
    let passes_through = argv
        .first()
        .is_some_and(|first| first == "bash" || first == "python");
    let needs_database = uses_metadata_database(&component) || passes_through;
    Planned {
        argv,
        note,
        celery_worker,
        child_scope,
        term_as_int,
        needs_database,
        needs_broker: false,
        component,
    }
}

/// `airflow-entrypoint all`: the four components of Airflow 3.
pub const PRESET: &str = "all";
const PRESET_MEMBERS: [&str; 4] = ["api-server", "scheduler", "dag-processor", "triggerer"];

/// `scheduler + api-server + ...` (or the preset `all`): the parts of a
/// command line that runs several components, each a component name with
/// its arguments or `-- program args`; None for a single command. An empty
/// part is Err with the reason.
pub fn split_members(command: &[OsString]) -> Result<Option<Vec<Vec<OsString>>>, String> {
    if command.len() == 1 && command[0] == PRESET {
        return Ok(Some(
            PRESET_MEMBERS
                .iter()
                .map(|c| vec![OsString::from(c)])
                .collect(),
        ));
    }
    if !command.iter().any(|a| a == "+") {
        return Ok(None);
    }
    let mut members = Vec::new();
    for part in command.split(|a| a == "+") {
        let part = match part.split_first() {
            Some((first, rest)) if first == "--" => rest,
            _ => part,
        };
        if part.is_empty() {
            return Err("an empty part between `+` signs; expected e.g. \
                        `scheduler + api-server + -- program args`"
                .into());
        }
        members.push(part.to_vec());
    }
    Ok(Some(members))
}

/// The name a component's output lines are prefixed with: the component, or
/// the program's file name.
pub fn member_name(command: &[OsString]) -> String {
    let Some(first) = command.first() else {
        return String::new();
    };
    let text = first.to_string_lossy();
    match airflow_subcommand(command) {
        Some(("celery", rest)) => rest
            .first()
            .map_or("celery".into(), |a| a.to_string_lossy().into_owned()),
        Some((sub, _)) => sub.to_string(),
        None => text.rsplit('/').next().unwrap_or(&text).to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_components_split_on_plus_signs() {
        let parts = |s: &str| split_members(&s.split(' ').map(OsString::from).collect::<Vec<_>>());
        assert_eq!(parts("scheduler").unwrap(), None);
        let got = parts("scheduler + api-server --port 9 + -- sh -c x")
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], vec!["api-server", "--port", "9"]);
        assert_eq!(got[2], vec!["sh", "-c", "x"]);
        assert_eq!(parts("all").unwrap().unwrap().len(), 4);
        assert!(parts("scheduler + + triggerer").is_err());
        assert!(parts("scheduler +").is_err());
        assert_eq!(member_name(&[OsString::from("worker")]), "worker");
        assert_eq!(member_name(&[OsString::from("/bin/sh")]), "sh");
        let celery: Vec<OsString> = ["airflow", "celery", "worker"].map(OsString::from).to_vec();
        assert_eq!(member_name(&celery), "worker");
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
    fn a_shell_that_execs_a_component_is_that_component() {
        let chart = plan(&argv(&["bash", "-c", "exec airflow celery worker"]), 3);
        assert_eq!(
            chart.argv,
            argv(&["bash", "-c", "exec airflow celery worker"])
        );
        assert_eq!(chart.component, argv(&["airflow", "celery", "worker"]));
        assert!(chart.celery_worker && chart.child_scope && chart.needs_database);
        let continued = plan(&argv(&["bash", "-c", "exec \\\nairflow celery worker"]), 3);
        assert_eq!(continued.component, argv(&["airflow", "celery", "worker"]));
        let scheduler = plan(&argv(&["sh", "-c", "exec scheduler"]), 3);
        assert_eq!(scheduler.component, argv(&["airflow", "scheduler"]));
        for script in [
            "airflow scheduler",
            "exec airflow scheduler; echo",
            "exec $CMD",
            "exec A=1 airflow scheduler",
            "exec",
        ] {
            assert_eq!(
                shell_exec_target(&argv(&["bash", "-c", script])),
                None,
                "{script}"
            );
        }
        assert!(plan(&argv(&["bash"]), 3).needs_database);
        assert!(plan(&argv(&["python", "-c", "1"]), 3).needs_database);
        assert!(!plan(&argv(&["sh", "-c", "true"]), 3).needs_database);
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
}
