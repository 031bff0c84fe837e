//! Job heartbeats, as `airflow jobs check` reads them: the running jobs of
//! a type (and host), newest heartbeat first, the type's health threshold,
//! and this host's name as Airflow's default `hostname_callable` gives it.
//! It only reads (one SELECT); it never writes to the database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::env::layers::Layered;
use crate::env::options::airflow_option;
use crate::error::Failure;
use crate::wire::sql::{query_all, SqlError};
use crate::wire::url::{Kind, Target};

/// The job types `airflow jobs check --job-type` accepts.
pub const JOB_TYPES: [&str; 3] = ["SchedulerJob", "TriggererJob", "DagProcessorJob"];

/// Which jobs to read, as `airflow jobs check`'s flags say.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub job_type: Option<String>,
    pub hostname: Option<String>,
    /// 0: no limit.
    pub limit: u64,
}

/// One running job: its id, type and heartbeat age (None: never).
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub job_type: String,
    pub age: Option<f64>,
}

/// A string literal for `kind`'s SQL dialect.
fn literal(kind: &Kind, text: &str) -> String {
    let mut escaped = text.replace('\'', "''");
    if *kind == Kind::Mysql {
        escaped = escaped.replace('\\', "\\\\");
    }
    format!("'{escaped}'")
}

/// The query Airflow's `jobs check` runs, in `kind`'s dialect. The order
/// is the server's own for NULL heartbeats (first on PostgreSQL, last on
/// MySQL), as it is for Airflow. The heartbeat comes back as seconds since
/// the epoch, read the way Airflow reads it (MySQL: the session's value as
/// UTC).
pub fn jobs_query(kind: &Kind, filter: &JobFilter) -> String {
    let epoch = match kind {
        Kind::Mysql => {
            "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', latest_heartbeat) / 1000000"
        }
        _ => "EXTRACT(EPOCH FROM latest_heartbeat)",
    };
    let mut sql = format!("SELECT id, job_type, {epoch} FROM job WHERE state = 'running'");
    if let Some(job_type) = &filter.job_type {
        sql.push_str(&format!(" AND job_type = {}", literal(kind, job_type)));
    }
    if let Some(hostname) = &filter.hostname {
        sql.push_str(&format!(" AND hostname = {}", literal(kind, hostname)));
    }
    sql.push_str(" ORDER BY latest_heartbeat DESC");
    if filter.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", filter.limit));
    }
    sql
}

pub fn running_jobs(
    target: &Target,
    timeout: Duration,
    filter: &JobFilter,
) -> Result<Vec<Job>, SqlError> {
    let sql = jobs_query(&target.kind, filter);
    let rows = query_all(target, timeout, &[&sql])?
        .pop()
        .unwrap_or_else(|| Ok(Default::default()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Ok(rows
        .rows
        .into_iter()
        .map(|row| {
            let mut cells = row.into_iter();
            let mut next = || cells.next().flatten();
            let id = next().unwrap_or_default();
            let job_type = next().unwrap_or_default();
            let age = next()
                .and_then(|e| e.trim().parse::<f64>().ok())
                .map(|beat| now - beat);
            Job { id, job_type, age }
        })
        .collect())
}

/// The health threshold of `job_type` in seconds, read as Airflow reads
/// it; other types: the heartrate × 2.1.
pub fn threshold(layers: &Layered, job_type: &str) -> Result<f64, Failure> {
    let (section, key) = match job_type {
        "SchedulerJob" => ("scheduler", "scheduler_health_check_threshold"),
        "TriggererJob" => ("triggerer", "triggerer_health_check_threshold"),
        "DagProcessorJob" => ("dag_processor", "health_check_threshold"),
        _ => return Ok(number(layers, "scheduler", "job_heartbeat_sec", 5.0)? * 2.1),
    };
    number(layers, section, key, 30.0)
}

fn number(layers: &Layered, section: &str, key: &str, default: f64) -> Result<f64, Failure> {
    match airflow_option(layers, section, key)? {
        None => Ok(default),
        Some(option) => option
            .value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                Failure::config(format!(
                    "{}={:?} is not a number of seconds",
                    option.origin, option.value
                ))
            }),
    }
}

/// Whether `[core] hostname_callable` is Airflow's default (the only one
/// computed here); returns the configured callable when it is not.
pub fn custom_hostname_callable(layers: &Layered) -> Result<Option<String>, Failure> {
    Ok(airflow_option(layers, "core", "hostname_callable")?
        .map(|o| o.value.trim().to_string())
        .filter(|v| {
            !v.is_empty() && v != "airflow.utils.net.getfqdn" && v != "airflow.utils.net:getfqdn"
        }))
}

/// `airflow.utils.net.getfqdn()`: the canonical name getaddrinfo gives for
/// gethostname() (AI_CANONNAME, datagram sockets), else the host name. Not
/// Python's `socket.getfqdn`, which asks gethostbyaddr and can differ.
pub fn airflow_fqdn() -> String {
    let name = host_name();
    canonical_name(&name).unwrap_or(name)
}

/// The kernel's host name (Python's `socket.gethostname()`).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates
    // within it on success (glibc/musl truncate at the length given).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn canonical_name(name: &str) -> Option<String> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a zeroed addrinfo is a valid "no hints" value; we set three
    // plain fields.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_socktype = libc::SOCK_DGRAM;
    hints.ai_family = libc::AF_UNSPEC;
    let mut result: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C string, hints and out-pointer; freed below.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    let mut found = None;
    let mut entry = result;
    while !entry.is_null() {
        // SAFETY: entry is a node of the list getaddrinfo returned.
        let node = unsafe { &*entry };
        if !node.ai_canonname.is_null() {
            // SAFETY: a NUL-terminated string owned by the list.
            let text = unsafe { std::ffi::CStr::from_ptr(node.ai_canonname) };
            let text = text.to_string_lossy().into_owned();
            if !text.is_empty() {
                found = Some(text);
                break;
            }
        }
        entry = node.ai_next;
    }
    // SAFETY: result came from getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(result) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_follows_the_filter_and_escapes() {
        let filter = JobFilter {
            job_type: Some("SchedulerJob".into()),
            hostname: Some("it's\\me".into()),
            limit: 1,
        };
        let pg = jobs_query(&Kind::Postgres, &filter);
        assert!(pg.contains("hostname = 'it''s\\me'"), "{pg}");
        assert!(
            pg.ends_with("ORDER BY latest_heartbeat DESC LIMIT 1"),
            "{pg}"
        );
        let my = jobs_query(&Kind::Mysql, &filter);
        assert!(my.contains("hostname = 'it''s\\\\me'"), "{my}");
        let all = jobs_query(&Kind::Postgres, &JobFilter::default());
        assert!(
            !all.contains("LIMIT") && !all.contains("job_type ="),
            "{all}"
        );
    }

    #[test]
    fn the_host_name_is_not_empty() {
        assert!(!airflow_fqdn().is_empty());
    }
}
