//! Native answers to `airflow jobs check …` and `airflow db check-migrations
//! …` (bare or after `airflow`, as the Helm chart passes them): the same
//! flags, messages, streams and exit codes as Airflow 3.3.2, from one SQL
//! query instead of a Python start-up. Anything it does not know (a flag,
//! a custom `hostname_callable`) goes to the real `airflow`, said in one
//! debug line. It only reads the database.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::airflow::jobs::{self, JobFilter, JOB_TYPES};
use crate::airflow::version::Version;
use crate::env::layers::Layered;
use crate::env::urls::Runner;
use crate::error::Failure;
use crate::readiness::bounded::off_thread;
use crate::readiness::schema::{pause_until, revisions_off_thread};
use crate::settings::Settings;
use crate::signals::SignalInbox;
use crate::wire::url::Target;

/// The native `jobs check`'s query, connect to last row.
const JOBS_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A command this module answers, with its flags parsed.
#[derive(Debug, PartialEq)]
pub enum NativeCommand {
    JobsCheck {
        job_type: Option<String>,
        hostname: Option<String>,
        local: bool,
        limit: u64,
        allow_multiple: bool,
    },
    CheckMigrations {
        timeout: u64,
    },
}

/// True when COMMAND is a form answered natively, Airflow's or Celery's
/// (for the multi-call links: anything else goes to the real program at
/// once).
pub fn is_probe(argv: &[OsString]) -> bool {
    matches!(super::celery::parse(argv), Ok(Some(_))) || matches!(parse(argv), Ok(Some(_)))
}

/// The command's native form, or why the real `airflow` must answer it.
pub fn parse(argv: &[OsString]) -> Result<Option<NativeCommand>, String> {
    let Some((sub, rest)) = crate::airflow::components::airflow_subcommand(argv) else {
        return Ok(None);
    };
    let Some((action, flags)) = rest.split_first() else {
        return Ok(None);
    };
    let mut items = super::flags::FlagWords::new(flags)?;
    match (sub, action.to_str()) {
        ("jobs", Some("check")) => {
            let (mut job_type, mut hostname, mut local, mut limit, mut allow_multiple) =
                (None, None, false, 1, false);
            while let Some(flag) = items.next() {
                match flag.as_str() {
                    "--job-type" => {
                        let v = items.value_of(&flag)?;
                        if !JOB_TYPES.contains(&v.as_str()) {
                            return Err(format!("--job-type {v} is not one Airflow accepts"));
                        }
                        job_type = Some(v);
                    }
                    "--hostname" => hostname = Some(items.value_of(&flag)?),
                    "--local" => local = true,
                    "--limit" => {
                        let v = items.value_of(&flag)?;
                        limit = v
                            .parse::<u64>()
                            .map_err(|_| format!("--limit {v} is not a whole number"))?;
                    }
                    "--allow-multiple" => allow_multiple = true,
                    "-v" | "--verbose" => {}
                    other => return Err(format!("{other} is not a flag this answers")),
                }
            }
            Ok(Some(NativeCommand::JobsCheck {
                job_type,
                hostname,
                local,
                limit,
                allow_multiple,
            }))
        }
        ("db", Some("check-migrations")) => {
            let mut timeout = 60;
            while let Some(flag) = items.next() {
                match flag.as_str() {
                    "-t" | "--migration-wait-timeout" => {
                        let v = items.value_of(&flag)?;
                        timeout = v
                            .parse::<u64>()
                            .map_err(|_| format!("{flag} {v} is not a whole number"))?;
                    }
                    "-v" | "--verbose" => {}
                    other => return Err(format!("{other} is not a flag this answers")),
                }
            }
            Ok(Some(NativeCommand::CheckMigrations { timeout }))
        }
        _ => Ok(None),
    }
}

/// The native answer's exit code, or None: run the command as usual.
pub fn answer(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &Layered,
    members: &[super::Member],
    database: &Option<Target>,
    run: &mut Runner<'_>,
) -> Result<Option<i32>, Failure> {
    // Only a single command can be one of the checks.
    let [member] = members else {
        return Ok(None);
    };
    let argv = &member.planned.argv;
    if !settings.native_checks {
        return Ok(None);
    }
    match super::celery::parse(argv) {
        Ok(None) => {}
        Ok(Some(ping)) => {
            return match super::celery::plan(layers, ping.broker.as_deref(), run)? {
                Ok(plan) => super::celery::answer_ping(inbox, &ping, &plan).map(Some),
                Err(why) => {
                    tracing::debug!("handing the command to celery: {why}");
                    Ok(None)
                }
            };
        }
        Err(why) => {
            tracing::debug!("handing the command to celery: {why}");
            return Ok(None);
        }
    }
    let command = match parse(argv) {
        Ok(Some(command)) => command,
        Ok(None) => return Ok(None),
        Err(why) => {
            tracing::debug!("handing the command to airflow: {why}");
            return Ok(None);
        }
    };
    let Some(target) = database.as_ref() else {
        tracing::debug!("handing the command to airflow: the metadata database was not waited for");
        return Ok(None);
    };
    if !matches!(
        target.kind,
        crate::wire::url::Kind::Postgres | crate::wire::url::Kind::Mysql
    ) {
        tracing::debug!(
            "handing the command to airflow: only PostgreSQL and MySQL are read natively"
        );
        return Ok(None);
    }
    match command {
        NativeCommand::JobsCheck {
            job_type,
            hostname,
            local,
            limit,
            allow_multiple,
        } => {
            if allow_multiple && limit == 1 {
                return Ok(Some(fail("To use option --allow-multiple, you must set the limit to a value greater than 1 or 0 to disable it.")));
            }
            if hostname.is_some() && local {
                return Ok(Some(fail(
                    "You can't use --hostname and --local at the same time",
                )));
            }
            let hostname = if local {
                match crate::airflow::job_hostname(settings, layers) {
                    Ok(name) => Some(name),
                    Err(why) => {
                        tracing::debug!("handing the command to airflow: {why}");
                        return Ok(None);
                    }
                }
            } else {
                hostname
            };
            let filter = JobFilter {
                job_type,
                hostname,
                limit,
            };
            // Off this thread, so that TERM/INT end it at once.
            let owned = target.clone();
            let deadline = Instant::now() + JOBS_QUERY_TIMEOUT;
            let found = off_thread(inbox, deadline, move || {
                jobs::running_jobs(&owned, JOBS_QUERY_TIMEOUT, &filter)
            })?
            .unwrap_or_else(|| {
                Err(crate::wire::sql::SqlError::Connection(
                    crate::wire::Verdict::NotYet("timed out".into()),
                ))
            })
            .map_err(|e| Failure::new(1, format!("the metadata database did not answer: {e}")))?;
            let mut alive = 0;
            for job in &found {
                let threshold = jobs::threshold(layers, &job.job_type)?;
                if job.age.is_some_and(|age| age < threshold) {
                    alive += 1;
                }
            }
            Ok(Some(match alive {
                0 => fail("No alive jobs found."),
                n if n > 1 && !allow_multiple => {
                    fail(&format!("Found {n} alive jobs. Expected only one."))
                }
                1 => say("Found one alive job."),
                n => say(&format!("Found {n} alive jobs.")),
            }))
        }
        NativeCommand::CheckMigrations { timeout } => {
            let version = crate::airflow::installed_version(layers).map(|f| f.version);
            check_migrations(inbox, layers, target, version, timeout).map(Some)
        }
    }
}

