//! What the entrypoint knows of Airflow: component names and renames, the
//! installed version (from files, never by starting Python), the start-up
//! steps (pip, migrate, admin user, init scripts) and the health checks.
//! Every subprocess it needs runs through the supervisor's spawn and reap.

pub mod celery;
pub mod components;
pub mod flags;
pub mod healthcheck;
pub mod jobs;
pub mod migrations;
pub mod native;
pub mod steps;
pub mod version;

use std::ffi::{OsStr, OsString};

use crate::env::layers::Layered;
use crate::env::urls;
use crate::error::Failure;
use crate::readiness::schema::ExpectedSchema;
use crate::readiness::Needs;
use crate::settings::Settings;
use crate::signals::SignalInbox;
use crate::supervisor::program::find_program;
use crate::wire::url::Target;
use components::Planned;
use version::Version;

/// The command phase's Airflow half: COMMAND after the version-aware
/// renames, and the installed version (None when unknown or not needed).
/// The version is looked for only when something depends on it: a plain
/// `-- program` pays nothing. It also decides the legacy `[core]` key.
pub fn plan_command(
    command: &[OsString],
    layers: &mut Layered,
) -> Result<(Vec<Member>, Option<Version>), Failure> {
    let parts = components::split_members(command)
        .map_err(|why| Failure::usage(format!("COMMAND: {why}")))?
        .unwrap_or_else(|| vec![command.to_vec()]);
    let parts: Vec<Vec<OsString>> = parts
        .into_iter()
        .map(|part| as_airflow_subcommand(part, layers))
        .collect();
    let names_airflow = |part: &Vec<OsString>| {
        part.first().and_then(|c| c.to_str()).is_some_and(|c| {
            components::is_airflow_command(c) || c == "airflow" || c.ends_with("/airflow")
        })
    };
    let needs_version = parts.iter().any(names_airflow)
        || [
            "_AIRFLOW_DB_MIGRATE",
            "_AIRFLOW_DB_UPGRADE",
            "_AIRFLOW_WWW_USER_CREATE",
            "_PIP_ADDITIONAL_REQUIREMENTS",
        ]
        .iter()
        .any(|k| layers.get(k).is_some());
    let found = if needs_version {
        installed_version(layers)
    } else {
        None
    };
    if let Some(found) = &found {
        tracing::debug!(
            version = found.version.to_string(),
            source = found.source.as_str(),
            "Airflow version"
        );
    }
    let version = found.map(|f| f.version);
    layers.copy_legacy_keys(version.is_some_and(|v| v < Version(2, 3, 0)));
    let mut members = Vec::new();
    for part in &parts {
        let mut planned = components::plan(part, version.map_or(3, |v| v.0));
        planned.needs_broker = components::uses_celery_broker(
            &planned.component,
            layers.get("AIRFLOW__CORE__EXECUTOR"),
        );
        if crate::clean_logs::is_command(part) {
            // A part of a group: this binary again, as its own process.
            planned.argv = clean_logs_member(part)?;
        }
        if let Some(note) = &planned.note {
            if version.is_none() {
                tracing::warn!("Airflow's version is unknown (no apache_airflow dist-info found; set AIRFLOW_VERSION); using Airflow 3 rules");
            }
            tracing::info!("{note}");
        }
        members.push(Member {
            name: unique_name(&members, components::member_name(part)),
            planned,
        });
    }
    // The api-server starts first: Airflow 3 tasks reach its execution API.
    members.sort_by_key(|m| !m.is_api_server());
    Ok((members, version))
}

/// The official entrypoint's rule: a bare first word other than `bash` and
/// `python` is an Airflow subcommand. Known names are mapped by `plan`; an
/// unknown word that is no program on PATH runs as `airflow WORD` when an
/// `airflow` is installed (otherwise it stays, for a plain "not found").
fn as_airflow_subcommand(part: Vec<OsString>, layers: &Layered) -> Vec<OsString> {
    let Some(word) = part.first().and_then(|w| w.to_str()) else {
        return part;
    };
    let plain = !word.is_empty()
        && !word.contains('/')
        && !word.starts_with('-')
        && !components::is_airflow_command(word)
        && !matches!(
            word,
            "airflow" | "bash" | "python" | crate::clean_logs::COMMAND
        );
    if !plain {
        return part;
    }
    let path = layers.get("PATH").map(OsStr::new);
    if find_program(OsStr::new(word), path).is_ok()
        || find_program(OsStr::new("airflow"), path).is_err()
    {
        return part;
    }
    tracing::info!("`{word}` is not a program on PATH: running `airflow {word}`, as the official entrypoint does");
    std::iter::once(OsString::from("airflow"))
        .chain(part)
        .collect()
}

