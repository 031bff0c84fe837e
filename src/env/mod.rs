//! The environment phase: the layered child environment and each variable's
//! provenance, the `.env` and `airflow.cfg` syntaxes, and resolving the
//! metadata database and broker URLs as Airflow does. It reads files only;
//! a `_CMD` runs through the runner `main` hands in, never from here.

pub mod cfg_file;
pub mod file;
pub mod layers;
pub mod options;
pub mod print;
pub mod text_file;
pub mod urls;

use crate::error::Failure;
use crate::settings::Settings;
use layers::{LayerFiles, Layered};

/// The environment phase: the layers from ENV_DIR, ENV_FILES and the
/// process environment, read as root (mounted secrets may be root-only).
pub fn load(settings: &Settings) -> Result<Layered, Failure> {
    let mut layers = Layered::load(
        &LayerFiles {
            env_dir: &settings.env_dir,
            env_dir_explicit: settings.env_dir_explicit,
            env_files: &settings.env_files,
        },
        std::env::vars_os().collect(),
    )?;
    layers.copy_legacy_keys(false);
    Ok(layers)
}

/// LOG_ENV: the `--print-env` table in the log, one line a variable.
pub fn log_if_asked(settings: &Settings, layers: &Layered) {
    if settings.log_env {
        for line in print::table(layers).lines() {
            tracing::info!("env {line}");
        }
    }
}
