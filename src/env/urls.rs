//! Resolving the metadata database URL and the Celery broker URL the way
//! Airflow does: the variable, its `_CMD` (run as the service user, no
//! shell), its `_SECRET` (asked of `airflow config get-value`), the legacy
//! `[core]` key, `airflow.cfg`, then Airflow's default. Owns recording where
//! each URL came from. URLs leave this module only to be masked or probed.

use std::path::PathBuf;

use crate::env::cfg_file::CfgFile;
use crate::env::layers::Layered;
use crate::env::text_file::{read_text_file, ReadError};
use crate::error::Failure;

/// What to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Url {
    MetadataDatabase,
    CeleryBroker,
}

impl Url {
    /// (ENV SECTION, cfg section, option) in the order Airflow looks.
    fn places(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Url::MetadataDatabase => &[
                ("DATABASE", "database", "sql_alchemy_conn"),
                ("CORE", "core", "sql_alchemy_conn"),
            ],
            Url::CeleryBroker => &[("CELERY", "celery", "broker_url")],
        }
    }
}

/// A resolved URL and where it came from, e.g.
/// `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD (from env file /run/x.env)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    pub url: String,
    pub origin: String,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", crate::redact::redact(&self.url), self.origin)
    }
}

/// Runs a command (argv) as the service user and returns its stdout.
pub type Runner<'a> = dyn FnMut(&[String], &str) -> Result<String, Failure> + 'a;

pub fn resolve(which: Url, layers: &Layered, run: &mut Runner<'_>) -> Result<Resolved, Failure> {
    for (section_env, _, option) in which.places() {
        let name = format!("AIRFLOW__{section_env}__{}", option.to_ascii_uppercase());
        if let Some(url) = layers.get(&name) {
            return Ok(Resolved {
                url: url.to_string(),
                origin: layers.describe(&name),
            });
        }
        let cmd_name = format!("{name}_CMD");
        if let Some(command) = layers.get(&cmd_name) {
            let origin = layers.describe(&cmd_name);
            let url = run_cmd(command, &origin, &cmd_name, run)?;
            return Ok(Resolved { url, origin });
        }
        let secret_name = format!("{name}_SECRET");
        if layers.get(&secret_name).is_some() {
            let origin = layers.describe(&secret_name);
            let (_, section, _) = which.places()[0];
            let argv: Vec<String> = ["airflow", "config", "get-value", section, option]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let url = run(&argv, &secret_name)
                .map_err(|f| {
                    Failure::new(
                        f.exit_code,
                        format!("{origin} needs Airflow's secrets backend: {}", f.message),
                    )
                })?
                .trim()
                .to_string();
            if url.is_empty() {
                return Err(Failure::config(format!(
                    "{origin}: the secrets backend returned nothing"
                )));
            }
            return Ok(Resolved { url, origin });
        }
    }
    if let Some(found) = from_config_file(which, layers, run)? {
        return Ok(found);
    }
    Ok(match which {
        Url::MetadataDatabase => {
            let home = layers.get("AIRFLOW_HOME").unwrap_or("~/airflow");
            Resolved {
                url: format!("sqlite:///{}/airflow.db", home.trim_end_matches('/')),
                origin: "Airflow's default (nothing set)".into(),
            }
        }
        Url::CeleryBroker => Resolved {
            url: "redis://redis:6379/0".into(),
            origin: "Airflow's default (nothing set)".into(),
        },
    })
}

/// Runs a `_cmd` value (split like shlex, no shell) and returns its
/// trimmed stdout, which must not be empty.
fn run_cmd(
    command: &str,
    origin: &str,
    what: &str,
    run: &mut Runner<'_>,
) -> Result<String, Failure> {
    let argv = crate::shell_words::split(command)
        .map_err(|e| Failure::config(format!("{origin}: {e}; fix the quoting")))?;
    if argv.is_empty() {
        return Err(Failure::config(format!("{origin} is an empty command")));
    }
    let url = run(&argv, what)?.trim().to_string();
    if url.is_empty() {
        return Err(Failure::config(format!(
            "{origin} printed nothing; it must print the URL on stdout"
        )));
    }
    Ok(url)
}

/// `AIRFLOW_CONFIG`, else `$AIRFLOW_HOME/airflow.cfg`.
pub fn config_file_path(layers: &Layered) -> Option<PathBuf> {
    if let Some(path) = layers.get("AIRFLOW_CONFIG") {
        return Some(PathBuf::from(path));
    }
    layers
        .get("AIRFLOW_HOME")
        .map(|home| PathBuf::from(home).join("airflow.cfg"))
}

