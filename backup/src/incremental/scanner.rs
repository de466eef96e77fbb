//! Finds the new image's long zero runs that contain or border a dirty block.
//!
//! Everything else about the zero structure is known from the previous snapshot (see
//! the module doc of [`super`]). The scanner works through *clusters*: a group of
//! consecutive dirty blocks, extended left and right across the zero blocks next to
//! it, and through any further dirty group such an extension reaches. Within a
//! cluster it classifies every block, so it sees each zero run there whole; a cluster
//! is bounded by a non-zero block (or the disk's edge) on each side, so those runs are
//! maximal in the whole image.
//!
//! Classifying a block costs a read only if it is dirty, or clean outside old Zero
//! extents and next to a zero run that reaches a dirty block: clean blocks of old Zero
//! extents are zero, clean blocks bordering one are not. The scan is lazy: callers ask
//! for the runs that start before some offset, and it stops as soon as those are known.

use std::collections::VecDeque;
use std::io;

use super::fetch::Fetcher;
use super::layout::{B, Layout};

pub(super) struct Scanner {
    /// Index of the next dirty group not yet part of a cluster.
    next_group: usize,
    state: State,
    /// Long runs found and closed, as byte ranges, in disk order.
    runs: VecDeque<(u64, u64)>,
}

#[derive(Clone, Copy)]
enum State {
    /// Between clusters; the next one starts from `groups[next_group]`.
    Between,
    /// Inside a cluster: the next block to classify is `cursor`; blocks before
    /// `group_end` are dirty; `run` is where the zero run reaching `cursor` started.
    Scanning {
        cursor: u64,
        group_end: u64,
        run: Option<u64>,
    },
}

impl Scanner {
    pub(super) fn new() -> Self {
        Self {
            next_group: 0,
            state: State::Between,
            runs: VecDeque::new(),
        }
    }

    /// Every long run (containing or bordering a dirty block) that starts before the
    /// returned offset is known: closed in `runs`, or the open long run.
    fn settled(&self, layout: &Layout) -> u64 {
        match self.state {
            State::Between => {
                let groups = layout.groups();
                let Some(&(first, _)) = groups.get(self.next_group) else {
                    return u64::MAX;
                };
                // Where the next cluster can start at the earliest: its walk left stops
                // at the previous group, crosses an old Zero extent to its start, or
                // crosses a clean zero stretch of an old short run (< zero_min).
                let floor = self.next_group.checked_sub(1).map_or(0, |i| groups[i].1);
                let walk = match first.checked_sub(1).and_then(|b| layout.old_zero_blocks(b)) {
                    Some((zero_first, _)) => zero_first * B,
                    None => (first * B).saturating_sub(layout.zero_min),
                };
                walk.max(floor * B)
            }
            State::Scanning { cursor, run, .. } => {
                let at = (cursor * B).min(layout.size);
                match run {
                    Some(start) if at - start * B < layout.zero_min => start * B,
                    _ => at,
                }
            }
        }
    }

    /// The start of the run being scanned, once it is known to be long.
    fn open_long(&self, layout: &Layout) -> Option<u64> {
        match self.state {
            State::Scanning {
                cursor,
                run: Some(start),
                ..
            } => {
                ((cursor * B).min(layout.size) - start * B >= layout.zero_min).then_some(start * B)
            }
            _ => None,
        }
    }

    /// Scans until every long run starting before `target` is known.
    pub(super) fn settle(
        &mut self,
        layout: &Layout,
        fetcher: &mut Fetcher,
        target: u64,
    ) -> io::Result<()> {
        while self.settled(layout) < target {
            self.step(layout, fetcher)?;
        }
        Ok(())
    }

    /// The end of the long run (containing or bordering a dirty block) that starts at
    /// `start`, if there is one.
    pub(super) fn run_at(
        &mut self,
        layout: &Layout,
        fetcher: &mut Fetcher,
        start: u64,
    ) -> io::Result<Option<u64>> {
        self.settle(layout, fetcher, start + 1)?;
        loop {
            let i = self.runs.partition_point(|&(s, _)| s < start);
            if let Some(&(s, e)) = self.runs.get(i)
                && s == start
            {
                return Ok(Some(e));
            }
            if self.open_long(layout) != Some(start) {
                return Ok(None);
            }
            self.step(layout, fetcher)?;
        }
    }

    /// The first start after `x` of a known long run. Call [`Scanner::settle`] first
    /// for the range that matters.
    pub(super) fn first_start_after(&self, layout: &Layout, x: u64) -> Option<u64> {
        let i = self.runs.partition_point(|&(s, _)| s <= x);
        let closed = self.runs.get(i).map(|&(s, _)| s);
        closed.or(self.open_long(layout).filter(|&s| s > x))
    }