fn say(line: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    0
}

/// Airflow's SystemExit("…"): the text on stderr, exit 1.
fn fail(line: &str) -> i32 {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    1
}

/// Python's repr of a set of strings: `set()`, `{'a'}`, `{'a', 'b'}`.
fn python_set(items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        return "set()".into();
    }
    let inner: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// `airflow db check-migrations -t N`: up to N one-second rounds until every
/// schema is at its head; else Airflow's TimeoutError text and exit 1.
fn check_migrations(
    inbox: &SignalInbox,
    layers: &Layered,
    target: &Target,
    version: Option<Version>,
    timeout: u64,
) -> Result<i32, Failure> {
    let schemas = crate::airflow::installed_schemas(layers, version)?;
    let rounds = timeout.max(1);
    let mut last: Vec<BTreeSet<String>> = Vec::new();
    // Airflow's rounds are a second each plus its query; a query here
    // gets at most what is left of the whole, so that a server that
    // drips cannot stretch `-t N` (and never more than 10 s).
    let end = Instant::now() + Duration::from_secs(rounds);
    for ticker in 0..rounds {
        let round = Instant::now();
        let left = end.saturating_duration_since(round);
        let query_timeout = left.clamp(Duration::from_millis(200), Duration::from_secs(10));
        match revisions_off_thread(inbox, target, query_timeout, &schemas)? {
            Ok(current) => {
                let at_heads = schemas
                    .iter()
                    .zip(&current)
                    .all(|(s, c)| c.len() == 1 && c.contains(&s.head));
                if at_heads {
                    return Ok(0);
                }
                last = current;
            }
            Err(e) => tracing::debug!("reading the schema version: {e}"),
        }
        if Instant::now() >= end {
            break;
        }
        pause_until(inbox, round + Duration::from_secs(1))?;
        tracing::info!("Waiting for migrations... {ticker} second(s)");
    }
    let in_db = last.first().cloned().unwrap_or_default();
    let source: BTreeSet<String> = schemas
        .first()
        .map(|s| s.head.clone())
        .into_iter()
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "TimeoutError: There are still unapplied migrations after {rounds} seconds. MigrationHead(s) in DB: {} | Migration Head(s) in Source Code: {}",
        python_set(&in_db),
        python_set(&source)
    );
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_chart_commands_parse() {
        assert_eq!(
            parse(&argv(&[
                "airflow",
                "jobs",
                "check",
                "--job-type",
                "SchedulerJob",
                "--local"
            ])),
            Ok(Some(NativeCommand::JobsCheck {
                job_type: Some("SchedulerJob".into()),
                hostname: None,
                local: true,
                limit: 1,
                allow_multiple: false
            }))
        );
        assert_eq!(
            parse(&argv(&[
                "db",
                "check-migrations",
                "--migration-wait-timeout=60"
            ])),
            Ok(Some(NativeCommand::CheckMigrations { timeout: 60 }))
        );
        assert!(parse(&argv(&["jobs", "check", "--output", "json"])).is_err());
        assert!(parse(&argv(&["jobs", "check", "--job-type", "BackfillJob"])).is_err());
        assert_eq!(parse(&argv(&["scheduler"])), Ok(None));
        assert!(is_probe(&argv(&[
            "/opt/airflow-venv/bin/airflow",
            "jobs",
            "check",
            "--job-type",
            "TriggererJob",
            "--hostname",
            "h"
        ])));
        assert!(!is_probe(&argv(&[
            "/opt/airflow-venv/bin/airflow",
            "jobs",
            "check",
            "--unknown-flag"
        ])));
        assert!(!is_probe(&argv(&[
            "/opt/airflow-venv/bin/airflow",
            "dags",
            "list"
        ])));
    }

    #[test]
    fn sets_print_as_python_does() {
        assert_eq!(python_set(&BTreeSet::new()), "set()");
        let one: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(python_set(&one), "{'a'}");
    }
}
