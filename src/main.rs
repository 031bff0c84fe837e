//! airflow-entrypoint: PID 1 for Apache Airflow containers.
//! `main` wires the phases in order and maps each failure to its exit code;
//! it does nothing else. Signals are taken over first, before any phase.

#![deny(unsafe_op_in_unsafe_fn)]

mod airflow_cfg;
mod airflow_version;
mod cfg_file;
mod cli;
mod command;
mod env_file;
mod env_layers;
mod error;
mod healthcheck;
mod logging;
mod print_env;
mod readiness;
mod redact;
mod settings;
mod shell_words;
mod startup_steps;
mod supervisor;
mod user;

use std::io::Write;
use std::sync::OnceLock;

use env_layers::{LayerFiles, Layered, Source};
use error::Failure;
use logging::{enter_phase, LogFormat, Phase};
use settings::{Settings, SignalScope, WaitMode};
use supervisor::signals::SignalInbox;
use supervisor::spawn::{spawn, SpawnRequest};
use supervisor::Policy;

static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

use supervisor::steps::CMD_TIME_LIMIT;

fn main() {
    // As PID 1 a signal with no handler is dropped: block them all before
    // anything else so that none sent during start-up is lost.
    let inbox = match SignalInbox::install() {
        Ok(inbox) => inbox,
        Err(failure) => exit_with(failure),
    };
    install_panic_hook();
    // Start-up's data (layers, settings text, URLs) is dropped before the
    // long supervision begins: PID 1 keeps only what it needs.
    let code = match start(&inbox) {
        Ok(Started::Done(code)) => code,
        Ok(Started::Supervise {
            child,
            policy,
            is_pid1,
        }) => supervisor::supervise(&inbox, &child, &policy, is_pid1),
        Err(failure) => exit_with(failure),
    };
    std::process::exit(code);
}

/// What start-up ends with: an exit code (help, --wait-only, ...) or a
/// child to supervise.
enum Started {
    Done(i32),
    Supervise {
        child: supervisor::spawn::Spawned,
        policy: Policy,
        is_pid1: bool,
    },
}

