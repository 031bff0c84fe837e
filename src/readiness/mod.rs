//! Readiness: is the metadata database (and the Celery broker) really
//! answering? Which URLs a command needs, the budget from the settings, and
//! the wait itself (retries, back-off, verdicts) on top of the wire clients.
//! It never reaps or starts a process: `_CMD` URLs resolve through the
//! runner that `main` hands in, and a SIGCHLD is left in the inbox.

pub mod bounded;
pub mod schema;
pub mod wait;

use crate::env::layers::Layered;
use crate::env::urls::{self, Runner};
use crate::error::Failure;
use crate::settings::{self, Settings, WaitMode};
use crate::signals::SignalInbox;
use crate::wire;
use std::time::Instant;
use wait::WaitTarget;
use wire::url::Target;

const DATABASE_LABEL: &str = "metadata database";

/// What the command needs, as the Airflow rules tell.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// A component or DB-using command: the metadata database.
    pub database: bool,
    /// A Celery worker or flower, or a scheduler with a Celery executor.
    pub broker: bool,
    /// `--wait-only` with no COMMAND: the database by default.
    pub wait_only_default: bool,
}

/// The resolve phase: every URL the command waits for, resolved (running
/// `_CMD`/`_SECRET` through `run`), parsed and logged masked.
pub fn resolve_targets(
    settings: &Settings,
    layers: &Layered,
    needs: Needs,
    run: &mut Runner<'_>,
) -> Result<Vec<WaitTarget>, Failure> {
    let mut targets = Vec::new();
    for (which, label) in wait_plan(settings, needs) {
        let resolved = urls::resolve(which, layers, run)?;
        let target = wire::url::parse(&resolved.url)
            .map_err(|e| Failure::config(format!("{}: {e}", resolved.origin)))?;
        let shown_url = wire::url::mask(&resolved.url);
        tracing::info!(
            url = shown_url.as_str(),
            origin = resolved.origin.as_str(),
            "{label}"
        );
        if target.ambiguous {
            tracing::warn!(
                url = shown_url.as_str(),
                origin = resolved.origin.as_str(),
                "the {label} URL has an `@` after its password: Airflow's libraries end the password before it, and so does this wait (host, port and database are masked in every line). If the password holds `@`, `/`, `?`, `#` or `:`, percent-encode them (%40, %2F, %3F, %23, %3A)"
            );
        }
        targets.push(WaitTarget {
            label,
            target,
            shown_url,
            origin: resolved.origin,
        });
    }
    Ok(targets)
}

/// The wait phase: until every target answers, within the budget, then
/// (when `schemas` is not empty) until the metadata database's schema is
/// at those heads, within what is left of it. Returns the metadata
/// database's target when it was among those waited for.
pub fn wait_until_ready(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &Layered,
    targets: Vec<WaitTarget>,
    schemas: &[schema::ExpectedSchema],
) -> Result<Option<Target>, Failure> {
    let database = targets
        .iter()
        .find(|t| t.label == DATABASE_LABEL)
        .map(|t| (t.target.clone(), t.shown_url.clone()));
    let budget = wait_budget(settings, layers)?;
    if budget.total.is_zero() {
        if !targets.is_empty() {
            tracing::info!("CONNECTION_CHECK_MAX_COUNT=0: not waiting");
        }
        return Ok(database.map(|(t, _)| t));
    }
    let started = Instant::now();
    // With schemas to wait for, their query is the database's probe too:
    // one connection and one login instead of two.
    let mut targets = targets;
    if !schemas.is_empty() {
        targets.retain(|t| t.label != DATABASE_LABEL);
    }
    wait::wait_for_all(inbox, targets, budget)?;
    match database {
        Some((target, shown)) => {
            if !schemas.is_empty() {
                let deadline = started + budget.total;
                schema::wait_for_heads(inbox, &target, &shown, schemas, started, deadline)?;
            }
            Ok(Some(target))
        }
        None => Ok(None),
    }
}

/// Which URLs to wait for: WAIT=auto follows the command (the metadata DB
/// for components and DB commands, the broker for Celery workers and a
/// scheduler with a Celery executor); `always` waits for the DB whatever the
/// command; `never` skips it all.
fn wait_plan(settings: &Settings, needs: Needs) -> Vec<(urls::Url, &'static str)> {
    let (database, broker) = match settings.wait {
        WaitMode::Never => (false, false),
        WaitMode::Always => (true, needs.broker),
        WaitMode::Auto => (needs.wait_only_default || needs.database, needs.broker),
    };
    let mut plan = Vec::new();
    if database {
        plan.push((urls::Url::MetadataDatabase, DATABASE_LABEL));
    }
    if broker {
        plan.push((urls::Url::CeleryBroker, "Celery broker"));
    }
    plan
}

/// WAIT_TIMEOUT, else CONNECTION_CHECK_MAX_COUNT × CONNECTION_CHECK_SLEEP_TIME.
fn wait_budget(settings: &Settings, layers: &Layered) -> Result<wait::Budget, Failure> {
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
    Ok(wait::Budget {
        total,
        max_interval: settings.wait_interval,
    })
}