    /// Forgets runs ending at or before `pos`: the walk never looks back.
    pub(super) fn forget_before(&mut self, pos: u64) {
        while self.runs.front().is_some_and(|&(_, e)| e <= pos) {
            self.runs.pop_front();
        }
    }

    fn close(&mut self, layout: &Layout, start: u64, end: u64) {
        let (start, end) = (start * B, (end * B).min(layout.size));
        if end - start >= layout.zero_min {
            self.runs.push_back((start, end));
        }
    }

    /// Classifies one block, or crosses one clean stretch of an old Zero extent.
    fn step(&mut self, layout: &Layout, fetcher: &mut Fetcher) -> io::Result<()> {
        let State::Scanning {
            cursor,
            group_end,
            run,
        } = self.state
        else {
            return self.start_cluster(layout, fetcher);
        };
        let groups = layout.groups();
        let next_group = groups.get(self.next_group).copied();
        self.state = if cursor < group_end {
            // A dirty block: read it.
            let run = if fetcher.block_is_zero(cursor)? {
                Some(run.unwrap_or(cursor))
            } else {
                if let Some(start) = run {
                    self.close(layout, start, cursor);
                }
                None
            };
            State::Scanning {
                cursor: cursor + 1,
                group_end,
                run,
            }
        } else if let Some((first, end)) = next_group.filter(|g| g.0 == cursor) {
            // The walk right reached the next dirty group: it joins this cluster.
            debug_assert_eq!(first, cursor);
            self.next_group += 1;
            State::Scanning {
                cursor,
                group_end: end,
                run,
            }
        } else if cursor >= layout.nblocks() {
            if let Some(start) = run {
                self.close(layout, start, cursor);
            }
            State::Between
        } else if let Some((_, zero_end)) = layout.old_zero_blocks(cursor) {
            // Clean blocks of an old Zero extent, up to its end or the next dirty group:
            // zero, so the run continues (or starts, bordering the dirty block before).
            let to = zero_end
                .min(next_group.map_or(u64::MAX, |g| g.0))
                .min(layout.nblocks());
            State::Scanning {
                cursor: to,
                group_end,
                run: Some(run.unwrap_or(cursor)),
            }
        } else if let Some(start) = run {
            // A clean block outside old Zero extents, continuing a run rightwards.
            if !layout.borders_old_zero(cursor) && fetcher.block_is_zero(cursor)? {
                State::Scanning {
                    cursor: cursor + 1,
                    group_end,
                    run,
                }
            } else {
                self.close(layout, start, cursor);
                State::Between
            }
        } else {
            // Past the dirty group, its last block non-zero and the next block clean data:
            // any zero stretch beyond is short in both images.
            State::Between
        };
        // Grains inside a long run are never chunked: drop them as the scan crosses them.
        if let Some(start) = self.open_long(layout)
            && let State::Scanning { cursor, .. } = self.state
        {
            fetcher.forget_within(start, cursor * B);
        }
        Ok(())
    }

    /// Starts the cluster of `groups[next_group]`: finds where the zero run reaching
    /// its first block from the left starts, if one does.
    fn start_cluster(&mut self, layout: &Layout, fetcher: &mut Fetcher) -> io::Result<()> {
        let groups = layout.groups();
        let Some(&(first, end)) = groups.get(self.next_group) else {
            return Ok(());
        };
        // The previous group ended its own cluster, which ends next to a non-zero block
        // at or after it: the walk left never needs to cross it.
        let floor = self.next_group.checked_sub(1).map_or(0, |i| groups[i].1);
        self.next_group += 1;
        let mut start = first;
        // Walk left if the first dirty block is zero (the run may extend left) or an old
        // Zero extent borders it (that extent's run may have changed either way).
        // Otherwise the clean zero stretch to the left, if any, lies in old data, so it
        // was part of a short run and still is one.
        let bordered = first > 0 && layout.old_zero_blocks(first - 1).is_some();
        if bordered || fetcher.block_is_zero(first)? {
            while start > floor {
                let b = start - 1;
                if let Some((zero_first, _)) = layout.old_zero_blocks(b) {
                    start = zero_first.max(floor);
                } else if !layout.borders_old_zero(b) && fetcher.block_is_zero(b)? {
                    start = b;
                } else {
                    break;
                }
            }
        }
        self.state = State::Scanning {
            cursor: first,
            group_end: end,
            run: (start < first).then_some(start),
        };
        Ok(())
    }
}
