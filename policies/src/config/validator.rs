//! Collecting configuration problems: each names file, line, column and key, and all
//! of them are reported at once. The checks shared by every table (names, durations,
//! time zones, schedules, paths) live here; each table's own checks are next to its
//! types.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use chrono_tz::Tz;
use toml::Spanned;

use crate::duration::parse_duration;
use crate::schedule::{Schedule, parse_cron, parse_timezone};

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted TOML key, e.g. `group.retention.keep_within`; empty for syntax errors.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Everything wrong with a configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file, p.line, p.column)?;
            if !p.key.is_empty() {
                write!(f, "{}: ", p.key)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

pub(super) struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            problems: Vec::new(),
        }
    }

    pub(super) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    pub(super) fn problem(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        self.problems.push(Problem {
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn into_error(mut self, file: &str) -> ConfigError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        ConfigError {
            file: file.to_string(),
            problems: self.problems,
        }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// A non-empty name, unique among `seen` (which maps names to where they were first used).
    pub(super) fn name(
        &mut self,
        name: &Spanned<String>,
        key: &str,
        what: &str,
        seen: &mut HashMap<String, usize>,
    ) {
        let at = name.span().start;
        if name.get_ref().trim().is_empty() {
            self.problem(at, key, format!("{what} name is empty; give it a name"));
        } else if name.get_ref().contains('/') {
            self.problem(
                at,
                key,
                format!(
                    "{what} name {:?} contains '/'; use letters, digits, '-', '_' or '.'",
                    name.get_ref()
                ),
            );
        } else if let Some(&first) = seen.get(name.get_ref()) {
            let first_line = self.text[..first].matches('\n').count() + 1;
            self.problem(
                at,
                key,
                format!(
                    "duplicate {what} name {:?} (first used on line {first_line}); names must be unique",
                    name.get_ref()
                ),
            );
        } else {
            seen.insert(name.get_ref().clone(), at);
        }
    }

    pub(super) fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        ctx: &str,
    ) -> Option<u64> {
        let value = value.as_ref()?;
        match parse_duration(value.get_ref()) {
            Ok(secs) => Some(secs),
            Err(e) => {
                self.problem(value.span().start, key, format!("{ctx}{e}"));
                None
            }
        }
    }

    /// `key = "Europe/Berlin"`.
    pub(super) fn timezone(&mut self, tz: &Spanned<String>, key: &str, ctx: &str) -> Option<Tz> {
        match parse_timezone(tz.get_ref()) {
            Ok(tz) => Some(tz),
            Err(e) => {
                self.problem(tz.span().start, key, format!("{ctx}{e}"));
                None
            }
        }
    }

    /// A cron expression read in `tz` (if the zone itself was bad, that was reported).
    pub(super) fn schedule(
        &mut self,
        expr: &Spanned<String>,
        tz: Option<Tz>,
        key: &str,
        ctx: &str,
    ) -> Option<Schedule> {
        match parse_cron(expr.get_ref()) {
            Ok(_) => tz.and_then(|tz| Schedule::new(expr.get_ref(), tz.name()).ok()),
            Err(e) => {
                self.problem(expr.span().start, key, format!("{ctx}{e}"));
                None
            }
        }
    }

    /// Paths the daemon uses must not depend on the directory it was started in.
    pub(super) fn absolute_path(
        &mut self,
        p: &Spanned<String>,
        key: &str,
        ctx: &str,
    ) -> Option<PathBuf> {
        let path = PathBuf::from(p.get_ref());
        if path.is_absolute() {
            Some(path)
        } else {
            self.problem(
                p.span().start,
                key,
                format!(
                    "{ctx}{:?} is a relative path; write an absolute one, e.g. \"/etc/lifeboat/passphrase\"",
                    p.get_ref()
                ),
            );
            None
        }
    }
}
