//! A primary and a secondary site with a recovery plan, for drill and failover
//! tests: VMs (real guests from scripts/make-test-guest.sh) backed up on the primary
//! and replicated to the secondary, whose configuration has the plan `erp` with an
//! isolated drill network and a production (failover) network.

use std::path::{Path, PathBuf};

use super::guest::{MARKER, PORT, make_guest, qemu_pids};
use super::{Kind, PASSWORD, TestRepo};

/// The sites and the configuration of the secondary.
pub struct Rig {
    pub primary: TestRepo,
    pub secondary: TestRepo,
    pub config: PathBuf,
    pub standby: PathBuf,
    pub overlays: PathBuf,
    pub state: PathBuf,
}

pub const NIC: &str =
    r#""nics":[{"mac":"52:54:00:12:34:56","network":"prod-lan","model":"e1000"}]"#;

impl Rig {
    pub fn new(vms: &[(&str, bool)]) -> Rig {
        let primary = TestRepo::init(Kind::Local);
        for (vm, broken) in vms {
            let image = primary.path(&format!("{vm}.img"));
            make_guest(&image, *broken);
            let definition = primary.path(&format!("{vm}.json"));
            std::fs::write(
                &definition,
                format!(
                    r#"{{"source":"config","cpus":1,"memory_mib":256,"disks":[{{"name":"root"}}],{NIC}}}"#
                ),
            )
            .unwrap();
            primary.ok(&[
                "backup",
                "--vm",
                vm,
                "--disk",
                "root",
                "--definition",
                definition.to_str().unwrap(),
                image.to_str().unwrap(),
                "-q",
            ]);
        }
        let secondary = TestRepo::new(Kind::Local);
        secondary.ok(&["init", "--replica-of", &primary.url]);
        secondary.ok(&["replicate", "--from", &primary.url, "-q"]);
        let standby = secondary.path("standby");
        let state = secondary.path("state");
        let overlays = secondary.path("overlays");
        let config = secondary.path("lifeboat.toml");
        let rig = Rig {
            primary,
            secondary,
            config,
            standby,
            overlays,
            state,
        };
        rig.write_config(vms.iter().map(|(v, _)| *v).collect(), "");
        rig
    }

    pub fn write_config(&self, group: Vec<&str>, extra: &str) {
        self.write_config_with(group, extra, "");
    }

    /// `extra` goes into `[[plan]]`, `vm_extra` into every `[[plan.vm]]`.
    pub fn write_config_with(&self, group: Vec<&str>, extra: &str, vm_extra: &str) {
        let vms: Vec<String> = group.iter().map(|v| format!("{v:?}")).collect();
        let checks: String = group
            .iter()
            .map(|v| {
                format!(
                    "[[plan.vm]]\nname = {v:?}\ntimeout = \"120s\"\n{vm_extra}\n\
                     health = {{ console = {MARKER:?}, tcp = {PORT} }}\n"
                )
            })
            .collect();
        let text = format!(
            r#"[daemon]
state_dir = "{state}"

[[repository]]
name = "dr"
url = "{url}"
password_file = "{pass}"
standby_dir = "{standby}"
standby_keep = 2
standby_schedule = "0 * * * *"

[[network]]
name = "drill-net"
kind = "user"
isolated = true

[[network]]
name = "failover-net"
kind = "user"

[[plan]]
name = "erp"
repository = "dr"
rto = "5m"
overlay_dir = "{overlays}"
{extra}
[plan.test_network_map]
"prod-lan" = "drill-net"

[plan.network_map]
"prod-lan" = "failover-net"

[[plan.boot_group]]
vms = [{vms}]

{checks}"#,
            state = self.state.display(),
            pass = self.password_file().display(),
            url = self.secondary.url,
            standby = self.standby.display(),
            overlays = self.overlays.display(),
            vms = vms.join(", "),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn password_file(&self) -> PathBuf {
        let path = self.secondary.path("dr.pass");
        std::fs::write(&path, PASSWORD).unwrap();
        path
    }

    pub fn drill(&self, args: &[&str]) -> std::process::Output {
        let config = self.config.to_str().unwrap();
        self.secondary
            .run(&[&["drill", "--config", config], args].concat())
    }

    /// `lifeboat failover [SUBCOMMAND] --config <the secondary's> ARGS`.
    pub fn failover(&self, subcommand: Option<&str>, args: &[&str]) -> std::process::Output {
        let config = self.config.to_str().unwrap();
        let mut all = vec!["failover"];
        all.extend(subcommand);
        all.extend(["--config", config]);
        all.extend(args);
        self.secondary.run(&all)
    }

    pub fn history(&self, verify: bool) -> (Option<i32>, String) {
        let config = self.config.to_str().unwrap();
        let mut args = vec!["drill", "history", "--config", config];
        if verify {
            args.push("--verify");
        }
        let out = self.secondary.run(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    /// Nothing of a drill is left: no QEMU, no overlay, no socket.
    pub fn assert_nothing_left(&self) {
        assert_eq!(
            qemu_pids(&self.overlays),
            Vec::<u32>::new(),
            "a QEMU is left running"
        );
        let left: Vec<PathBuf> = walk(&self.overlays);
        assert!(left.is_empty(), "left in the overlay dir: {left:?}");
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

/// Every file under the standby directory with its contents' hash.
pub fn standby_state(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = walk(dir)
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .map(|p| {
            let h = blake3::hash(&std::fs::read(&p).unwrap())
                .to_hex()
                .to_string();
            (p, h)
        })
        .collect();
    files.sort();
    files
}
