//! Property test: for random images, random writes and random (over-reporting) dirty
//! ranges, the incremental steps equal a full fixed-cell segmentation of the new image,
//! and only dirty cells are read.

use lifeboat_store::crypto::ChunkId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::fixed::FixedSegmenter;
use crate::segmenter::test_support::described;

fn full(image: &[u8], cell: u32) -> Vec<(u64, Extent)> {
    let mut out = Vec::new();
    let mut segmenter = FixedSegmenter::new(cell, |piece| out.push(described(piece)));
    segmenter.feed(image);
    segmenter.finish();
    out
}

fn incremental(
    prev: &[(u64, Extent)],
    image: &[u8],
    cell: u32,
    dirty: &[(u64, u64)],
) -> (Vec<(u64, Extent)>, IncrementalStats, u64) {
    let extents: Vec<Extent> = prev.iter().map(|&(_, e)| e).collect();
    let plan = Plan::new(&extents, cell, image.len() as u64, dirty).expect("a fixed layout");
    let mut steps = Vec::new();
    let mut last_read = None;
    let stats = plan
        .walk(
            &mut |offset, len| {
                assert!(last_read < Some(offset), "cells must be asked for in order");
                last_read = Some(offset);
                Ok(image[offset as usize..offset as usize + len].to_vec())
            },
            &mut |step| {
                steps.push(match step {
                    Step::Reuse { offset, extent } => (offset, extent),
                    Step::Piece(piece) => described(piece),
                })
            },
        )
        .expect("in-memory reads cannot fail");
    (steps, stats, plan.bytes_to_read())
}

fn random_image(rng: &mut StdRng, cell: usize) -> Vec<u8> {
    let len = rng.gen_range(0..40 * cell) + rng.gen_range(0..3) * rng.gen_range(0..cell);
    let mut image = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let run = rng.gen_range(1..6 * cell).min(len - at);
        match rng.gen_range(0..3) {
            0 => {} // zeros
            1 => rng.fill(&mut image[at..at + run]),
            _ => image[at..at + run].fill(rng.r#gen()),
        }
        at += run;
    }
    image
}

#[test]
fn incremental_equals_full_and_reads_only_dirty_cells() {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut cases = 0;
    for cell in [4096u32, 8192, 65536] {
        let c = cell as usize;
        for _ in 0..300 {
            let old = random_image(&mut rng, c);
            let prev = full(&old, cell);
            let mut new = old.clone();
            let mut dirty = Vec::new();
            for _ in 0..rng.gen_range(0..6) {
                if new.is_empty() {
                    break;
                }
                let start = rng.gen_range(0..new.len());
                let len = rng.gen_range(1..3 * c).min(new.len() - start);
                match rng.gen_range(0..3) {
                    0 => new[start..start + len].fill(0), // zero write (a discard)
                    1 => rng.fill(&mut new[start..start + len]),
                    _ => new[start..start + len].copy_from_slice(&old[start..start + len]),
                }
                dirty.push((start as u64, (start + len) as u64));
                if rng.gen_bool(0.2) {
                    // Over-report: a bitmap granule bigger than the write.
                    let s = start.saturating_sub(rng.gen_range(0..c)) as u64;
                    dirty.push((s, s + rng.gen_range(1..2 * c) as u64));
                }
            }
            let (steps, stats, to_read) = incremental(&prev, &new, cell, &dirty);
            assert_eq!(steps, full(&new, cell), "cell {cell}, dirty {dirty:?}");
            assert_eq!(stats.bytes_read, to_read);
            let dirty_bytes: u64 = dirty
                .iter()
                .map(|(s, e)| e.min(&(new.len() as u64)) - s)
                .sum();
            // Each dirty range costs at most the two partial cells at its ends.
            assert!(to_read <= dirty_bytes + 2 * dirty.len() as u64 * u64::from(cell));
            cases += 1;
        }
    }
    assert_eq!(cases, 900);
}

#[test]
fn nothing_dirty_reads_nothing_and_reuses_everything() {
    let mut rng = StdRng::seed_from_u64(5);
    let image = random_image(&mut rng, 4096);
    let prev = full(&image, 4096);
    let (steps, stats, _) = incremental(&prev, &image, 4096, &[]);
    assert_eq!(steps, prev);
    assert_eq!(stats.bytes_read, 0);
}

#[test]
fn layouts_that_are_not_fixed_cells_are_refused() {
    let id = ChunkId([1; 32]);
    let chunk = |len| Extent::Chunk { id, len };
    let cases: [(&[Extent], u64, &str); 5] = [
        (&[chunk(4096), chunk(100)], 4196, ""),
        (&[chunk(5000)], 5000, "not one cell"),
        (
            &[Extent::Zero { len: 4096 }, Extent::Zero { len: 4096 }],
            8192,
            "maximal",
        ),
        (&[chunk(4096)], 8192, "cover 4096 bytes"),
        (&[Extent::Zero { len: 100 }, chunk(4096)], 4196, "maximal"),
    ];
    for (prev, size, why) in cases {
        match Plan::new(prev, 4096, size, &[]) {
            Ok(_) => assert!(why.is_empty(), "{prev:?} accepted"),
            Err(e) => assert!(!why.is_empty() && e.contains(why), "{prev:?}: {e}"),
        }
    }
}