fn start(inbox: &SignalInbox) -> Result<Started, Failure> {
    enter_phase(Phase::Settings);
    let invocation = cli::parse(std::env::args_os().skip(1).collect())?;
    match invocation.action {
        cli::Action::Help => return Ok(Started::Done(print_stdout(&cli::help_text()))),
        cli::Action::Version => return Ok(Started::Done(print_stdout(&cli::version_text()))),
        cli::Action::ListSettings => {
            return Ok(Started::Done(print_stdout(&cli::settings_table())))
        }
        cli::Action::Run
        | cli::Action::PrintEnv
        | cli::Action::WaitOnly
        | cli::Action::Healthcheck => {}
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

    // Read as root: mounted secrets may be readable by root only.
    enter_phase(Phase::Environment);
    let mut layers = Layered::load(
        &LayerFiles {
            env_dir: &settings.env_dir,
            env_dir_explicit: settings.env_dir_explicit,
            env_files: &settings.env_files,
        },
        std::env::vars_os().collect(),
    )?;
    layers.copy_legacy_keys(false);
    if invocation.action == cli::Action::PrintEnv {
        return Ok(Started::Done(print_stdout(&print_env::table(&layers))));
    }
    if invocation.action == cli::Action::Healthcheck {
        return Ok(Started::Done(healthcheck(&layers, &invocation.command)));
    }
    if settings.log_env {
        for line in print_env::table(&layers).lines() {
            tracing::info!("env {line}");
        }
    }

    enter_phase(Phase::User);
    let identity = become_service_user(&settings, &mut layers)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(settings.umask));
    supervisor::check_startup_signals(inbox)?;

    // The Airflow version decides renames, `db upgrade` vs `migrate` and the
    // legacy key; found from files, without starting Python.
    // Only looked for when something depends on it: a plain `-- program`
    // pays nothing.
    let needs_version = invocation
        .command
        .first()
        .and_then(|c| c.to_str())
        .is_some_and(|c| {
            command::is_airflow_command(c) || c == "airflow" || c.ends_with("/airflow")
        })
        || [
            "_AIRFLOW_DB_MIGRATE",
            "_AIRFLOW_DB_UPGRADE",
            "_AIRFLOW_WWW_USER_CREATE",
            "_PIP_ADDITIONAL_REQUIREMENTS",
        ]
        .iter()
        .any(|k| layers.get(k).is_some());
    let version = if needs_version {
        let airflow_script = layers
            .get("PATH")
            .map(std::ffi::OsStr::new)
            .and_then(|path| {
                command::find_program(std::ffi::OsStr::new("airflow"), Some(path)).ok()
            });
        airflow_version::detect(
            layers.get("AIRFLOW_VERSION"),
            airflow_script.as_deref(),
            layers.get("HOME"),
        )
    } else {
        None
    };
    if let Some(found) = &version {
        tracing::debug!(
            version = found.version.to_string(),
            source = found.source.as_str(),
            "Airflow version"
        );
    }
    let version = version.map(|f| f.version);
    layers.copy_legacy_keys(version.is_some_and(|v| v < airflow_version::Version(2, 3, 0)));
    let planned = command::plan(&invocation.command, version.map_or(3, |v| v.0));
    if let Some(note) = &planned.note {
        if version.is_none() {
            tracing::warn!("Airflow's version is unknown (no apache_airflow dist-info found; set AIRFLOW_VERSION); using Airflow 3 rules");
        }
        tracing::info!("{note}");
    }

    enter_phase(Phase::Resolve);
    let plan = wait_plan(&settings, &layers, invocation.action, &planned.argv)?;
    let mut targets = Vec::new();
    for (which, label) in plan {
        let (_, resolved) = resolve_url(inbox, &layers, which)?;
        let target = readiness::url::parse(&resolved.url)
            .map_err(|e| Failure::config(format!("{}: {e}", resolved.origin)))?;
        tracing::info!(
            url = resolved.url.as_str(),
            origin = resolved.origin.as_str(),
            "{label}"
        );
        targets.push(readiness::wait::WaitTarget {
            label,
            target,
            shown_url: readiness::url::mask(&resolved.url),
            origin: resolved.origin,
        });
    }
    supervisor::check_startup_signals(inbox)?;

    enter_phase(Phase::Wait);
    let budget = wait_budget(&settings, &layers)?;
    if budget.total.is_zero() {
        if !targets.is_empty() {
            tracing::info!("CONNECTION_CHECK_MAX_COUNT=0: not waiting");
        }
    } else {
        readiness::wait::wait_for_all(inbox, targets, budget)?;
    }
    if invocation.action == cli::Action::WaitOnly {
        return Ok(Started::Done(0));
    }

    enter_phase(Phase::Startup);
    startup_steps::Steps {
        inbox,
        layers: &mut layers,
        version,
        init_dir: &settings.init_dir,
        init_dir_explicit: settings.init_dir_explicit,
        limit: settings.step_timeout,
    }
    .run_all()?;
    supervisor::check_startup_signals(inbox)?;

    enter_phase(Phase::Command);
    let child_env = layers.child_env();
    let path_var = layers.get("PATH").map(std::ffi::OsStr::new);
    // Looked up after the drop: as the service user would find it.
    let resolved = command::resolve(&planned.argv, path_var)?;
    let policy = Policy {
        scope: signal_scope(
            &settings,
            &layers,
            if planned.child_scope {
                SignalScope::Child
            } else {
                SignalScope::Group
            },
        ),
        grace_period: settings.grace_period,
        kill_timeout: settings.kill_timeout,
        term_delay: settings.term_delay,
        signal_map: if settings.signal_map.is_empty() && planned.term_as_int {
            tracing::info!(
                "`standalone` stops cleanly on SIGINT only: SIGTERM is forwarded as SIGINT"
            );
            vec![(libc::SIGTERM, Some(libc::SIGINT))]
        } else {
            settings.signal_map.clone()
        },
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
        // standalone must get Ctrl-C as a forwarded SIGINT to its main
        // process: the terminal would send it to its whole group.
        take_terminal: !planned.term_as_int,
    })?;
    tracing::info!(
        pid = child.pid.as_raw(),
        command = resolved.program.display().to_string(),
        user = identity.name.as_str(),
        uid = identity.uid,
        scope = match policy.scope {
            SignalScope::Group => "group",
            SignalScope::Child => "child",
        },
        pid1 = is_pid1,
        "started the command"
    );
    Ok(Started::Supervise {
        child,
        policy,
        is_pid1,
    })
}

/// `--healthcheck`: one line on stdout, exit 0 healthy or 1 not.
fn healthcheck(layers: &Layered, given: &[std::ffi::OsString]) -> i32 {
    let command = healthcheck::component_command(given);
    let path = layers.get("PATH").map(std::ffi::OsStr::new);
    let script = command::find_program(std::ffi::OsStr::new("airflow"), path).ok();
    let major = airflow_version::detect(
        layers.get("AIRFLOW_VERSION"),
        script.as_deref(),
        layers.get("HOME"),
    )
    .map_or(3, |f| f.version.0);
    match healthcheck::run(&healthcheck::plan(&command, layers, major)) {
        Ok(detail) => {
            print_stdout(&format!("healthy: {detail}\n"));
            0
        }
        Err(reason) => {
            print_stdout(&format!("unhealthy: {reason}\n"));
            1
        }
    }
}

