//! `--healthcheck`: asks the running component's own health endpoint, or
//! for the scheduler (health server off), triggerer and dag-processor the
//! job table's heartbeats as `airflow jobs check --local` does; for a Docker
//! HEALTHCHECK or a Kubernetes exec probe, within 5 s and without starting
//! Python. Exit 0 healthy, 1 not. It only reads and connects.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::time::Duration;

use crate::airflow::components::airflow_subcommand;
use crate::airflow::jobs::Job;
use crate::env::layers::Layered;

pub const BUDGET: Duration = Duration::from_secs(5);

/// What to ask, for the component COMMAND runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Http {
        port: u16,
        path: &'static str,
    },
    /// This host's newest running job of the type in the job table.
    Jobs {
        job_type: &'static str,
        /// Why the job table was asked, for the verdict line.
        why: &'static str,
    },
    /// The Celery worker: its broker's remote-control mailbox.
    CeleryWorker,
    /// Nothing to ask: the component has no health endpoint. The line says
    /// so; the process's state (when its PID is known) is all that is read.
    Running(String),
}

/// What `--healthcheck` asks about: one component, or each part of a group;
/// `pid` when the process that runs it is known (PID 1's child).
#[derive(Debug, PartialEq, Eq)]
pub struct Subject {
    pub command: Vec<OsString>,
    pub pid: Option<i32>,
}

/// The components to ask: COMMAND's when given (each part of a `+` group),
/// else what PID 1 really runs: each part of its group, or its child's own
/// command line (so that `bash -c "exec airflow scheduler"` is the
/// scheduler, and a worker or `airflow scheduler` started through a script
/// is found by what it became).
pub fn subjects(given: &[OsString]) -> Vec<Subject> {
    let command = component_command(given);
    if let Ok(Some(parts)) = crate::airflow::components::split_members(&command) {
        return parts
            .into_iter()
            .map(|command| Subject { command, pid: None })
            .collect();
    }
    if given.is_empty() {
        if let Some((pid, child)) = first_child_of(1) {
            // PID 1's command when it names a component (also through `bash
            // -c "exec …"`): a component may rename its process (Celery's
            // `[celeryd: …]`, `airflow api_server -- host:…`). Else what the
            // child became, when that is one (a script that ran `airflow
            // scheduler`); else PID 1's command, with nothing to ask.
            let child = strip_interpreter(child);
            let command = if !names_component(&command) && names_component(&child) {
                child
            } else {
                command
            };
            tracing::debug!(pid, command = ?command, "asking PID 1's oldest child");
            return vec![Subject {
                command,
                pid: Some(pid),
            }];
        }
    }
    vec![Subject { command, pid: None }]
}

/// True when COMMAND runs an Airflow component or command (after the
/// renames, through a shell's `exec`).
fn names_component(command: &[OsString]) -> bool {
    airflow_subcommand(&crate::airflow::components::plan(command, 3).component).is_some()
}

/// PID's oldest child and its command line (`/proc/PID/task/PID/children`):
/// the component PID 1 started, not an orphan reparented to it later (an
/// orphan was started after the component that made it).
fn first_child_of(pid: i32) -> Option<(i32, Vec<OsString>)> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let child = children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter_map(|c| Some((start_time(c)?, c)))
        .min()?
        .1;
    let raw = std::fs::read(format!("/proc/{child}/cmdline")).ok()?;
    let argv = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from(String::from_utf8_lossy(a).into_owned()))
        .collect();
    Some((child, argv))
}

/// A script's command line as the kernel shows it (`python3 /venv/bin/airflow
/// scheduler`) back to how it was called (`/venv/bin/airflow scheduler`).
fn strip_interpreter(argv: Vec<OsString>) -> Vec<OsString> {
    let interpreter = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    let script = argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.contains('/'));
    if interpreter && script {
        argv.into_iter().skip(1).collect()
    } else {
        argv
    }
}

/// When the process started, in clock ticks since boot (/proc's field 22).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the name (which may hold spaces): state is field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The process's state letter from /proc (R, S, D, T, t, Z, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces: the state follows the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The verdict on a known process before anything is asked: a stopped or
/// dead process is unhealthy whatever its endpoint would say.
pub fn process_verdict(pid: i32) -> Result<String, String> {
    match process_state(pid) {
        None => Err(format!("process {pid} is gone")),
        Some('T' | 't') => Err(format!("process {pid} is stopped (state T)")),
        Some('Z' | 'X') => Err(format!("process {pid} has exited (a zombie)")),
        Some(state) => Ok(format!("process {pid} is running (state {state})")),
    }
}

