//! The Celery worker's liveness without Python: native answers to
//! `celery … inspect ping` (and `python -m celery …`, as the Helm chart
//! calls it) and `--healthcheck worker`. Healthy means the node answers
//! ping *and* its `active_queues` shows it consuming its queues (a worker
//! can pong and consume nothing, apache/airflow#63580); with remote control
//! off, the node's own heartbeat event decides. Anything it does not know
//! goes to the real `celery`. It reads the broker, never writes to a queue
//! a worker consumes, and leaves nothing behind.

pub mod mailbox;

use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::env::layers::Layered;
use crate::env::options::Options;
use crate::env::urls::{self, Runner};
use crate::error::Failure;
use crate::signals::SignalInbox;
use crate::wire::url::{self, Kind, Target};

use mailbox::{Answers, BrokerError};

/// The module paths of Airflow's Celery app, old and new.
const AIRFLOW_APPS: [&str; 4] = [
    "airflow.providers.celery.executors.celery_executor.app",
    "airflow.providers.celery.executors.celery_executor",
    "airflow.executors.celery_executor.app",
    "airflow.executors.celery_executor",
];

/// `celery inspect ping`'s default reply timeout, in seconds.
const DEFAULT_TIMEOUT: f64 = 1.0;
/// A worker sends a heartbeat every 2 s: one interval and a margin.
const HEARTBEAT_WAIT: Duration = Duration::from_millis(2500);
/// What `--healthcheck worker` allows the broker's answer (the whole
/// check stays inside `--healthcheck`'s 5 s).
const HEALTHCHECK_WAIT: Duration = Duration::from_secs(3);

/// `celery … inspect ping …`, its flags parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub broker: Option<String>,
    pub timeout: Duration,
    pub destinations: Vec<String>,
    pub json: bool,
    pub quiet: bool,
}

fn basename(arg: &OsString) -> Option<&str> {
    let text = arg.to_str()?;
    Some(text.rsplit('/').next().unwrap_or(text))
}

/// The arguments after the program for the shapes this answers:
/// `celery ARGS`, `python -m celery ARGS`, `airflow celery ARGS` (what a
/// bare `celery ARGS` becomes under the entrypoint's Airflow rules).
fn celery_args(argv: &[OsString]) -> Option<&[OsString]> {
    let first = basename(argv.first()?)?;
    if first == "celery" {
        return argv.get(1..);
    }
    if first.starts_with("python")
        && argv.get(1).and_then(|a| a.to_str()) == Some("-m")
        && argv.get(2).and_then(|a| a.to_str()) == Some("celery")
    {
        return argv.get(3..);
    }
    if first == "airflow" && argv.get(1).and_then(|a| a.to_str()) == Some("celery") {
        let rest = argv.get(2..)?;
        let next = rest.first().and_then(|a| a.to_str())?;
        // `airflow celery worker` and its siblings are Airflow's own.
        if next.starts_with('-') || next == "inspect" {
            return Some(rest);
        }
    }
    None
}

