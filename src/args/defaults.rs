//! Defaults several commands' arguments share.

/// Where the configuration file is (`--config`, LIFEBOAT_CONFIG).
pub const DEFAULT_CONFIG: &str = "/etc/lifeboat/lifeboat.toml";
