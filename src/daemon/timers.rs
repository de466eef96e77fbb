//! The daemon's timers: one per schedule in the configuration (a group's backups and
//! its forgets, a repository's prune and standby sync, a replication, a plan's
//! drills, the metadata backups), each with its next due time.

use chrono::{DateTime, Utc};
use lifeboat_policies::{Config, Schedule};

/// What a timer starts when it fires.
#[derive(Debug, Clone, Copy)]
pub(super) enum Timer {
    Backup(usize),
    Forget(usize),
    Prune(usize),
    Replicate(usize),
    Standby(usize),
    Drill(usize),
    Metadata,
}

pub(super) fn timers(config: &Config) -> Vec<(Timer, Schedule, Option<DateTime<Utc>>)> {
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, g) in config.groups.iter().enumerate() {
        out.push((Timer::Backup(i), g.schedule.clone()));
        out.push((Timer::Forget(i), g.forget_schedule.clone()));
    }
    for (i, r) in config.repositories.iter().enumerate() {
        if let Some(s) = &r.prune_schedule {
            out.push((Timer::Prune(i), s.clone()));
        }
        if let Some(standby) = &r.standby {
            out.push((Timer::Standby(i), standby.schedule.clone()));
        }
    }
    for (i, r) in config.replications.iter().enumerate() {
        if let Some(s) = &r.schedule {
            out.push((Timer::Replicate(i), s.clone()));
        }
    }
    for (i, p) in config.plans.iter().enumerate() {
        if let Some(s) = &p.drill_schedule {
            out.push((Timer::Drill(i), s.clone()));
        }
    }
    if let Some(m) = &config.metadata_backup {
        out.push((Timer::Metadata, m.schedule.clone()));
    }
    out.into_iter()
        .map(|(t, s)| {
            let next = s.next_after(now);
            (t, s, next)
        })
        .collect()
}