/// The command's native form; `Ok(None)` when it is not a Celery command
/// at all, `Err(why)` when it is one this does not answer.
pub fn parse(argv: &[OsString]) -> Result<Option<Ping>, String> {
    let Some(args) = celery_args(argv) else {
        return Ok(None);
    };
    let mut words = crate::airflow::flags::FlagWords::new(args)?;
    let (mut app, mut broker, mut quiet) = (None, None, false);
    // The `celery` group's options, then the sub-command.
    loop {
        let Some(word) = words.next() else {
            return Err("no sub-command".into());
        };
        match word.as_str() {
            "-A" | "--app" => app = Some(words.value_of(&word)?),
            "-b" | "--broker" => broker = Some(words.value_of(&word)?),
            "-q" | "--quiet" => quiet = true,
            "-C" | "--no-color" | "--skip-checks" => {}
            "inspect" => break,
            other if other.starts_with('-') => {
                return Err(format!("{other} is not a celery option this answers"))
            }
            other => return Err(format!("`celery {other}` is not a probe this answers")),
        }
    }
    match app.as_deref() {
        Some(name) if AIRFLOW_APPS.contains(&name) => {}
        Some(name) => return Err(format!("--app {name} is not Airflow's Celery app")),
        None => return Err("no --app: the default app is not Airflow's".into()),
    }
    let (mut action, mut timeout, mut destinations, mut json) =
        (None, DEFAULT_TIMEOUT, Vec::new(), false);
    while let Some(word) = words.next() {
        match word.as_str() {
            "-t" | "--timeout" => {
                let v = words.value_of(&word)?;
                timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
                    .ok_or_else(|| format!("{word} {v} is not a number of seconds"))?;
            }
            "-d" | "--destination" => {
                let v = words.value_of(&word)?;
                destinations.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(str::to_string),
                );
            }
            "-j" | "--json" => json = true,
            other if other.starts_with('-') => {
                return Err(format!("{other} is not an inspect option this answers"))
            }
            other if action.is_none() => action = Some(other.to_string()),
            other => return Err(format!("an extra argument {other}")),
        }
    }
    match action.as_deref() {
        Some("ping") => Ok(Some(Ping {
            broker,
            timeout: Duration::from_secs_f64(timeout),
            destinations,
            json,
            quiet,
        })),
        Some(other) => Err(format!("`inspect {other}` is not a probe this answers")),
        None => Err("`inspect` without an action".into()),
    }
}

/// The Celery worker running in this container, as its process title shows
/// it: `[celeryd: NODE:MainProcess] -active- (celery worker -q a,b …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorker {
    pub node: String,
    /// The queues it was started with (`-q`/`--queues`), if given.
    pub queues: Option<Vec<String>>,
}

/// Reads one process title; None when it is not a Celery worker's.
pub fn worker_from_title(title: &str) -> Option<LocalWorker> {
    let rest = title.strip_prefix("[celeryd: ")?;
    let (node, rest) = rest.split_once(":MainProcess]")?;
    let args = rest
        .rfind('(')
        .map(|open| &rest[open + 1..])
        .map(|a| a.trim_end().trim_end_matches(')'))
        .unwrap_or("");
    let mut queues = None;
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        let list = match word {
            "-q" | "--queues" => words.next(),
            w if w.starts_with("--queues=") => w.strip_prefix("--queues="),
            w if w.starts_with("-q") && w.len() > 2 => w.get(2..),
            _ => None,
        };
        if let Some(list) = list {
            queues = Some(
                list.split(',')
                    .filter(|q| !q.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    Some(LocalWorker {
        node: node.to_string(),
        queues,
    })
}

/// The Celery workers visible in this PID namespace.
pub fn local_workers() -> Vec<LocalWorker> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // Most processes are not workers: a look at the first bytes, with
        // no allocation, before reading a whole title.
        let path = entry.path().join("cmdline");
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let mut head = [0u8; 10];
        if std::io::Read::read(&mut file, &mut head).ok() != Some(head.len())
            || &head != b"[celeryd: "
        {
            continue;
        }
        let mut raw = head.to_vec();
        if std::io::Read::read_to_end(&mut std::io::Read::take(file, 64 * 1024), &mut raw).is_err()
        {
            continue;
        }
        let title = String::from_utf8_lossy(&raw);
        let title = title.trim_end_matches('\0').replace('\0', " ");
        if let Some(worker) = worker_from_title(&title) {
            found.push(worker);
        }
    }
    found
}

/// Celery's default node name: `celery@` and the host name.
pub fn default_node() -> String {
    format!("celery@{}", crate::airflow::jobs::host_name())
}

/// How the broker is asked, or why the real `celery` must answer.
pub struct Plan {
    pub target: Target,
    pub shown_url: String,
    pub remote_control: bool,
    /// `[operators] default_queue`: what a worker started without `-q` consumes.
    pub default_queue: String,
}

/// The broker and mode from the flags and Airflow's configuration.
pub fn plan(
    layers: &Layered,
    broker: Option<&str>,
    run: &mut Runner<'_>,
) -> Result<Result<Plan, String>, Failure> {
    let url = match broker {
        Some(url) => url.to_string(),
        None => urls::resolve(urls::Url::CeleryBroker, layers, run)?.url,
    };
    let shown_url = url::mask(&url);
    let target = match url::parse(&url) {
        Ok(t) => t,
        Err(e) => return Ok(Err(format!("the broker URL is not one this reads: {e}"))),
    };
    if !matches!(target.kind, Kind::Redis | Kind::Amqp) {
        return Ok(Err(format!(
            "only Redis and RabbitMQ brokers are asked natively, not {shown_url}"
        )));
    }
    if target.endpoints.len() > 1 && target.kind == Kind::Redis {
        return Ok(Err("a Redis failover list".into()));
    }
    let mut options = Options::new(layers);
    // Options that rename the channels or replace Airflow's Celery config.
    for key in ["global_keyprefix", "fanout_prefix", "fanout_patterns"] {
        if let Some(v) = options.get("celery_broker_transport_options", key)? {
            return Ok(Err(format!(
                "[celery_broker_transport_options] {key} is set ({})",
                v.origin
            )));
        }
    }
    if let Some(v) = options.get("celery", "celery_config_options")? {
        if !v.value.ends_with("default_celery.DEFAULT_CELERY_CONFIG") {
            return Ok(Err(format!(
                "[celery] celery_config_options is a custom config ({})",
                v.origin
            )));
        }
    }
    let remote_control = match options.get("celery", "worker_enable_remote_control")? {
        Some(v) => crate::settings::parse_bool(&v.value).ok_or_else(|| {
            Failure::config(format!(
                "{}: worker_enable_remote_control is {:?}; use True or False",
                v.origin, v.value
            ))
        })?,
        None => true,
    };
    let default_queue = options
        .get("operators", "default_queue")?
        .map_or_else(|| "default".to_string(), |v| v.value);
    Ok(Ok(Plan {
        target,
        shown_url,
        remote_control,
        default_queue,
    }))
}

/// One node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    /// Answered ping and consumes its queues; the detail is for the line.
    Healthy(String),
    Unhealthy(String),
    /// Not heard from at all.
    Silent,
}

