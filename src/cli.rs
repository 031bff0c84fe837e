//! Command-line flags and the `--help` text, and the settings phase (flags
//! over AIRFLOW_ENTRYPOINT_* variables). Parsing stops at the first
//! argument that is not one of ours (or after `--`); everything from there
//! on is the COMMAND and its arguments, passed on untouched.

use std::ffi::OsString;

use crate::error::Failure;
use crate::settings::{find_by_flag, FlagValue, Settings, SETTINGS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    Help,
    Version,
    ListSettings,
    PrintEnv,
    WaitOnly,
    Healthcheck,
}

pub struct Invocation {
    pub action: Action,
    pub flags: Vec<FlagValue>,
    pub command: Vec<OsString>,
}

/// The arguments after the program name, from C's argv.
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings.
#[cfg(not(test))]
pub unsafe fn args_from_c(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) -> Vec<OsString> {
    use std::os::unix::ffi::OsStrExt;
    let count = usize::try_from(argc).unwrap_or(0);
    (1..count)
        .map(|i| {
            // SAFETY: i < argc, as the caller promises.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect()
}

/// argv[0] from C's argv (empty when there is none).
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings.
#[cfg(not(test))]
pub unsafe fn argv0_from_c(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    if argc < 1 || argv.is_null() || unsafe { (*argv).is_null() } {
        return OsString::new();
    }
    // SAFETY: argc >= 1, so argv[0] is one of the caller's strings.
    let arg = unsafe { std::ffi::CStr::from_ptr(*argv) };
    std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
}

/// What of std's runtime set-up matters, done without the rest of it (an
/// alternate signal stack for a stack-overflow message: a dozen system
/// calls on every start). Standard input, output and error are open: a
/// closed one is opened on /dev/null, or the signalfd would take its number
/// and the child would read from or write to it. SIGPIPE is ignored.
pub fn ready_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: a valid array of three pollfds; a zero timeout.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for fd in fds.iter().filter(|fd| fd.revents & libc::POLLNVAL != 0) {
        let mode = if fd.fd == 0 {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        // SAFETY: a NUL-terminated path; the lowest free fd is the closed one.
        unsafe { libc::open(c"/dev/null".as_ptr(), mode) };
    }
    // SAFETY: ignoring SIGPIPE: a write to a closed pipe fails with EPIPE
    // instead (std's runtime does this too); exec resets it for the child.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Parses `args` (without argv[0]).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, Failure> {
    let mut flags = Vec::new();
    let mut action = Action::Run;
    let mut iter = args.into_iter().peekable();
    while let Some(arg) = iter.peek() {
        let Some(text) = arg.to_str() else { break };
        if text == "--" {
            iter.next();
            break;
        }
        if !text.starts_with('-') || text == "-" {
            break;
        }
        let text = text.to_string();
        iter.next();
        match text.as_str() {
            "-h" | "--help" => {
                action = Action::Help;
                continue;
            }
            "-V" | "--version" => {
                action = Action::Version;
                continue;
            }
            "--healthcheck" => {
                action = Action::Healthcheck;
                continue;
            }
            "--wait-only" => {
                action = Action::WaitOnly;
                continue;
            }
            "--print-env" => {
                action = Action::PrintEnv;
                continue;
            }
            "--list-settings" => {
                action = Action::ListSettings;
                continue;
            }
            _ => {}
        }
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (text.clone(), None),
        };
        let Some(doc) = find_by_flag(&name) else {
            return Err(Failure::usage(format!(
                "unknown option {name}; put `--` before a command that starts with `-`, see --help"
            )));
        };
        let value = match inline {
            Some(v) => v,
            // A boolean flag alone means true; it never takes the next argument.
            None if doc.kind == "bool" => "true".to_string(),
            None => match iter.next().map(|v| v.into_string()) {
                Some(Ok(v)) => v,
                Some(Err(_)) => return Err(Failure::usage(format!("{name} needs a UTF-8 value"))),
                None => {
                    return Err(Failure::usage(format!(
                        "{name} needs a value ({}), see --help",
                        doc.kind.replace('`', "").replace("\\|", "|")
                    )))
                }
            },
        };
        flags.push(FlagValue {
            key: doc.key,
            flag: name,
            value,
        });
    }
    Ok(Invocation {
        action,
        flags,
        command: iter.collect(),
    })
}

/// The text that `--help`, `--version` and `--list-settings` print; None
/// for the actions that run.
pub fn informational_text(action: Action) -> Option<String> {
    match action {
        Action::Help => Some(help_text()),
        Action::Version => Some(version_text()),
        Action::ListSettings => Some(settings_table()),
        Action::Run | Action::PrintEnv | Action::WaitOnly | Action::Healthcheck => None,
    }
}

pub fn version_text() -> String {
    format!("airflow-entrypoint {}\n", env!("CARGO_PKG_VERSION"))
}

pub fn help_text() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "airflow-entrypoint {} — PID 1 for Apache Airflow containers\n\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(
        "Usage: airflow-entrypoint [OPTIONS] [--] COMMAND [ARGS...]\n\n\
         Runs COMMAND as its child and supervises it: forwards signals to it, reaps\n\
         every zombie, stops what is left behind, and exits with the child's status\n\
         (its exit code, or 128+N when signal N killed it). Options end at the first\n\
         argument that is not an option, so `airflow-entrypoint bash -c 'echo hi'`\n\
         passes `-c` to bash. In a memory cgroup with a limit it names each OOM kill\n\
         as it happens, and it ends with a one-line summary of the child's life.\n\n\
         Options (each also an environment variable; the flag wins):\n",
    );
    for doc in SETTINGS.iter().filter(|d| d.flag) {
        let flag = doc.flag_name().unwrap_or_default();
        let kind = doc.kind.replace('`', "").replace("\\|", "|");
        if kind == "bool" {
            out.push_str(&format!("  {flag}[=<bool>]\n"));
        } else {
            out.push_str(&format!("  {flag} <{kind}>\n"));
        }
        let default = doc.default.replace('`', "");
        out.push_str(&format!(
            "      env {}; default {default}\n",
            doc.env_name()
        ));
        out.push_str(&wrap(&doc.meaning.replace('`', ""), 6, 78));
    }
    out.push_str(
        "  --wait-only [COMMAND]\n                   wait for what COMMAND would wait for (the metadata database when\n                   no COMMAND is given; `--wait-only worker` also the broker), then\n                   exit 0 without starting anything (init containers, health checks)\n  \
         --healthcheck [COMMAND]\n                   ask the running component: the api-server's or webserver's health\n                   endpoint, the scheduler's health server when on, else this host's\n                   newest scheduler, triggerer or dag-processor job in the job table;\n                   a Celery worker's remote-control ping on its broker; exit 0\n                   healthy, 1 not, within 5 s. Other components are not asked:\n                   exit 0 while the container runs.\n                   COMMAND defaults to PID 1's own (for a Docker HEALTHCHECK)\n  \
         --print-env      print every AIRFLOW*, ASTRONOMER* and _AIRFLOW* variable with the layer\n                   it came from (secrets masked), then exit; drops nothing, runs nothing\n  \
         -h, --help       print this help\n  -V, --version    print the version\n  \
         --list-settings  print every setting (and compatibility variable) as a markdown table\n\n\
         Exit codes: the child's own; 128+N if it died of signal N; 64 usage error;\n\
         69 a dependency unavailable; 70 internal error; 77 privileges; 78 configuration;\n\
         126 command not executable; 127 command not found.\n\n\
         Examples:\n  airflow-entrypoint scheduler\n  \
         AIRFLOW_ENTRYPOINT_GRACE_PERIOD=30 airflow-entrypoint -- sleep infinity\n  \
         airflow-entrypoint --signal-scope child --exit-code-map 143:0 celery worker\n",
    );
    out
}