/// `clean-logs` as a part of a group: this binary, by its own path.
fn clean_logs_member(part: &[OsString]) -> Result<Vec<OsString>, Failure> {
    let own = std::env::current_exe()
        .map_err(|e| Failure::internal(format!("finding this binary for clean-logs: {e}")))?;
    Ok(std::iter::once(own.into_os_string())
        .chain(part.iter().cloned())
        .collect())
}

/// One component of the command line (the only one for a single command).
pub struct Member {
    /// The prefix of its output lines when there are several.
    pub name: String,
    pub planned: Planned,
}

impl Member {
    pub fn is_api_server(&self) -> bool {
        matches!(
            components::airflow_subcommand(&self.planned.component),
            Some(("api-server" | "webserver", _))
        )
    }
}

/// `name`, or `name-2`, `name-3`... when an earlier member has it.
fn unique_name(members: &[Member], name: String) -> String {
    let taken = |n: &str| members.iter().any(|m| m.name == n);
    if !taken(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or(name)
}

/// What the planned command (every member of it) waits for; `--wait-only`
/// with no COMMAND waits for the metadata database, and so does a start-up
/// that migrates it.
pub fn wait_needs(members: &[Member], layers: &Layered, wait_only: bool) -> Needs {
    let migrates = ["_AIRFLOW_DB_MIGRATE", "_AIRFLOW_DB_UPGRADE"]
        .iter()
        .any(|k| layers.get(k).and_then(crate::settings::parse_bool) == Some(true));
    Needs {
        database: members.iter().any(|m| m.planned.needs_database) || (migrates && !wait_only),
        broker: members.iter().any(|m| m.planned.needs_broker),
        wait_only_default: wait_only && members.iter().all(|m| m.planned.argv.is_empty()),
    }
}

/// The api-server's readiness probe, as `--healthcheck` asks it: true
/// when it answers within the given time.
pub fn api_server_probe(
    layers: &Layered,
    member: &Member,
) -> std::sync::Arc<dyn Fn(std::time::Duration) -> bool + Send + Sync> {
    let major = installed_version(layers).map_or(3, |f| f.version.0);
    let check = healthcheck::plan(&member.planned.argv, layers, major);
    std::sync::Arc::new(move |budget| healthcheck::run_within(&check, budget).is_ok())
}

/// The installed Airflow, from AIRFLOW_VERSION or the files beside the
/// `airflow` on the service user's PATH (the shell's default when unset).
pub fn installed_version(layers: &Layered) -> Option<version::Found> {
    let path = layers.get("PATH").map(OsStr::new);
    let script = find_program(OsStr::new("airflow"), path).ok();
    version::detect(
        layers.get("AIRFLOW_VERSION"),
        script.as_deref(),
        layers.get("HOME"),
    )
}

/// The schemas the wait waits for: none unless WAIT_FOR_MIGRATIONS.
pub fn schemas_to_wait_for(
    settings: &Settings,
    layers: &Layered,
    version: Option<Version>,
) -> Result<Vec<ExpectedSchema>, Failure> {
    if !settings.wait_for_migrations || settings.wait == crate::settings::WaitMode::Never {
        return Ok(Vec::new());
    }
    installed_schemas(layers, version)
}

/// The schema heads of the Airflow on the service user's PATH (and FAB's
/// when its DB manager runs).
pub fn installed_schemas(
    layers: &Layered,
    version: Option<Version>,
) -> Result<Vec<ExpectedSchema>, Failure> {
    let path = layers.get("PATH").map(OsStr::new);
    let script = find_program(OsStr::new("airflow"), path).ok();
    let version = version.or_else(|| installed_version(layers).map(|f| f.version));
    let sites = version::site_dirs(script.as_deref(), layers.get("HOME"));
    migrations::expected_schemas(layers, &sites, version)
}

/// `--healthcheck`: prints the verdict line; the exit code (0 healthy, 1 not).
pub fn healthcheck(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &Layered,
    given: &[OsString],
) -> i32 {
    let (line, code) = health_verdict(inbox, settings, layers, given);
    // A health server's body or a database's error may quote a URL.
    let line = crate::redact::redact(&line);
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, line.as_bytes());
    let _ = std::io::Write::flush(&mut out);
    code
}

