//! The configuration of toolforge-nss: one TOML file read by the daemon and the tools.
//!
//! [`Config::load`] parses (unknown keys are refused), fills documented defaults and validates
//! the whole file before anything uses it, so a bad config is refused at start and never half
//! applied. Every error names the file, the key, the value and why.
//!
//! * [`model`]: the typed sections and their defaults.
//! * [`validate`]: the checks that serde's types cannot express.
//! * [`template`]: `override_homedir`/`fallback_homedir` templates (`%u`, `%U`, `%h`, ...).

pub mod model;
pub mod template;
mod validate;

pub use model::*;
pub use template::HomeTemplate;

use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}` = {value}: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        validate::validate(&config).map_err(|v| ConfigError::Invalid {
            file: path.to_owned(),
            key: v.key,
            value: v.value,
            reason: v.reason,
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