/// The settings table of docs/configuration.md: name, flag, type, default, meaning.
pub fn settings_table() -> String {
    let mut out =
        String::from("| Variable | Flag | Type | Default | Meaning |\n|---|---|---|---|---|\n");
    for doc in SETTINGS {
        let flag = doc
            .flag_name()
            .map(|f| format!("`{f}`"))
            .unwrap_or_else(|| "—".to_string());
        out.push_str(&format!(
            "| `{}` | {flag} | {} | {} | {} |\n",
            doc.env_name(),
            doc.kind,
            doc.default,
            doc.meaning
        ));
    }
    out
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&format!("{:indent$}{line}\n", ""));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{:indent$}{line}\n", ""));
    }
    out
}

/// `--parent-death-signal`, first thing once the settings are known (the
/// privilege drop keeps it: see `user::drop_privileges`).
pub fn set_parent_death_signal(signal: i32, original_parent: i32) -> Result<(), Failure> {
    let name = crate::signals::signal_name(signal);
    match crate::signals::set_parent_death_signal(signal, original_parent) {
        Ok(false) => {
            tracing::debug!(signal = name, parent = original_parent, "parent-death signal set");
            Ok(())
        }
        Ok(true) => {
            tracing::warn!(
                signal = name,
                parent = original_parent,
                "the parent exited before the parent-death signal was set; sending SIG{name} to ourselves now"
            );
            Ok(())
        }
        Err(why) => Err(Failure::config(format!(
            "AIRFLOW_ENTRYPOINT_PARENT_DEATH_SIGNAL / --parent-death-signal: {why}; choose a signal the kernel accepts, e.g. TERM"
        ))),
    }
}

/// The settings phase: AIRFLOW_ENTRYPOINT_* and flags, then logging as
/// they say, then a warning for each unknown setting.
pub fn load_settings(flags: &[FlagValue]) -> Result<Settings, Failure> {
    // A variable that is not UTF-8 is passed to the child untouched but
    // cannot configure the entrypoint.
    let process_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let settings = Settings::load(&process_env, flags)?;
    crate::logging::init(settings.log_format, settings.log_level);
    for name in Settings::unknown_variables(&process_env) {
        tracing::warn!(
            variable = name,
            "unknown setting ignored; see --help for the list"
        );
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_stop_at_the_command() {
        let inv = parse(args(&[
            "--grace-period",
            "3",
            "webserver",
            "--port",
            "8080",
        ]))
        .unwrap();
        assert_eq!(inv.flags.len(), 1);
        assert_eq!(inv.flags[0].key, "GRACE_PERIOD");
        assert_eq!(inv.command, args(&["webserver", "--port", "8080"]));
    }

    #[test]
    fn double_dash_ends_options_and_equals_form_works() {
        let inv = parse(args(&["--kill-timeout=1", "--", "--weird"])).unwrap();
        assert_eq!(inv.flags[0].value, "1");
        assert_eq!(inv.command, args(&["--weird"]));
    }

    #[test]
    fn unknown_options_and_missing_values_are_usage_errors() {
        assert_eq!(
            parse(args(&["--nope"])).err().map(|e| e.exit_code),
            Some(64)
        );
        assert_eq!(
            parse(args(&["--grace-period"])).err().map(|e| e.exit_code),
            Some(64)
        );
    }

    #[test]
    fn help_lists_every_flag() {
        let help = help_text();
        for doc in SETTINGS.iter().filter(|d| d.flag) {
            assert!(help.contains(&doc.flag_name().unwrap()));
            assert!(help.contains(&doc.env_name()));
        }
    }
}
