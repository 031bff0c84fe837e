//! Which Airflow is installed, found without starting Python: AIRFLOW_VERSION
//! when set, else the `apache_airflow-X.Y.Z.dist-info` beside the `airflow`
//! script's interpreter, or in the service user's user site (the official
//! image installs there with PIP_USER=true). Reads files only.

use std::path::{Path, PathBuf};

/// A parsed Airflow version (major, minor, patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// "3.3.2", "2.11.0rc1", "3.0" → Version.
pub fn parse_version(text: &str) -> Option<Version> {
    let mut parts = text.trim().split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(Version(major, minor, patch))
}

/// Where the version came from, for the log.
pub struct Found {
    pub version: Version,
    pub source: String,
}

/// `airflow_script`: the `airflow` found on PATH (if any); `home`: the
/// service user's HOME.
pub fn detect(
    env_version: Option<&str>,
    airflow_script: Option<&Path>,
    home: Option<&str>,
) -> Option<Found> {
    if let Some(v) = env_version.and_then(parse_version) {
        return Some(Found {
            version: v,
            source: "AIRFLOW_VERSION".into(),
        });
    }
    for dir in site_dirs(airflow_script, home) {
        if let Some((version, path)) = dist_info_in(&dir) {
            return Some(Found {
                version,
                source: path.display().to_string(),
            });
        }
    }
    None
}

/// The site-packages directories where Airflow may be installed, in the
/// order they are looked at: the `airflow` script's interpreter's, its
/// PREFIX's, then the service user's user site.
pub fn site_dirs(airflow_script: Option<&Path>, home: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(script) = airflow_script {
        if let Some(prefix) = interpreter_prefix(script) {
            dirs.extend(site_packages(&prefix));
        }
        // A script in PREFIX/bin without a readable #! line: try PREFIX too.
        if let Some(prefix) = script.parent().and_then(Path::parent) {
            dirs.extend(site_packages(prefix));
        }
    }
    if let Some(home) = home {
        dirs.extend(site_packages(&Path::new(home).join(".local")));
    }
    dirs
}

/// The prefix of the interpreter named on the script's `#!` line:
/// `/opt/venv/bin/python3` → `/opt/venv`.
fn interpreter_prefix(script: &Path) -> Option<PathBuf> {
    interpreter(script)?
        .parent()?
        .parent()
        .map(Path::to_path_buf)
}

/// The interpreter named on the script's `#!` line (not `/usr/bin/env`).
pub fn interpreter(script: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut std::fs::File::open(script).ok()?, &mut head).ok()?;
    let text = String::from_utf8_lossy(head.get(..n)?);
    let first = text.lines().next()?.strip_prefix("#!")?.trim();
    // `#!/usr/bin/env python3` tells us nothing about the prefix.
    let interpreter = first.split_whitespace().next()?;
    // `#!/usr/bin/env python3` or a shell wrapper tells us nothing.
    let path = PathBuf::from(interpreter);
    let is_python = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"));
    is_python.then_some(path)
}

/// PREFIX/lib/python*/site-packages (and dist-packages), sorted.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .flat_map(|e| {
            [
                e.path().join("site-packages"),
                e.path().join("dist-packages"),
            ]
        })
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

fn dist_info_in(dir: &Path) -> Option<(Version, PathBuf)> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let lower = name.to_ascii_lowercase();
        if let Some(rest) = lower
            .strip_prefix("apache_airflow-")
            .and_then(|r| r.strip_suffix(".dist-info"))
        {
            if let Some(v) = parse_version(rest) {
                return Some((v, entry.path()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("3.3.2"), Some(Version(3, 3, 2)));
        assert_eq!(parse_version("2.11.0rc1"), Some(Version(2, 11, 0)));
        assert_eq!(parse_version("2.7"), Some(Version(2, 7, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(Version(2, 6, 3) < Version(2, 7, 0));
    }

    #[test]
    fn finds_the_dist_info_of_the_scripts_venv() {
        let root = std::env::temp_dir().join(format!("aep-ver-{}", std::process::id()));
        let site = root.join("venv/lib/python3.11/site-packages/apache_airflow-3.3.2.dist-info");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::create_dir_all(root.join("venv/bin")).unwrap();
        let script = root.join("venv/bin/airflow");
        std::fs::write(
            &script,
            format!("#!{}/venv/bin/python3\nimport sys\n", root.display()),
        )
        .unwrap();
        let found = detect(None, Some(&script), None).unwrap();
        assert_eq!(found.version, Version(3, 3, 2));
        assert_eq!(
            detect(Some("2.11.0"), Some(&script), None).unwrap().version,
            Version(2, 11, 0)
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
