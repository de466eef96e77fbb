//! Small bootable Linux guests for drill tests, built by `scripts/make-test-guest.sh`
//! (Debian's kernel, a busybox initramfs, syslinux on a FAT disk): a good one prints a
//! marker on the serial console and answers on a TCP port; a broken one panics.

use std::path::Path;
use std::process::Command;

/// What the good guest prints on its console once up.
pub const MARKER: &str = "LIFEBOAT-GUEST-UP";
/// The TCP port the good guest answers on.
pub const PORT: u16 = 80;

/// Builds a guest disk image at `out`; `broken` makes a guest whose kernel panics.
pub fn make_guest(out: &Path, broken: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-guest.sh");
    let mut cmd = Command::new(script);
    cmd.arg(out)
        .args(["--marker", MARKER, "--port", &PORT.to_string()]);
    if broken {
        cmd.arg("--broken");
    }
    let out = cmd.output().expect("running scripts/make-test-guest.sh");
    assert!(
        out.status.success(),
        "make-test-guest.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PIDs of running QEMU processes whose command line mentions `needle`.
pub fn qemu_pids(needle: &Path) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("qemu-system-x86_64.*{}", needle.display())])
        .output()
        .expect("running pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
