//! The wire: URL syntax, one connection (TCP/Unix, DNS, TLS) and the
//! Postgres, MySQL, Redis and AMQP clients, each speaking just enough of its
//! protocol for one attempt and one verdict. It only parses and talks to
//! servers: it never retries, sleeps, reads signals or starts processes.

pub mod amqp;
pub mod amqp_session;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod resp;
pub mod sql;
pub mod timed;
pub mod transport;
pub mod url;

use std::time::Duration;

use url::{Kind, Target};

/// The outcome of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Not ready yet; worth retrying. The reason is for the log.
    NotYet(String),
    /// Up but refusing us for good (wrong password, no such database, ...).
    Fatal(String),
}

/// One attempt against `target`.
pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    match target.kind {
        Kind::Postgres => postgres::probe(target, timeout),
        Kind::Mysql => mysql::probe(target, timeout),
        Kind::Redis | Kind::RedisSentinel => redis::probe(target, timeout),
        Kind::Amqp => amqp::probe(target, timeout),
        Kind::Sqlite => sqlite_check(target),
    }
}

/// SQLite needs no server: the file's directory must exist and be writable
/// by the service user (we have already dropped to it).
fn sqlite_check(target: &Target) -> Verdict {
    use nix::unistd::{access, AccessFlags};
    let Some(path) = target.sqlite_path.as_deref() else {
        return Verdict::Ready; // in memory
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Verdict::Fatal(format!(
            "the directory {} of the SQLite file does not exist; create it or fix the URL",
            dir.display()
        ));
    }
    let writable = |p: &std::path::Path| access(p, AccessFlags::W_OK).is_ok();
    if !writable(&dir) || (path.exists() && !writable(path)) {
        return Verdict::Fatal(format!(
            "the SQLite file {} is not writable by this user (UID {}); fix the ownership or mode of {}",
            path.display(),
            nix::unistd::getuid(),
            dir.display()
        ));
    }
    Verdict::Ready
}
