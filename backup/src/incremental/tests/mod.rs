//! Property tests: for random images, random writes and random (over-reporting) dirty
//! ranges, the incremental steps must equal a full segmentation of the new image.

use std::sync::atomic::{AtomicU64, Ordering};

use lifeboat_store::crypto::ChunkId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::segmenter::test_support::described;

const KIB: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Params {
    chunker: ChunkerParams,
    zero_run_min: u32,
}

impl Params {
    const fn new(min: u32, avg: u32, max: u32, zero_run_min: u32) -> Self {
        Self {
            chunker: ChunkerParams { min, avg, max },
            zero_run_min,
        }
    }

    /// `zero_run_min` as the segmenter applies it.
    fn zero_min(&self) -> u64 {
        u64::from(self.zero_run_min.max(BLOCK as u32))
    }
}

/// Small chunks, so that images of a few hundred KiB have many cut points. Odd sizes
/// and a `zero_run_min` that is not a whole number of blocks (or is below one block)
/// exercise the rounding edges.
const PARAMS: [Params; 4] = [
    Params::new(1024, 4096, 16384, 16384),
    Params::new(1024, 4096, 16384, 8192),
    Params::new(1001, 3001, 9001, 10000),
    Params::new(256, 1024, 4096, 1000),
];

struct Image<'a> {
    data: &'a [u8],
    read: AtomicU64,
}

impl ReadAt for Image<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn full(image: &[u8], p: Params) -> Vec<(u64, Extent)> {
    let mut out = Vec::new();
    let mut segmenter = Segmenter::new(p.chunker, p.zero_run_min, |piece| {
        out.push(described(piece))
    });
    segmenter.feed(image);
    segmenter.finish();
    out
}

struct Outcome {
    steps: Vec<(u64, Extent)>,
    stats: IncrementalStats,
}

fn incremental(prev: &[(u64, Extent)], image: &[u8], dirty: &[(u64, u64)], p: Params) -> Outcome {
    let extents: Vec<Extent> = prev.iter().map(|&(_, e)| e).collect();
    let source = Image {
        data: image,
        read: AtomicU64::new(0),
    };
    let mut steps = Vec::new();
    let stats = incremental_pieces(
        &extents,
        p.chunker,
        p.zero_run_min,
        image.len() as u64,
        dirty,
        &source,
        &mut |step| {
            steps.push(match step {
                Step::Reuse { offset, extent } => (offset, extent),
                Step::Piece(piece) => described(piece),
            })
        },
    )
    .expect("in-memory reads cannot fail");
    assert_eq!(stats.bytes_read, source.read.load(Ordering::Relaxed));
    assert_eq!(
        stats.pieces_recomputed + stats.extents_reused,
        steps.len() as u64
    );
    Outcome { steps, stats }
}

/// Applies `writes` to `old` and checks the incremental result against a full pass.
fn check(
    old: &[u8],
    prev: &[(u64, Extent)],
    writes: &[(usize, Vec<u8>)],
    dirty: &[(u64, u64)],
    p: Params,
) -> Outcome {
    let mut new = old.to_vec();
    for (at, data) in writes {
        new[*at..*at + data.len()].copy_from_slice(data);
    }
    let outcome = incremental(prev, &new, dirty, p);
    let expected = full(&new, p);
    if outcome.steps != expected {
        let first = outcome
            .steps
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b);
        panic!(
            "incremental != full for {p:?}, size {}, writes {:?}, dirty {dirty:?}: first difference at step {first:?}\n got: {:?}\nwant: {:?}",
            old.len(),
            writes
                .iter()
                .map(|(at, d)| (*at, d.len()))
                .collect::<Vec<_>>(),
            first.map(|i| &outcome.steps[i.saturating_sub(2)..(i + 3).min(outcome.steps.len())]),
            first.map(|i| &expected[i.saturating_sub(2)..(i + 3).min(expected.len())]),
        );
    }
    outcome
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rng.fill(&mut data[..]);
    data
}

