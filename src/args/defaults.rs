//! Defaults and parsers several commands' arguments share.

/// Where the configuration file is (`--config`, LIFEBOAT_CONFIG).
pub const DEFAULT_CONFIG: &str = "/etc/lifeboat/lifeboat.toml";

/// Parses sizes like `4096`, `256K`, `256KiB`, `1M`, `1MiB` (binary units).
pub fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1MiB or 262144"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use K, M or G"
            ));
        }
    };
    u32::try_from(n * mult).map_err(|_| format!("{s:?} is too large"))
}
