//! `clean-logs`: the official image's log groomer (`/clean-logs`, which the
//! Helm chart's log-groomer sidecars run), without a shell, `find`, `xargs`
//! or `sleep`. Every AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES, on the wall
//! clock's multiples as the official script, it removes the `*.log` files
//! under $AIRFLOW_HOME/logs older than AIRFLOW__LOG_RETENTION_DAYS whole days
//! (`find -mtime +N`), skipping `lost+found`, then the directories left
//! empty; one log line a round. It sleeps in the signal inbox between rounds
//! (no wake-up) and returns at once on TERM, INT, QUIT or HUP. It starts no
//! process and only ever deletes below that directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::env::layers::Layered;
use crate::error::Failure;
use crate::signals::{is_terminating, signal_name, SignalInbox};

/// The command word: `airflow-entrypoint clean-logs`, `/clean-logs`.
pub const COMMAND: &str = "clean-logs";

const DAY: u64 = 24 * 60 * 60;

/// True when COMMAND is the log cleanup.
pub fn is_command(command: &[OsString]) -> bool {
    command.first().is_some_and(|c| c == COMMAND)
}

/// What a round does, from the settings the official script reads.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub directory: PathBuf,
    pub retention_days: u64,
    pub every: Duration,
}

impl Plan {
    /// The plan from the environment layers; a malformed value is a
    /// configuration error (exit 78) naming the variable and what it takes.
    pub fn from_layers(layers: &Layered) -> Result<Plan, Failure> {
        let home = layers
            .get("AIRFLOW_HOME")
            .filter(|h| !h.is_empty())
            .unwrap_or("/usr/local/airflow");
        let whole = |key: &str, default: u64, least: u64, what: &str| {
            let Some(text) = layers.get(key) else {
                return Ok(default);
            };
            text.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= least)
                .ok_or_else(|| {
                    Failure::config(format!(
                        "{}={text:?} is not {what}; expected e.g. {default}",
                        layers.describe(key)
                    ))
                })
        };
        let retention_days = whole(
            "AIRFLOW__LOG_RETENTION_DAYS",
            15,
            0,
            "a whole number of days (0 or more)",
        )?;
        let minutes = whole(
            "AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES",
            15,
            1,
            "a whole number of minutes (1 or more)",
        )?;
        Ok(Plan {
            directory: Path::new(home).join("logs"),
            retention_days,
            every: Duration::from_secs(minutes.saturating_mul(60)),
        })
    }
}

/// What one round removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    pub failures: u64,
}

/// Runs rounds until a terminating signal; returns the exit code (0).
pub fn run(inbox: &SignalInbox, layers: &Layered) -> Result<i32, Failure> {
    let plan = Plan::from_layers(layers)?;
    loop {
        let started = Instant::now();
        let now = SystemTime::now();
        let round = clean_once(&plan.directory, plan.retention_days, now);
        let next = next_round(now, plan.every);
        tracing::info!(
            files = round.files,
            bytes = round.bytes,
            directories = round.directories,
            "clean-logs: removed {} *.log file(s) older than {} day(s) ({} bytes freed) and {} empty director{} under {} in {:.1} ms{}; next round in {} s",
            round.files,
            plan.retention_days,
            round.bytes,
            round.directories,
            if round.directories == 1 { "y" } else { "ies" },
            plan.directory.display(),
            started.elapsed().as_secs_f64() * 1000.0,
            if round.failures > 0 {
                format!(", {} could not be removed", round.failures)
            } else {
                String::new()
            },
            next.as_secs(),
        );
        let deadline = Instant::now() + next;
        while Instant::now() < deadline {
            for signal in inbox.wait(Some(deadline), None) {
                if is_terminating(signal) {
                    tracing::info!("clean-logs: {} received; stopping", signal_name(signal));
                    return Ok(0);
                }
            }
        }
    }
}

/// How long until the next multiple of `every` on the wall clock (as the
/// official script sleeps), at least one second.
fn next_round(now: SystemTime, every: Duration) -> Duration {
    let every = every.as_secs().max(1);
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Duration::from_secs((every - seconds % every).max(1))
}

/// One round below `top`: `*.log` regular files whose age in whole days is
/// above `retention_days`, then every directory left empty (never `top`
/// itself, which is often a mount point, nor `lost+found`).
pub fn clean_once(top: &Path, retention_days: u64, now: SystemTime) -> Round {
    let mut round = Round::default();
    if let Ok(entries) = std::fs::read_dir(top) {
        for entry in entries.flatten() {
            clean_entry(&entry.path(), retention_days, now, &mut round);
        }
    }
    round
}

/// Cleans one entry; returns true when it is gone (removed, or a directory
/// that ended up empty and was removed).
fn clean_entry(path: &Path, retention_days: u64, now: SystemTime, round: &mut Round) -> bool {
    // Never follows a symbolic link: only what is really below the top.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let name = path.file_name().unwrap_or_default();
    if meta.is_dir() {
        if name == "lost+found" {
            return false;
        }
        let mut left = 0;
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                if !clean_entry(&entry.path(), retention_days, now, round) {
                    left += 1;
                }
            }
        } else {
            return false;
        }
        if left == 0 {
            if std::fs::remove_dir(path).is_ok() {
                round.directories += 1;
                return true;
            }
            round.failures += 1;
        }
        return false;
    }
    let is_log = name.as_encoded_bytes().ends_with(b".log");
    if !meta.is_file() || !is_log {
        return false;
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default();
    if age.as_secs() / DAY <= retention_days {
        return false;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            round.files += 1;
            round.bytes += meta.len();
            true
        }
        Err(_) => {
            round.failures += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_fall_on_multiples_of_the_frequency() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let every = Duration::from_secs(900);
        assert_eq!(next_round(at(900 * 1000), every), every);
        assert_eq!(next_round(at(900 * 1000 + 1), every).as_secs(), 899);
        assert_eq!(next_round(at(900 * 1000 + 899), every).as_secs(), 1);
    }
}