/// Judges one node's answers: pong, and its queues consumed.
pub fn judge(
    node: &str,
    answer: Option<&mailbox::NodeAnswer>,
    expected: Option<&[String]>,
) -> NodeVerdict {
    let Some(answer) = answer else {
        return NodeVerdict::Silent;
    };
    let Some(ping) = &answer.ping else {
        return NodeVerdict::Silent;
    };
    if ping.get("ok").is_none() {
        return NodeVerdict::Unhealthy(format!("{node} answered ping with an error"));
    }
    let took = answer
        .ping_after
        .map_or(String::new(), |d| format!(" in {} ms", d.as_millis()));
    let Some(queues) = &answer.queues else {
        return NodeVerdict::Unhealthy(format!(
            "{node} answered ping{took} but not active_queues in time"
        ));
    };
    if queues.is_empty() {
        return NodeVerdict::Unhealthy(format!(
            "{node} answers ping{took} but consumes no queue: its task consumer is gone (as after a broker restart, apache/airflow#63580); restart the worker"
        ));
    }
    if let Some(expected) = expected {
        let missing: Vec<&str> = expected
            .iter()
            .filter(|q| !queues.contains(q))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return NodeVerdict::Unhealthy(format!(
                "{node} answers ping{took} but does not consume {} (it consumes {})",
                missing.join(", "),
                queues.join(", ")
            ));
        }
    }
    NodeVerdict::Healthy(format!(
        "{node} answered ping{took} and consumes {}",
        queues.join(", ")
    ))
}

/// The queues to expect of `node`: those it was started with when it runs
/// here, else its configured default queue when it runs here without `-q`,
/// else none in particular (any queue will do).
fn expected_queues(plan: &Plan, node: &str, here: &[LocalWorker]) -> Option<Vec<String>> {
    let worker = here.iter().find(|w| w.node == node)?;
    if let Some(queues) = &worker.queues {
        return Some(queues.clone());
    }
    Some(vec![plan.default_queue.clone()])
}