/// Which URLs to wait for: WAIT=auto follows the command (the metadata DB
/// for components and DB commands, the broker for Celery workers and a
/// scheduler with a Celery executor); `always` waits for the DB whatever the
/// command; `never` skips it all.
fn wait_plan(
    settings: &Settings,
    layers: &Layered,
    action: cli::Action,
    command: &[std::ffi::OsString],
) -> Result<Vec<(airflow_cfg::Url, &'static str)>, Failure> {
    let executor = layers.get("AIRFLOW__CORE__EXECUTOR");
    let wait_only_default = action == cli::Action::WaitOnly && command.is_empty();
    let (database, broker) = match settings.wait {
        WaitMode::Never => (false, false),
        WaitMode::Always => (true, command::uses_celery_broker(command, executor)),
        WaitMode::Auto => (
            wait_only_default || command::uses_metadata_database(command),
            command::uses_celery_broker(command, executor),
        ),
    };
    let mut plan = Vec::new();
    if database {
        plan.push((airflow_cfg::Url::MetadataDatabase, "metadata database"));
    }
    if broker {
        plan.push((airflow_cfg::Url::CeleryBroker, "Celery broker"));
    }
    Ok(plan)
}

/// WAIT_TIMEOUT, else CONNECTION_CHECK_MAX_COUNT × CONNECTION_CHECK_SLEEP_TIME.
fn wait_budget(settings: &Settings, layers: &Layered) -> Result<readiness::wait::Budget, Failure> {
    let total = match settings.wait_timeout {
        Some(total) => total,
        None => {
            let count_text = layers.get("CONNECTION_CHECK_MAX_COUNT").unwrap_or("20");
            let count: u32 = count_text.trim().parse().map_err(|_| {
                Failure::config(format!(
                    "{}={count_text:?} is not a whole number; expected e.g. 20 (0 = do not wait)",
                    layers.describe("CONNECTION_CHECK_MAX_COUNT")
                ))
            })?;
            let sleep_text = layers.get("CONNECTION_CHECK_SLEEP_TIME").unwrap_or("3");
            let sleep = settings::parse_seconds(sleep_text).ok_or_else(|| {
                Failure::config(format!(
                    "{}={sleep_text:?} is not a number of seconds; expected e.g. 3",
                    layers.describe("CONNECTION_CHECK_SLEEP_TIME")
                ))
            })?;
            sleep.saturating_mul(count)
        }
    };
    Ok(readiness::wait::Budget {
        total,
        max_interval: settings.wait_interval,
    })
}

/// Drops root (or settles an arbitrary UID) and exports HOME, USER, LOGNAME
/// and AIRFLOW_HOME for everything started afterwards.
fn become_service_user(
    settings: &Settings,
    layers: &mut Layered,
) -> Result<user::Identity, Failure> {
    let user_name = layers.get("ASTRONOMER_USER").unwrap_or("astro").to_string();
    let uid_text = layers.get("ASTRONOMER_UID").unwrap_or("5000").to_string();
    let uid: u32 = uid_text.trim().parse().map_err(|_| {
        Failure::config(format!(
            "{}={uid_text:?} is not a UID; expected a number such as 5000",
            layers.describe("ASTRONOMER_UID")
        ))
    })?;
    let passwd = user::passwd_path();
    let group = user::group_path();
    let identity = user::establish(&user::UserRequest {
        passwd_path: &passwd,
        group_path: &group,
        user_name: &user_name,
        user_name_source: &layers.describe("ASTRONOMER_USER"),
        uid,
        uid_source: &layers.describe("ASTRONOMER_UID"),
        airflow_home: layers.get("AIRFLOW_HOME"),
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
    Ok(identity)
}

/// Resolves one URL; `_CMD` and `_SECRET` commands run as the service user
/// through the supervisor.
fn resolve_url(
    inbox: &SignalInbox,
    layers: &Layered,
    which: airflow_cfg::Url,
) -> Result<(airflow_cfg::Url, airflow_cfg::Resolved), Failure> {
    let env = layers.child_env();
    let path_var = layers.get("PATH").map(std::ffi::OsStr::new);
    let mut run = |argv: &[String], what: &str| {
        supervisor::steps::captured_output(inbox, argv, &env, path_var, CMD_TIME_LIMIT, what)
    };
    Ok((which, airflow_cfg::resolve(which, layers, &mut run)?))
}

/// `AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE` when set, else `DUMB_INIT_SETSID=0`
/// means `child`, else the command's default.
fn signal_scope(settings: &Settings, layers: &Layered, default: SignalScope) -> SignalScope {
    if let Some(scope) = settings.signal_scope {
        return scope;
    }
    match layers.get("DUMB_INIT_SETSID").map(str::trim) {
        Some("0") => SignalScope::Child,
        Some("1") | None => default,
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
