//! `lifeboat verify`: checks the repository's structure, and with `--read-data` its
//! data ([`lifeboat_restore::verify_repository`]). Exits 3 when it finds damage.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use lifeboat_restore::{VerifyOptions, VerifyReport, verify_repository};
use lifeboat_store::Progress;

use crate::args::{GlobalArgs, VerifyArgs};
use crate::output::{ProgressGuard, bytes, print_json};
use crate::repository::open;

/// Exit code of a verify that ran fine but found damage.
const EXIT_DAMAGED: u8 = 3;

pub async fn run(g: &GlobalArgs, a: VerifyArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start(
        "verify",
        progress.clone(),
        !g.quiet && !g.json && a.read_data.is_some(),
    );
    let options = VerifyOptions {
        read_data_percent: a.read_data,
    };
    let report = verify_repository(repo, &options, progress).await?;
    drop(guard);
    if g.json {
        print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}

fn print_text(report: &VerifyReport) {
    println!(
        "checked {} snapshot(s), {} index object(s), {} pack(s); read {} pack(s), {} chunk(s), {}",
        report.snapshots,
        report.index_objects,
        report.packs,
        report.packs_read,
        report.chunks_read,
        bytes(report.bytes_read)
    );
    for p in &report.problems {
        println!("DAMAGED {}: {}", p.object, p.detail);
    }
    for d in &report.damaged_snapshots {
        let offsets: Vec<String> = d.offsets.iter().map(|o| o.to_string()).collect();
        println!(
            "snapshot {} ({}/{}) cannot be fully restored: {} chunk(s), {} affected, at disk offset(s) {}",
            d.snapshot,
            d.vm,
            d.disk,
            d.damaged_chunks,
            bytes(d.damaged_bytes),
            offsets.join(", ")
        );
    }
    if report.is_ok() {
        println!("no problems found");
    }
}
