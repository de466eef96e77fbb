//! Hand-written edge cases, each named for the situation it pins down.

use super::*;

fn data_image(seed: u64, len: usize) -> Vec<u8> {
    random_bytes(&mut StdRng::seed_from_u64(seed), len)
}

const P: Params = PARAMS[0];

#[test]
fn clean_disk_reads_nothing_and_reuses_everything() {
    let mut old = data_image(1, 300 * KIB);
    old[100 * KIB..140 * KIB].fill(0);
    let prev = full(&old, P);
    let outcome = check(&old, &prev, &[], &[], P);
    assert_eq!(outcome.stats.bytes_read, 0);
    assert_eq!(outcome.stats.extents_reused, prev.len() as u64);
}

#[test]
fn zero_write_next_to_a_short_zero_run_makes_a_zero_extent_over_clean_blocks() {
    // 12 KiB of zeros is short (threshold 16 KiB); zeroing the next 8 KiB makes a
    // 20 KiB run whose first 12 KiB were never dirty.
    let mut old = data_image(2, 300 * KIB);
    old[100 * KIB..112 * KIB].fill(0);
    let prev = full(&old, P);
    assert!(!prev.iter().any(|(_, e)| matches!(e, Extent::Zero { .. })));
    let writes = [(112 * KIB, vec![0; 8 * KIB])];
    let outcome = check(&old, &prev, &writes, &[(112 * 1024, 120 * 1024)], P);
    assert!(
        outcome
            .steps
            .contains(&((100 * KIB) as u64, Extent::Zero { len: 20 * 1024 }))
    );
}

#[test]
fn data_write_inside_a_zero_extent_splits_it() {
    let mut old = data_image(3, 300 * KIB);
    old[100 * KIB..160 * KIB].fill(0);
    let prev = full(&old, P);
    // One byte in the middle: two long runs of 28 KiB either side of one data block.
    let outcome = check(
        &old,
        &prev,
        &[(130 * KIB + 5, vec![7])],
        &[(130 * 1024 + 5, 130 * 1024 + 6)],
        P,
    );
    assert!(
        outcome
            .steps
            .contains(&((100 * KIB) as u64, Extent::Zero { len: 28 * 1024 }))
    );
    assert!(
        outcome
            .steps
            .contains(&((132 * KIB) as u64, Extent::Zero { len: 28 * 1024 }))
    );
}

#[test]
fn data_write_inside_a_zero_extent_can_merge_the_regions_around_it() {
    let mut old = data_image(4, 300 * KIB);
    old[100 * KIB..124 * KIB].fill(0);
    let prev = full(&old, P);
    assert!(prev.contains(&((100 * KIB) as u64, Extent::Zero { len: 24 * 1024 })));
    // Both halves (8 KiB and 12 KiB) are now short: one region from 0 to the end.
    let outcome = check(
        &old,
        &prev,
        &[(109 * KIB, vec![1; 10])],
        &[(109 * 1024, 109 * 1024 + 10)],
        P,
    );
    assert!(
        !outcome
            .steps
            .iter()
            .any(|(_, e)| matches!(e, Extent::Zero { .. }))
    );
}

#[test]
fn trimming_a_zero_extent_from_either_end() {
    let mut old = data_image(5, 300 * KIB);
    old[100 * KIB..140 * KIB].fill(0);
    let prev = full(&old, P);
    check(
        &old,
        &prev,
        &[(100 * KIB, vec![9; 3])],
        &[(100 * 1024, 100 * 1024 + 3)],
        P,
    );
    check(
        &old,
        &prev,
        &[(140 * KIB - 1, vec![9])],
        &[(140 * 1024 - 1, 140 * 1024)],
        P,
    );
    // And growing it by zeroing the blocks on either side.
    let writes = [(96 * KIB, vec![0; 4 * KIB]), (140 * KIB, vec![0; 4 * KIB])];
    let outcome = check(
        &old,
        &prev,
        &writes,
        &[(96 * 1024, 100 * 1024), (140 * 1024, 144 * 1024)],
        P,
    );
    assert!(
        outcome
            .steps
            .contains(&((96 * KIB) as u64, Extent::Zero { len: 48 * 1024 }))
    );
}

