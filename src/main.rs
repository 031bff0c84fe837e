//! airflow-entrypoint: PID 1 for Apache Airflow containers.
//! `main` runs the phases in order — settings → environment → user →
//! readiness → command → supervisor — and maps each failure to its exit
//! code; it does nothing else. Signals are taken over first, before any phase.

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(not(test), no_main)]

mod airflow;
mod alloc;
mod clean_logs;
mod cli;
mod command;
mod env;
mod error;
mod jitter;
mod logging;
mod multicall;
mod readiness;
mod redact;
mod settings;
mod shell_words;
mod signals;
mod supervisor;
mod user;
mod wire;

use std::ffi::OsString;

use cli::Action;
use error::Failure;
use logging::{enter_phase, exit_with, Phase};
use signals::SignalInbox;
use supervisor::{check_startup_signals, Supervised};

/// The C entry point: std's runtime set-up is skipped (see `cli::ready_standard_fds`).
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(argc: i32, argv: *const *const std::ffi::c_char) -> i32 {
    // SAFETY: the C runtime passes argc strings that live as long as we do.
    let (argv0, args) = unsafe { (cli::argv0_from_c(argc, argv), cli::args_from_c(argc, argv)) };
    // Called as `airflow` or `celery` (the image's links): anything but a
    // probe is exec'd to the real program before anything else is touched.
    let caller = match multicall::intercept(&argv0, &args) {
        multicall::Call::Entrypoint => Caller::new(&argv0, args),
        multicall::Call::Probe(command) => Caller::probe(command),
    };
    run(caller)
}

/// How the binary was called: the arguments, and what its name implies.
#[cfg_attr(test, allow(dead_code))]
struct Caller {
    args: Vec<OsString>,
    /// A multi-call probe: no wait, and the real program when the native
    /// answer cannot be given.
    probe: bool,
    /// Called as `/entrypoint`, the official image's path.
    official_path: bool,
}

#[cfg_attr(test, allow(dead_code))]
impl Caller {
    fn new(argv0: &std::ffi::OsStr, args: Vec<OsString>) -> Caller {
        let official_path = std::path::Path::new(argv0)
            .file_name()
            .is_some_and(|n| n == "entrypoint");
        Caller {
            args,
            probe: false,
            official_path,
        }
    }

    /// The probe as the entrypoint's own command line: the real program's
    /// command after `--`, the wait off (Python's probe connects once),
    /// and only warnings from us unless the log level is set.
    fn probe(command: Vec<OsString>) -> Caller {
        let mut args: Vec<OsString> = vec!["--wait-timeout=0".into()];
        if std::env::var_os("AIRFLOW_ENTRYPOINT_LOG_LEVEL").is_none() {
            args.push("--log-level=warn".into());
        }
        args.push("--".into());
        args.extend(command);
        Caller {
            args,
            probe: true,
            official_path: false,
        }
    }
}

#[cfg_attr(test, allow(dead_code))]
fn run(caller: Caller) -> ! {
    // Before anything else: the reference for the parent-death re-check.
    let parent = signals::original_parent();
    cli::ready_standard_fds();
    // As PID 1 a signal with no handler is dropped: block them all before
    // anything else so that none sent during start-up is lost.
    let inbox = SignalInbox::install().unwrap_or_else(|e| exit_with(Failure::internal(e)));
    logging::install_panic_hook();
    // Start-up's data (layers, settings text, URLs) is dropped when `start`
    // returns, before the long supervision begins: PID 1 keeps only that.
    let code = match start(&inbox, caller, parent) {
        Ok(Started::Done(code)) => code,
        Ok(Started::Exec(command)) => multicall::exec_real(&command),
        Ok(Started::Supervise(started)) => supervisor::supervise(&inbox, *started),
        Ok(Started::Group(group)) => supervisor::group::supervise_group(&inbox, *group),
        Err(failure) => exit_with(failure),
    };
    std::process::exit(code);
}

/// What start-up ends with: an exit code (help, --wait-only, ...) or the
/// main child to supervise.
enum Started {
    Done(i32),
    /// A multi-call probe the native answer left to the real program.
    Exec(Vec<OsString>),
    Supervise(Box<Supervised>),
    Group(Box<supervisor::Group>),
}

