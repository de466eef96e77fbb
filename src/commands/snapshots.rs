//! `lifeboat snapshots`: lists the repository's snapshots, optionally of one VM or disk.

use anyhow::Result;

use crate::args::{GlobalArgs, SnapshotsArgs};
use crate::output::{bytes, print_json};
use crate::repository::open;

pub async fn run(g: &GlobalArgs, a: SnapshotsArgs) -> Result<()> {
    let repo = open(g).await?;
    let list: Vec<_> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| a.vm.as_deref().is_none_or(|v| s.meta.vm == v))
        .filter(|s| a.disk.as_deref().is_none_or(|d| s.meta.disk == d))
        .collect();
    if g.json {
        print_json(&list);
        return Ok(());
    }
    println!(
        "{:<10} {:<24} {:<16} {:<12} {:>11}  HOST",
        "ID", "TIME", "VM", "DISK", "SIZE"
    );
    for s in &list {
        println!(
            "{:<10} {:<24} {:<16} {:<12} {:>11}  {}",
            s.short_id(),
            s.meta.time,
            s.meta.vm,
            s.meta.disk,
            bytes(s.meta.size),
            s.meta.host
        );
    }
    println!("{} snapshot(s)", list.len());
    Ok(())
}