/// `--healthcheck`'s line for stdout and the exit code.
fn health_verdict(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &Layered,
    given: &[OsString],
) -> (String, i32) {
    // One budget for every part a group has.
    let deadline = std::time::Instant::now() + healthcheck::BUDGET;
    let major = installed_version(layers).map_or(3, |f| f.version.0);
    let mut answers = Vec::new();
    let mut nothing_asked = true;
    for subject in healthcheck::subjects(given) {
        let check = healthcheck::plan(&subject.command, layers, major);
        let asks = !matches!(check, healthcheck::Check::Running(_));
        nothing_asked &= !asks;
        // A stopped or exited process is unhealthy before anything is asked.
        let process = subject.pid.map(healthcheck::process_verdict).transpose();
        let verdict = process.and_then(|state| {
            let answer = match check {
                healthcheck::Check::Jobs { job_type, why } => {
                    job_health(inbox, settings, layers, job_type, deadline)
                        .map(|detail| format!("{detail} ({why})"))
                }
                healthcheck::Check::CeleryWorker => {
                    let path = layers.get("PATH").map(OsString::from);
                    let mut run =
                        crate::supervisor::steps::command_runner(inbox, layers.child_env(), path);
                    celery::health(
                        inbox,
                        layers,
                        settings.hostname.as_deref(),
                        &mut run,
                        deadline,
                    )
                }
                check => healthcheck::run_within(
                    &check,
                    deadline.saturating_duration_since(std::time::Instant::now()),
                ),
            }?;
            Ok(match state {
                Some(state) if !asks => format!("{answer}; {state}"),
                _ => answer,
            })
        });
        match verdict {
            Ok(detail) => answers.push(detail),
            Err(reason) => return (format!("unhealthy: {reason}\n"), 1),
        }
    }
    // Nothing to ask is said as such; it exits 0, as documented, so that a
    // HEALTHCHECK on a plain command does not mark it unhealthy.
    let verdict = if nothing_asked { "" } else { "healthy: " };
    (format!("{verdict}{}\n", answers.join("; ")), 0)
}

/// The metadata database's target, resolved as the wait does (a `_CMD`
/// runs through the supervisor's mechanism).
pub fn database_target(inbox: &SignalInbox, layers: &Layered) -> Result<Target, Failure> {
    let path = layers.get("PATH").map(OsString::from);
    let mut run = crate::supervisor::steps::command_runner(inbox, layers.child_env(), path);
    let resolved = urls::resolve(urls::Url::MetadataDatabase, layers, &mut run)?;
    crate::wire::url::parse(&resolved.url)
        .map_err(|e| Failure::config(format!("{}: {e}", resolved.origin)))
}

/// This host's name as Airflow records it on its jobs: HOSTNAME when set,
/// else Airflow's default callable; a custom callable needs HOSTNAME.
pub fn job_hostname(settings: &Settings, layers: &Layered) -> Result<String, String> {
    if let Some(name) = &settings.hostname {
        return Ok(name.clone());
    }
    match jobs::custom_hostname_callable(layers).map_err(|f| f.message)? {
        Some(callable) => Err(format!(
            "[core] hostname_callable is {callable}, which only Python can call; set AIRFLOW_ENTRYPOINT_HOSTNAME (--hostname) to the name it returns"
        )),
        None => Ok(jobs::airflow_fqdn()),
    }
}

fn job_health(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &Layered,
    job_type: &str,
    deadline: std::time::Instant,
) -> Result<String, String> {
    let host = job_hostname(settings, layers)?;
    let target = database_target(inbox, layers).map_err(|f| f.message)?;
    let threshold = jobs::threshold(layers, job_type).map_err(|f| f.message)?;
    let filter = jobs::JobFilter {
        job_type: Some(job_type.to_string()),
        hostname: Some(host.clone()),
        limit: 1,
    };
    // Off this thread, within what is left of the check's 5 s: a database
    // that drips cannot hold the probe, and a signal ends it at once.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let timeout = left.max(std::time::Duration::from_millis(100));
    let found = crate::readiness::bounded::off_thread(inbox, deadline, move || {
        jobs::running_jobs(&target, timeout, &filter)
    })
    .map_err(|f| {
        if f.exit_code > 128 {
            format!(
                "stopped by SIG{}",
                crate::signals::signal_name(f.exit_code - 128)
            )
        } else {
            f.message
        }
    })?
    .ok_or("the metadata database did not answer within the health check's 5 s")?
    .map_err(|e| format!("the metadata database did not answer: {e}"))?;
    healthcheck::job_verdict(&found, job_type, &host, threshold)
}