#[test]
fn unaligned_dirty_ranges_at_the_very_start_and_end_of_an_unaligned_disk() {
    let old = data_image(6, 200 * KIB + 123);
    let prev = full(&old, P);
    let size = old.len();
    let writes = [(0, vec![1, 2, 3]), (size - 5, vec![4; 5])];
    check(
        &old,
        &prev,
        &writes,
        &[(0, 3), (size as u64 - 5, size as u64)],
        P,
    );
}

#[test]
fn short_last_block_turning_zero_extends_the_final_zero_extent() {
    // The disk ends with a Zero extent and then 100 bytes of data in a short block.
    let mut old = data_image(7, 200 * KIB + 100);
    old[152 * KIB..200 * KIB].fill(0);
    let prev = full(&old, P);
    assert_eq!(prev.last().unwrap().0, (200 * KIB) as u64);
    let size = old.len() as u64;
    let outcome = check(
        &old,
        &prev,
        &[(200 * KIB, vec![0; 100])],
        &[(size - 100, size)],
        P,
    );
    assert_eq!(
        outcome.steps.last(),
        Some(&(
            (152 * KIB) as u64,
            Extent::Zero {
                len: 48 * 1024 + 100
            }
        ))
    );
    // And back: data in the short block splits it off again.
    let mut zeroed = old.clone();
    zeroed[200 * KIB..].fill(0);
    let prev = full(&zeroed, P);
    check(
        &zeroed,
        &prev,
        &[(200 * KIB + 99, vec![1])],
        &[(size - 1, size)],
        P,
    );
}

#[test]
fn chunk_ending_exactly_where_a_write_starts_is_recomputed() {
    // The byte after a hash cut decided that cut, so changing it may move the cut.
    let old = data_image(8, 300 * KIB);
    let prev = full(&old, P);
    for &(at, _) in &prev[1..prev.len() - 1] {
        let at = at as usize;
        let writes = [(at, vec![old[at] ^ 0xff])];
        check(&old, &prev, &writes, &[(at as u64, at as u64 + 1)], P);
    }
}

#[test]
fn dirty_ranges_closer_together_than_a_chunk() {
    let old = data_image(9, 400 * KIB);
    let prev = full(&old, P);
    let writes: Vec<(usize, Vec<u8>)> = (0..20)
        .map(|i| (100 * KIB + i * 700, vec![i as u8; 10]))
        .collect();
    let dirty: Vec<(u64, u64)> = writes
        .iter()
        .map(|(at, d)| (*at as u64, (at + d.len()) as u64))
        .collect();
    check(&old, &prev, &writes, &dirty, P);
}

#[test]
fn rewriting_identical_bytes_changes_nothing_and_reads_little() {
    let old = data_image(10, 400 * KIB);
    let prev = full(&old, P);
    let at = 200 * KIB + 17;
    let writes = [(at, old[at..at + 64 * KIB].to_vec())];
    let outcome = check(
        &old,
        &prev,
        &writes,
        &[(at as u64, (at + 64 * KIB) as u64)],
        P,
    );
    assert_eq!(outcome.steps, prev);
    assert!(outcome.stats.bytes_read <= (64 + 2 * 16 + 8) as u64 * 1024);
}

#[test]
fn huge_zero_write_across_regions_and_zero_extents() {
    let mut old = data_image(11, 600 * KIB);
    old[100 * KIB..130 * KIB].fill(0);
    old[300 * KIB..310 * KIB].fill(0);
    let prev = full(&old, P);
    let writes = [(50 * KIB + 3, vec![0; 400 * KIB])];
    let outcome = check(&old, &prev, &writes, &[(50 * 1024 + 3, 450 * 1024 + 3)], P);
    assert!(
        outcome
            .steps
            .contains(&((52 * KIB) as u64, Extent::Zero { len: 396 * 1024 }))
    );
}

