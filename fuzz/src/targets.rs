//! One entry point per fuzz target (`fuzz_targets/NAME.rs` calls
//! `targets::NAME`). Each runs on a fresh thread, so that texts `redact`
//! was told to hide by one input (a thread's own list) cannot mask the
//! planted secret for the next, and each checks that no message it gets
//! back shows the planted secret.

use std::ffi::OsString;
use std::io::BufReader;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};

use crate::fake_server::server;
use crate::secret::{
    assert_logged_line_hides, assert_message_hides, assert_whole_url_masked, sent_back, SECRET,
};
use crate::wire::url::{self, Endpoint, Target};
use crate::wire::Verdict;

/// Where a seed puts this, the input holds a URL with the planted secret as
/// its password.
const MARKER: &[u8] = b"%URL%";

/// Generous for a client that reads to the fake server's EOF at once; a
/// reply that keeps a client busy longer is what libFuzzer's `-timeout`
/// catches.
const TIMEOUT: Duration = Duration::from_secs(3);

fn planted_url() -> String {
    format!("postgresql://airflow:{SECRET}@db:5432/airflow")
}

/// `data` with every `%URL%` replaced by a URL holding the secret.
fn plant(data: &[u8]) -> Vec<u8> {
    let url = planted_url();
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(MARKER) {
            out.extend_from_slice(url.as_bytes());
            rest = &rest[MARKER.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn plant_text(data: &[u8]) -> String {
    String::from_utf8_lossy(&plant(data)).into_owned()
}

/// Runs `check` on a new thread; a panic there aborts through libFuzzer's
/// hook like one on the main thread.
fn on_fresh_thread(check: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        if let Err(panic) = scope.spawn(check).join() {
            std::panic::resume_unwind(panic);
        }
    });
}

/// A verdict as the log shows it.
fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Ready => "ready".into(),
        Verdict::NotYet(why) | Verdict::Fatal(why) => why.clone(),
    }
}

/// A reply's messages must not show the secret: not at all when the reply
/// did not hold it; not as a whole URL with its password once logged
/// (through `redact`) when it held the planted URL; not checked when the
/// fuzzer sent the secret back bare.
fn check_reply_messages(original: &[u8], reply: &[u8], messages: &[String], what: &str) {
    if sent_back(original) {
        return;
    }
    for message in messages {
        if sent_back(reply) {
            assert_whole_url_masked(message, what);
        } else {
            assert_message_hides(message, what);
        }
    }
}

/// A target for `url` whose one endpoint is the fake server.
fn fake_target(url: &str, tcp: bool) -> Target {
    let mut target = url::parse(url).expect("a fixed URL parses");
    let server = server();
    target.endpoints = vec![if tcp {
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: server.port,
        }
    } else {
        Endpoint::Unix {
            path: server.socket.clone(),
        }
    }];
    target
}

/// Argv from NUL-separated words (not necessarily UTF-8).
fn argv(data: &[u8]) -> Vec<OsString> {
    plant(data)
        .split(|b| *b == 0)
        .map(|word| OsString::from_vec(word.to_vec()))
        .collect()
}

pub fn env_file(data: &[u8]) {
    if sent_back(data) {
        return; // the input holds the secret itself: nothing to check
    }
    let text = plant_text(data);
    on_fresh_thread(|| {
        let lookup = |name: &str| match name {
            "HOME" => Some("/home/astro".to_string()),
            "DB_PASSWORD" => Some(SECRET.to_string()),
            "SQL_ALCHEMY_CONN" => Some(planted_url()),
            _ => None,
        };
        if let Err(e) = crate::env::file::parse_env_file(&text, &lookup) {
            // `${VAR:?message}` quotes the author's own message: checked as
            // the log line shows it.
            assert_logged_line_hides(&e.message, "env-file error");
        }
    });
}

