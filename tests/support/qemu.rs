//! Real QEMU tools for tests: qemu-img, qemu-io.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (install qemu-utils)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn create_qcow2(path: &Path, size: &str) {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size));
}

/// Runs one qemu-io command (e.g. `write -P 0xaa 1M 64k`) against a qcow2 image.
pub fn io(path: &Path, command: &str) {
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(path));
}

/// The image's guest-visible content as a raw file.
pub fn to_raw(image: &Path, raw: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(raw));
}

pub fn convert(from: &Path, format: &str, to: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-O", format])
        .arg(from)
        .arg(to));
}

/// Names of the image's persistent dirty bitmaps.
pub fn bitmaps(image: &Path) -> Vec<String> {
    let json = run(Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image));
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    info["format-specific"]["data"]["bitmaps"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| b["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of running `qemu-nbd` processes whose command line names `image`.
pub fn qemu_nbd_pids(image: &Path) -> Vec<u32> {
    let image = image.to_str().unwrap();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&str> = cmdline
                .split(|b| *b == 0)
                .filter_map(|a| std::str::from_utf8(a).ok())
                .collect();
            let is_nbd = args.first()?.ends_with("qemu-nbd");
            (is_nbd && args.iter().any(|a| a.ends_with(image))).then_some(pid)
        })
        .collect()
}
