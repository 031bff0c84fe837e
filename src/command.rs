//! The command phase: the planned COMMAND resolved to a program on the
//! service user's PATH, and the signal policy the supervisor applies to it
//! (scope, grace, maps). It never spawns: the supervisor does.

use std::ffi::{OsStr, OsString};

use crate::airflow::components::Planned;
use crate::env::layers::Layered;
use crate::error::Failure;
use crate::settings::Settings;
use crate::signals::SignalScope;
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
            take_terminal: self.take_terminal,
        }
    }
}

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
