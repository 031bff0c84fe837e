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
pub mod transport;
pub mod url;

use std::time::Duration;

use crate::redact::{redact, MASK};

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

/// The most of a server's own text that reaches a verdict or an error.
const SERVER_TEXT_MAX: usize = 300;

/// A server's message as it may be shown: one line, at most
/// SERVER_TEXT_MAX characters, every URL's password masked (`redact`) and
/// anything that echoes what we sent masked too: each of `sent` (the
/// password, for one) wherever it appears, and the tail of Redis's
/// "unknown command ... with args beginning with: 'user' 'password'".
pub fn server_text(text: &str, sent: &[&str]) -> String {
    let mut shown: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SERVER_TEXT_MAX)
        .collect();
    let lower = shown.to_ascii_lowercase();
    if let Some(at) = lower.find("with args beginning with") {
        shown.truncate(at);
        shown.push_str("with args beginning with: ");
        shown.push_str(MASK);
    }
    for secret in sent.iter().filter(|s| !s.is_empty()) {
        shown = shown.replace(secret, MASK);
    }
    redact(&shown).into_owned()
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

#[cfg(test)]
mod tests {
    use super::server_text;

    #[test]
    fn server_text_is_one_short_line_without_what_we_sent() {
        assert_eq!(
            server_text(
                "bad\nthing for pw123 at postgresql://u:pw123@h/db",
                &["pw123"]
            ),
            "bad thing for *** at postgresql://u:***@h/db"
        );
        let echo = server_text(
            "ERR unknown command 'AUTH', with args beginning with: 'default' 'hunter2' ",
            &[],
        );
        assert!(
            !echo.contains("hunter2") && !echo.contains("default"),
            "{echo}"
        );
        assert_eq!(server_text(&"é".repeat(10_000), &[]).chars().count(), 300);
        assert_eq!(
            server_text("x", &[""]),
            "x",
            "an empty secret masks nothing"
        );
    }
}
