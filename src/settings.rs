//! The entrypoint's own settings: `AIRFLOW_ENTRYPOINT_*` variables (read with
//! envy) overridden by flags, validated once into one typed struct. Owns the
//! one table of settings that `--help`, the flag parser and the settings table of docs/configuration.md share.
//! A malformed value is a configuration error naming its source, never a default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tracing::level_filters::LevelFilter;

use crate::error::Failure;
use crate::logging::LogFormat;
use crate::signals::{parse_signal, SignalScope};

pub const PREFIX: &str = "AIRFLOW_ENTRYPOINT_";

/// One documented setting. `key` is the name without the prefix; compatibility
/// variables (no prefix, no flag) have `flag == false`.
pub struct SettingDoc {
    pub key: &'static str,
    pub flag: bool,
    pub kind: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

impl SettingDoc {
    pub fn env_name(&self) -> String {
        if self.flag {
            format!("{PREFIX}{}", self.key)
        } else {
            self.key.to_string()
        }
    }
    pub fn flag_name(&self) -> Option<String> {
        self.flag
            .then(|| format!("--{}", self.key.to_ascii_lowercase().replace('_', "-")))
    }
}

const fn own(
    key: &'static str,
    kind: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> SettingDoc {
    SettingDoc {
        key,
        flag: true,
        kind,
        default,
        meaning,
    }
}

const fn compat(
    key: &'static str,
    kind: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> SettingDoc {
    SettingDoc {
        key,
        flag: false,
        kind,
        default,
        meaning,
    }
}

/// Every setting the entrypoint reads, in the order --list-settings and docs/configuration.md list them.
pub const SETTINGS: &[SettingDoc] = &[
    own("LOG_FORMAT", "`text`\\|`json`", "`text`", "Format of the entrypoint's own log lines on stderr: human text, or one JSON object a line (`timestamp`, `level`, `phase`, `message` and the event's fields)."),
    own("LOG_LEVEL", "`error`\\|`warn`\\|`info`\\|`debug`\\|`trace`", "`info`", "Least severe level of the entrypoint's own log lines that is written."),
    own("SIGNAL_SCOPE", "`group`\\|`child`", "per command (`group`)", "Where forwarded signals go: the child's whole process group, or only the child. Wins over `DUMB_INIT_SETSID`."),
    own("GRACE_PERIOD", "seconds", "unset (never)", "After forwarding TERM, INT or QUIT, SIGKILL the child's group if it is still alive this long after. Unset: never escalate (several components: 30 s)."),
    own("KILL_TIMEOUT", "seconds", "`5`", "After the main child exits, the processes left behind get SIGTERM, then SIGKILL after this long."),
    own("TERM_DELAY", "seconds", "`0`", "Hold a SIGTERM this long before forwarding it (lets a Kubernetes Service drop the endpoint first). A second TERM or an INT forwards at once."),
    own("EXIT_CODE_MAP", "`FROM:TO,...`", "unset", "Rewrites the child's exit status on the way out (128+N for signal N counts), e.g. `143:0`. Never applies to the entrypoint's own failures."),
    own("SIGNAL_MAP", "`FROM:TO,...`", "unset", "Rewrites a forwarded signal, by name without `SIG`, e.g. `TERM:INT`; `TO` may be `NONE` to drop it. `FROM` cannot be KILL, STOP or CHLD (such an entry never applies: exit 78)."),
    own("PARENT_DEATH_SIGNAL", "signal name", "unset", "Ask the kernel for this signal when the entrypoint's parent dies (`PR_SET_PDEATHSIG`, as tini's `-p`), e.g. `TERM` or `KILL`: an entrypoint run under another supervisor (a CI runner, `docker exec` tooling) then ends with it. Set right after the settings are read, kept across the privilege drop; a parent already gone by then sends it at once. It reaches the entrypoint, which handles it as any signal sent to it (a TERM is forwarded, or ends start-up)."),
    own("ENV_DIR", "path", "`/etc/airflow-entrypoint/env.d`", "Image defaults: every `*.env` file here, in lexical order, is the lowest layer of the environment. A missing default directory is an empty layer; a directory named explicitly must exist. Each file is read only if regular and at most 1 MiB."),
    own("ENV_FILES", "paths, `:`-separated", "unset", "Deployment env files (a mounted ConfigMap or Secret), read in order above the image defaults and below the container's environment. Each must exist and be a regular file of at most 1 MiB (a FIFO, a device or a larger file is exit 78)."),
    own("LOG_ENV", "bool", "`false`", "Log the `--print-env` table (secrets masked) at every start-up."),
    own("RUN_AS_ROOT", "bool", "`false`", "Keep root instead of dropping to the service user (logged as a warning); skips the user lookup."),
    own("CREATE_USER", "bool", "`false`", "When started as root and neither `ASTRONOMER_USER` nor `ASTRONOMER_UID` exists in /etc/passwd, append the user with GID 0 instead of failing."),
    own("NO_NEW_PRIVS", "bool", "`true`", "Set `PR_SET_NO_NEW_PRIVS` after the drop, so no setuid binary can regain privileges. Not set when `AIRFLOW__CORE__DEFAULT_IMPERSONATION` is set (run_as_user needs sudo)."),
    own("UMASK", "octal", "`0002`", "The umask of every process started (group-writable files, for GID-0 setups such as OpenShift)."),
    own("WAIT", "`auto`\\|`always`\\|`never`", "`auto`", "Which commands wait for the metadata database (and the Celery broker): `auto` the Airflow components and DB commands; `always` every command, and none; `never` no waiting."),
    own("WAIT_TIMEOUT", "seconds", "`CONNECTION_CHECK_MAX_COUNT` × `CONNECTION_CHECK_SLEEP_TIME`", "The whole waiting budget; when it is spent, exit 69 with the last reason."),
    own("WAIT_INTERVAL", "seconds", "`0.25`", "Longest pause between two attempts, above 0; they start 50 ms apart and back off with jitter up to this (up to 0.1 s while the port is closed)."),
    own("WAIT_FOR_MIGRATIONS", "bool", "`false`", "After the metadata database answers, also wait (within the same budget) until its `alembic_version` (and `alembic_version_fab` when FAB's DB manager runs) holds the heads of the installed migration files. With `--wait-only` it replaces `airflow db check-migrations` in init containers."),
    own("MIGRATE", "`auto`\\|`always`", "`auto`", "With `_AIRFLOW_DB_MIGRATE=true`: `auto` skips `airflow db migrate` when the schema is already at the installed heads (one log line); `always` runs it every time."),
    own("NATIVE_CHECKS", "bool", "`true`", "Answer `airflow jobs check ...` and `airflow db check-migrations ...` natively from the database, without starting Python; hands them to the real `airflow` for a flag it does not know, a custom `hostname_callable`, a SQLite database, or a database that was not waited for (`--wait never`)."),
    own("HOSTNAME", "name", "as Airflow's default `hostname_callable`", "The host name Airflow records for this container's jobs, for `--healthcheck` and `airflow jobs check --local` when `[core] hostname_callable` is not the default."),
    own("INIT_DIR", "path", "`/etc/airflow-entrypoint/init.d`", "Every executable file here runs, in lexical order, as the service user after the wait and before the command; a failing one stops start-up. A missing default directory is fine."),
    own("RESTART", "`always`\\|`never`", "`always`", "Several components (`scheduler + api-server ...`): restart one that exits, with back-off (1 s doubling to 60 s, jitter, reset after 5 minutes up), or `never`: stop everything and exit with its status."),
    own("RESTART_LIMIT", "number", "`5`", "Several components: restarts of one component in a row (without 5 minutes up in between) before the entrypoint stops everything and exits with that component's status."),
    own("READY_TIMEOUT", "seconds", "`120`", "Several components: how long the others wait for the api-server to answer its health check before they start anyway (with a warning)."),
    own("STEP_TIMEOUT", "seconds", "`3600`", "Time limit of each start-up step (pip, migration, admin user, init script); past it the step is killed and start-up fails."),
    compat("CONNECTION_CHECK_MAX_COUNT", "number", "`20`", "Official-image compatibility: with `CONNECTION_CHECK_SLEEP_TIME` it sets the waiting budget (their product); `0` means do not wait."),
    compat("CONNECTION_CHECK_SLEEP_TIME", "seconds", "`3`", "Official-image compatibility: only shapes the budget now; attempts are 50–250 ms apart, not this far."),
    compat("ASTRONOMER_USER", "name", "`astro`", "The service user that root drops to (read from the merged environment layers). A name with `:`, white space, a control character or a leading `+`/`-`/`#` is exit 78 where it would be written into /etc/passwd."),
    compat("ASTRONOMER_UID", "number", "`5000`", "The UID that `ASTRONOMER_USER` must have (read from the merged layers)."),
    compat("AIRFLOW_HOME", "path", "`~/airflow` of the service user", "Airflow's home; exported to the child. The image defaults set `/usr/local/airflow`. With `:`, a line break or a control character it is exit 78 where it would be written into /etc/passwd as a home."),
    compat("AIRFLOW_VERSION", "version", "detected", "The installed Airflow's version, when it should not be detected from the `apache_airflow-*.dist-info` of the `airflow` on `PATH`."),
    compat("_AIRFLOW_DB_MIGRATE", "bool", "`false`", "Run `airflow db migrate` (`db upgrade` before 2.7) after the wait, before the command. `_AIRFLOW_DB_UPGRADE` is the deprecated name."),
    compat("_AIRFLOW_WWW_USER_CREATE", "bool", "`false`", "Create the admin user from `_AIRFLOW_WWW_USER_USERNAME` (`admin`), `_PASSWORD` or `_PASSWORD_CMD`, `_EMAIL`, `_FIRSTNAME`, `_LASTNAME`, `_ROLE` (`Admin`): `airflow users create` with FAB, the users setting and passwords file with Airflow 3's simple auth manager."),
    compat("_PIP_ADDITIONAL_REQUIREMENTS", "packages", "unset", "Development only: pip-install these into Airflow's environment (its venv, or the user site) at every start."),
    compat("DUMB_INIT_SETSID", "`0`\\|`1`", "unset", "dumb-init compatibility: `0` means signal scope `child` unless `AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE` is set; `1` or empty change nothing."),
];

pub fn find_by_flag(flag: &str) -> Option<&'static SettingDoc> {
    SETTINGS
        .iter()
        .find(|s| s.flag_name().as_deref() == Some(flag))
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_format: LogFormat,
    pub log_level: LevelFilter,
    pub signal_scope: Option<SignalScope>,
    pub grace_period: Option<Duration>,
    pub kill_timeout: Duration,
    pub term_delay: Duration,
    pub exit_code_map: Vec<(i32, i32)>,
    /// (from, to); `to == None` drops the signal.
    pub signal_map: Vec<(i32, Option<i32>)>,
    pub parent_death_signal: Option<i32>,
    pub env_dir: std::path::PathBuf,
    /// ENV_DIR was set explicitly (then it must exist).
    pub env_dir_explicit: bool,
    pub env_files: Vec<std::path::PathBuf>,
    pub log_env: bool,
    pub run_as_root: bool,
    pub create_user: bool,
    pub no_new_privs: bool,
    pub umask: u32,
    pub wait: WaitMode,
    pub wait_timeout: Option<Duration>,
    pub wait_interval: Duration,
    pub wait_for_migrations: bool,
    pub migrate: MigrateMode,
    pub native_checks: bool,
    pub hostname: Option<String>,
    pub init_dir: std::path::PathBuf,
    pub init_dir_explicit: bool,
    pub step_timeout: Duration,
    pub restart: bool,
    pub restart_limit: u32,
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    Auto,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    Auto,
    Always,
    Never,
}

/// Raw values as envy reads them; every field is text so that the
/// validators below can name the variable in their errors.
#[derive(Deserialize, Default)]
struct Raw {
    log_format: Option<String>,
    log_level: Option<String>,
    signal_scope: Option<String>,
    grace_period: Option<String>,
    kill_timeout: Option<String>,
    term_delay: Option<String>,
    exit_code_map: Option<String>,
    signal_map: Option<String>,
    parent_death_signal: Option<String>,
    env_dir: Option<String>,
    env_files: Option<String>,
    log_env: Option<String>,
    run_as_root: Option<String>,
    create_user: Option<String>,
    no_new_privs: Option<String>,
    umask: Option<String>,
    wait: Option<String>,
    wait_timeout: Option<String>,
    wait_interval: Option<String>,
    wait_for_migrations: Option<String>,
    migrate: Option<String>,
    native_checks: Option<String>,
    hostname: Option<String>,
    init_dir: Option<String>,
    step_timeout: Option<String>,
    restart: Option<String>,
    restart_limit: Option<String>,
    ready_timeout: Option<String>,
}

/// Where a value came from, for error messages.
struct Sources(BTreeMap<String, String>);

impl Sources {
    fn name(&self, key: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("{PREFIX}{key}"))
    }
}

/// A flag given on the command line: the setting's key and the raw value.
pub struct FlagValue {
    pub key: &'static str,
    pub flag: String,
    pub value: String,
}

impl Settings {
    /// Reads `AIRFLOW_ENTRYPOINT_*` from `env`, lets `flags` win, validates.
    pub fn load(env: &[(String, String)], flags: &[FlagValue]) -> Result<Settings, Failure> {
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        let mut sources = Sources(BTreeMap::new());
        for (name, value) in env {
            if let Some(key) = name.strip_prefix(PREFIX) {
                merged.insert(key.to_string(), value.clone());
            }
        }
        for flag in flags {
            merged.insert(flag.key.to_string(), flag.value.clone());
            sources.0.insert(flag.key.to_string(), flag.flag.clone());
        }
        // An empty value means unset.
        merged.retain(|_, v| !v.is_empty());
        let raw: Raw = envy::prefixed(PREFIX)
            .from_iter(
                merged
                    .iter()
                    .map(|(k, v)| (format!("{PREFIX}{k}"), v.clone())),
            )
            .map_err(|e| Failure::config(format!("reading {PREFIX}* settings: {e}")))?;

        let s = &sources;
        Ok(Settings {
            log_format: match raw.log_format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => return Err(bad(s, "LOG_FORMAT", other, "`text` or `json`")),
            },
            log_level: match raw.log_level.as_deref() {
                None | Some("info") => LevelFilter::INFO,
                Some("error") => LevelFilter::ERROR,
                Some("warn") => LevelFilter::WARN,
                Some("debug") => LevelFilter::DEBUG,
                Some("trace") => LevelFilter::TRACE,
                Some(other) => {
                    return Err(bad(
                        s,
                        "LOG_LEVEL",
                        other,
                        "one of `error`, `warn`, `info`, `debug`, `trace`",
                    ))
                }
            },
            signal_scope: match raw.signal_scope.as_deref() {
                None => None,
                Some("group") => Some(SignalScope::Group),
                Some("child") => Some(SignalScope::Child),
                Some(other) => return Err(bad(s, "SIGNAL_SCOPE", other, "`group` or `child`")),
            },
            grace_period: raw
                .grace_period
                .as_deref()
                .map(|v| seconds(s, "GRACE_PERIOD", v))
                .transpose()?,
            kill_timeout: raw
                .kill_timeout
                .as_deref()
                .map(|v| seconds(s, "KILL_TIMEOUT", v))
                .transpose()?
                .unwrap_or(Duration::from_secs(5)),
            term_delay: raw
                .term_delay
                .as_deref()
                .map(|v| seconds(s, "TERM_DELAY", v))
                .transpose()?
                .unwrap_or(Duration::ZERO),
            exit_code_map: raw
                .exit_code_map
                .as_deref()
                .map(|v| exit_code_map(s, v))
                .transpose()?
                .unwrap_or_default(),
            signal_map: raw
                .signal_map
                .as_deref()
                .map(|v| signal_map(s, v))
                .transpose()?
                .unwrap_or_default(),
            parent_death_signal: raw
                .parent_death_signal
                .as_deref()
                .map(|v| {
                    parse_signal(v).ok_or_else(|| {
                        bad(
                            s,
                            "PARENT_DEATH_SIGNAL",
                            v,
                            "a signal name or number, e.g. `TERM`, `SIGKILL` or `15`",
                        )
                    })
                })
                .transpose()?,
            env_dir_explicit: raw.env_dir.is_some(),
            env_dir: raw
                .env_dir
                .clone()
                .unwrap_or_else(|| "/etc/airflow-entrypoint/env.d".into())
                .into(),
            env_files: raw
                .env_files
                .as_deref()
                .unwrap_or("")
                .split(':')
                .filter(|p| !p.is_empty())
                .map(Into::into)
                .collect(),
            log_env: boolean(s, "LOG_ENV", raw.log_env.as_deref(), false)?,
            run_as_root: boolean(s, "RUN_AS_ROOT", raw.run_as_root.as_deref(), false)?,
            create_user: boolean(s, "CREATE_USER", raw.create_user.as_deref(), false)?,
            no_new_privs: boolean(s, "NO_NEW_PRIVS", raw.no_new_privs.as_deref(), true)?,
            umask: match raw.umask.as_deref() {
                None => 0o002,
                Some(v) => u32::from_str_radix(v.trim(), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        bad(
                            s,
                            "UMASK",
                            v,
                            "an octal mode from 000 to 777, e.g. `0002` or `022`",
                        )
                    })?,
            },
            wait: match raw.wait.as_deref() {
                None | Some("auto") => WaitMode::Auto,
                Some("always") => WaitMode::Always,
                Some("never") => WaitMode::Never,
                Some(other) => return Err(bad(s, "WAIT", other, "`auto`, `always` or `never`")),
            },
            wait_timeout: raw
                .wait_timeout
                .as_deref()
                .map(|v| seconds(s, "WAIT_TIMEOUT", v))
                .transpose()?,
            wait_interval: match raw.wait_interval.as_deref() {
                None => Duration::from_millis(250),
                Some(v) => match seconds(s, "WAIT_INTERVAL", v)? {
                    zero if zero.is_zero() => {
                        return Err(bad(
                            s,
                            "WAIT_INTERVAL",
                            v,
                            "a pause above 0 (0 would retry without pause); e.g. `0.25`",
                        ))
                    }
                    interval => interval.max(Duration::from_millis(10)),
                },
            },
            wait_for_migrations: boolean(
                s,
                "WAIT_FOR_MIGRATIONS",
                raw.wait_for_migrations.as_deref(),
                false,
            )?,
            migrate: match raw.migrate.as_deref() {
                None | Some("auto") => MigrateMode::Auto,
                Some("always") => MigrateMode::Always,
                Some(other) => return Err(bad(s, "MIGRATE", other, "`auto` or `always`")),
            },
            native_checks: boolean(s, "NATIVE_CHECKS", raw.native_checks.as_deref(), true)?,
            hostname: raw.hostname.clone(),
            init_dir_explicit: raw.init_dir.is_some(),
            init_dir: raw
                .init_dir
                .clone()
                .unwrap_or_else(|| "/etc/airflow-entrypoint/init.d".into())
                .into(),
            step_timeout: raw
                .step_timeout
                .as_deref()
                .map(|v| seconds(s, "STEP_TIMEOUT", v))
                .transpose()?
                .unwrap_or(Duration::from_secs(3600)),
            restart: match raw.restart.as_deref() {
                None | Some("always") => true,
                Some("never") => false,
                Some(other) => return Err(bad(s, "RESTART", other, "`always` or `never`")),
            },
            restart_limit: match raw.restart_limit.as_deref() {
                None => 5,
                Some(v) => v.trim().parse().map_err(|_| {
                    bad(
                        s,
                        "RESTART_LIMIT",
                        v,
                        "a whole number of restarts, e.g. `5`",
                    )
                })?,
            },
            ready_timeout: raw
                .ready_timeout
                .as_deref()
                .map(|v| seconds(s, "READY_TIMEOUT", v))
                .transpose()?
                .unwrap_or(Duration::from_secs(120)),
        })
    }

    /// Names of `AIRFLOW_ENTRYPOINT_*` variables that are not settings (typos).
    pub fn unknown_variables(env: &[(String, String)]) -> Vec<String> {
        env.iter()
            .filter_map(|(name, _)| {
                let key = name.strip_prefix(PREFIX)?;
                (!SETTINGS.iter().any(|s| s.flag && s.key == key)).then(|| name.clone())
            })
            .collect()
    }
}