/// A disk image mixing random data, zero stretches of every length around the
/// threshold (aligned or not), text, constant runs and repeats of earlier content.
fn random_image(rng: &mut StdRng, p: Params) -> Vec<u8> {
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(700 * KIB..2048 * KIB)
    } else {
        rng.gen_range(150 * KIB..500 * KIB)
    };
    let zero_min = p.zero_min() as usize;
    let text = b"Lifeboat keeps VM disks afloat; FastCDC finds the same cut points twice. ";
    let mut d = Vec::with_capacity(len + 64 * KIB);
    while d.len() < len {
        match rng.gen_range(0..12) {
            0..=3 => {
                let n = rng.gen_range(1..48 * KIB);
                d.extend(random_bytes(rng, n));
            }
            4 | 5 => {
                let n = rng.gen_range(1..3 * zero_min);
                d.resize(d.len() + n, 0);
            }
            6 | 7 => {
                // Whole zero blocks, just below, at or above the threshold.
                d.resize(d.len().next_multiple_of(BLOCK), 0);
                let blocks = zero_min.div_ceil(BLOCK) as i64 + rng.gen_range(-2..6);
                d.resize(d.len() + BLOCK * blocks.max(1) as usize, 0);
            }
            8 => {
                let n = rng.gen_range(1..20 * KIB);
                d.extend(text.iter().cycle().take(n));
            }
            9 => {
                let n = rng.gen_range(1..40 * KIB);
                d.resize(d.len() + n, 0x61);
            }
            _ if !d.is_empty() => {
                let from = rng.gen_range(0..d.len());
                let n = rng.gen_range(1..=(d.len() - from).min(32 * KIB));
                d.extend_from_within(from..from + n);
            }
            _ => {}
        }
    }
    d.truncate(len);
    d
}

/// Random writes: data or zeros, tiny to large, anywhere, at the disk's edges, at old
/// piece boundaries, inside Zero extents, next to or over each other, or rewriting
/// what is already there.
fn random_writes(
    rng: &mut StdRng,
    old: &[u8],
    prev: &[(u64, Extent)],
    p: Params,
) -> Vec<(usize, Vec<u8>)> {
    let size = old.len();
    let zero_runs: Vec<(u64, u64)> = prev
        .iter()
        .filter(|(_, e)| matches!(e, Extent::Zero { .. }))
        .map(|&(at, e)| (at, e.len()))
        .collect();
    let count = if rng.gen_bool(0.2) {
        rng.gen_range(5..25)
    } else {
        rng.gen_range(1..5)
    };
    let mut writes: Vec<(usize, Vec<u8>)> = Vec::new();
    for _ in 0..count {
        let len = match rng.gen_range(0..10) {
            0..=2 => rng.gen_range(1..16),
            3..=5 => rng.gen_range(1..4 * KIB),
            6..=8 => rng.gen_range(4 * KIB..(p.zero_min() as usize * 2).max(32 * KIB)),
            _ => rng.gen_range(32 * KIB..200 * KIB),
        }
        .min(size);
        let mut at = match rng.gen_range(0..10) {
            0 => 0,
            1 => size - len,
            2 | 3 => {
                let (boundary, _) = prev[rng.gen_range(0..prev.len())];
                (boundary as usize).saturating_sub(rng.gen_range(0..3) * rng.gen_range(0..len + 1))
            }
            4 | 5 if !zero_runs.is_empty() => {
                let (start, zlen) = zero_runs[rng.gen_range(0..zero_runs.len())];
                start as usize + rng.gen_range(0..zlen as usize)
            }
            6 if !writes.is_empty() => {
                let (prev_at, prev_data) = writes.last().unwrap();
                prev_at + prev_data.len()
            }
            _ => rng.gen_range(0..size),
        };
        let zeros = rng.gen_bool(0.35);
        if zeros && rng.gen_bool(0.5) {
            at -= at % BLOCK;
        }
        at = at.min(size - len);
        let data = if zeros {
            vec![0; len]
        } else {
            match rng.gen_range(0..8) {
                0 => old[at..at + len].to_vec(), // no change: CBT still reports it
                1 => vec![0x61; len],
                _ => random_bytes(rng, len),
            }
        };
        writes.push((at, data));
    }
    writes
}