fn start(inbox: &SignalInbox, caller: Caller, parent: i32) -> Result<Started, Failure> {
    enter_phase(Phase::Settings);
    let invocation = cli::parse(caller.args)?;
    if let Some(text) = cli::informational_text(invocation.action) {
        return Ok(Started::Done(logging::print_stdout(&text)));
    }
    let mut settings = cli::load_settings(&invocation.flags)?;
    if caller.official_path
        && !settings.run_as_root
        && nix::unistd::geteuid().is_root()
        && std::process::id() != 1
    {
        // A script running as root calls `/entrypoint airflow version` (the
        // quick-start's init): the official entrypoint runs it as root, and
        // the script chowns what it wrote afterwards.
        tracing::info!("called as /entrypoint by root, not as PID 1: staying root, as the official entrypoint does");
        settings.run_as_root = true;
    }
    if let Some(signal) = settings.parent_death_signal {
        cli::set_parent_death_signal(signal, parent)?;
    }
    // Found before the privilege drop (v1's registration is root's only);
    // armed once the child is spawned.
    let drops_root = nix::unistd::geteuid().is_root() && !settings.run_as_root;
    let oom = supervisor::oom::Plan::before_start(invocation.action == Action::Run, drops_root);

    enter_phase(Phase::Environment);
    let mut layers = env::load(&settings)?;
    match invocation.action {
        Action::PrintEnv => return Ok(Started::Done(env::print::to_stdout(&layers))),
        Action::Healthcheck => {
            let verdict = airflow::healthcheck(inbox, &settings, &layers, &invocation.command);
            return Ok(Started::Done(verdict));
        }
        _ => env::log_if_asked(&settings, &layers),
    }

    enter_phase(Phase::User);
    let identity = user::become_service_user(&settings, &mut layers)?;
    check_startup_signals(inbox)?;
    if clean_logs::is_command(&invocation.command) {
        // Native: no child, nothing to wait for.
        enter_phase(Phase::Command);
        return Ok(Started::Done(clean_logs::run(inbox, &layers)?));
    }
    let (members, version) = airflow::plan_command(&invocation.command, &mut layers)?;

    enter_phase(Phase::Resolve);
    // `_CMD` and `_SECRET` commands run as the service user, supervised.
    let path = layers.get("PATH").map(OsString::from);
    let mut run = supervisor::steps::command_runner(inbox, layers.child_env(), path);
    let wait_only = invocation.action == Action::WaitOnly;
    let needs = airflow::wait_needs(&members, &layers, wait_only);
    let targets = readiness::resolve_targets(&settings, &layers, needs, &mut run)?;
    check_startup_signals(inbox)?;

    enter_phase(Phase::Wait);
    let schemas = airflow::schemas_to_wait_for(&settings, &layers, version)?;
    let database = readiness::wait_until_ready(inbox, &settings, &layers, targets, &schemas)?;
    if wait_only {
        return Ok(Started::Done(0));
    }
    if let Some(code) =
        airflow::native::answer(inbox, &settings, &layers, &members, &database, &mut run)?
    {
        return Ok(Started::Done(code));
    }
    if caller.probe {
        return Ok(Started::Exec(invocation.command));
    }

    enter_phase(Phase::Startup);
    airflow::steps::run_all(inbox, &settings, &mut layers, version, database.as_ref())?;
    check_startup_signals(inbox)?;

    enter_phase(Phase::Command);
    let [member] = members.as_slice() else {
        let (components, policy) = command::prepare_group(&settings, &layers, &members)?;
        let group = supervisor::prepare_group(inbox, components, policy, oom)?;
        return Ok(Started::Group(Box::new(group)));
    };
    let launch = command::prepare(&settings, &layers, &member.planned)?;
    let user = (identity.name.as_str(), identity.uid);
    let started =
        supervisor::start_child(inbox, &launch.request(), launch.policy.clone(), user, oom)?;
    Ok(Started::Supervise(Box::new(started)))
}