pub fn cfg_file(data: &[u8]) {
    if sent_back(data) {
        return; // the input holds the secret itself: nothing to check
    }
    let Some((choice, rest)) = data.split_first() else {
        return;
    };
    let text = plant_text(rest);
    let (section, key) = [
        ("database", "sql_alchemy_conn"),
        ("celery", "broker_url"),
        ("DEFAULT", "x"),
        ("core", "FERNET_KEY"),
    ][usize::from(*choice) % 4];
    on_fresh_thread(|| {
        let read = crate::env::cfg_file::CfgFile::parse(&text).and_then(|c| c.get(section, key));
        if let Err(e) = read {
            // Values never appear; a section's name may, as logged.
            assert_logged_line_hides(&e.message, "airflow.cfg error");
        }
    });
}

pub fn url(data: &[u8]) {
    if sent_back(data) {
        return; // the input holds the secret itself: nothing to check
    }
    let text = String::from_utf8_lossy(data);
    // The secret goes just before the last `@`: a password by every
    // reading (SQLAlchemy's, kombu's, redis-py's), however odd the rest.
    let url = match text.rfind('@') {
        Some(at) if text[..at].contains("://") => {
            format!("{}:{SECRET}{}", &text[..at], &text[at..])
        }
        _ => text.into_owned(),
    };
    let planted = url.contains(&format!(":{SECRET}@"));
    on_fresh_thread(|| {
        let masked = url::mask(&url);
        let parsed = url::parse(&url);
        let redacted = crate::redact::redact(&url).into_owned();
        if !planted {
            return;
        }
        assert_message_hides(&masked, "url::mask");
        assert_message_hides(&redacted, "redact of the URL");
        match parsed {
            Ok(target) => assert_logged_line_hides(&format!("{target:?}"), "the parsed target"),
            Err(e) => assert_message_hides(&e.message, "URL error"),
        }
    });
}

pub fn shell_words(data: &[u8]) {
    if sent_back(data) {
        return; // the input holds the secret itself: nothing to check
    }
    let text = plant_text(data);
    on_fresh_thread(|| {
        if let Err(e) = crate::shell_words::split(&text) {
            assert_message_hides(&e, "_CMD split error");
        }
    });
}

pub fn native_command(data: &[u8]) {
    command_line(data, crate::airflow::native::parse, "native command error");
}

pub fn celery_command(data: &[u8]) {
    command_line(data, crate::airflow::celery::parse, "celery command error");
}

/// A probe's command line, as the fuzzer's argv, through `parse`: its
/// refusal is logged, so it must hide the planted secret.
fn command_line<T>(data: &[u8], parse: fn(&[OsString]) -> Result<T, String>, what: &str) {
    if sent_back(data) {
        return; // the input holds the secret itself: nothing to check
    }
    let args = argv(data);
    on_fresh_thread(|| {
        if let Err(e) = parse(&args) {
            assert_logged_line_hides(&e, what);
        }
    });
}

/// The SQL clients: the login (probe) or the login and two queries, with a
/// password or without, all over the fake server's bytes.
fn sql_client(data: &[u8], scheme: &str) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let reply = plant(rest);
    let url = if mode & 2 == 0 {
        format!("{scheme}://airflow:{SECRET}@localhost/airflow")
    } else {
        format!("{scheme}://airflow@localhost/airflow")
    };
    on_fresh_thread(|| {
        let target = fake_target(&url, false);
        server().answer_with(&reply);
        let mut messages = Vec::new();
        if mode & 1 == 0 {
            messages.push(verdict_text(&crate::wire::probe(&target, TIMEOUT)));
        } else {
            let queries = ["SELECT 1", "SELECT version_num FROM alembic_version"];
            match crate::wire::sql::query_all(&target, TIMEOUT, &queries) {
                Ok(results) => {
                    for result in results {
                        if let Err(e) = result {
                            messages.push(e.to_string());
                        }
                    }
                }
                Err(e) => messages.push(e.to_string()),
            }
        }
        check_reply_messages(rest, &reply, &messages, scheme);
    });
}

pub fn postgres(data: &[u8]) {
    sql_client(data, "postgresql");
}

pub fn mysql(data: &[u8]) {
    sql_client(data, "mysql");
}