/// Dirty ranges as CBT might report them: exactly the writes, rounded out to bitmap
/// granularity, or with clean ranges thrown in. Never missing a written byte.
fn dirty_ranges(rng: &mut StdRng, size: usize, writes: &[(usize, Vec<u8>)]) -> Vec<(u64, u64)> {
    let size = size as u64;
    let exact = writes
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(at, d)| (*at as u64, (at + d.len()) as u64));
    let mut ranges: Vec<(u64, u64)> = match rng.gen_range(0..10) {
        0..=3 => exact.collect(),
        4..=6 => {
            let grain = [4 * KIB, 64 * KIB, 512][rng.gen_range(0..3)] as u64;
            exact
                .map(|(s, e)| (s / grain * grain, e.next_multiple_of(grain).min(size)))
                .collect()
        }
        7 | 8 => {
            let mut r: Vec<_> = exact.collect();
            for _ in 0..rng.gen_range(1..6) {
                let s = rng.gen_range(0..size);
                r.push((s, (s + rng.gen_range(1..40_000)).min(size)));
            }
            r
        }
        _ => vec![(0, size)],
    };
    // The documented contract: sorted, disjoint, non-empty.
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[test]
fn matches_full_segmentation_after_random_writes() {
    let (mut cases, mut zero_structure_changed, mut partly_reused) = (0, 0, 0);
    let (mut read, mut disk) = (0, 0);
    for seed in 0..216 {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = PARAMS[seed as usize % PARAMS.len()];
        let old = random_image(&mut rng, p);
        let prev = full(&old, p);
        let old_zeros: Vec<_> = prev
            .iter()
            .filter(|(_, e)| matches!(e, Extent::Zero { .. }))
            .collect();
        for _ in 0..14 {
            let writes = random_writes(&mut rng, &old, &prev, p);
            let dirty = dirty_ranges(&mut rng, old.len(), &writes);
            let outcome = check(&old, &prev, &writes, &dirty, p);
            cases += 1;
            let new_zeros: Vec<_> = outcome
                .steps
                .iter()
                .filter(|(_, e)| matches!(e, Extent::Zero { .. }))
                .collect();
            zero_structure_changed += usize::from(new_zeros != old_zeros);
            partly_reused += usize::from(
                outcome.stats.extents_reused > 0 && outcome.stats.pieces_recomputed > 0,
            );
            read += outcome.stats.bytes_read;
            disk += old.len() as u64;
        }
    }
    // The generators must keep producing the interesting situations.
    eprintln!(
        "{cases} cases: {zero_structure_changed} changed the zero structure, {partly_reused} mixed reuse and recomputation, read {:.1}% of the disks",
        read as f64 * 100.0 / disk as f64
    );
    assert!(cases >= 3000);
    assert!(zero_structure_changed > cases / 5 && partly_reused > cases / 2);
}

/// The common case stays cheap: scattered small data writes in data regions read the
/// dirty bytes plus a bounded neighbourhood of each, whatever the image.
#[test]
fn scattered_small_writes_read_a_bounded_neighbourhood() {
    let mut total_dirty = 0;
    let mut total_read = 0;
    let mut ranges = 0;
    for seed in 0..90 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let p = PARAMS[seed as usize % PARAMS.len()];
        let size = rng.gen_range(200 * KIB..1536 * KIB);
        let old = random_bytes(&mut rng, size);
        let prev = full(&old, p);
        let mut writes = Vec::new();
        for _ in 0..rng.gen_range(1..8) {
            let len = rng.gen_range(1..16 * KIB);
            let at = rng.gen_range(0..size - len);
            writes.push((at, random_bytes(&mut rng, len)));
        }
        // Exactly the writes, or rounded out to 64 KiB like a qcow2 bitmap.
        let grain = if rng.gen_bool(0.5) { 1 } else { 64 * 1024 };
        let mut dirty: Vec<(u64, u64)> = Vec::new();
        writes.sort_by_key(|w| w.0);
        for (at, data) in &writes {
            let (s, e) = (
                *at as u64 / grain * grain,
                ((at + data.len()) as u64)
                    .next_multiple_of(grain)
                    .min(size as u64),
            );
            match dirty.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => dirty.push((s, e)),
            }
        }
        let outcome = check(&old, &prev, &writes, &dirty, p);
        let dirty_bytes: u64 = dirty.iter().map(|(s, e)| e - s).sum();
        let per_range = 4 * (u64::from(p.chunker.max) + p.zero_min());
        assert!(
            outcome.stats.bytes_read <= dirty_bytes + per_range * dirty.len() as u64,
            "read {} for {} dirty bytes in {} ranges ({p:?})",
            outcome.stats.bytes_read,
            dirty_bytes,
            dirty.len()
        );
        total_dirty += dirty_bytes;
        total_read += outcome.stats.bytes_read;
        ranges += dirty.len();
    }
    eprintln!(
        "scattered small writes: {total_read} bytes read for {total_dirty} dirty bytes in {ranges} ranges"
    );
}

/// A random data image and its segmentation, for the hand-written cases.
mod edge_cases;
