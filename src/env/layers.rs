//! The child's environment, built in layers, lowest first: image defaults
//! (`*.env` in ENV_DIR), deployment env files (ENV_FILES), then the
//! container's own environment, which always wins. Owns each variable's
//! provenance. It reads files only; it never runs anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::env::file::parse_env_file;
use crate::env::text_file::{read_text_file, ReadError};
use crate::error::Failure;

/// Where a variable's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    ImageDefault(PathBuf),
    EnvFile(PathBuf),
    Container,
    Derived(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::ImageDefault(p) => write!(f, "image default {}", p.display()),
            Source::EnvFile(p) => write!(f, "env file {}", p.display()),
            Source::Container => f.write_str("container environment"),
            Source::Derived(why) => write!(f, "derived: {why}"),
        }
    }
}

/// Where the layers are read from.
pub struct LayerFiles<'a> {
    pub env_dir: &'a Path,
    /// The directory was named explicitly: missing or unreadable is an error.
    pub env_dir_explicit: bool,
    pub env_files: &'a [PathBuf],
}

#[derive(Debug, Clone, Default)]
pub struct Layered {
    vars: BTreeMap<String, (String, Source)>,
    /// Container variables that are not UTF-8: passed on untouched.
    opaque: Vec<(OsString, OsString)>,
}

impl Layered {
    pub fn load(
        files: &LayerFiles<'_>,
        process_env: Vec<(OsString, OsString)>,
    ) -> Result<Layered, Failure> {
        let mut layered = Layered::default();
        let mut container: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in process_env {
            match (key.into_string(), value.into_string()) {
                (Ok(k), Ok(v)) => {
                    container.insert(k, v);
                }
                (k, v) => layered.opaque.push((
                    k.map(OsString::from).unwrap_or_else(|o| o),
                    v.map(OsString::from).unwrap_or_else(|o| o),
                )),
            }
        }
        for path in image_default_files(files)? {
            layered.read_file(&path, Source::ImageDefault(path.clone()), &container)?;
        }
        for path in files.env_files {
            layered.read_file(path, Source::EnvFile(path.clone()), &container)?;
        }
        for (key, value) in container {
            layered.vars.insert(key, (value, Source::Container));
        }
        Ok(layered)
    }

    fn read_file(
        &mut self,
        path: &Path,
        source: Source,
        container: &BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        let setting = match source {
            Source::ImageDefault(_) => "AIRFLOW_ENTRYPOINT_ENV_DIR",
            _ => "AIRFLOW_ENTRYPOINT_ENV_FILES",
        };
        let text = read_text_file(path).map_err(|e| {
            let fix = match e {
                ReadError::NotUtf8(_) => "env files must be UTF-8 text".to_string(),
                ReadError::TooLarge(_) | ReadError::NotRegular(_) => {
                    format!("point {setting} at regular files of at most 1 MiB each")
                }
                _ => format!("fix the path in {setting} or the mount"),
            };
            Failure::config(format!(
                "cannot read env file {} (from {setting}): {e}; {fix}",
                path.display()
            ))
        })?;
        // ${VAR} resolves like the final result would: the container's
        // environment first, then the layers below this file.
        let lookup = |name: &str| {
            container
                .get(name)
                .cloned()
                .or_else(|| self.vars.get(name).map(|(v, _)| v.clone()))
        };
        let assignments = parse_env_file(&text, &lookup).map_err(|e| {
            Failure::config(format!("{}:{}: {}", path.display(), e.line, e.message))
        })?;
        for (key, value) in assignments {
            self.vars.insert(key, (value, source.clone()));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn source(&self, key: &str) -> Option<&Source> {
        self.vars.get(key).map(|(_, s)| s)
    }

    /// "AIRFLOW_HOME (from image default …)" for messages.
    pub fn describe(&self, key: &str) -> String {
        match self.source(key) {
            Some(source) => format!("{key} (from {source})"),
            None => format!("{key} (unset)"),
        }
    }

    pub fn set(&mut self, key: &str, value: String, source: Source) {
        self.vars.insert(key.to_string(), (value, source));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Source)> {
        self.vars
            .iter()
            .map(|(k, (v, s))| (k.as_str(), v.as_str(), s))
    }

    /// The environment the child gets.
    pub fn child_env(&self) -> Vec<(OsString, OsString)> {
        self.vars
            .iter()
            .map(|(k, (v, _))| (OsString::from(k), OsString::from(v)))
            .chain(self.opaque.iter().cloned())
            .collect()
    }

    /// Airflow's legacy key: `[core] sql_alchemy_conn` moved to `[database]`
    /// in 2.3. When only the old one is set, export the new one too; the
    /// reverse only for an Airflow known to be older than 2.3.
    pub fn copy_legacy_keys(&mut self, airflow_before_2_3: bool) {
        const CORE: &str = "AIRFLOW__CORE__SQL_ALCHEMY_CONN";
        const DATABASE: &str = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN";
        for suffix in ["", "_CMD", "_SECRET"] {
            let core = format!("{CORE}{suffix}");
            let database = format!("{DATABASE}{suffix}");
            match (
                self.get(&core).map(String::from),
                self.get(&database).map(String::from),
            ) {
                (Some(value), None) => {
                    self.set(
                        &database,
                        value,
                        Source::Derived(format!(
                            "copied from {core} (Airflow >= 2.3 reads {database})"
                        )),
                    );
                }
                (None, Some(value)) if airflow_before_2_3 => {
                    self.set(
                        &core,
                        value,
                        Source::Derived(format!(
                            "copied from {database} (Airflow < 2.3 reads {core})"
                        )),
                    );
                }
                _ => {}
            }
        }
    }
}

/// Every `*.env` file in the directory, in lexical order.
fn image_default_files(files: &LayerFiles<'_>) -> Result<Vec<PathBuf>, Failure> {
    let entries = match std::fs::read_dir(files.env_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !files.env_dir_explicit => {
            return Ok(Vec::new())
        }
        Err(e) => {
            return Err(Failure::config(format!(
                "cannot read AIRFLOW_ENTRYPOINT_ENV_DIR={}: {e}; create it or point the setting at an existing directory",
                files.env_dir.display()
            )))
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "env") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_core_key_is_copied_to_database() {
        let mut l = Layered::default();
        l.set(
            "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            "sqlite:////x.db".into(),
            Source::Container,
        );
        l.copy_legacy_keys(false);
        assert_eq!(
            l.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
            Some("sqlite:////x.db")
        );
        let mut l = Layered::default();
        l.set(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "sqlite:////x.db".into(),
            Source::Container,
        );
        l.copy_legacy_keys(false);
        assert_eq!(l.get("AIRFLOW__CORE__SQL_ALCHEMY_CONN"), None);
        l.copy_legacy_keys(true);
        assert_eq!(
            l.get("AIRFLOW__CORE__SQL_ALCHEMY_CONN"),
            Some("sqlite:////x.db")
        );
    }
}
