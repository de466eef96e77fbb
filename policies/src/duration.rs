//! Durations as written in the configuration and on the command line: `30d`, `24h`,
//! `1w`, `90m`, `1d12h`.
//!
//! Only fixed-length units (s, m, h, d, w): months and years have no fixed length, and
//! "1m" meaning minutes in one tool and months in another is how retention goes wrong.

use std::fmt::Write as _;

/// Seconds per unit, largest first (the order [`format_duration`] tries them in).
const UNITS: [(char, u64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Parses `30d`, `24h`, `1d12h`, … into whole seconds. Zero is refused: a zero RPO,
/// immutability or keep-within is always a mistake.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let hint = "write a number and a unit: s, m (minutes), h, d or w, e.g. \"24h\" or \"30d\"";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(&(_, secs)) = UNITS.iter().find(|(u, _)| *u == c) else {
            return Err(format!("{text:?}: unknown unit {c:?}; {hint}"));
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: unit {c:?} without a number; {hint}"))?;
        digits.clear();
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("{text:?}: number without a unit; {hint}"));
    }
    if total == 0 {
        return Err(format!("{text:?} is zero; give a positive duration"));
    }
    Ok(total)
}

/// Formats seconds the way a person would write them: `7d`, `36h`, `1d30m`.
pub fn format_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        // Never weeks: people write retention windows in days ("14d"), and a label
        // should read back the way it was written.
        if unit == 'w' {
            continue;
        }
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (text, secs, shown) in [
            ("30d", 30 * 86_400, "30d"),
            ("24h", 86_400, "1d"),
            ("1d12h", 36 * 3_600, "1d12h"),
            ("2w", 14 * 86_400, "14d"),
            ("90m", 5_400, "1h30m"),
            (" 45s ", 45, "45s"),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
            assert_eq!(format_duration(secs), shown, "{text}");
        }
        for bad in ["", "7", "d", "3x", "0h", "1y", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