/// The verdict on this host's jobs: the first (newest) of `jobs` must be
/// alive, as `airflow jobs check --local` with its default `--limit 1`.
pub fn job_verdict(
    jobs: &[Job],
    job_type: &str,
    host: &str,
    threshold: f64,
) -> Result<String, String> {
    let Some(job) = jobs.first() else {
        return Err(format!("no running {job_type} on {host} in the job table"));
    };
    match job.age {
        Some(age) if age < threshold => Ok(format!(
            "{job_type} {} on {host}, heartbeat {age:.1} s ago",
            job.id
        )),
        Some(age) => Err(format!(
            "{job_type} {} on {host}: last heartbeat {age:.1} s ago, past the {threshold} s threshold",
            job.id
        )),
        None => Err(format!(
            "{job_type} {} on {host} has never sent a heartbeat",
            job.id
        )),
    }
}

/// The component's COMMAND: the one given, else PID 1's own arguments
/// (`airflow-entrypoint [OPTIONS] [--] COMMAND ...`) from /proc/1/cmdline.
pub fn component_command(given: &[OsString]) -> Vec<OsString> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let Ok(raw) = std::fs::read("/proc/1/cmdline") else {
        return Vec::new();
    };
    let args: Vec<OsString> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .skip(1)
        .map(|a| OsString::from(String::from_utf8_lossy(a).into_owned()))
        .collect();
    crate::cli::parse(args)
        .map(|inv| inv.command)
        .unwrap_or_default()
}

/// The value of `--port N`, `--port=N`, `-p N` or `-pN` among ARGS.
fn port_flag(args: &[OsString]) -> Option<u16> {
    let mut args = args.iter().filter_map(|a| a.to_str());
    while let Some(arg) = args.next() {
        let value = match arg {
            "--port" | "-p" => args.next(),
            _ => arg
                .strip_prefix("--port=")
                .or_else(|| arg.strip_prefix("-p").filter(|v| !v.is_empty())),
        };
        if let Some(port) = value.and_then(|v| v.trim().parse().ok()) {
            return Some(port);
        }
    }
    None
}

pub fn plan(command: &[OsString], layers: &Layered, major: u32) -> Check {
    // From the environment layers, else airflow.cfg, as Airflow reads it.
    let option = |section: &str, key: &str| {
        crate::env::options::airflow_option(layers, section, key)
            .ok()
            .flatten()
            .map(|o| o.value)
    };
    let port = |section: &str, key: &str, default: u16| {
        option(section, key)
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(default)
    };
    let planned = crate::airflow::components::plan(command, major);
    let health_server_on = || {
        option("scheduler", "enable_health_check")
            .as_deref()
            .and_then(crate::settings::parse_bool)
            == Some(true)
    };
    match airflow_subcommand(&planned.component) {
        Some(("api-server", args)) => Check::Http {
            port: port_flag(args).unwrap_or_else(|| port("api", "port", 8080)),
            path: "/api/v2/monitor/health",
        },
        Some(("webserver", args)) => Check::Http {
            port: port_flag(args).unwrap_or_else(|| port("webserver", "web_server_port", 8080)),
            path: "/health",
        },
        Some(("scheduler", _)) if !health_server_on() => Check::Jobs {
            job_type: "SchedulerJob",
            why: "from the job table: the scheduler's health server is off",
        },
        Some(("scheduler", _)) => Check::Http {
            port: port("scheduler", "scheduler_health_check_server_port", 8974),
            path: "/health",
        },
        Some(("triggerer", _)) => Check::Jobs {
            job_type: "TriggererJob",
            why: "from the job table",
        },
        Some(("dag-processor", _)) => Check::Jobs {
            job_type: "DagProcessorJob",
            why: "from the job table",
        },
        Some(("celery", rest)) if rest.first().and_then(|a| a.to_str()) == Some("worker") => {
            Check::CeleryWorker
        }
        Some((sub, _)) => Check::Running(format!("airflow {sub} has no health endpoint to ask")),
        None => Check::Running(format!(
            "{} is not an Airflow component with a health endpoint",
            planned
                .component
                .first()
                .map_or("the command".into(), |c| c.to_string_lossy().into_owned())
        )),
    }
}

/// Runs the check within `budget`: Ok(detail) healthy, Err(reason) not.
/// (`--healthcheck` gives it what is left of BUDGET; the supervisor's
/// readiness probe is shorter.)
pub fn run_within(check: &Check, budget: Duration) -> Result<String, String> {
    match check {
        Check::Running(why) => Ok(format!("nothing to ask: {why}")),
        Check::Http { port, path } => {
            http_get(*port, path, budget).map(|d| format!("{d} (the component's health server)"))
        }
        Check::Jobs { .. } | Check::CeleryWorker => {
            Err("the broker or job table is read by the caller".into())
        }
    }
}

/// The most of an HTTP answer read (a health document is small).
const MAX_RESPONSE: u64 = 64 * 1024;

