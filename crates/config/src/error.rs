/// A configuration rejected before any work, naming the key path and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The document is not valid TOML.
    #[error("config is not valid TOML: {message}")]
    Syntax {
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `--set` override that is not `section.key=value`.
    #[error("bad override `{text}`: {reason}")]
    Override {
        /// The override as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An unknown key, a wrong type, or a value out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `optim.lr` (empty for the top level).
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key path the error is about (empty when it is not about one key).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } => key,
            _ => "",
        }
    }

    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
