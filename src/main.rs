//! airflow-entrypoint: PID 1 for Apache Airflow containers.
//! `main` wires the phases in order and maps each failure to its exit code;
//! it does nothing else. Signals are taken over first, before any phase.

#![deny(unsafe_op_in_unsafe_fn)]

mod cli;
mod command;
mod error;
mod logging;
mod redact;
mod settings;
mod supervisor;

use std::ffi::OsString;
use std::io::Write;
use std::sync::OnceLock;

use error::Failure;
use logging::{enter_phase, LogFormat, Phase};
use settings::{Settings, SignalScope};
use supervisor::signals::SignalInbox;
use supervisor::spawn::{spawn, SpawnRequest};
use supervisor::Policy;

static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn main() {
    // As PID 1 a signal with no handler is dropped: block them all before
    // anything else so that none sent during start-up is lost.
    let inbox = match SignalInbox::install() {
        Ok(inbox) => inbox,
        Err(failure) => exit_with(failure),
    };
    install_panic_hook();
    let code = match run(&inbox) {
        Ok(code) => code,
        Err(failure) => exit_with(failure),
    };
    std::process::exit(code);
}

fn run(inbox: &SignalInbox) -> Result<i32, Failure> {
    enter_phase(Phase::Settings);
    let invocation = cli::parse(std::env::args_os().skip(1).collect())?;
    match invocation.action {
        cli::Action::Help => return Ok(print_stdout(&cli::help_text())),
        cli::Action::Version => return Ok(print_stdout(&cli::version_text())),
        cli::Action::ListSettings => return Ok(print_stdout(&cli::settings_table())),
        cli::Action::Run => {}
    }
    let process_env = utf8_environment();
    let settings = Settings::load(&process_env, &invocation.flags)?;
    let _ = LOG_FORMAT.set(settings.log_format);
    logging::init(settings.log_format, settings.log_level);
    for name in Settings::unknown_variables(&process_env) {
        tracing::warn!(
            variable = name,
            "unknown setting ignored; see --help for the list"
        );
    }

    enter_phase(Phase::Command);
    let child_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let path_var = child_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let resolved = command::resolve(&invocation.command, path_var)?;
    let policy = Policy {
        scope: signal_scope(&settings, &process_env, SignalScope::Group),
        grace_period: settings.grace_period,
        kill_timeout: settings.kill_timeout,
        term_delay: settings.term_delay,
        signal_map: settings.signal_map.clone(),
        exit_code_map: settings.exit_code_map.clone(),
    };
    let is_pid1 = supervisor::become_reaper();

    supervisor::check_startup_signals(inbox)?;
    let child = spawn(&SpawnRequest {
        program: &resolved.program,
        argv0: &resolved.argv0,
        args: &resolved.args,
        env: &child_env,
        capture_stdout: false,
    })?;
    tracing::info!(
        pid = child.pid.as_raw(),
        command = resolved.program.display().to_string(),
        scope = match policy.scope {
            SignalScope::Group => "group",
            SignalScope::Child => "child",
        },
        pid1 = is_pid1,
        "started the command"
    );
    Ok(supervisor::supervise(inbox, &child, &policy, is_pid1))
}

/// `AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE` when set, else `DUMB_INIT_SETSID=0`
/// means `child`, else the command's default.
fn signal_scope(
    settings: &Settings,
    env: &[(String, String)],
    default: SignalScope,
) -> SignalScope {
    if let Some(scope) = settings.signal_scope {
        return scope;
    }
    let setsid = env
        .iter()
        .find(|(k, _)| k == "DUMB_INIT_SETSID")
        .map(|(_, v)| v.trim());
    match setsid {
        Some("0") => SignalScope::Child,
        Some("1" | "") | None => default,
        Some(other) => {
            tracing::warn!(
                value = other,
                "DUMB_INIT_SETSID is neither 0 nor 1; ignored"
            );
            default
        }
    }
}

/// The process environment as text; a variable that is not UTF-8 is passed
/// to the child untouched but cannot configure the entrypoint.
fn utf8_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn print_stdout(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    0
}

fn exit_with(failure: Failure) -> ! {
    logging::write_failure_line(LOG_FORMAT.get().copied(), &failure.message);
    std::process::exit(failure.exit_code);
}

/// PID 1 must never die by accident: a panic is logged and becomes exit 70.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let message =
            format!("internal error (a bug, please report it): panic{location}: {payload}");
        logging::write_failure_line(LOG_FORMAT.get().copied(), &message);
        std::process::exit(error::code::INTERNAL);
    }));
}