fn http_get(port: u16, path: &str, budget: Duration) -> Result<String, String> {
    // One deadline for the connect, the request and every read: an
    // endpoint that drips its answer cannot stretch the budget.
    let endpoint = crate::wire::url::Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    let mut stream = crate::wire::transport::connect(&endpoint, budget).map_err(|v| match v {
        crate::wire::Verdict::NotYet(r) | crate::wire::Verdict::Fatal(r) => {
            format!("127.0.0.1:{port}: {r}")
        }
        crate::wire::Verdict::Ready => format!("127.0.0.1:{port}: no connection"),
    })?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: airflow-entrypoint\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|_| stream.flush())
        .map_err(|e| {
            format!(
                "127.0.0.1:{port}: {}",
                crate::wire::transport::io_reason(&e)
            )
        })?;
    let mut response = Vec::new();
    // Past the deadline the read fails: an answer that did not end in
    // time is no answer (HTTP/1.0 with Connection: close ends with EOF).
    if let Err(e) = stream.take(MAX_RESPONSE).read_to_end(&mut response) {
        return Err(format!(
            "GET {path} on port {port}: no complete answer within {:.1} s ({})",
            budget.as_secs_f64(),
            crate::wire::transport::io_reason(&e)
        ));
    }
    let text = String::from_utf8_lossy(&response);
    // The status line as it may be shown: one line, short, masked.
    let status = crate::wire::server_text(text.lines().next().unwrap_or(""), &[]);
    let code = status.split_whitespace().nth(1).unwrap_or("");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    // The api-server's (and Airflow 2 webserver's) health lists other
    // components too: a scheduler that is down must not fail the api-server
    // (probes would pull it from its Service). 200 with a healthy metadata
    // database — or no such entry — is healthy.
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let database_ok = !compact.contains("\"metadatabase\"")
        || compact.contains("\"metadatabase\":{\"status\":\"healthy\"");
    if code == "200" && database_ok {
        Ok(format!("GET {path} on port {port}: {status}"))
    } else if code.is_empty() {
        Err(format!("GET {path} on port {port}: no HTTP answer"))
    } else {
        // Masked before it is cut: a URL cut inside its password no longer
        // looks like one.
        let snippet: String = crate::redact::redact(body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(160)
            .collect();
        let snippet = crate::wire::server_text(&snippet, &[]);
        Err(format!("GET {path} on port {port}: {status} {snippet}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::layers::Source;

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_port_flag_wins_and_shells_are_seen_through() {
        let layers = Layered::default();
        assert_eq!(
            plan(&argv(&["api-server", "--port", "9091"]), &layers, 3),
            Check::Http {
                port: 9091,
                path: "/api/v2/monitor/health"
            }
        );
        assert_eq!(
            plan(&argv(&["airflow", "api-server", "-p9092"]), &layers, 3),
            Check::Http {
                port: 9092,
                path: "/api/v2/monitor/health"
            }
        );
        assert!(matches!(
            plan(&argv(&["bash", "-c", "exec airflow triggerer"]), &layers, 3),
            Check::Jobs {
                job_type: "TriggererJob",
                ..
            }
        ));
        assert_eq!(
            strip_interpreter(argv(&[
                "/venv/bin/python3",
                "/venv/bin/airflow",
                "scheduler"
            ])),
            argv(&["/venv/bin/airflow", "scheduler"])
        );
        assert_eq!(
            strip_interpreter(argv(&["python3", "-m", "celery"])),
            argv(&["python3", "-m", "celery"])
        );
        let me = std::process::id() as i32;
        assert!(process_state(me).is_some());
        let parent = std::os::unix::process::parent_id() as i32;
        assert!(start_time(parent) <= start_time(me));
        assert!(process_verdict(me).is_ok());
    }

    #[test]
    fn endpoints_follow_the_component() {
        let mut layers = Layered::default();
        assert_eq!(
            plan(&argv(&["webserver"]), &layers, 3),
            Check::Http {
                port: 8080,
                path: "/api/v2/monitor/health"
            }
        );
        assert_eq!(
            plan(&argv(&["webserver"]), &layers, 2),
            Check::Http {
                port: 8080,
                path: "/health"
            }
        );
        assert!(matches!(
            plan(&argv(&["scheduler"]), &layers, 3),
            Check::Jobs {
                job_type: "SchedulerJob",
                ..
            }
        ));
        assert!(matches!(
            plan(&argv(&["dag-processor"]), &layers, 3),
            Check::Jobs {
                job_type: "DagProcessorJob",
                ..
            }
        ));
        layers.set(
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
            "True".into(),
            Source::Container,
        );
        assert_eq!(
            plan(&argv(&["scheduler"]), &layers, 3),
            Check::Http {
                port: 8974,
                path: "/health"
            }
        );
        assert_eq!(plan(&argv(&["worker"]), &layers, 3), Check::CeleryWorker);
        assert_eq!(
            plan(
                &argv(&["airflow", "celery", "worker", "-q", "a"]),
                &layers,
                3
            ),
            Check::CeleryWorker
        );
        layers.set("AIRFLOW__API__PORT", "9090".into(), Source::Container);
        assert_eq!(
            plan(&argv(&["airflow", "api-server"]), &layers, 3),
            Check::Http {
                port: 9090,
                path: "/api/v2/monitor/health"
            }
        );
    }
}