/// The outcome of asking the broker.
enum Asked {
    Mailbox(Answers),
    Heartbeat(Option<Duration>),
}

/// Asks the broker within `budget`: the mailbox, or the heartbeat when
/// remote control is off.
fn ask(
    inbox: &SignalInbox,
    plan: &Plan,
    nodes: &[String],
    budget: Duration,
) -> Result<Result<Asked, BrokerError>, Failure> {
    let target = plan.target.clone();
    let nodes = nodes.to_vec();
    let remote_control = plan.remote_control;
    let budget = if remote_control {
        budget
    } else {
        budget.max(HEARTBEAT_WAIT)
    };
    let deadline = Instant::now() + budget;
    let outcome = crate::readiness::bounded::off_thread(inbox, deadline, move || {
        if remote_control {
            mailbox::ask(&target, &nodes, deadline).map(Asked::Mailbox)
        } else {
            let node = nodes.first().cloned().unwrap_or_else(default_node);
            mailbox::heartbeat(&target, &node, deadline).map(Asked::Heartbeat)
        }
    })?;
    Ok(outcome.unwrap_or_else(|| {
        Err(BrokerError {
            fatal: false,
            message: format!(
                "no answer within {:.1} s (DNS resolver stuck?)",
                budget.as_secs_f64()
            ),
        })
    }))
}

fn broker_line(plan: &Plan, e: &BrokerError) -> String {
    crate::redact::redact(&format!(
        "cannot ask the Celery broker {}: {}",
        plan.shown_url, e.message
    ))
    .into_owned()
}

