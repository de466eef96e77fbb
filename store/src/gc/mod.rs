//! Garbage collection (`lifeboat prune`) that is safe while other hosts keep backing
//! up into the same repository, with no repository-wide lock that can go stale.
//!
//! Two phases, a grace period apart:
//! - **mark** ([`mark`]): packs no snapshot uses, and older than the grace period,
//!   are *condemned*: listed in a plan object under `gc/` and dropped from the index.
//!   Packs that are mostly garbage are first repacked (live chunks copied out).
//! - **sweep** ([`sweep`]): a later prune deletes a plan's packs once its grace period
//!   is over, keeping any that a snapshot committed meanwhile turned out to need.
//!
//! The grace period protects backups in flight: their packs are young, so never
//! condemned, and a backup that reused a condemned pack must commit before the plan's
//! deadline or is refused ([`guard`]). One prune at a time is enforced by a lease
//! taken with an S3 conditional write ([`lease`]), which expires if its holder dies.
//! Everything big lives in SQLite ([`working_set`]), so memory does not grow with the
//! repository.
//!
//! Object Lock: locked objects are never deleted (the backend reports them and prune
//! lists them as skipped), and packs and manifests still in use get their locks
//! extended ([`lock_extension`]).

pub(crate) mod clock;
pub(crate) mod guard;
pub mod lease;
mod lock_extension;
mod mark;
mod options;
mod report;
mod sweep;
mod working_set;

use futures::StreamExt;

use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::manifest::Extent;
use crate::format::{self, SNAPSHOTS_PREFIX};
use crate::repo::Repository;

use clock::{unix_now, unix_secs};
use lease::Lease;
use working_set::WorkSet;

pub use clock::unix_time_now;
pub use options::PruneOptions;
pub use report::{MarkReport, PruneReport, SweepReport};

/// Manifests read at once while building the live set.
const MANIFEST_READS: usize = 4;

/// Runs one garbage collection: sweep what is ripe, then mark what is garbage now.
/// `phase` is told what is happening, for progress output.
pub async fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    phase: &(dyn Fn(&str) + Sync),
) -> StoreResult<PruneReport> {
    if !(0.0..=1.0).contains(&opts.repack_below) {
        return Err(StoreError::Invalid {
            what: "repack threshold".into(),
            detail: format!("{} is not a fraction between 0 and 1", opts.repack_below),
        });
    }
    phase("taking the GC lease");
    let mut lease = Lease::acquire(repo, opts.lease_ttl).await?;
    let result = run(repo, opts, &mut lease, phase).await;
    // Released even after an error: the next prune need not wait for expiry.
    let released = lease.release(repo).await;
    let report = result?;
    released?;
    Ok(report)
}

async fn run(
    repo: &Repository,
    opts: &PruneOptions,
    lease: &mut Lease,
    phase: &(dyn Fn(&str) + Sync),
) -> StoreResult<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        grace_secs: opts.grace.as_secs(),
        ..Default::default()
    };
    phase("reading the index");
    repo.sync_catalog().await?;
    // Taken before the manifests are listed: a plan ripe at `now` is swept against a
    // listing that includes every snapshot committed before its deadline.
    let now = unix_now();
    let work = repo.with_catalog(WorkSet::open).await?;
    phase("finding the chunks snapshots use");
    report.snapshots = build_live_set(repo, &work, lease).await?;
    report.live_chunks = work.run(|w| w.live_count()).await?;
    phase("listing packs");
    list_packs(repo, &work).await?;
    phase("sweeping plans whose grace period is over");
    sweep::sweep(repo, &work, lease, now, opts.dry_run, &mut report.sweep).await?;
    // After the sweep: resurrection re-indexes chunks the mark had dropped.
    report.missing_chunks = work.run(|w| w.missing_live()).await?;
    phase("marking unused packs");
    mark::mark(repo, &work, lease, opts, now, &mut report.mark, phase).await?;
    if !opts.dry_run && repo.config().immutability.is_some() {
        phase("extending Object Lock on data still in use");
        report.locks_extended = lock_extension::extend_locks(repo, &work, lease).await?;
    }
    phase("done");
    Ok(report)
}

/// Fills `temp.live` from every manifest. A manifest that cannot be read stops the
/// prune: without it, prune cannot know what that snapshot needs.
async fn build_live_set(repo: &Repository, work: &WorkSet, lease: &mut Lease) -> StoreResult<u64> {
    let ids: Vec<String> = repo
        .backend()
        .list(SNAPSHOTS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| format::id_from_key(&o.key).map(|id| id.to_hex()))
        .collect();
    let count = ids.len() as u64;
    let mut manifests = futures::stream::iter(ids.into_iter().map(|id| async move {
        let result = repo.read_manifest(&id).await;
        (id, result)
    }))
    .buffer_unordered(MANIFEST_READS);
    while let Some((id, result)) = manifests.next().await {
        let manifest = match result {
            Ok(m) => m,
            // Forgotten by someone else since the listing: nothing to keep for it.
            Err(StoreError::Backend(e)) if e.is_not_found() => continue,
            Err(e) => {
                return Err(StoreError::Invalid {
                    what: "snapshot".into(),
                    detail: format!(
                        "{id} cannot be read ({e}); prune needs every snapshot to know what \
                         data is in use, so it stopped without changing anything. Run \
                         `lifeboat verify`, then forget the damaged snapshot"
                    ),
                });
            }
        };
        let chunks: Vec<ChunkId> = manifest
            .extents
            .iter()
            .filter_map(|e| match e {
                Extent::Chunk { id, .. } => Some(*id),
                Extent::Zero { .. } => None,
            })
            .collect();
        work.run(move |w| w.add_live(&chunks)).await?;
        lease.keep(repo).await?;
    }
    Ok(count)
}

async fn list_packs(repo: &Repository, work: &WorkSet) -> StoreResult<()> {
    let packs: Vec<(ChunkId, u64, Option<u64>)> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|p| (p.id, p.size, p.modified.map(unix_secs)))
        .collect();
    work.run(move |w| w.add_packs(&packs)).await
}
