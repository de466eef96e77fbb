//! `[[replication]]` tables: which VMs the daemon copies from one repository to
//! another (`lifeboat replicate`), when, how fast, and how far behind the copy may
//! fall.
//!
//! ```toml
//! [[replication]]
//! from = "onsite"                  # [[repository]] names; must differ
//! to = "dr-site"
//! groups = ["prod"]                # and/or vms = ["web01"]; default: every VM
//!                                  # of the groups whose repository is `from`
//! after_backup = true              # after each committed backup of one of them
//! schedule = "0 */6 * * *"         # and/or on a schedule, in `timezone` (UTC)
//! limit_rate = "50MiB/s"           # WAN links
//! replication_rpo = "2h"           # oldest the newest point on `to` may get
//! ```
//!
//! The VMs must belong to groups backing up into `from`: the daemon knows their disks
//! from those groups, and shows each disk's replication lag next to its backup RPO.

use std::collections::{BTreeSet, HashMap};

use chrono_tz::Tz;
use toml::Spanned;

use super::raw::RawReplication;
use super::validator::Validator;
use crate::schedule::Schedule;

/// What validation needs of a `[[repository]]`.
pub(super) struct RepoView<'a> {
    pub(super) name: &'a str,
    pub(super) url: &'a str,
}

/// What validation needs of a `[[group]]`.
pub(super) struct GroupView<'a> {
    pub(super) name: &'a str,
    pub(super) repository: &'a str,
    pub(super) vms: Vec<&'a str>,
}

/// A checked `[[replication]]`; `from` and `to` name its identity (at most one per pair).
#[derive(Debug, Clone)]
pub struct Replication {
    /// Name of the source [`RepositoryConfig`].
    pub from: String,
    /// Name of the destination [`RepositoryConfig`] (made with `init --replica-of`).
    pub to: String,
    /// The VMs copied, each with its group, in configuration order.
    pub vms: Vec<ReplicatedVm>,
    pub schedule: Option<Schedule>,
    /// Run after each committed backup of one of `vms`.
    pub after_backup: bool,
    /// As written (e.g. `50MiB/s`), passed on to `replicate --limit-rate`.
    pub limit_rate: Option<String>,
    /// Seconds; the oldest the newest point on `to` may be before it is at risk.
    pub rpo: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedVm {
    pub group: String,
    pub vm: String,
}

impl Replication {
    /// `from->to`, for logs and job labels.
    pub fn name(&self) -> String {
        format!("{}->{}", self.from, self.to)
    }

    pub fn covers(&self, group: &str, vm: &str) -> bool {
        self.vms.iter().any(|v| v.group == group && v.vm == vm)
    }

    /// The VM names to pass as `--vm`, without repeats.
    pub fn vm_names(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.vms
            .iter()
            .filter(|v| seen.insert(v.vm.as_str()))
            .map(|v| v.vm.as_str())
            .collect()
    }
}

/// Parses a transfer rate the way `replicate --limit-rate` does, so the file means
/// what the command line means: a number, an optional unit (K, M, G, with or without
/// `iB`/`B`, any case; all binary) and an optional `/s`. Returns bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let hint = "write a number and a unit per second, e.g. \"50MiB/s\" (binary units)";
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a rate; {hint}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!("{text:?}: unknown unit {:?}; {hint}", unit.trim()));
        }
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!(
            "{text:?}: a rate of zero would never send anything; {hint}, or remove limit_rate"
        )),
        Some(r) => Ok(r),
        None => Err(format!("{text:?} is too large; {hint}")),
    }
}