pub fn redis(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let reply = plant(rest);
    on_fresh_thread(|| {
        let mut messages = Vec::new();
        match mode % 3 {
            0 => {
                // RESP values one after the other, as a session reads them.
                let mut reader = &reply[..];
                for _ in 0..16 {
                    match crate::wire::resp::read_value(&mut reader) {
                        Ok(value) => messages.push(crate::wire::resp::describe(&value)),
                        Err(e) => {
                            messages.push(e);
                            break;
                        }
                    }
                }
                // The probe's own verdict on reply lines.
                let lines: Vec<String> = String::from_utf8_lossy(&reply)
                    .lines()
                    .map(str::to_string)
                    .collect();
                messages.push(verdict_text(&crate::wire::redis::classify(
                    &lines,
                    mode & 8 != 0,
                    &[],
                )));
            }
            1 => {
                let target = fake_target(&format!("redis://:{SECRET}@localhost:6379/0"), false);
                server().answer_with(&reply);
                messages.push(verdict_text(&crate::wire::probe(&target, TIMEOUT)));
            }
            _ => {
                let target = fake_target(&format!("redis://:{SECRET}@localhost:6379/0"), false);
                server().answer_with(&reply);
                let deadline = Instant::now() + TIMEOUT;
                match crate::wire::resp::Session::open(&target, deadline) {
                    Ok(mut session) => {
                        for words in [&[&b"PING"[..]][..], &[b"LLEN", b"q"], &[b"LPOP", b"q"]] {
                            match session.call(words) {
                                Ok(value) => messages.push(crate::wire::resp::describe(&value)),
                                Err(e) => {
                                    messages.push(e);
                                    break;
                                }
                            }
                        }
                    }
                    Err(v) => messages.push(verdict_text(&v)),
                }
            }
        }
        check_reply_messages(rest, &reply, &messages, "redis");
    });
}

pub fn amqp(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let reply = plant(rest);
    on_fresh_thread(|| {
        let mut messages = Vec::new();
        match mode % 3 {
            0 => {
                let mut frame = [0u8; 11];
                let n = reply.len().min(11);
                frame[..n].copy_from_slice(&reply[..n]);
                messages.push(verdict_text(&crate::wire::amqp::classify_first_frame(
                    &frame,
                )));
            }
            1 => {
                let target = fake_target(&format!("amqp://airflow:{SECRET}@localhost//"), true);
                server().answer_with(&reply);
                messages.push(verdict_text(&crate::wire::probe(&target, TIMEOUT)));
            }
            _ => {
                use crate::wire::amqp_session::Session;
                let target = fake_target(&format!("amqp://airflow:{SECRET}@localhost//"), true);
                server().answer_with(&reply);
                match Session::open(&target, Instant::now() + TIMEOUT) {
                    Ok(mut session) => {
                        let mut steps = || -> Result<(), crate::wire::amqp_session::Failure> {
                            let queue = session.declare_private_queue()?;
                            session.bind(&queue, "celery.pidbox", "")?;
                            session.consume(&queue)?;
                            session.publish_json("celery.pidbox", "", b"", b"{}")?;
                            for _ in 0..4 {
                                let delivery = session.next_delivery()?;
                                messages.push(delivery.routing_key.clone());
                            }
                            Ok(())
                        };
                        let outcome = steps();
                        if let Err(e) = outcome {
                            messages.push(e.to_string());
                        }
                        session.close();
                    }
                    Err(v) => messages.push(verdict_text(&v)),
                }
            }
        }
        check_reply_messages(rest, &reply, &messages, "amqp");
    });
}

pub fn celery_envelope(data: &[u8]) {
    let raw = plant(data);
    on_fresh_thread(|| {
        // What the worker probe files from a reply; it is never printed
        // whole, so the check is that opening it never panics or stalls.
        let _ = crate::airflow::celery::mailbox::open_redis_envelope(&raw);
    });
}

pub fn http(data: &[u8]) {
    let reply = plant(data);
    on_fresh_thread(|| {
        let server = server();
        server.answer_with(&reply);
        let check = crate::airflow::healthcheck::Check::Http {
            port: server.port,
            path: "/api/v2/monitor/health",
        };
        let message = match crate::airflow::healthcheck::run_within(&check, TIMEOUT) {
            Ok(line) | Err(line) => line,
        };
        check_reply_messages(data, &reply, &[message], "http health check");
    });
}