/// The airflow.cfg in use and its text; None when there is none.
pub fn config_file_text(layers: &Layered) -> Result<Option<(PathBuf, String)>, Failure> {
    let Some(path) = config_file_path(layers) else {
        return Ok(None);
    };
    match read_text_file(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(ReadError::NotFound) => Ok(None),
        Err(e) => {
            let named_by = if layers.get("AIRFLOW_CONFIG").is_some() {
                layers.describe("AIRFLOW_CONFIG")
            } else {
                format!(
                    "$AIRFLOW_HOME/airflow.cfg, {}",
                    layers.describe("AIRFLOW_HOME")
                )
            };
            Err(Failure::config(format!(
                "cannot read the Airflow config file {} (named by {named_by}): {e}; it must be a regular UTF-8 file of at most 1 MiB",
                path.display()
            )))
        }
    }
}

/// The airflow.cfg in use, parsed; None when there is none. A syntax
/// error is one line naming the file and line.
pub fn parsed_config_file(layers: &Layered) -> Result<Option<(PathBuf, CfgFile)>, Failure> {
    let Some((path, text)) = config_file_text(layers)? else {
        return Ok(None);
    };
    let cfg = CfgFile::parse(&text)
        .map_err(|e| Failure::config(format!("{}:{}: {}", path.display(), e.line, e.message)))?;
    Ok(Some((path, cfg)))
}

fn from_config_file(
    which: Url,
    layers: &Layered,
    run: &mut Runner<'_>,
) -> Result<Option<Resolved>, Failure> {
    let Some((path, cfg)) = parsed_config_file(layers)? else {
        return Ok(None);
    };
    for (_, section, option) in which.places() {
        let get = |key: &str| {
            cfg.get(section, key).map_err(|e| {
                Failure::config(format!("{}:{}: {}", path.display(), e.line, e.message))
            })
        };
        if let Some(url) = get(option)?.filter(|v| !v.is_empty()) {
            return Ok(Some(Resolved {
                url,
                origin: format!("[{section}] {option} in {}", path.display()),
            }));
        }
        let cmd_key = format!("{option}_cmd");
        if let Some(command) = get(&cmd_key)?.filter(|v| !v.is_empty()) {
            let origin = format!("[{section}] {cmd_key} in {}", path.display());
            let url = run_cmd(&command, &origin, &cmd_key, run)?;
            return Ok(Some(Resolved { url, origin }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::layers::Source;

    fn no_run(_: &[String], _: &str) -> Result<String, Failure> {
        panic!("nothing should run")
    }

    #[test]
    fn the_variable_wins_and_records_its_layer() {
        let mut l = Layered::default();
        l.set(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql://a:b@h/d".into(),
            Source::Container,
        );
        l.set(
            "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            "mysql://x@y/z".into(),
            Source::Container,
        );
        let r = resolve(Url::MetadataDatabase, &l, &mut no_run).unwrap();
        assert_eq!(r.url, "postgresql://a:b@h/d");
        assert!(r.origin.contains("container environment"), "{}", r.origin);
        assert!(!format!("{r:?}").contains(":b@"));
    }

    #[test]
    fn cmd_is_split_and_run() {
        let mut l = Layered::default();
        l.set(
            "AIRFLOW__CELERY__BROKER_URL_CMD",
            "cat '/run/secrets/broker url'".into(),
            Source::Container,
        );
        let mut seen = Vec::new();
        let mut run = |argv: &[String], _: &str| {
            seen = argv.to_vec();
            Ok("redis://:pw@r:6379/0\n".to_string())
        };
        let r = resolve(Url::CeleryBroker, &l, &mut run).unwrap();
        assert_eq!(r.url, "redis://:pw@r:6379/0");
        assert_eq!(seen, vec!["cat", "/run/secrets/broker url"]);
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let mut l = Layered::default();
        l.set(
            "AIRFLOW_HOME",
            "/nonexistent-home/".into(),
            Source::Container,
        );
        let r = resolve(Url::MetadataDatabase, &l, &mut no_run).unwrap();
        assert_eq!(r.url, "sqlite:////nonexistent-home/airflow.db");
        assert_eq!(
            resolve(Url::CeleryBroker, &l, &mut no_run).unwrap().url,
            "redis://redis:6379/0"
        );
    }
}
