//! `lifeboat prune`: garbage collection. The work is in `lifeboat_store::gc`; this
//! turns flags into options and the report into text or JSON.

use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_policies::format_duration;
use lifeboat_store::{PruneOptions, PruneReport};

use crate::args::{GlobalArgs, PruneArgs};
use crate::output::{bytes, print_json};
use crate::repository::open;

pub async fn run(g: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let repo = open(g).await?;
    let options = PruneOptions {
        grace: Duration::from_secs(a.grace),
        repack_below: a.repack_below / 100.0,
        lease_ttl: Duration::from_secs(a.lease.max(1)),
        dry_run: a.dry_run,
    };
    // Phases go to stderr, also with --json: prune of a big repository takes a while.
    let chatty = !g.quiet;
    let started = std::time::Instant::now();
    let phase = move |what: &str| {
        if chatty {
            eprintln!("prune [{:>6.1} s]: {what}", started.elapsed().as_secs_f64());
        }
    };
    let report = lifeboat_store::prune(&repo, &options, &phase)
        .await
        .context("prune")?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &PruneReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    println!(
        "{} snapshot(s) use {} chunk(s); grace period {}",
        r.snapshots,
        r.live_chunks,
        format_duration(r.grace_secs)
    );
    if r.missing_chunks > 0 {
        println!(
            "warning: {} chunk(s) used by snapshots are missing from the repository; run `lifeboat verify`",
            r.missing_chunks
        );
    }
    print_sweep(r, verb);
    print_mark(r, verb);
    print_locks(r);
    if r.locks_extended > 0 {
        println!(
            "extended Object Lock on {} object(s) still in use",
            r.locks_extended
        );
    }
    if !r.dry_run && r.mark.condemned_packs > 0 {
        println!(
            "condemned packs are deleted by a prune run after the grace period ({})",
            format_duration(r.grace_secs)
        );
    }
}

fn print_sweep(r: &PruneReport, verb: &str) {
    let s = &r.sweep;
    println!(
        "sweep ({verb}): {} plan(s), {} pack(s) deleted ({}), {} resurrected because a new snapshot uses them, {} listed again by an index",
        s.plans_swept,
        s.deleted_packs,
        bytes(s.freed_bytes),
        s.resurrected,
        s.kept_indexed
    );
    if s.waiting_plans > 0 {
        let when = s.next_sweep_after.map_or_else(String::new, |t| {
            let now = lifeboat_store::gc::unix_time_now();
            format!(
                "; the next can be swept in {}",
                format_duration(t.saturating_sub(now))
            )
        });
        println!(
            "  {} plan(s) still in their grace period{when}",
            s.waiting_plans
        );
    }
}

fn print_mark(r: &PruneReport, verb: &str) {
    let m = &r.mark;
    println!(
        "mark ({verb}): {} pack(s) condemned ({}), of them {} orphan(s) from interrupted backups; {} pack(s) repacked ({} copied); {} pack(s) younger than the grace period left alone",
        m.condemned_packs,
        bytes(m.condemned_bytes),
        m.orphan_packs,
        m.repacked_packs,
        bytes(m.repacked_bytes),
        m.young_packs
    );
    if m.missing_packs > 0 {
        println!(
            "warning: the index lists {} pack(s) that are not in the bucket; run `lifeboat verify`",
            m.missing_packs
        );
    }
    if m.repack_skipped_damaged > 0 {
        println!(
            "warning: {} pack(s) with damaged chunks were not repacked; run `lifeboat verify --read-data`",
            m.repack_skipped_damaged
        );
    }
}

/// What Object Lock kept from being deleted or repacked.
fn print_locks(r: &PruneReport) {
    let (s, m) = (&r.sweep, &r.mark);
    let locked: Vec<&(String, String)> = s.locked_skipped.iter().chain(&m.locked_skipped).collect();
    if !locked.is_empty() || m.repack_skipped_locked > 0 || m.locked_packs > 0 {
        println!(
            "Object Lock: skipped {} locked object(s), {} unused locked pack(s) and {} repack(s) of locked packs; they are deleted by a prune after their lock expires",
            locked.len(),
            m.locked_packs,
            m.repack_skipped_locked
        );
        for (key, until) in locked.iter().take(10) {
            println!("  {key} locked until {until}");
        }
        if locked.len() > 10 {
            println!("  … and {} more (see --json)", locked.len() - 10);
        }
    }
}
