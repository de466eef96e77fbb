//! `lifeboat repair index`: rebuilds the index objects from the pack headers; the
//! work itself is [`lifeboat_store::Repository::repair_index`].

use anyhow::{Context, Result};
use lifeboat_store::repair::{RepairOptions, RepairReport};

use crate::args::{GlobalArgs, RepairCommand};
use crate::output::print_json;
use crate::repository::open;

pub async fn run(g: &GlobalArgs, command: RepairCommand) -> Result<()> {
    let RepairCommand::Index(a) = command;
    let repo = open(g).await?;
    let options = RepairOptions {
        dry_run: a.dry_run,
        packs_per_index: a.packs_per_index as usize,
    };
    let report = repo
        .repair_index(&options)
        .await
        .context("rebuilding the index from the packs (nothing old was deleted)")?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &RepairReport) {
    let (write, delete) = if r.dry_run {
        ("would write", "would delete")
    } else {
        ("wrote", "deleted")
    };
    println!(
        "scanned {} pack(s): {} indexed ({} chunk(s)), {} damaged, {} vanished during the scan",
        r.packs_scanned,
        r.packs_indexed,
        r.chunks_indexed,
        r.packs_damaged.len(),
        r.packs_vanished
    );
    for d in &r.packs_damaged {
        println!("DAMAGED {}: {}", d.pack, d.detail);
    }
    if r.chunks_carried_over > 0 {
        println!(
            "kept {} chunk entr(ies) of damaged packs from old index objects (restore verifies each chunk)",
            r.chunks_carried_over
        );
    }
    println!(
        "{write} {} index object(s); {delete} {} of {} old index object(s) ({} of them unreadable)",
        r.index_objects_written,
        r.old_index_objects_deleted,
        r.old_index_objects,
        r.old_index_objects_damaged
    );
    for k in &r.old_index_objects_kept {
        println!("kept {}: {}", k.pack, k.detail);
    }
    if !r.packs_damaged.is_empty() {
        println!(
            "data in damaged packs may be lost: run `lifeboat verify` to see which snapshots are affected"
        );
    }
    if r.dry_run {
        println!("dry run: nothing was written or deleted");
    }
}
