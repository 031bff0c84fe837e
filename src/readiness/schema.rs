//! The schema wait: once the metadata database answers, poll its alembic
//! version tables until they hold the expected heads (compared as sets),
//! within what is left of the wait budget, answering TERM/INT at once. It
//! only reads (SELECT); it never migrates and never starts a process.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::{code, Failure};
use crate::signals::{is_terminating, SignalInbox};
use crate::wire::sql::{self, SqlError};
use crate::wire::url::Target;
use crate::wire::Verdict;

/// One alembic-managed schema the installed Airflow expects.
#[derive(Debug, Clone)]
pub struct ExpectedSchema {
    /// "Airflow", "FAB"
    pub name: &'static str,
    pub version_table: &'static str,
    pub head: String,
    /// Every revision the installed migration files define.
    pub known: BTreeSet<String>,
}

/// Where one schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    AtHead,
    /// Behind (or not created yet): the revisions in the table, maybe none.
    Behind(BTreeSet<String>),
    /// A revision the installed files do not define: a newer schema.
    Unknown(BTreeSet<String>),
}

const POLL_EVERY: Duration = Duration::from_millis(250);
const RETRY_CONNECT: Duration = Duration::from_millis(100);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The revisions in each schema's version table (an absent table is an
/// empty set), on one connection.
pub fn current_revisions(
    target: &Target,
    timeout: Duration,
    schemas: &[ExpectedSchema],
) -> Result<Vec<BTreeSet<String>>, SqlError> {
    let queries: Vec<String> = schemas
        .iter()
        .map(|s| format!("SELECT version_num FROM {}", s.version_table))
        .collect();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    sql::query_all(target, timeout, &refs)?
        .into_iter()
        .map(|result| match result {
            Ok(rows) => Ok(rows
                .rows
                .into_iter()
                .filter_map(|row| row.into_iter().next().flatten())
                .collect()),
            Err(e) if e.is_missing_table() => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        })
        .collect()
}

pub fn standing(schema: &ExpectedSchema, current: &BTreeSet<String>) -> Standing {
    if current.len() == 1 && current.contains(&schema.head) {
        Standing::AtHead
    } else if current.iter().any(|r| !schema.known.contains(r)) {
        Standing::Unknown(current.clone())
    } else {
        Standing::Behind(current.clone())
    }
}

/// "9ff64e1c35d3", "a, b", or "empty" for no revision.
pub fn show(revisions: &BTreeSet<String>) -> String {
    if revisions.is_empty() {
        "empty".into()
    } else {
        revisions.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The fatal line for a schema newer than the installed Airflow knows.
pub fn unknown_revision(schema: &ExpectedSchema, current: &BTreeSet<String>) -> Failure {
    Failure::new(
        code::UNAVAILABLE,
        format!(
            "the {} schema in the database is at {}, which the installed migrations (head {}) do not define: the database was migrated by a newer version; run the matching image",
            schema.name,
            show(current),
            schema.head
        ),
    )
}

/// Waits until every schema is at its head or `deadline` passes.
pub fn wait_for_heads(
    inbox: &SignalInbox,
    target: &Target,
    shown_url: &str,
    schemas: &[ExpectedSchema],
    started: Instant,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut last_log: Option<Instant> = None;
    loop {
        let mut connected = true;
        let left = deadline.saturating_duration_since(Instant::now());
        let per_attempt = left.clamp(Duration::from_millis(200), Duration::from_secs(3));
        let reason = match revisions_off_thread(inbox, target, per_attempt, schemas)? {
            Ok(current) => {
                let mut behind = Vec::new();
                for (schema, revisions) in schemas.iter().zip(&current) {
                    match standing(schema, revisions) {
                        Standing::AtHead => {}
                        Standing::Unknown(revisions) => {
                            return Err(unknown_revision(schema, &revisions))
                        }
                        Standing::Behind(revisions) => behind.push(format!(
                            "{} schema at {}, waiting for {}",
                            schema.name,
                            show(&revisions),
                            schema.head
                        )),
                    }
                }
                if behind.is_empty() {
                    let heads: Vec<String> = schemas
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.head))
                        .collect();
                    tracing::info!(
                        elapsed_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                        "the schema is at its head ({})",
                        heads.join(", ")
                    );
                    return Ok(());
                }
                behind.join("; ")
            }
            Err(SqlError::Connection(Verdict::Fatal(reason))) => {
                return Err(Failure::new(
                    code::UNAVAILABLE,
                    format!(
                    "metadata database refused us: {reason} — {shown_url}; gave up after {:.1}s",
                    started.elapsed().as_secs_f64()
                ),
                ))
            }
            Err(SqlError::Connection(Verdict::NotYet(reason))) => {
                connected = false;
                format!("the metadata database is not ready: {reason}")
            }
            Err(e) => format!("cannot read the schema version: {e}"),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::new(
                code::UNAVAILABLE,
                format!(
                    "the metadata database's schema is not at its head after {:.1}s: {reason} — {shown_url}; run `airflow db migrate` (or _AIRFLOW_DB_MIGRATE=true on one container), or raise AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        if last_log.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            last_log = Some(now);
            tracing::info!("{reason}");
        }
        // Not answering yet: look again soon, as the probe would.
        let pause = if connected { POLL_EVERY } else { RETRY_CONNECT };
        pause_until(inbox, (now + pause).min(deadline))?;
    }
}

/// `current_revisions` on a thread of its own, within `timeout`, while
/// this thread answers signals (TERM/INT: 128+N at once). Not done by then
/// is a connection that is not ready yet.
pub fn revisions_off_thread(
    inbox: &SignalInbox,
    target: &Target,
    timeout: Duration,
    schemas: &[ExpectedSchema],
) -> Result<Result<Vec<BTreeSet<String>>, SqlError>, Failure> {
    let (target, schemas) = (target.clone(), schemas.to_vec());
    let deadline = Instant::now() + timeout;
    let done = super::bounded::off_thread(inbox, deadline, move || {
        current_revisions(&target, timeout, &schemas)
    })?;
    Ok(done.unwrap_or_else(|| {
        Err(SqlError::Connection(Verdict::NotYet(
            "the query did not finish in time".into(),
        )))
    }))
}

/// Waits until `until` while answering signals: TERM/INT end the wait
/// (128+N); a SIGCHLD is left in the inbox for the supervisor.
pub fn pause_until(inbox: &SignalInbox, until: Instant) -> Result<(), Failure> {
    while Instant::now() < until {
        for signal in inbox.wait(Some(until), None) {
            if is_terminating(signal) {
                return Err(Failure::interrupted(signal));
            }
            if signal == libc::SIGCHLD {
                inbox.put_back(signal);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn standing_compares_as_sets() {
        let schema = ExpectedSchema {
            name: "Airflow",
            version_table: "alembic_version",
            head: "h".into(),
            known: set(&["a", "h"]),
        };
        assert_eq!(standing(&schema, &set(&["h"])), Standing::AtHead);
        assert_eq!(
            standing(&schema, &set(&["a"])),
            Standing::Behind(set(&["a"]))
        );
        assert_eq!(standing(&schema, &set(&[])), Standing::Behind(set(&[])));
        assert_eq!(
            standing(&schema, &set(&["h", "a"])),
            Standing::Behind(set(&["a", "h"]))
        );
        assert_eq!(
            standing(&schema, &set(&["z"])),
            Standing::Unknown(set(&["z"]))
        );
    }
}
