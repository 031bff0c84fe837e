//! Celery's remote-control mailbox and worker events, spoken over Redis
//! (kombu's virtual transport: PUBLISH to the fanout channel, replies
//! LPUSHed to a list) and AMQP 0-9-1 (the `celery.pidbox` fanout exchange,
//! replies to a private queue). Owns the message formats and leaving
//! nothing behind in the broker. It only talks to the broker, within one
//! deadline; it never retries, never sleeps and never prints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use crate::wire::amqp_session::{self, Field};
use crate::wire::resp::{self, Value as Resp};
use crate::wire::url::{Kind, Target};
use crate::wire::Verdict;

/// What one node answered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeAnswer {
    /// The ping reply (`{"ok": "pong"}`), as it came.
    pub ping: Option<Value>,
    /// When the ping reply arrived, after publishing.
    pub ping_after: Option<Duration>,
    /// The names of the queues it consumes, from `active_queues`.
    pub queues: Option<Vec<String>>,
}

/// What the mailbox brought back.
#[derive(Debug, Default)]
pub struct Answers {
    pub nodes: BTreeMap<String, NodeAnswer>,
    /// Redis only: how many connections listen on the mailbox (PUBLISH's
    /// count); zero means no worker can answer.
    pub listeners: Option<i64>,
    /// AMQP only: the mailbox exchange does not exist, so no worker with
    /// remote control has ever run against this broker and vhost.
    pub no_mailbox: bool,
}

/// A probe that could not ask: `fatal` for a refusal (wrong password),
/// else the broker was not reachable in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    pub fatal: bool,
    pub message: String,
}

impl BrokerError {
    fn from_verdict(v: Verdict) -> BrokerError {
        match v {
            Verdict::Fatal(m) => BrokerError {
                fatal: true,
                message: m,
            },
            Verdict::NotYet(m) => BrokerError {
                fatal: false,
                message: m,
            },
            Verdict::Ready => BrokerError {
                fatal: false,
                message: "no answer".into(),
            },
        }
    }
    fn broken(message: impl Into<String>) -> BrokerError {
        BrokerError {
            fatal: false,
            message: message.into(),
        }
    }
}

/// The mailbox's exchange and the event exchange, as Celery names them.
const MAILBOX: &str = "celery.pidbox";
const EVENTS: &str = "celeryev";
const HEARTBEAT_KEY: &str = "worker.heartbeat";
/// How long a reply list may outlive a probe whose node did not answer (a
/// late reply then lands in a list that expires).
const LATE_REPLY_TTL_MS: &str = "600000";
/// Time kept back from the deadline to clean up after the wait.
const CLEANUP: Duration = Duration::from_millis(150);

/// A random version-4 UUID, as kombu uses for tickets and delivery tags.
pub fn uuid4() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: bytes is writable for its length.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        // Unique enough for a reply address: time and pid.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The mailbox request's body: `method` for `destinations` (all nodes when
/// empty), replies to the default exchange with `reply_key` as the routing
/// key, which sends them straight to that list or queue.
pub fn request_body(method: &str, destinations: &[String], reply_key: &str) -> Value {
    json!({
        "method": method,
        "arguments": {},
        "destination": if destinations.is_empty() { Value::Null } else { json!(destinations) },
        "pattern": null,
        "matcher": null,
        "ticket": uuid4(),
        "reply_to": {"exchange": "", "routing_key": reply_key},
    })
}

/// kombu's Redis envelope around a JSON body: base64 body, the JSON content
/// type and a delivery tag (a message without one makes every worker drop
/// its broker connection; one without the content type resets its
/// remote-control consumer).
pub fn redis_envelope(body: &Value, exchange: &str, expires_in: Duration) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    json!({
        "body": encoded,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": 1, "expires": now_epoch() + expires_in.as_secs_f64()},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": ""},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid4(),
        },
    })
    .to_string()
}

/// The JSON body of a kombu Redis envelope.
pub fn open_redis_envelope(raw: &[u8]) -> Option<Value> {
    let envelope: Value = serde_json::from_slice(raw).ok()?;
    let body = envelope.get("body")?.as_str()?;
    let encoding = envelope
        .get("properties")
        .and_then(|p| p.get("body_encoding"))
        .and_then(Value::as_str);
    let bytes = if encoding == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?
    } else {
        body.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).ok()
}

