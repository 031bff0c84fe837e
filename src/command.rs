//! The command phase: the planned COMMAND resolved to a program on the
//! service user's PATH, and the signal policy the supervisor applies to it
//! (scope, grace, maps). It never spawns: the supervisor does.

use std::ffi::{OsStr, OsString};

use crate::airflow::components::Planned;
use crate::airflow::{self, Member};
use crate::env::layers::Layered;
use crate::error::Failure;
use crate::settings::Settings;
use crate::signals::SignalScope;
use crate::supervisor::group::{Component, GroupPolicy};
use crate::supervisor::program::{resolve, Resolved};
use crate::supervisor::spawn::SpawnRequest;
use crate::supervisor::Policy;

/// Everything the supervisor needs to start and watch the main child.
pub struct Launch {
    pub resolved: Resolved,
    pub env: Vec<(OsString, OsString)>,
    pub policy: Policy,
    /// standalone must get Ctrl-C as a forwarded SIGINT to its main
    /// process: the terminal would send it to its whole group.
    pub take_terminal: bool,
}

impl Launch {
    pub fn request(&self) -> SpawnRequest<'_> {
        SpawnRequest {
            program: &self.resolved.program,
            argv0: &self.resolved.argv0,
            args: &self.resolved.args,
            env: &self.env,
            capture_stdout: false,
            capture_stderr: false,
            take_terminal: self.take_terminal,
            dir: None,
        }
    }
}

/// Several components: each resolved as a single command would be, with
/// its own signal policy, and the api-server's readiness probe.
pub fn prepare_group(
    settings: &Settings,
    layers: &Layered,
    members: &[Member],
) -> Result<(Vec<Component>, GroupPolicy), Failure> {
    let mut components = Vec::new();
    for member in members {
        let launch = prepare(settings, layers, &member.planned)?;
        components.push(Component {
            name: member.name.clone(),
            program: launch.resolved.program,
            argv0: launch.resolved.argv0,
            args: launch.resolved.args,
            env: launch.env,
            policy: launch.policy,
            ready: member
                .is_api_server()
                .then(|| airflow::api_server_probe(layers, member)),
        });
    }
    let group = GroupPolicy {
        restart: settings.restart,
        restart_limit: settings.restart_limit,
        ready_timeout: settings.ready_timeout,
        stop_timeout: settings.grace_period.unwrap_or(GROUP_STOP_TIMEOUT),
        kill_timeout: settings.kill_timeout,
    };
    Ok((components, group))
}

/// Several components: TERM to KILL when GRACE_PERIOD is unset.
const GROUP_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves the planned COMMAND (after the drop: as the service user would
/// find it) and the policy the supervisor applies to it.
pub fn prepare(
    settings: &Settings,
    layers: &Layered,
    planned: &Planned,
) -> Result<Launch, Failure> {
    let env = layers.child_env();
    let resolved = resolve(&planned.argv, layers.get("PATH").map(OsStr::new))?;
    let default_scope = if planned.child_scope {
        SignalScope::Child
    } else {
        SignalScope::Group
    };
    let signal_map = if settings.signal_map.is_empty() && planned.term_as_int {
        tracing::info!("`standalone` stops cleanly on SIGINT only: SIGTERM is forwarded as SIGINT");
        vec![(libc::SIGTERM, Some(libc::SIGINT))]
    } else {
        settings.signal_map.clone()
    };
    let policy = Policy {
        scope: signal_scope(settings, layers, default_scope),
        grace_period: settings.grace_period,
        kill_timeout: settings.kill_timeout,
        term_delay: settings.term_delay,
        signal_map,
        exit_code_map: settings.exit_code_map.clone(),
    };
    Ok(Launch {
        resolved,
        env,
        policy,
        take_terminal: !planned.term_as_int,
    })
}

/// `AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE` when set, else `DUMB_INIT_SETSID=0`
/// means `child`, else the command's default.
fn signal_scope(settings: &Settings, layers: &Layered, default: SignalScope) -> SignalScope {
    if let Some(scope) = settings.signal_scope {
        return scope;
    }
    match layers.get("DUMB_INIT_SETSID").map(str::trim) {
        Some("0") => SignalScope::Child,
        Some("1") | None => default,
        Some(other) => {
            tracing::warn!(
                value = other,
                "DUMB_INIT_SETSID is neither 0 nor 1; ignored"
            );
            default
        }
    }
}