impl Validator<'_> {
    pub(super) fn replications(
        &mut self,
        raw: &[Spanned<RawReplication>],
        repositories: &[RepoView],
        groups: &[GroupView],
    ) -> Vec<Replication> {
        let mut pairs: HashMap<(String, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for r in raw {
            let at = r.span().start;
            let r = r.get_ref();
            let ctx = format!(
                "replication {:?} -> {:?}: ",
                r.from.get_ref(),
                r.to.get_ref()
            );
            let ends = self.replication_ends(r, repositories, &ctx);
            let pair = (r.from.get_ref().clone(), r.to.get_ref().clone());
            if let Some(&first) = pairs.get(&pair) {
                let line = self.line_of(first);
                self.problem(
                    at,
                    "replication",
                    format!(
                        "{ctx}a second replication of the same pair (first on line {line}); \
                         merge them into one table"
                    ),
                );
            } else {
                pairs.insert(pair.clone(), at);
            }
            // An unknown `from` was reported; its VMs would only repeat that.
            let from_known = repositories.iter().any(|x| x.name == pair.0);
            let vms = from_known
                .then(|| self.replicated_vms(r, groups, &ctx))
                .flatten();
            let when = self.replication_when(r, at, &ctx);
            let limit_rate = r
                .limit_rate
                .as_ref()
                .and_then(|l| match parse_rate(l.get_ref()) {
                    Ok(_) => Some(l.get_ref().trim().to_string()),
                    Err(e) => {
                        self.problem(
                            l.span().start,
                            "replication.limit_rate",
                            format!("{ctx}{e}"),
                        );
                        None
                    }
                });
            let rpo = self.duration(&r.replication_rpo, "replication.replication_rpo", &ctx);
            if let (Some(()), Some(vms), Some((schedule, after_backup))) = (ends, vms, when) {
                out.push(Replication {
                    from: pair.0,
                    to: pair.1,
                    vms,
                    schedule,
                    after_backup,
                    limit_rate,
                    rpo,
                });
            }
        }
        out
    }

    /// `from` and `to` name two different repositories.
    fn replication_ends(
        &mut self,
        r: &RawReplication,
        repositories: &[RepoView],
        ctx: &str,
    ) -> Option<()> {
        let mut ok = true;
        let mut urls = Vec::new();
        for (end, key) in [(&r.from, "replication.from"), (&r.to, "replication.to")] {
            match repositories.iter().find(|x| x.name == end.get_ref()) {
                Some(repo) => urls.push(repo.url.trim().trim_end_matches('/').to_string()),
                None => {
                    let known: Vec<String> = repositories
                        .iter()
                        .map(|x| format!("{:?}", x.name))
                        .collect();
                    self.problem(
                        end.span().start,
                        key,
                        format!(
                            "{ctx}unknown repository {:?}; use one of [{}], or add a \
                             [[repository]] with that name",
                            end.get_ref(),
                            known.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        if r.from.get_ref() == r.to.get_ref() || (urls.len() == 2 && urls[0] == urls[1]) {
            self.problem(
                r.to.span().start,
                "replication.to",
                format!(
                    "{ctx}the destination is the source repository; replicate to a \
                     repository at another site"
                ),
            );
            ok = false;
        }
        ok.then_some(())
    }

    /// `vms` and `groups` (their union), or every VM of the groups backing up into `from`.
    fn replicated_vms(
        &mut self,
        r: &RawReplication,
        groups: &[GroupView],
        ctx: &str,
    ) -> Option<Vec<ReplicatedVm>> {
        let from = r.from.get_ref();
        let sources: Vec<&GroupView> = groups.iter().filter(|g| g.repository == from).collect();
        let mut picked: Vec<ReplicatedVm> = Vec::new();
        let mut add = |group: &GroupView, vm: &str| {
            let v = ReplicatedVm {
                group: group.name.to_string(),
                vm: vm.to_string(),
            };
            if !picked.contains(&v) {
                picked.push(v);
            }
        };
        let mut ok = true;
        if r.vms.is_none() && r.groups.is_none() {
            sources
                .iter()
                .for_each(|g| g.vms.iter().for_each(|v| add(g, v)));
        }
        for name in r.groups.iter().flatten() {
            match sources.iter().find(|g| g.name == name.get_ref()) {
                Some(g) => g.vms.iter().for_each(|v| add(g, v)),
                None => {
                    let why = match groups.iter().find(|g| g.name == name.get_ref()) {
                        Some(g) => format!("backs up into {:?}, not {from:?}", g.repository),
                        None => "is not a [[group]] of this file".into(),
                    };
                    self.problem(
                        name.span().start,
                        "replication.groups",
                        format!(
                            "{ctx}group {:?} {why}; name groups whose repository is {from:?}",
                            name.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
        }
        for name in r.vms.iter().flatten() {
            let found = sources
                .iter()
                .find(|g| g.vms.iter().any(|v| v == name.get_ref()));
            match found {
                Some(g) => add(g, name.get_ref()),
                None => {
                    self.problem(
                        name.span().start,
                        "replication.vms",
                        format!(
                            "{ctx}VM {:?} is in no group backing up into {from:?}; name VMs \
                             of those groups (the daemon takes their disks from there)",
                            name.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if ok && picked.is_empty() {
            self.problem(
                r.from.span().start,
                "replication.from",
                format!(
                    "{ctx}selects no VMs: no [[group]] with VMs backs up into {from:?}; add \
                     one, or list vms/groups"
                ),
            );
            ok = false;
        }
        ok.then_some(picked)
    }

    /// The schedule (in its time zone) and `after_backup`; at least one is required.
    fn replication_when(
        &mut self,
        r: &RawReplication,
        at: usize,
        ctx: &str,
    ) -> Option<(Option<Schedule>, bool)> {
        let timezone = match &r.timezone {
            None => Some(Tz::UTC),
            Some(tz) => self.timezone(tz, "replication.timezone", ctx),
        };
        let after_backup = r.after_backup.as_ref().is_some_and(|b| *b.get_ref());
        let schedule = match &r.schedule {
            None => None,
            Some(expr) => Some(self.schedule(expr, timezone, "replication.schedule", ctx)?),
        };
        if schedule.is_none() && !after_backup && r.schedule.is_none() {
            self.problem(
                at,
                "replication",
                format!(
                    "{ctx}never runs; add after_backup = true (after each backup of its VMs) \
                     and/or a schedule = \"cron expression\""
                ),
            );
            return None;
        }
        timezone?;
        Some((schedule, after_backup))
    }
}