/// Files a reply (`{"node": answer}`) under its node.
fn file_reply(answers: &mut Answers, reply: &Value, after: Duration) {
    let Some(map) = reply.as_object() else {
        return;
    };
    for (node, answer) in map {
        let entry = answers.nodes.entry(node.clone()).or_default();
        if let Some(list) = answer.as_array() {
            entry.queues = Some(
                list.iter()
                    .filter_map(|q| q.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect(),
            );
        } else if answer.get("ok").is_some() || answer.get("error").is_some() {
            entry.ping = Some(answer.clone());
            entry.ping_after = Some(after);
        }
    }
}

/// Every asked node has answered both requests.
fn complete(answers: &Answers, destinations: &[String], expected_nodes: Option<usize>) -> bool {
    let done = |a: &NodeAnswer| a.ping.is_some() && a.queues.is_some();
    if destinations.is_empty() {
        return expected_nodes
            .is_some_and(|n| answers.nodes.values().filter(|a| done(a)).count() >= n);
    }
    destinations
        .iter()
        .all(|d| answers.nodes.get(d).is_some_and(done))
}

/// Asks `destinations` (all nodes when empty) for `ping` and
/// `active_queues`, collecting answers until all asked nodes have given
/// both or the deadline comes.
pub fn ask(
    target: &Target,
    destinations: &[String],
    deadline: Instant,
) -> Result<Answers, BrokerError> {
    match target.kind {
        Kind::Redis => ask_redis(target, destinations, deadline),
        Kind::Amqp => ask_amqp(target, destinations, deadline),
        _ => Err(BrokerError {
            fatal: true,
            message: "only Redis and RabbitMQ brokers are asked natively".into(),
        }),
    }
}

fn redis_db(target: &Target) -> &str {
    target.database.as_deref().unwrap_or("0")
}

fn ask_redis(
    target: &Target,
    destinations: &[String],
    deadline: Instant,
) -> Result<Answers, BrokerError> {
    let mut session = resp::Session::open(target, deadline).map_err(BrokerError::from_verdict)?;
    let reply_key = format!("airflow-entrypoint.reply.{}", uuid4());
    let channel = format!("/{}.{MAILBOX}", redis_db(target));
    let expires = deadline.saturating_duration_since(Instant::now());
    let mut answers = Answers::default();
    let published = Instant::now();
    for method in ["ping", "active_queues"] {
        let body = request_body(method, destinations, &reply_key);
        let envelope = redis_envelope(&body, MAILBOX, expires);
        session
            .send(&[b"PUBLISH", channel.as_bytes(), envelope.as_bytes()])
            .map_err(BrokerError::broken)?;
    }
    let mut listeners = i64::MAX;
    for _ in 0..2 {
        match session.receive().map_err(BrokerError::broken)? {
            Resp::Int(n) => listeners = listeners.min(n),
            other => {
                return Err(BrokerError::broken(format!(
                    "PUBLISH answered {}",
                    resp::describe(&other)
                )))
            }
        }
    }
    answers.listeners = Some(listeners);
    if listeners == 0 {
        return Ok(answers);
    }
    let expected_nodes = usize::try_from(listeners).ok();
    let wait_until = deadline.checked_sub(CLEANUP).unwrap_or(deadline);
    while !complete(&answers, destinations, expected_nodes) {
        let left = wait_until.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(10) {
            break;
        }
        let seconds = format!("{:.3}", left.as_secs_f64());
        match session
            .call(&[b"BLPOP", reply_key.as_bytes(), seconds.as_bytes()])
            .map_err(BrokerError::broken)?
        {
            Resp::Array(None) => break,
            Resp::Array(Some(items)) => {
                if let Some(Resp::Bulk(Some(raw))) = items.get(1) {
                    if let Some(reply) = open_redis_envelope(raw) {
                        file_reply(&mut answers, &reply, published.elapsed());
                    }
                }
            }
            Resp::Error(text) => {
                return Err(BrokerError::broken(format!(
                    "BLPOP failed: {}",
                    resp::describe(&Resp::Error(text))
                )))
            }
            _ => {}
        }
    }
    // Leave nothing behind: the list is gone once emptied; if a node that
    // got the request has not answered, its late reply lands in a list
    // that expires instead of one that lives for ever.
    if !complete(&answers, destinations, expected_nodes) {
        let key = reply_key.as_bytes();
        let _ = session.call(&[b"RPUSH", key, b"{}"]);
        let _ = session.call(&[b"PEXPIRE", key, LATE_REPLY_TTL_MS.as_bytes()]);
    } else {
        let _ = session.call(&[b"DEL", reply_key.as_bytes()]);
    }
    Ok(answers)
}

fn amqp_error(f: amqp_session::Failure) -> BrokerError {
    BrokerError::broken(f.to_string())
}

fn ask_amqp(
    target: &Target,
    destinations: &[String],
    deadline: Instant,
) -> Result<Answers, BrokerError> {
    let mut session =
        amqp_session::Session::open(target, deadline).map_err(BrokerError::from_verdict)?;
    let queue = session.declare_private_queue().map_err(amqp_error)?;
    session.consume(&queue).map_err(amqp_error)?;
    let headers = amqp_session::table(&[("clock", Field::Long(1))]);
    let published = Instant::now();
    for method in ["ping", "active_queues"] {
        let body = request_body(method, destinations, &queue).to_string();
        session
            .publish_json(MAILBOX, "", &headers, body.as_bytes())
            .map_err(amqp_error)?;
    }
    let mut answers = Answers::default();
    while !complete(&answers, destinations, None) {
        match session.next_delivery() {
            Ok(delivery) => {
                if let Ok(reply) = serde_json::from_slice::<Value>(&delivery.body) {
                    file_reply(&mut answers, &reply, published.elapsed());
                }
            }
            Err(amqp_session::Failure::Refused { code: 404, .. }) => {
                answers.no_mailbox = true;
                return Ok(answers);
            }
            Err(amqp_session::Failure::Refused { code, text }) => {
                return Err(BrokerError::broken(format!(
                    "the broker answered {code} {text}"
                )))
            }
            // The deadline: whoever answered by then has answered. The
            // private queue goes with the connection.
            Err(amqp_session::Failure::Broken(_)) => return Ok(answers),
        }
    }
    session.close();
    Ok(answers)
}

/// Waits for `node`'s `worker-heartbeat` event until the deadline: how long
/// it took, or None when none came.
pub fn heartbeat(
    target: &Target,
    node: &str,
    deadline: Instant,
) -> Result<Option<Duration>, BrokerError> {
    let started = Instant::now();
    let is_ours = |event: &Value| {
        event.get("hostname").and_then(Value::as_str) == Some(node)
            && event.get("type").and_then(Value::as_str) == Some("worker-heartbeat")
    };
    match target.kind {
        Kind::Redis => {
            let mut session =
                resp::Session::open(target, deadline).map_err(BrokerError::from_verdict)?;
            let channel = format!("/{}.{EVENTS}/{HEARTBEAT_KEY}", redis_db(target));
            session
                .send(&[b"SUBSCRIBE", channel.as_bytes()])
                .map_err(BrokerError::broken)?;
            loop {
                let Ok(message) = session.receive() else {
                    return Ok(None);
                };
                if let Resp::Array(Some(items)) = message {
                    if let (Some(Resp::Bulk(Some(kind))), Some(Resp::Bulk(Some(raw)))) =
                        (items.first(), items.get(2))
                    {
                        if kind == b"message"
                            && open_redis_envelope(raw).is_some_and(|e| is_ours(&e))
                        {
                            return Ok(Some(started.elapsed()));
                        }
                    }
                }
            }
        }
        Kind::Amqp => {
            let mut session =
                amqp_session::Session::open(target, deadline).map_err(BrokerError::from_verdict)?;
            let queue = session.declare_private_queue().map_err(amqp_error)?;
            match session.bind(&queue, EVENTS, HEARTBEAT_KEY) {
                Ok(()) => {}
                Err(amqp_session::Failure::Refused { code: 404, .. }) => return Ok(None),
                Err(f) => return Err(amqp_error(f)),
            }
            session.consume(&queue).map_err(amqp_error)?;
            loop {
                match session.next_delivery() {
                    Ok(d) => {
                        if serde_json::from_slice::<Value>(&d.body).is_ok_and(|e| is_ours(&e)) {
                            session.close();
                            return Ok(Some(started.elapsed()));
                        }
                    }
                    Err(_) => return Ok(None),
                }
            }
        }
        _ => Err(BrokerError {
            fatal: true,
            message: "only Redis and RabbitMQ brokers are asked natively".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(uuid4(), id);
    }

    #[test]
    fn a_redis_envelope_round_trips_and_has_what_workers_need() {
        let body = request_body("ping", &["celery@a".to_string()], "k");
        let raw = redis_envelope(&body, MAILBOX, Duration::from_secs(1));
        let envelope: Value = serde_json::from_str(&raw).unwrap_or_default();
        assert_eq!(envelope["content-type"], "application/json");
        assert!(envelope["properties"]["delivery_tag"].is_string());
        assert_eq!(open_redis_envelope(raw.as_bytes()), Some(body.clone()));
        assert_eq!(body["reply_to"]["exchange"], "");
        assert_eq!(body["destination"][0], "celery@a");
        let all = request_body("ping", &[], "k");
        assert!(all["destination"].is_null());
    }

    #[test]
    fn replies_are_filed_by_shape() {
        let mut answers = Answers::default();
        file_reply(
            &mut answers,
            &json!({"celery@a": {"ok": "pong"}}),
            Duration::from_millis(3),
        );
        file_reply(
            &mut answers,
            &json!({"celery@a": [{"name": "default"}, {"name": "x"}]}),
            Duration::from_millis(4),
        );
        let a = &answers.nodes["celery@a"];
        assert_eq!(a.ping, Some(json!({"ok": "pong"})));
        assert_eq!(a.queues, Some(vec!["default".to_string(), "x".to_string()]));
        assert!(complete(&answers, &["celery@a".into()], None));
        assert!(!complete(&answers, &["celery@b".into()], None));
        assert!(complete(&answers, &[], Some(1)));
        assert!(!complete(&answers, &[], None));
    }

    #[test]
    fn garbage_envelopes_are_ignored_not_fatal() {
        for raw in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"body\": 3}",
            b"{\"body\": \"!!!\", \"properties\": {\"body_encoding\": \"base64\"}}",
        ] {
            assert_eq!(open_redis_envelope(raw), None);
        }
        let mut answers = Answers::default();
        file_reply(&mut answers, &json!([1, 2]), Duration::ZERO);
        file_reply(&mut answers, &json!({"n": 5}), Duration::ZERO);
        assert!(answers.nodes.get("n").is_some_and(|a| a.ping.is_none()));
    }
}