/// The native `celery inspect ping`: Celery's output on Celery's streams;
/// exit 0 healthy, 69 when a node did not answer or consumes nothing, 1
/// when the broker could not be asked.
pub fn answer_ping(inbox: &SignalInbox, ping: &Ping, plan: &Plan) -> Result<i32, Failure> {
    let here = local_workers();
    let asked_nodes: Vec<String> = if !plan.remote_control && ping.destinations.is_empty() {
        vec![here.first().map_or_else(default_node, |w| w.node.clone())]
    } else {
        ping.destinations.clone()
    };
    let asked = match ask(inbox, plan, &asked_nodes, ping.timeout)? {
        Ok(asked) => asked,
        Err(e) => {
            eprintln!("Error: {}", broker_line(plan, &e));
            return Ok(1);
        }
    };
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut online = 0;
    match asked {
        Asked::Heartbeat(seen) => {
            let node = asked_nodes.first().cloned().unwrap_or_default();
            match seen {
                Some(after) => {
                    online = 1;
                    if ping.json {
                        out.push_str(&format!("{{{}}}\n", json_pong(&node)));
                    } else {
                        out.push_str(&say_ok(ping.quiet, &node, "heartbeat (remote control is off)"));
                    }
                    tracing::debug!("{node}: heartbeat after {} ms", after.as_millis());
                }
                None => problems.push(format!(
                    "{node} sent no heartbeat within {:.1} s (remote control is off, so its heartbeat is the check)",
                    ping.timeout.max(HEARTBEAT_WAIT).as_secs_f64()
                )),
            }
        }
        Asked::Mailbox(answers) => {
            let nodes: Vec<String> = if ping.destinations.is_empty() {
                answers.nodes.keys().cloned().collect()
            } else {
                ping.destinations.clone()
            };
            let mut json_items = Vec::new();
            for node in &nodes {
                let expected = expected_queues(plan, node, &here);
                match judge(node, answers.nodes.get(node), expected.as_deref()) {
                    NodeVerdict::Healthy(detail) => {
                        online += 1;
                        tracing::debug!("{detail}");
                        json_items.push(json_pong(node));
                        out.push_str(&say_ok(ping.quiet, node, "pong"));
                    }
                    NodeVerdict::Unhealthy(why) => problems.push(why),
                    NodeVerdict::Silent => {}
                }
            }
            if ping.json && online > 0 {
                out = format!("{{{}}}\n", json_items.join(", "));
            }
            if online == 0
                && problems.is_empty()
                && (answers.listeners == Some(0) || answers.no_mailbox)
            {
                tracing::debug!("no worker listens for remote control on {}", plan.shown_url);
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    if online > 0 && problems.is_empty() && !ping.json && !ping.quiet {
        let noun = if online == 1 { "node" } else { "nodes" };
        let _ = writeln!(stdout, "\n{online} {noun} online.");
    }
    let _ = stdout.flush();
    let mut stderr = std::io::stderr().lock();
    for problem in &problems {
        let _ = writeln!(stderr, "Error: {}", crate::redact::redact(problem));
    }
    if online == 0 && problems.is_empty() {
        let _ = writeln!(stderr, "Error: No nodes replied within time constraint");
    }
    Ok(if online > 0 && problems.is_empty() {
        0
    } else {
        69
    })
}

/// Replaces this process with the real `celery … inspect ping -d NODE`
/// from the service user's PATH; returns only when that fails.
fn hand_to_celery(layers: &Layered, node: &str, why: &str) -> String {
    use std::os::unix::process::CommandExt;
    eprintln!("asking the real celery: {}", crate::redact::redact(why));
    let path = layers.get("PATH").map(std::ffi::OsStr::new);
    let Ok(program) =
        crate::supervisor::program::find_program(std::ffi::OsStr::new("celery"), path)
    else {
        return format!("cannot check the worker natively ({why}) and there is no celery on PATH");
    };
    let error = std::process::Command::new(program)
        .args(["--app", AIRFLOW_APPS[0], "inspect", "ping", "-d", node])
        .env_clear()
        .envs(layers.child_env())
        .exec();
    format!("cannot run celery: {error}")
}

/// One node's entry in `--json` output, `"NODE": {"ok": "pong"}`: the
/// name comes from the broker, so it is a JSON string, escaped.
fn json_pong(node: &str) -> String {
    let name = serde_json::Value::from(node).to_string();
    format!("{name}: {{\"ok\": \"pong\"}}")
}

/// Celery's reply line for one node and its indented body.
fn say_ok(quiet: bool, node: &str, body: &str) -> String {
    // Celery writes its arrow and a space before the line's own space.
    let direction = if quiet { "" } else { "-> " };
    format!("{direction} {node}: OK\n        {body}\n")
}

/// The node `--healthcheck worker` asks: the one worker running here;
/// among several, `celery@HOSTNAME` (the `--hostname` setting, else the
/// host's name) when it is one of them, else the first.
fn node_to_check(here: &[LocalWorker], hostname: Option<&str>) -> String {
    let wanted = hostname.map_or_else(default_node, |h| format!("celery@{h}"));
    match here {
        [] => wanted,
        [one] => one.node.clone(),
        several => several
            .iter()
            .find(|w| w.node == wanted)
            .unwrap_or(&several[0])
            .node
            .clone(),
    }
}

/// `--healthcheck worker`: this container's worker (or `celery@HOST`),
/// by `deadline` (the check's 5 s). Ok(detail) healthy, Err(reason) not.
/// A broker or set-up it cannot ask natively goes to the real `celery …
/// inspect ping` (exec).
pub fn health(
    inbox: &SignalInbox,
    layers: &Layered,
    hostname: Option<&str>,
    run: &mut Runner<'_>,
    deadline: Instant,
) -> Result<String, String> {
    let here = local_workers();
    let node = node_to_check(&here, hostname);
    let plan = match plan(layers, None, run) {
        Ok(Ok(plan)) => plan,
        Ok(Err(why)) => return Err(hand_to_celery(layers, &node, &why)),
        Err(failure) => return Err(failure.message),
    };
    // At most HEALTHCHECK_WAIT, and no more than is left of the check:
    // resolving the broker URL (a `_CMD`) has already spent some of it.
    let budget = HEALTHCHECK_WAIT.min(deadline.saturating_duration_since(Instant::now()));
    let asked = match ask(inbox, &plan, std::slice::from_ref(&node), budget) {
        Ok(Ok(asked)) => asked,
        Ok(Err(e)) => return Err(broker_line(&plan, &e)),
        Err(failure) => return Err(failure.message),
    };
    match asked {
        Asked::Heartbeat(Some(after)) => Ok(format!(
            "{node} sent its heartbeat after {} ms (remote control is off, so its heartbeat is the check) on {}",
            after.as_millis(),
            plan.shown_url
        )),
        Asked::Heartbeat(None) => Err(format!(
            "{node} sent no heartbeat within {:.1} s (remote control is off, so its heartbeat is the check) on {}",
            HEARTBEAT_WAIT.as_secs_f64(),
            plan.shown_url
        )),
        Asked::Mailbox(answers) => {
            let expected = expected_queues(&plan, &node, &here);
            match judge(&node, answers.nodes.get(&node), expected.as_deref()) {
                NodeVerdict::Healthy(detail) => Ok(format!("{detail} (remote control on {})", plan.shown_url)),
                NodeVerdict::Unhealthy(why) => Err(why),
                NodeVerdict::Silent if answers.listeners == Some(0) || answers.no_mailbox => Err(format!(
                    "{node} did not answer ping: no worker listens for remote control on {}",
                    plan.shown_url
                )),
                NodeVerdict::Silent => Err(format!(
                    "{node} did not answer ping within {:.1} s on {}",
                    budget.as_secs_f64(),
                    plan.shown_url
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    const APP: &str = "airflow.providers.celery.executors.celery_executor.app";

    #[test]
    fn the_chart_and_quick_start_forms_parse() {
        let want = Ping {
            broker: None,
            timeout: Duration::from_secs(1),
            destinations: vec!["celery@w-0".into()],
            json: false,
            quiet: false,
        };
        for form in [
            vec![
                "python",
                "-m",
                "celery",
                "--app",
                APP,
                "inspect",
                "ping",
                "-d",
                "celery@w-0",
            ],
            vec![
                "/usr/local/bin/python3",
                "-m",
                "celery",
                "-A",
                APP,
                "inspect",
                "ping",
                "--destination=celery@w-0",
            ],
            vec![
                "celery",
                "--app",
                APP,
                "inspect",
                "ping",
                "-d",
                "celery@w-0",
            ],
            vec![
                "/opt/venv/bin/celery",
                "--app",
                APP,
                "inspect",
                "-d",
                "celery@w-0",
                "ping",
            ],
            vec![
                "airflow",
                "celery",
                "--app",
                APP,
                "inspect",
                "ping",
                "-d",
                "celery@w-0",
            ],
        ] {
            assert_eq!(parse(&argv(&form)), Ok(Some(want.clone())), "{form:?}");
        }
        let p = parse(&argv(&[
            "celery",
            "-A",
            APP,
            "-b",
            "redis://r:6379/1",
            "inspect",
            "ping",
            "-t",
            "2.5",
            "-d",
            "a@x,b@y",
            "-j",
        ]));
        assert_eq!(
            p,
            Ok(Some(Ping {
                broker: Some("redis://r:6379/1".into()),
                timeout: Duration::from_millis(2500),
                destinations: vec!["a@x".into(), "b@y".into()],
                json: true,
                quiet: false,
            }))
        );
    }

    #[test]
    fn what_it_does_not_know_goes_to_celery() {
        assert_eq!(parse(&argv(&["airflow", "celery", "worker"])), Ok(None));
        assert_eq!(parse(&argv(&["scheduler"])), Ok(None));
        assert_eq!(parse(&argv(&["python", "-c", "print(1)"])), Ok(None));
        for form in [
            vec!["celery", "--app", APP, "inspect", "active", "-d", "x"],
            vec!["celery", "--app", APP, "inspect", "ping", "--pattern", "x"],
            vec!["celery", "--app", "myproj.app", "inspect", "ping"],
            vec!["celery", "inspect", "ping"],
            vec!["celery", "--app", APP, "status"],
            vec!["celery", "--app", APP, "--loader", "x", "inspect", "ping"],
            vec!["celery", "--app", APP, "inspect", "ping", "-t", "nan"],
            vec!["celery", "--app", APP, "inspect", "ping", "-t"],
            vec!["celery", "--app", APP, "inspect"],
        ] {
            assert!(parse(&argv(&form)).is_err(), "{form:?}");
        }
    }

    #[test]
    fn a_worker_title_gives_its_node_and_queues() {
        assert_eq!(
            worker_from_title(
                "[celeryd: celery@vm:MainProcess] -active- (celery worker --concurrency 1)"
            ),
            Some(LocalWorker {
                node: "celery@vm".into(),
                queues: None
            })
        );
        assert_eq!(
            worker_from_title(
                "[celeryd: celery@w-0:MainProcess] -active- (celery worker -q a,b --concurrency 1)"
            ),
            Some(LocalWorker {
                node: "celery@w-0".into(),
                queues: Some(vec!["a".into(), "b".into()])
            })
        );
        assert_eq!(
            worker_from_title("[celeryd: x@y:MainProcess] -active- (celery worker --queues=high)"),
            Some(LocalWorker {
                node: "x@y".into(),
                queues: Some(vec!["high".into()])
            })
        );
        assert_eq!(
            worker_from_title("[celeryd: celery@vm:ForkPoolWorker-1]"),
            None
        );
        assert_eq!(
            worker_from_title("/usr/bin/python airflow celery worker"),
            None
        );
    }

    #[test]
    fn the_verdict_needs_pong_and_queues() {
        let pong = |queues: Option<Vec<&str>>| mailbox::NodeAnswer {
            ping: Some(json!({"ok": "pong"})),
            ping_after: Some(Duration::from_millis(2)),
            queues: queues.map(|q| q.into_iter().map(str::to_string).collect()),
        };
        assert!(matches!(
            judge("n", Some(&pong(Some(vec!["default"]))), None),
            NodeVerdict::Healthy(_)
        ));
        assert!(
            matches!(judge("n", Some(&pong(Some(vec![]))), None), NodeVerdict::Unhealthy(m) if m.contains("consumes no queue"))
        );
        assert!(matches!(
            judge("n", Some(&pong(None)), None),
            NodeVerdict::Unhealthy(_)
        ));
        let expected = vec!["default".to_string(), "high".to_string()];
        assert!(
            matches!(judge("n", Some(&pong(Some(vec!["default"]))), Some(&expected)), NodeVerdict::Unhealthy(m) if m.contains("high"))
        );
        assert_eq!(judge("n", None, None), NodeVerdict::Silent);
        let error = mailbox::NodeAnswer {
            ping: Some(json!({"error": "x"})),
            ..Default::default()
        };
        assert!(matches!(
            judge("n", Some(&error), None),
            NodeVerdict::Unhealthy(_)
        ));
    }

    #[test]
    fn a_json_entry_escapes_the_node_name() {
        assert_eq!(json_pong("celery@w-0"), r#""celery@w-0": {"ok": "pong"}"#);
        assert_eq!(json_pong(r#"a"b"#), r#""a\"b": {"ok": "pong"}"#);
    }

    #[test]
    fn the_node_checked_is_the_one_running_here() {
        let w = |n: &str| LocalWorker {
            node: n.into(),
            queues: None,
        };
        assert_eq!(node_to_check(&[w("celery@a")], Some("b")), "celery@a");
        assert_eq!(
            node_to_check(&[w("celery@a"), w("celery@b")], Some("b")),
            "celery@b"
        );
        assert_eq!(
            node_to_check(&[w("celery@a"), w("celery@b")], Some("c")),
            "celery@a"
        );
        assert_eq!(node_to_check(&[], Some("c")), "celery@c");
    }

    #[test]
    fn the_reply_line_is_celerys() {
        assert_eq!(
            say_ok(false, "celery@vm", "pong"),
            "->  celery@vm: OK\n        pong\n"
        );
        assert_eq!(
            say_ok(true, "celery@vm", "pong"),
            " celery@vm: OK\n        pong\n"
        );
    }
}