fn bad(sources: &Sources, key: &str, value: &str, expected: &str) -> Failure {
    Failure::config(format!(
        "{}={:?} is not valid: expected {expected}",
        sources.name(key),
        crate::redact::redact(value)
    ))
}

/// `true|false|1|0|yes|no`, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn boolean(
    sources: &Sources,
    key: &str,
    value: Option<&str>,
    default: bool,
) -> Result<bool, Failure> {
    match value {
        None => Ok(default),
        Some(v) => parse_bool(v)
            .ok_or_else(|| bad(sources, key, v, "`true`, `false`, `1`, `0`, `yes` or `no`")),
    }
}

/// Seconds, fractions allowed: `30`, `0.5`. At most one day.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let trimmed = value.trim();
    if trimmed.is_empty() || !trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let secs: f64 = trimmed.parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn seconds(sources: &Sources, key: &str, value: &str) -> Result<Duration, Failure> {
    parse_seconds(value).ok_or_else(|| {
        bad(
            sources,
            key,
            value,
            "a number of seconds from 0 to 86400, fractions allowed (e.g. `30` or `0.5`)",
        )
    })
}

fn pairs(value: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.split_once(':').map(|(a, b)| (a.trim(), b.trim())))
}

fn exit_code_map(sources: &Sources, value: &str) -> Result<Vec<(i32, i32)>, Failure> {
    let expected = "`FROM:TO,...` with exit codes 0-255, e.g. `143:0`";
    pairs(value)
        .map(|pair| {
            let (from, to) = pair.ok_or_else(|| bad(sources, "EXIT_CODE_MAP", value, expected))?;
            let code = |text: &str| text.parse::<u8>().ok().map(i32::from);
            match (code(from), code(to)) {
                (Some(f), Some(t)) => Ok((f, t)),
                _ => Err(bad(sources, "EXIT_CODE_MAP", value, expected)),
            }
        })
        .collect()
}

