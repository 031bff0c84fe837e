//! What the entrypoint knows of Airflow: component names and renames, the
//! installed version (from files, never by starting Python), the start-up
//! steps (pip, migrate, admin user, init scripts) and the health checks.
//! Every subprocess it needs runs through the supervisor's spawn and reap.

pub mod components;
pub mod healthcheck;
pub mod migrations;
pub mod steps;
pub mod version;

use std::ffi::{OsStr, OsString};

use crate::env::layers::Layered;
use crate::error::Failure;
use crate::readiness::schema::ExpectedSchema;
use crate::readiness::Needs;
use crate::settings::Settings;
use crate::supervisor::program::find_program;
use components::Planned;
use version::Version;

/// The command phase's Airflow half: COMMAND after the version-aware
/// renames, and the installed version (None when unknown or not needed).
/// The version is looked for only when something depends on it: a plain
/// `-- program` pays nothing. It also decides the legacy `[core]` key.
pub fn plan_command(command: &[OsString], layers: &mut Layered) -> (Planned, Option<Version>) {
    let needs_version = command.first().and_then(|c| c.to_str()).is_some_and(|c| {
        components::is_airflow_command(c) || c == "airflow" || c.ends_with("/airflow")
    }) || [
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
    let mut planned = components::plan(command, version.map_or(3, |v| v.0));
    planned.needs_broker =
        components::uses_celery_broker(&planned.argv, layers.get("AIRFLOW__CORE__EXECUTOR"));
    if let Some(note) = &planned.note {
        if version.is_none() {
            tracing::warn!("Airflow's version is unknown (no apache_airflow dist-info found; set AIRFLOW_VERSION); using Airflow 3 rules");
        }
        tracing::info!("{note}");
    }
    (planned, version)
}

/// What the planned command waits for; `--wait-only` with no COMMAND waits
/// for the metadata database.
pub fn wait_needs(planned: &Planned, wait_only: bool) -> Needs {
    Needs {
        database: planned.needs_database,
        broker: planned.needs_broker,
        wait_only_default: wait_only && planned.argv.is_empty(),
    }
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

/// `--healthcheck`: one line for stdout and the exit code (0 healthy, 1 not).
pub fn health_verdict(layers: &Layered, given: &[OsString]) -> (String, i32) {
    let command = healthcheck::component_command(given);
    let major = installed_version(layers).map_or(3, |f| f.version.0);
    match healthcheck::run(&healthcheck::plan(&command, layers, major)) {
        Ok(detail) => (format!("healthy: {detail}\n"), 0),
        Err(reason) => (format!("unhealthy: {reason}\n"), 1),
    }
}
