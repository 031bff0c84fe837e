//! What the entrypoint knows of Airflow: component names and renames, the
//! installed version (from files, never by starting Python), the start-up
//! steps (pip, migrate, admin user, init scripts) and the health checks.
//! Every subprocess it needs runs through the supervisor's spawn and reap.

pub mod components;
pub mod healthcheck;
pub mod steps;
pub mod version;

use std::ffi::{OsStr, OsString};

use crate::env::layers::Layered;
use crate::error::Failure;
use crate::readiness::Needs;
use crate::supervisor::program::find_program;
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
        planned.needs_broker =
            components::uses_celery_broker(&planned.argv, layers.get("AIRFLOW__CORE__EXECUTOR"));
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

/// One component of the command line (the only one for a single command).
pub struct Member {
    /// The prefix of its output lines when there are several.
    pub name: String,
    pub planned: Planned,
}

impl Member {
    pub fn is_api_server(&self) -> bool {
        matches!(
            components::airflow_subcommand(&self.planned.argv),
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
/// with no COMMAND waits for the metadata database.
pub fn wait_needs(members: &[Member], wait_only: bool) -> Needs {
    Needs {
        database: members.iter().any(|m| m.planned.needs_database),
        broker: members.iter().any(|m| m.planned.needs_broker),
        wait_only_default: wait_only && members.iter().all(|m| m.planned.argv.is_empty()),
    }
}

/// The api-server's readiness probe, as `--healthcheck` asks it: true
/// when it answers within the given time.
pub fn api_server_probe(
    layers: &Layered,
    member: &Member,
) -> Box<dyn FnMut(std::time::Duration) -> bool> {
    let major = installed_version(layers).map_or(3, |f| f.version.0);
    let check = healthcheck::plan(&member.planned.argv, layers, major);
    Box::new(move |budget| healthcheck::run_within(&check, budget).is_ok())
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

/// `--healthcheck`: one line for stdout and the exit code (0 healthy, 1 not).
pub fn health_verdict(layers: &Layered, given: &[OsString]) -> (String, i32) {
    let command = healthcheck::component_command(given);
    let major = installed_version(layers).map_or(3, |f| f.version.0);
    match healthcheck::run(&healthcheck::plan(&command, layers, major)) {
        Ok(detail) => (format!("healthy: {detail}\n"), 0),
        Err(reason) => (format!("unhealthy: {reason}\n"), 1),
    }
}
