//! `--healthcheck`: asks the running component's own health endpoint, or
//! for the scheduler (health server off), triggerer and dag-processor the
//! job table's heartbeats as `airflow jobs check --local` does; for a Docker
//! HEALTHCHECK or a Kubernetes exec probe, within 5 s and without starting
//! Python. Exit 0 healthy, 1 not. It only reads and connects.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::airflow::components::airflow_subcommand;
use crate::airflow::jobs::Job;
use crate::env::layers::Layered;

const BUDGET: Duration = Duration::from_secs(5);

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
    /// No health endpoint: the container running is all we can say.
    Running(String),
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

pub fn plan(command: &[OsString], layers: &Layered, major: u32) -> Check {
    let port = |key: &str, default: u16| {
        layers
            .get(key)
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(default)
    };
    let planned = crate::airflow::components::plan(command, major);
    match airflow_subcommand(&planned.argv) {
        Some(("api-server", _)) => Check::Http {
            port: port("AIRFLOW__API__PORT", 8080),
            path: "/api/v2/monitor/health",
        },
        Some(("webserver", _)) => Check::Http {
            port: port("AIRFLOW__WEBSERVER__WEB_SERVER_PORT", 8080),
            path: "/health",
        },
        Some(("scheduler", _))
            if layers
                .get("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK")
                .and_then(crate::settings::parse_bool)
                != Some(true) =>
        {
            Check::Jobs {
                job_type: "SchedulerJob",
                why: "from the job table: the scheduler's health server is off",
            }
        }
        Some(("scheduler", _)) => Check::Http {
            port: port(
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
                8974,
            ),
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
        None => Check::Running("not an Airflow component".into()),
    }
}

/// Runs the check: Ok(detail) healthy, Err(reason) not.
pub fn run(check: &Check) -> Result<String, String> {
    run_within(check, BUDGET)
}

/// As `run`, within `budget` (the supervisor's readiness probe is short).
pub fn run_within(check: &Check, budget: Duration) -> Result<String, String> {
    match check {
        Check::Running(why) => Ok(format!("{why}; the container is running")),
        Check::Http { port, path } => {
            http_get(*port, path, budget).map(|d| format!("{d} (the component's health server)"))
        }
        Check::Jobs { .. } | Check::CeleryWorker => {
            Err("the broker or job table is read by the caller".into())
        }
    }
}

fn http_get(port: u16, path: &str, budget: Duration) -> Result<String, String> {
    let started = Instant::now();
    let addrs: Vec<_> = ("127.0.0.1", port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    let addr = addrs.first().ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(addr, budget).map_err(|e| {
        format!(
            "127.0.0.1:{port}: {}",
            crate::wire::transport::io_reason(&e)
        )
    })?;
    let left = budget
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: airflow-entrypoint\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_string();
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
