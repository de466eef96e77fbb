//! `[[plan]]` tables: recovery plans. A plan boots VMs from a (replica) repository
//! in boot groups — a group starts once every VM of the one before is healthy — on
//! failover networks, or in a drill on isolated test networks.
//!
//! ```toml
//! [[plan]]
//! name = "erp"
//! repository = "dr-site"           # the repository recovered from; must exist
//! standby = true                   # boot from its warm standby disks when present (default)
//! rto = "15m"                      # target: command to last VM healthy
//! drill_schedule = "0 2 1 */3 *"   # optional, in `timezone` (default UTC)
//! timezone = "Europe/Berlin"
//! overlay_dir = "/var/lib/lifeboat/overlays" # default <state_dir>/overlays
//! pre_script = "/etc/lifeboat/erp-pre.sh"    # before the first group
//! post_script = "/etc/lifeboat/erp-post.sh"  # after the last group is healthy
//! [plan.network_map]               # production network -> failover network
//! "prod-lan" = "dr-lan"
//! [plan.test_network_map]          # production network -> drill network (isolated)
//! "prod-lan" = "drill-isolated"
//! [[plan.boot_group]]
//! vms = ["db01"]
//! [[plan.boot_group]]
//! vms = ["app01", "web01"]
//! [[plan.vm]]                      # optional overrides and health checks, see `PlanVm`
//! name = "db01"
//! timeout = "5m"
//! health = { console = "login:", tcp = 5432 }
//! ```
//!
//! The VMs need not be in a local `[[group]]`: the secondary site's file may hold
//! only repositories, networks and plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use toml::Spanned;

use super::health::PlanVm;
use super::raw::RawPlan;
use super::validator::Validator;
use crate::schedule::Schedule;

/// What validation needs of a `[[network]]`.
pub(super) struct NetworkView<'a> {
    pub(super) name: &'a str,
    pub(super) isolated: bool,
}

/// A checked recovery plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// Name of the repository (`[[repository]]`) recovered from (checked to exist).
    pub repository: String,
    /// Boot from the repository's warm standby disks when present.
    pub standby: bool,
    /// Seconds; target from command to last VM healthy.
    pub rto: u64,
    pub drill_schedule: Option<Schedule>,
    /// Where copy-on-write overlays go.
    pub overlay_dir: PathBuf,
    pub pre_script: Option<PathBuf>,
    pub post_script: Option<PathBuf>,
    /// Production network → failover network (a [`super::Network`] name).
    pub network_map: BTreeMap<String, String>,
    /// Production network → drill network (an isolated [`super::Network`] name).
    pub test_network_map: BTreeMap<String, String>,
    /// VM names; each group starts after every VM of the previous one is healthy.
    pub boot_groups: Vec<Vec<String>>,
    pub vms: Vec<PlanVm>,
}

impl Plan {
    pub fn vms_in_boot_order(&self) -> impl Iterator<Item = &str> {
        self.boot_groups.iter().flatten().map(String::as_str)
    }

    pub fn overrides(&self, vm: &str) -> Option<&PlanVm> {
        self.vms.iter().find(|v| v.name == vm)
    }

    pub fn test_network_for(&self, prod_network: &str) -> Option<&str> {
        self.test_network_map.get(prod_network).map(String::as_str)
    }

    pub fn failover_network_for(&self, prod_network: &str) -> Option<&str> {
        self.network_map.get(prod_network).map(String::as_str)
    }
}

