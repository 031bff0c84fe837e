//! `--print-env`: every AIRFLOW*/ASTRONOMER* variable (and the `_AIRFLOW*`
//! start-up switches) with the layer it came from, secrets masked. It only
//! formats; it never resolves, runs or drops anything.

use crate::env::layers::Layered;
use crate::redact::mask_value;

fn shown(name: &str) -> bool {
    name.starts_with("AIRFLOW")
        || name.starts_with("ASTRONOMER")
        || name.starts_with("_AIRFLOW")
        || name == "_PIP_ADDITIONAL_REQUIREMENTS"
}

/// `--print-env`: the table on standard output; the exit code.
pub fn to_stdout(layers: &Layered) -> i32 {
    crate::logging::print_stdout(&table(layers))
}

/// One line a variable: `NAME=VALUE  # source`.
pub fn table(layers: &Layered) -> String {
    let rows: Vec<(String, String)> = layers
        .iter()
        .filter(|(name, _, _)| shown(name))
        .map(|(name, value, source)| {
            (
                format!("{name}={}", mask_value(name, value)),
                source.to_string(),
            )
        })
        .collect();
    let width = rows
        .iter()
        .map(|(a, _)| a.chars().count())
        .max()
        .unwrap_or(0)
        .min(100);
    let mut out = String::new();
    for (assignment, source) in rows {
        out.push_str(&format!("{assignment:<width$}  # {source}\n"));
    }
    out
}
