//! The schema head(s) the installed Airflow expects, read from its alembic
//! migration files (`revision`, `down_revision`, merges as tuples) and
//! cross-checked with `_REVISION_HEADS_MAP` in airflow/utils/db.py; the
//! same for the FAB provider's `alembic_version_fab`. Reads files only,
//! never starts Python; a missing or ambiguous history is exit 78.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::env::layers::Layered;
use crate::env::options::Options;
use crate::error::Failure;
use crate::readiness::schema::ExpectedSchema;

/// One alembic history: every revision and its parents.
#[derive(Debug, Default)]
pub struct History {
    pub parents: BTreeMap<String, Vec<String>>,
}

impl History {
    /// The revisions no other revision names as its parent.
    pub fn heads(&self) -> BTreeSet<String> {
        let named: BTreeSet<&String> = self.parents.values().flatten().collect();
        self.parents
            .keys()
            .filter(|r| !named.contains(r))
            .cloned()
            .collect()
    }
    pub fn knows(&self, revision: &str) -> bool {
        self.parents.contains_key(revision)
    }
}

/// A schema with its expected head, and the table alembic keeps it in.
#[derive(Debug)]
pub struct Schema {
    /// "Airflow", "FAB"
    pub name: &'static str,
    pub version_table: &'static str,
    pub head: String,
    pub history: History,
}

/// Reads `dir/*.py` into a history.
pub fn read_history(dir: &Path) -> Result<History, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut history = History::default();
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    files.sort();
    for file in files {
        let Some((revision, parents)) = revision_of(&file)? else {
            continue; // __init__.py and helpers
        };
        if history.parents.insert(revision.clone(), parents).is_some() {
            return Err(format!(
                "revision {revision} is defined twice (again in {})",
                file.display()
            ));
        }
    }
    if history.parents.is_empty() {
        return Err(format!("no migration files in {}", dir.display()));
    }
    Ok(history)
}

/// A migration file's `revision` and `down_revision`. Both stand near the
/// top, after the docstring: the first 8 KiB are read, the whole file only
/// when they are not there (a probe reads some 130 files).
fn revision_of(file: &Path) -> Result<Option<(String, Vec<String>)>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", file.display());
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(file)
        .and_then(|f| f.take(HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(cannot)?;
    let parse = |text: &str| {
        let revision = assignment(text, "revision").and_then(|v| v.into_iter().next())?;
        let parents = assignment(text, "down_revision")?;
        Some((revision, parents))
    };
    if let Some(found) = parse(&String::from_utf8_lossy(&head)) {
        return Ok(Some(found));
    }
    let text = std::fs::read_to_string(file).map_err(cannot)?;
    Ok(parse(&text).or_else(|| {
        assignment(&text, "revision")
            .and_then(|v| v.into_iter().next())
            .map(|r| (r, Vec::new()))
    }))
}

const HEAD_BYTES: usize = 8192;

/// The quoted strings of a top-level `name = "x"`, `name: str = "x"`,
/// `name = ("a", "b")` (possibly over several lines) or `name = None`.
fn assignment(text: &str, name: &str) -> Option<Vec<String>> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix(':') {
            // A type annotation: `revision: str = ...`
            Some(annotated) => annotated.split_once('=').map(|(_, v)| v)?,
            None => rest.strip_prefix('=')?,
        };
        let mut value = rest.trim().to_string();
        if value.starts_with('(') || value.starts_with('[') {
            while !value.contains(')') && !value.contains(']') {
                value.push_str(lines.next()?);
            }
        }
        return Some(quoted_strings(&value));
    }
    None
}

