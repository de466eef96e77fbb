//! A repository's warm standby (`standby_dir`, `standby_keep`, `standby_schedule` in
//! its `[[repository]]` table): the daemon runs `lifeboat standby sync` for it on that
//! schedule, and after each replication into it. Meant for the replica's repository,
//! on a daemon of the secondary cluster, where the standby images must live.
//!
//! ```toml
//! [[repository]]
//! name = "dr-site"
//! url = "s3://replica/lifeboat?endpoint=https://rgw.site-b.example"
//! standby_dir = "/var/lib/lifeboat/standby"   # the secondary cluster's storage
//! standby_keep = 3                            # recovery points kept per disk
//! standby_schedule = "*/15 * * * *"           # a sync with nothing new is cheap
//! ```

use std::path::PathBuf;

use chrono_tz::Tz;

use super::raw::RawRepository;
use super::validator::Validator;
use crate::schedule::Schedule;

/// Recovery points a standby disk keeps unless `standby_keep` says otherwise.
pub const DEFAULT_STANDBY_KEEP: u32 = 3;
/// More kept points than this make an overlay chain too long to boot quickly.
pub const MAX_STANDBY_KEEP: u32 = 64;

/// A checked standby: where the images live, how many points, when to sync.
#[derive(Debug, Clone)]
pub struct Standby {
    pub dir: PathBuf,
    pub keep: u32,
    pub schedule: Schedule,
}

impl Validator<'_> {
    /// The repository's standby, if `standby_dir` is set; all three keys go together.
    pub(super) fn standby(
        &mut self,
        r: &RawRepository,
        tz: Option<Tz>,
        ctx: &str,
    ) -> Option<Standby> {
        let Some(dir) = &r.standby_dir else {
            for (set, key) in [
                (
                    r.standby_keep.as_ref().map(|k| k.span().start),
                    "repository.standby_keep",
                ),
                (
                    r.standby_schedule.as_ref().map(|s| s.span().start),
                    "repository.standby_schedule",
                ),
            ] {
                if let Some(at) = set {
                    self.problem(
                        at,
                        key,
                        format!("{ctx}has no effect without standby_dir; add standby_dir = \"/var/lib/lifeboat/standby\" or remove it"),
                    );
                }
            }
            return None;
        };
        let dir = self.absolute_path(dir, "repository.standby_dir", ctx);
        let keep = self.standby_keep(r, ctx);
        let Some(expr) = &r.standby_schedule else {
            self.problem(
                dir_offset(r),
                "repository.standby_dir",
                format!("{ctx}standby_dir needs standby_schedule (when to sync), e.g. standby_schedule = \"*/15 * * * *\""),
            );
            return None;
        };
        let schedule = self.schedule(expr, tz, "repository.standby_schedule", ctx);
        Some(Standby {
            dir: dir?,
            keep: keep?,
            schedule: schedule?,
        })
    }

    fn standby_keep(&mut self, r: &RawRepository, ctx: &str) -> Option<u32> {
        let Some(keep) = &r.standby_keep else {
            return Some(DEFAULT_STANDBY_KEEP);
        };
        match u32::try_from(*keep.get_ref()) {
            Ok(n) if (1..=MAX_STANDBY_KEEP).contains(&n) => Some(n),
            _ => {
                self.problem(
                    keep.span().start,
                    "repository.standby_keep",
                    format!(
                        "{ctx}standby_keep = {} is outside 1..={MAX_STANDBY_KEEP} (recovery points kept per disk)",
                        keep.get_ref()
                    ),
                );
                None
            }
        }
    }
}

fn dir_offset(r: &RawRepository) -> usize {
    r.standby_dir.as_ref().map_or(0, |d| d.span().start)
}