impl Validator<'_> {
    pub(super) fn plans(
        &mut self,
        raw: &[Spanned<RawPlan>],
        repositories: &[&str],
        networks: &[NetworkView],
        state_dir: &Path,
    ) -> Vec<Plan> {
        let mut names = HashMap::new();
        let mut plans = Vec::new();
        for p in raw {
            self.name(&p.get_ref().name, "plan.name", "plan", &mut names);
            if let Some(plan) = self.plan(p, repositories, networks, state_dir) {
                plans.push(plan);
            }
        }
        plans
    }

    fn plan(
        &mut self,
        p: &Spanned<RawPlan>,
        repositories: &[&str],
        networks: &[NetworkView],
        state_dir: &Path,
    ) -> Option<Plan> {
        let raw = p.get_ref();
        let ctx = format!("plan {:?}: ", raw.name.get_ref());
        if !repositories
            .iter()
            .any(|r| *r == raw.repository.get_ref().as_str())
        {
            self.problem(
                raw.repository.span().start,
                "plan.repository",
                format!(
                    "{ctx}unknown repository {:?}; name a [[repository]] of this file (the replica the plan recovers from)",
                    raw.repository.get_ref()
                ),
            );
        }
        let rto = self.duration(&Some(raw.rto.clone()), "plan.rto", &ctx);
        let tz = match &raw.timezone {
            None => Some(Tz::UTC),
            Some(tz) => self.timezone(tz, "plan.timezone", &ctx),
        };
        let drill_schedule = match &raw.drill_schedule {
            None => Some(None),
            Some(e) => self.schedule(e, tz, "plan.drill_schedule", &ctx).map(Some),
        };
        let path = |v: &mut Self, p: &Option<Spanned<String>>, key: &str| match p {
            None => Some(None),
            Some(p) => v.absolute_path(p, key, &ctx).map(Some),
        };
        let overlay_dir = path(self, &raw.overlay_dir, "plan.overlay_dir");
        let pre_script = path(self, &raw.pre_script, "plan.pre_script");
        let post_script = path(self, &raw.post_script, "plan.post_script");
        let network_map = self.network_map(&raw.network_map, networks, false, &ctx);
        let test_network_map = self.network_map(&raw.test_network_map, networks, true, &ctx);
        let boot_groups = self.boot_groups(p, &ctx);
        let vms = self.plan_vms(raw, &boot_groups, &ctx);
        Some(Plan {
            name: raw.name.get_ref().clone(),
            repository: raw.repository.get_ref().clone(),
            standby: raw.standby.as_ref().is_none_or(|s| *s.get_ref()),
            rto: rto?,
            drill_schedule: drill_schedule?,
            overlay_dir: overlay_dir?.unwrap_or_else(|| state_dir.join("overlays")),
            pre_script: pre_script?,
            post_script: post_script?,
            network_map,
            test_network_map,
            boot_groups,
            vms,
        })
    }

    /// Every target must be a `[[network]]`; a test map's must be isolated, because a
    /// drill that reaches production networks would run a second copy of production.
    fn network_map(
        &mut self,
        map: &BTreeMap<String, Spanned<String>>,
        networks: &[NetworkView],
        test: bool,
        ctx: &str,
    ) -> BTreeMap<String, String> {
        let key = if test {
            "plan.test_network_map"
        } else {
            "plan.network_map"
        };
        for target in map.values() {
            let at = target.span().start;
            match networks.iter().find(|n| n.name == target.get_ref()) {
                None => {
                    let known: BTreeSet<String> =
                        networks.iter().map(|n| format!("{:?}", n.name)).collect();
                    let known: Vec<String> = known.into_iter().collect();
                    self.problem(
                        at,
                        key,
                        format!(
                            "{ctx}unknown network {:?}; add a [[network]] with that name{}",
                            target.get_ref(),
                            if known.is_empty() {
                                String::new()
                            } else {
                                format!(" or use one of {}", known.join(", "))
                            }
                        ),
                    );
                }
                Some(n) if test && !n.isolated => self.problem(
                    at,
                    key,
                    format!(
                        "{ctx}network {:?} is not isolated, and a drill must never touch production; \
                         map to a network with isolated = true",
                        target.get_ref()
                    ),
                ),
                Some(_) => {}
            }
        }
        map.iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect()
    }

    fn boot_groups(&mut self, p: &Spanned<RawPlan>, ctx: &str) -> Vec<Vec<String>> {
        let raw = p.get_ref();
        if raw.boot_group.is_empty() {
            self.problem(
                p.span().start,
                "plan.boot_group",
                format!("{ctx}no boot groups; add [[plan.boot_group]] with vms = [\"...\"]"),
            );
        }
        let mut seen = HashMap::new();
        let mut groups = Vec::new();
        for (i, g) in raw.boot_group.iter().enumerate() {
            if g.get_ref().vms.is_empty() {
                self.problem(
                    g.span().start,
                    "plan.boot_group.vms",
                    format!(
                        "{ctx}boot group {} is empty; list its VMs or remove the table",
                        i + 1
                    ),
                );
            }
            for vm in &g.get_ref().vms {
                self.name(vm, "plan.boot_group.vms", "plan VM", &mut seen);
            }
            groups.push(
                g.get_ref()
                    .vms
                    .iter()
                    .map(|v| v.get_ref().clone())
                    .collect(),
            );
        }
        groups
    }

    fn plan_vms(&mut self, raw: &RawPlan, boot_groups: &[Vec<String>], ctx: &str) -> Vec<PlanVm> {
        let mut seen = HashMap::new();
        let mut vms = Vec::new();
        for vm in &raw.vm {
            let name = &vm.get_ref().name;
            self.name(name, "plan.vm.name", "plan VM", &mut seen);
            if !boot_groups.iter().flatten().any(|n| n == name.get_ref()) {
                self.problem(
                    name.span().start,
                    "plan.vm.name",
                    format!(
                        "{ctx}VM {:?} is in no boot group, so it would never start; add it to a [[plan.boot_group]]'s vms",
                        name.get_ref()
                    ),
                );
            }
            vms.push(self.plan_vm(vm, ctx));
        }
        vms
    }
}