fn quoted_strings(value: &str) -> Vec<String> {
    let value = value.split('#').next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// The single head of `history`, or why there is none.
fn single_head(history: &History, what: &str, dir: &Path) -> Result<String, String> {
    let heads = history.heads();
    match heads.len() {
        1 => Ok(heads.into_iter().next().unwrap_or_default()),
        0 => Err(format!(
            "the {what} migrations in {} have no head (a cycle)",
            dir.display()
        )),
        _ => Err(format!(
            "the {what} migrations in {} have {} heads ({}); the installed package is inconsistent",
            dir.display(),
            heads.len(),
            heads.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `"3.3.0": "d2f4e1b3c5a7"` pairs of `_REVISION_HEADS_MAP` in `text`.
fn heads_map(text: &str) -> Vec<(String, String)> {
    let Some(start) = text.find("_REVISION_HEADS_MAP") else {
        return Vec::new();
    };
    let body = &text[start..];
    let Some(open) = body.find('{') else {
        return Vec::new();
    };
    let Some(close) = body[open..].find('}') else {
        return Vec::new();
    };
    body[open + 1..open + close]
        .lines()
        .filter_map(|line| {
            let strings = quoted_strings(line);
            match strings.as_slice() {
                [version, revision] => Some((version.clone(), revision.clone())),
                _ => None,
            }
        })
        .collect()
}

/// Airflow's schema, from `site/airflow`. `version` is the installed
/// version ("3.3.2"): the newest `_REVISION_HEADS_MAP` entry at or below it
/// must be the head the files give, or the files are inconsistent.
pub fn airflow_schema(
    package: &Path,
    version: Option<crate::airflow::version::Version>,
) -> Result<Schema, Failure> {
    let dir = package.join("migrations/versions");
    let history =
        read_history(&dir).map_err(|e| Failure::config(format!("Airflow's schema head: {e}")))?;
    let head = single_head(&history, "Airflow", &dir).map_err(Failure::config)?;
    let db_py = package.join("utils/db.py");
    if let (Some(version), Ok(text)) = (version, std::fs::read_to_string(&db_py)) {
        let listed = heads_map(&text)
            .into_iter()
            .filter_map(|(v, r)| Some((crate::airflow::version::parse_version(&v)?, r)))
            .filter(|(v, _)| *v <= version)
            .max_by_key(|(v, _)| *v);
        if let Some((listed_version, revision)) = listed {
            // A patch release may add no migration; a newer head than the
            // map's entry is fine only if the map entry is in its history.
            if revision != head && !history.knows(&revision) {
                return Err(Failure::config(format!(
                    "Airflow's schema head: the migration files in {} end at {head}, but _REVISION_HEADS_MAP in {} names {revision} for {listed_version}, which no migration file defines",
                    dir.display(),
                    db_py.display()
                )));
            }
        }
    }
    Ok(Schema {
        name: "Airflow",
        version_table: "alembic_version",
        head,
        history,
    })
}

/// FAB's schema, from the provider's package directory.
pub fn fab_schema(provider: &Path) -> Result<Schema, Failure> {
    let dir = provider.join("migrations/versions");
    let history =
        read_history(&dir).map_err(|e| Failure::config(format!("FAB's schema head: {e}")))?;
    let head = single_head(&history, "FAB", &dir).map_err(Failure::config)?;
    Ok(Schema {
        name: "FAB",
        version_table: "alembic_version_fab",
        head,
        history,
    })
}

impl Schema {
    pub fn expected(self) -> ExpectedSchema {
        ExpectedSchema {
            name: self.name,
            version_table: self.version_table,
            head: self.head,
            known: self.history.parents.into_keys().collect(),
        }
    }
}

/// Every schema `airflow db check-migrations` would check for the Airflow
/// in `site_dirs`: Airflow's own, and FAB's when its DB manager runs — the
/// FAB auth manager, `[database] external_db_managers` naming it, or (from
/// Airflow 3.2, which discovers providers' DB managers) FAB installed.
pub fn expected_schemas(
    layers: &Layered,
    site_dirs: &[PathBuf],
    version: Option<crate::airflow::version::Version>,
) -> Result<Vec<ExpectedSchema>, Failure> {
    let Some(package) = site_dirs
        .iter()
        .map(|d| d.join("airflow"))
        .find(|p| p.join("migrations/versions").is_dir())
    else {
        return Err(Failure::config(format!(
            "cannot find the installed Airflow's migration files (airflow/migrations/versions) in {}; put the `airflow` of the image first on PATH",
            if site_dirs.is_empty() {
                "any site-packages (no `airflow` on PATH)".to_string()
            } else {
                site_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            }
        )));
    };
    let mut schemas = vec![airflow_schema(&package, version)?.expected()];
    // One read of airflow.cfg for both options.
    let mut options = Options::new(layers);
    let auth_manager = options.get("core", "auth_manager")?;
    let external = options.get("database", "external_db_managers")?;
    let fab_named = auth_manager
        .as_ref()
        .is_some_and(|o| o.value.contains("providers.fab."))
        || external
            .as_ref()
            .is_some_and(|o| o.value.contains("FABDBManager"));
    let fab_dir = package.join("providers/fab");
    let fab_installed = fab_dir.join("migrations/versions").is_dir();
    let discovers = version.is_some_and(|v| v >= crate::airflow::version::Version(3, 2, 0));
    if fab_installed && (fab_named || discovers) {
        schemas.push(fab_schema(&fab_dir)?.expected());
    } else if fab_named && !fab_installed {
        let origin = auth_manager
            .filter(|o| o.value.contains("providers.fab."))
            .or(external)
            .map(|o| o.origin)
            .unwrap_or_default();
        return Err(Failure::config(format!(
            "{origin} names FAB, but the FAB provider is not installed in {} (no providers/fab/migrations/versions); install apache-airflow-providers-fab or change the setting",
            package.display()
        )));
    }
    Ok(schemas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse_in_their_python_forms() {
        let text = "revision = \"abc\"\ndown_revision = None\n";
        assert_eq!(assignment(text, "revision"), Some(vec!["abc".to_string()]));
        assert_eq!(assignment(text, "down_revision"), Some(vec![]));
        let merge = "revision: str = 'm1'\ndown_revision = (\n    \"a\",\n    \"b\",  # two\n)\n";
        assert_eq!(assignment(merge, "revision"), Some(vec!["m1".to_string()]));
        assert_eq!(
            assignment(merge, "down_revision"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        // `revision_x` or an indented use is not the assignment.
        assert_eq!(assignment("    revision = 'no'\n", "revision"), None);
    }

    #[test]
    fn heads_come_from_the_graph() {
        let mut h = History::default();
        h.parents.insert("a".into(), vec![]);
        h.parents.insert("b".into(), vec!["a".into()]);
        h.parents.insert("c".into(), vec!["a".into()]);
        assert_eq!(h.heads().len(), 2);
        h.parents.insert("m".into(), vec!["b".into(), "c".into()]);
        assert_eq!(h.heads().into_iter().collect::<Vec<_>>(), vec!["m"]);
    }

    #[test]
    fn the_heads_map_parses() {
        let text = "x = 1\n_REVISION_HEADS_MAP: dict[str, str] = {\n    \"2.6.2\": \"4bc4d934e2bc\",\n    \"3.3.0\": \"d2f4e1b3c5a7\",\n}\n";
        assert_eq!(
            heads_map(text),
            vec![
                ("2.6.2".to_string(), "4bc4d934e2bc".to_string()),
                ("3.3.0".to_string(), "d2f4e1b3c5a7".to_string())
            ]
        );
    }
}