#[test]
fn everything_dirty_matches_a_full_pass() {
    let mut rng = StdRng::seed_from_u64(12);
    let old = random_image(&mut rng, P);
    let prev = full(&old, P);
    let writes = random_writes(&mut rng, &old, &prev, P);
    check(&old, &prev, &writes, &[(0, old.len() as u64)], P);
}

#[test]
fn implausible_previous_extents_fall_back_to_a_full_read() {
    let old = data_image(13, 100 * KIB);
    // A Zero extent the segmenter could not have produced (too short, misaligned).
    let prev = [
        (0, Extent::Zero { len: 1000 }),
        (
            1000,
            Extent::Chunk {
                id: ChunkId([0; 32]),
                len: 100 * 1024 - 1000,
            },
        ),
    ];
    let extents: Vec<Extent> = prev.iter().map(|&(_, e)| e).collect();
    let source = Image {
        data: &old,
        read: AtomicU64::new(0),
    };
    let mut steps = Vec::new();
    let stats = incremental_pieces(
        &extents,
        P.chunker,
        P.zero_run_min,
        old.len() as u64,
        &[],
        &source,
        &mut |s| steps.push(s),
    )
    .unwrap();
    assert_eq!(stats.bytes_read, old.len() as u64);
    let described: Vec<_> = steps
        .into_iter()
        .map(|s| match s {
            Step::Piece(p) => described(p),
            Step::Reuse { .. } => panic!("nothing may be reused from implausible extents"),
        })
        .collect();
    assert_eq!(described, full(&old, P));
}

/// Finds, in random data alternating with `gap`-byte zero stretches after every
/// `period` bytes, an old chunk `[u, v)` that `wanted` accepts, given the start `r`
/// of the zero stretch it reaches. Returns the image, truncated well after it.
fn find_chunk(
    period: usize,
    gap: usize,
    wanted: impl Fn(u64, u64, u64) -> bool,
) -> (Vec<u8>, u64, u64, u64) {
    let ChunkerParams { min, avg, max } = P.chunker;
    for seed in 0..1000 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut image = vec![0u8; 1 << 20];
        rng.fill(&mut image[..]);
        if gap > 0 {
            for start in (period..image.len()).step_by(period + gap) {
                image[start..(start + gap).min(1 << 20)].fill(0);
            }
        }
        // Zero stretches shorter than the threshold: one region, so plain FastCDC.
        for c in FastCDC::new(&image, min, avg, max) {
            let (u, v) = (c.offset as u64, (c.offset + c.length) as u64);
            let r = (v - 1) / (period + gap) as u64 * (period + gap) as u64 + period as u64;
            if c.length < max as usize && v + 64 * 1024 < image.len() as u64 && wanted(u, v, r) {
                image.truncate(v as usize + 64 * 1024);
                return (image, u, v, r);
            }
        }
    }
    panic!("no suitable chunk in 1000 images");
}

#[test]
fn old_hash_cut_inside_zeros_that_become_a_zero_extent_is_recomputed() {
    // An old chunk ends a few bytes into a short zero stretch (the gear hash still
    // carries the data before it); zeroing the blocks after the stretch makes it a
    // Zero extent starting *inside* that chunk. Nothing in the chunk's own bytes
    // changed, only its limit.
    let (gap, zero_min) = (8 * KIB, P.zero_min() as usize);
    let (old, u, v, r) = find_chunk(40 * KIB, gap, |u, v, r| u < r && r < v && v < r + 64);
    let prev = full(&old, P);
    assert!(prev.iter().any(|&(at, _)| at == v));
    let write = (r as usize + gap, vec![0; zero_min - gap]);
    let dirty = [(write.0 as u64, (write.0 + write.1.len()) as u64)];
    let outcome = check(&old, &prev, &[write], &dirty, P);
    assert!(
        outcome
            .steps
            .iter()
            .any(|&(at, e)| at == u && e.len() == r - u)
    );
}

