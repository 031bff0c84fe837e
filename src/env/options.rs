//! One Airflow option as Airflow reads it: `AIRFLOW__SECTION__KEY` from the
//! environment layers, else `[section] key` in airflow.cfg, else None (the
//! caller knows the default). Reads files only; never runs a `_cmd`.

use crate::env::cfg_file::CfgFile;
use crate::env::layers::Layered;
use crate::env::urls::parsed_config_file;
use crate::error::Failure;

/// The option's value and where it came from, for messages.
pub struct OptionValue {
    pub value: String,
    pub origin: String,
}

pub fn airflow_option(
    layers: &Layered,
    section: &str,
    key: &str,
) -> Result<Option<OptionValue>, Failure> {
    Options::new(layers).get(section, key)
}

/// Several options of one configuration: airflow.cfg is read and parsed
/// (and only when an option is not in the environment) once.
pub struct Options<'a> {
    layers: &'a Layered,
    file: Option<Option<(std::path::PathBuf, CfgFile)>>,
}

impl<'a> Options<'a> {
    pub fn new(layers: &'a Layered) -> Self {
        Options { layers, file: None }
    }

    pub fn get(&mut self, section: &str, key: &str) -> Result<Option<OptionValue>, Failure> {
        let layers = self.layers;
        let variable = format!(
            "AIRFLOW__{}__{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        );
        if let Some(value) = layers.get(&variable) {
            return Ok(Some(OptionValue {
                value: value.to_string(),
                origin: layers.describe(&variable),
            }));
        }
        if self.file.is_none() {
            self.file = Some(parsed_config_file(layers)?);
        }
        let Some(Some((path, cfg))) = &self.file else {
            return Ok(None);
        };
        let found = cfg.get(section, key).map_err(|e| {
            Failure::config(format!("{}:{}: {}", path.display(), e.line, e.message))
        })?;
        Ok(found.map(|value| OptionValue {
            value,
            origin: format!("[{section}] {key} in {}", path.display()),
        }))
    }
}