fn signal_map(sources: &Sources, value: &str) -> Result<Vec<(i32, Option<i32>)>, Failure> {
    let expected = "`FROM:TO,...` with signal names without SIG (e.g. `TERM:INT`, `USR1:NONE`)";
    pairs(value)
        .map(|pair| {
            let (from, to) = pair.ok_or_else(|| bad(sources, "SIGNAL_MAP", value, expected))?;
            let from =
                parse_signal(from).ok_or_else(|| bad(sources, "SIGNAL_MAP", value, expected))?;
            if matches!(from, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD) {
                let why = format!(
                    "{} cannot be caught (KILL, STOP) or is never forwarded (CHLD), so an entry \
                     for it never applies; remove it",
                    crate::signals::signal_name(from)
                );
                return Err(bad(sources, "SIGNAL_MAP", value, &why));
            }
            let to = if to.eq_ignore_ascii_case("NONE") {
                None
            } else {
                Some(parse_signal(to).ok_or_else(|| bad(sources, "SIGNAL_MAP", value, expected))?)
            };
            Ok((from, to))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::load(&[], &[]).unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.kill_timeout, Duration::from_secs(5));
        assert_eq!(s.grace_period, None);
        assert_eq!(s.term_delay, Duration::ZERO);
    }

    #[test]
    fn the_parent_death_signal_is_a_signal_name_or_number() {
        let load = |v: &str| {
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_PARENT_DEATH_SIGNAL", v)]), &[])
                .map(|s| s.parent_death_signal)
        };
        assert_eq!(load("SIGTERM").ok(), Some(Some(libc::SIGTERM)));
        assert_eq!(load("kill").ok(), Some(Some(libc::SIGKILL)));
        assert_eq!(load("").ok(), Some(None));
        let e = load("TERMINATE").unwrap_err();
        assert_eq!(e.exit_code, 78);
        assert!(e.message.contains("AIRFLOW_ENTRYPOINT_PARENT_DEATH_SIGNAL"));
    }

    #[test]
    fn empty_value_means_unset() {
        let s = Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "")]), &[]).unwrap();
        assert_eq!(s.kill_timeout, Duration::from_secs(5));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = [FlagValue {
            key: "GRACE_PERIOD",
            flag: "--grace-period".into(),
            value: "0.5".into(),
        }];
        let s = Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "9")]), &flags).unwrap();
        assert_eq!(s.grace_period, Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_bad_value_names_the_variable_or_flag() {
        let e =
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "soon")]), &[]).unwrap_err();
        assert_eq!(e.exit_code, 78);
        assert!(
            e.message.contains("AIRFLOW_ENTRYPOINT_GRACE_PERIOD"),
            "{}",
            e.message
        );
        let flags = [FlagValue {
            key: "LOG_FORMAT",
            flag: "--log-format".into(),
            value: "xml".into(),
        }];
        let e = Settings::load(&[], &flags).unwrap_err();
        assert!(e.message.starts_with("--log-format"), "{}", e.message);
    }

    #[test]
    fn booleans_and_umask_validate() {
        let s = Settings::load(
            &env(&[
                ("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "YES"),
                ("AIRFLOW_ENTRYPOINT_UMASK", "022"),
            ]),
            &[],
        )
        .unwrap();
        assert!(s.run_as_root && s.no_new_privs);
        assert_eq!(s.umask, 0o022);
        assert!(Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_CREATE_USER", "maybe")]), &[]).is_err());
        assert!(Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_UMASK", "999")]), &[]).is_err());
        let s = Settings::load(
            &env(&[("AIRFLOW_ENTRYPOINT_ENV_FILES", "/a.env::/b.env")]),
            &[],
        )
        .unwrap();
        assert_eq!(s.env_files.len(), 2);
    }

    #[test]
    fn signal_map_rejects_sources_that_can_never_apply() {
        for value in ["KILL:TERM", "TERM:INT,STOP:NONE", "CHLD:USR1"] {
            let e =
                Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", value)]), &[]).unwrap_err();
            assert_eq!(e.exit_code, 78, "{value}");
            assert!(e.message.contains("never applies"), "{}", e.message);
            assert!(
                e.message.contains("AIRFLOW_ENTRYPOINT_SIGNAL_MAP"),
                "{}",
                e.message
            );
        }
        // As a target KILL is fine: it is what some users want TERM to become.
        assert!(
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", "TERM:KILL")]), &[]).is_ok()
        );
    }

    #[test]
    fn wait_interval_zero_is_rejected() {
        for value in ["0", "0.0", "0.000"] {
            let e = Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_WAIT_INTERVAL", value)]), &[])
                .unwrap_err();
            assert_eq!(e.exit_code, 78, "{value}");
            assert!(e.message.contains("above 0"), "{}", e.message);
        }
        let s =
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_WAIT_INTERVAL", "0.001")]), &[]).unwrap();
        assert_eq!(s.wait_interval, Duration::from_millis(10));
    }

    #[test]
    fn seconds_reject_negative_and_garbage() {
        for v in ["-1", "1e3", "inf", "NaN", "1.2.3", "90000", " "] {
            assert_eq!(parse_seconds(v), None, "{v}");
        }
        assert_eq!(parse_seconds("2.5"), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn maps_parse() {
        let s = Settings::load(
            &env(&[
                ("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "143:0, 1:2"),
                ("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", "TERM:INT,SIGUSR1:none"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(s.exit_code_map, vec![(143, 0), (1, 2)]);
        assert_eq!(s.signal_map, vec![(15, Some(2)), (10, None)]);
        assert!(
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "143-0")]), &[]).is_err()
        );
        assert!(
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "300:0")]), &[]).is_err()
        );
        assert!(
            Settings::load(&env(&[("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", "TERM:FOO")]), &[]).is_err()
        );
    }

    #[test]
    fn unknown_prefixed_variables_are_reported() {
        let unknown = Settings::unknown_variables(&env(&[
            ("AIRFLOW_ENTRYPOINT_GRACE_PERIDO", "1"),
            ("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "1"),
        ]));
        assert_eq!(unknown, vec!["AIRFLOW_ENTRYPOINT_GRACE_PERIDO".to_string()]);
    }
}