#[test]
fn old_hash_cut_just_before_a_new_zero_extent_is_recomputed_if_fastcdc_would_skip_it() {
    // The old chunk `[u, v)` was cut by the hash at the byte `v`; now a Zero extent
    // starts at `v + 1`, so the chunk may be at most `v + 1 - u` long. FastCDC hashes
    // two bytes per step and, for an odd limit, never examines its last position: the
    // new chunk runs to `v + 1`. For an even limit it is the old chunk.
    let zero_min = P.zero_min() as usize;
    for parity in [1, 0] {
        let (old, u, v, _) = find_chunk(usize::MAX / 4, 0, |u, v, _| {
            (v + 1) % BLOCK as u64 == 0 && (v + 1 - u) % 2 == parity
        });
        let prev = full(&old, P);
        let write = (v as usize + 1, vec![0; zero_min]);
        let dirty = [(v + 1, v + 1 + zero_min as u64)];
        let outcome = check(&old, &prev, &[write], &dirty, P);
        let new_len = if parity == 1 { v + 1 - u } else { v - u };
        assert!(
            outcome
                .steps
                .iter()
                .any(|&(at, e)| at == u && e.len() == new_len)
        );
    }
}

/// The common case with the default parameters: 64 KiB writes scattered over a large
/// data region. Prints the read amplification; asserts it stays within the dirty bytes
/// plus three average chunks per write.
#[test]
fn scattered_64k_writes_with_default_parameters_read_about_two_chunks_each() {
    let chunker = ChunkerParams::default();
    let zero_run_min = lifeboat_store::format::config::DEFAULT_ZERO_RUN_MIN;
    let mut rng = StdRng::seed_from_u64(64);
    let mut old = vec![0u8; 96 << 20];
    rng.fill(&mut old[..]);
    // Random data has no zero blocks: one region, so the segmentation is plain FastCDC.
    let segment = |image: &[u8]| -> Vec<(u64, Extent)> {
        FastCDC::new(image, chunker.min, chunker.avg, chunker.max)
            .map(|c| {
                let data = &image[c.offset..c.offset + c.length];
                described(Piece::Chunk {
                    offset: c.offset as u64,
                    data: data.to_vec(),
                })
            })
            .collect()
    };
    let prev = segment(&old);
    let mut new = old.clone();
    let mut dirty = Vec::new();
    let writes = 24;
    for i in 0..writes {
        // One write in each 4 MiB stretch, 4 KiB aligned as guests write.
        let stretch = new.len() / writes;
        let at = i * stretch + rng.gen_range(0..(stretch - 64 * KIB) / BLOCK) * BLOCK;
        rng.fill(&mut new[at..at + 64 * KIB]);
        dirty.push((at as u64, (at + 64 * KIB) as u64));
    }
    let p = Params {
        chunker,
        zero_run_min,
    };
    let outcome = incremental(&prev, &new, &dirty, p);
    let expected = segment(&new);
    assert_eq!(outcome.steps, expected);
    // The shortcut above is sound: the segmenter, which cuts a region this large in
    // instalments, agrees with one FastCDC pass.
    let t = std::time::Instant::now();
    assert_eq!(full(&new, p), expected);
    eprintln!("segmenter over {} MiB: {:?}", new.len() >> 20, t.elapsed());
    let per_write = outcome.stats.bytes_read as f64 / writes as f64;
    eprintln!(
        "default parameters, {writes} scattered 64 KiB writes: read {:.2} MiB per write ({:.2} average chunks beyond the dirty bytes), {} pieces recomputed",
        per_write / (1 << 20) as f64,
        (per_write - (64 * KIB) as f64) / f64::from(chunker.avg),
        outcome.stats.pieces_recomputed
    );
    assert!(per_write <= (64 * KIB) as f64 + 3.0 * f64::from(chunker.avg));
}

#[test]
fn empty_and_sub_block_disks() {
    let outcome = check(&[], &[], &[], &[], P);
    assert!(outcome.steps.is_empty());
    // Shorter than a block: never a Zero extent, whatever is written.
    let old = data_image(14, 1000);
    let prev = full(&old, P);
    check(&old, &prev, &[(0, vec![0; 1000])], &[(0, 1000)], P);
    let zeros = vec![0; 1000];
    let prev = full(&zeros, P);
    check(&zeros, &prev, &[(999, vec![1])], &[(999, 1000)], P);
}
