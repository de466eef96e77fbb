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

/// Where one site keeps its repository, state, standby disks and VM disks.
struct Site<'a> {
    url: &'a str,
    state: &'a Path,
    standby: &'a Path,
    overlays: &'a Path,
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
        let site = Site {
            url: &self.secondary.url,
            state: &self.state,
            standby: &self.standby,
            overlays: &self.overlays,
        };
        let mut text = self.config_text(&site, &group, extra, vm_extra);
        // The primary's repository, for `failback --to primary`.
        text.push_str(&format!(
            "\n[[repository]]\nname = \"primary\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.primary.url,
            self.password_file().display()
        ));
        std::fs::write(&self.config, text).unwrap();
    }

    /// The primary site's own configuration, with the same plan over its repository
    /// (what a planned failover back home runs with); returns its path.
    pub fn primary_config(&self, group: Vec<&str>) -> PathBuf {
        let site = Site {
            url: &self.primary.url,
            state: &self.primary.path("state"),
            standby: &self.primary.path("standby"),
            overlays: &self.primary.path("overlays"),
        };
        let path = self.primary.path("lifeboat.toml");
        std::fs::write(&path, self.config_text(&site, &group, "", "")).unwrap();
        path
    }

    fn config_text(&self, site: &Site, group: &[&str], extra: &str, vm_extra: &str) -> String {
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
        format!(
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
            state = site.state.display(),
            pass = self.password_file().display(),
            url = site.url,
            standby = site.standby.display(),
            overlays = site.overlays.display(),
            vms = vms.join(", "),
        )
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

/// A production VM on the primary site, run the way its own cluster would: QEMU with
/// the guest's image on virtio, the guest's port forwarded, a QMP socket. Killed on
/// drop.
pub struct PrimaryVm {
    child: std::process::Child,
    pub qmp: PathBuf,
    pub port: u16,
}

impl PrimaryVm {
    pub fn start(image: &Path, dir: &Path) -> PrimaryVm {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let qmp = dir.join("primary.qmp");
        let child = std::process::Command::new("qemu-system-x86_64")
            .args(["-display", "none", "-m", "256", "-no-reboot", "-drive"])
            .arg(format!("file={},if=virtio,format=raw", image.display()))
            .args(["-nic"])
            .arg(format!(
                "user,model=e1000,hostfwd=tcp:127.0.0.1:{port}-:{PORT}"
            ))
            .args(["-serial"])
            .arg(format!("file:{}", dir.join("primary.console").display()))
            .args(["-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        PrimaryVm { child, qmp, port }
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for PrimaryVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test guest's notes (`GET /cgi-bin/note?WORD` appends WORD) through `addr`,
/// retried until the guest answers or `limit` passes.
pub fn note(addr: &str, word: &str, limit: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + limit;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut conn = std::net::TcpStream::connect(addr)?;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            write!(conn, "GET /cgi-bin/note?{word} HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            conn.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if body.contains("notes:") => {
                let line = body.lines().find(|l| l.starts_with("notes:")).unwrap();
                return line.trim_start_matches("notes:").to_string();
            }
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            other => panic!("the guest at {addr} does not answer: {other:?}"),
        }
    }
}
