//! Standard competition ranking (1, 2, 2, 4), by sorting and by histogram.
//!
//! Rank = 1 + the number of entries with strictly more points, so a histogram
//! of points answers any entry's rank without sorting; the two must agree.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::points::TeamPoints;

/// Competition ranks of rows that arrive in page order (points descending):
/// the one routine every reader and writer of sorted standings uses (the
/// store's snapshots, the hot pages, the gateway's top rows, [`ranks_by_sort`]).
/// A row tied with the previous one shares its rank; any other row's rank is
/// its 1-based position.
#[derive(Debug, Clone)]
pub struct CompetitionRanks<P> {
    next_position: u64,
    rank: u64,
    previous: Option<P>,
}

impl<P: PartialEq + Copy> CompetitionRanks<P> {
    /// Ranks from the top of the standings.
    pub fn new() -> CompetitionRanks<P> {
        CompetitionRanks::starting_at(0, 1)
    }

    /// Ranks a page whose first row sits at 0-based `offset` and has rank
    /// `first_rank` (1 + the entries with strictly more points, which may be
    /// fewer than `offset` when the page starts inside a tie).
    pub fn starting_at(offset: u64, first_rank: u64) -> CompetitionRanks<P> {
        debug_assert!(first_rank <= offset + 1, "a rank is at most its position");
        CompetitionRanks {
            next_position: offset,
            rank: first_rank,
            previous: None,
        }
    }

    /// The rank of the next row, which has `points`.
    pub fn next(&mut self, points: P) -> u64 {
        if let Some(previous) = self.previous {
            if previous != points {
                self.rank = self.next_position + 1;
            }
        }
        self.previous = Some(points);
        self.next_position += 1;
        self.rank
    }
}

impl<P: PartialEq + Copy> Default for CompetitionRanks<P> {
    fn default() -> Self {
        CompetitionRanks::new()
    }
}

/// Ranks by sorting: `ranks[i]` is the rank of `points[i]`.
pub fn ranks_by_sort(points: &[TeamPoints]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..points.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| points[b as usize].cmp(&points[a as usize]));
    let mut ranks = vec![0_u32; points.len()];
    let mut competition = CompetitionRanks::new();
    for &entry in &order {
        ranks[entry as usize] = competition.next(points[entry as usize]) as u32;
    }
    ranks
}

/// Ranks through a dense histogram: O(entries + distinct point range), no sort.
pub fn ranks_by_histogram(points: &[TeamPoints]) -> Vec<u32> {
    let table = RankTable::build(points);
    points.iter().map(|&p| table.rank_of(p) as u32).collect()
}

/// A frozen, dense histogram with suffix sums: the rank of any points value in O(1).
#[derive(Debug, Clone, Default)]
pub struct RankTable {
    min: i64,
    /// `at_or_above[k]` counts entries with points ≥ min + k; the last slot is 0.
    at_or_above: Vec<u64>,
    total: u64,
}

impl RankTable {
    pub fn build(points: &[TeamPoints]) -> RankTable {
        let Some(min) = points.iter().map(|p| p.0).min() else {
            return RankTable::default();
        };
        let max = points.iter().map(|p| p.0).max().unwrap_or(min);
        let width = (max - min + 1) as usize;
        let mut at_or_above = vec![0_u64; width + 1];
        for p in points {
            at_or_above[(p.0 - min) as usize] += 1;
        }
        for offset in (0..width).rev() {
            at_or_above[offset] += at_or_above[offset + 1];
        }
        RankTable {
            min,
            at_or_above,
            total: points.len() as u64,
        }
    }

    /// 1 + entries with strictly more points than `points`.
    pub fn rank_of(&self, points: TeamPoints) -> u64 {
        if self.at_or_above.is_empty() {
            return 1;
        }
        let offset = points.0 - self.min + 1;
        if offset <= 0 {
            return self.total + 1;
        }
        let offset = offset as usize;
        1 + self.at_or_above.get(offset).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A live histogram of a contest's points: entries move between buckets as
/// player points change; a rank costs O(distinct point values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<TeamPoints, u64>,
    total: u64,
}

impl Histogram {
    pub fn from_points(points: impl IntoIterator<Item = TeamPoints>) -> Histogram {
        let mut histogram = Histogram::default();
        for p in points {
            histogram.add(p);
        }
        histogram
    }

    pub fn add(&mut self, points: TeamPoints) {
        *self.counts.entry(points).or_default() += 1;
        self.total += 1;
    }

    /// Removes one entry at `points`; false when there was none.
    pub fn remove(&mut self, points: TeamPoints) -> bool {
        let Some(count) = self.counts.get_mut(&points) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&points);
        }
        self.total -= 1;
        true
    }

    /// Moves one entry from `old` to `new` points.
    pub fn shift(&mut self, old: TeamPoints, new: TeamPoints) {
        if old != new && self.remove(old) {
            self.add(new);
        }
    }

    /// Moves many entries at once, each from its old points to its new:
    /// the same as one [`Histogram::shift`] per move, with one ordered-map
    /// update per bucket that changed instead of two per move (a ball moves
    /// millions of a mega contest's entries between a few thousand buckets).
    /// Returns the buckets the moves touched (left or entered).
    pub fn shift_all(
        &mut self,
        moves: impl IntoIterator<Item = (TeamPoints, TeamPoints)>,
    ) -> Vec<TeamPoints> {
        let mut delta: std::collections::HashMap<TeamPoints, i64, foldhash::fast::RandomState> =
            std::collections::HashMap::default();
        for (old, new) in moves {
            if old != new {
                *delta.entry(old).or_default() -= 1;
                *delta.entry(new).or_default() += 1;
            }
        }
        // One net change per bucket, and buckets are independent: the order
        // they are applied in does not matter.
        let mut touched = Vec::with_capacity(delta.len());
        for (points, change) in delta {
            touched.push(points);
            if change == 0 {
                continue;
            }
            if change < 0 {
                let count = self.counts.get(&points).copied().unwrap_or(0);
                let removed = count.min(change.unsigned_abs());
                if removed == count {
                    self.counts.remove(&points);
                } else if let Some(held) = self.counts.get_mut(&points) {
                    *held -= removed;
                }
                self.total -= removed;
            } else {
                *self.counts.entry(points).or_default() += change as u64;
                self.total += change as u64;
            }
        }
        touched
    }

    /// 1 + entries with strictly more points.
    pub fn rank_of(&self, points: TeamPoints) -> u64 {
        1 + self
            .counts
            .range((Bound::Excluded(points), Bound::Unbounded))
            .map(|(_, count)| count)
            .sum::<u64>()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Entries at exactly `points`.
    pub fn count_of(&self, points: TeamPoints) -> u64 {
        self.counts.get(&points).copied().unwrap_or(0)
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// (points, count), highest points first.
    pub fn buckets(&self) -> impl Iterator<Item = (TeamPoints, u64)> + '_ {
        self.counts.iter().rev().map(|(p, c)| (*p, *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn shifting_all_at_once_equals_shifting_one_by_one(
            start in proptest::collection::vec(0_i64..20, 1..200),
            moves in proptest::collection::vec((0_usize..200, 0_i64..20), 0..300),
        ) {
            let mut points: Vec<TeamPoints> = start.iter().map(|p| TeamPoints(*p)).collect();
            let mut one_by_one = Histogram::from_points(points.clone());
            let mut at_once = one_by_one.clone();
            let mut pairs = Vec::new();
            let mut moved = std::collections::HashSet::new();
            for (index, new) in moves {
                let index = index % points.len();
                // A ball moves each entry once.
                if !moved.insert(index) {
                    continue;
                }
                let new = TeamPoints(new);
                one_by_one.shift(points[index], new);
                pairs.push((points[index], new));
                points[index] = new;
            }
            let mut expected_touched: Vec<TeamPoints> = pairs
                .iter()
                .filter(|(old, new)| old != new)
                .flat_map(|(old, new)| [*old, *new])
                .collect();
            expected_touched.sort_unstable();
            expected_touched.dedup();
            let mut touched = at_once.shift_all(pairs);
            touched.sort_unstable();
            proptest::prop_assert_eq!(touched, expected_touched);
            proptest::prop_assert_eq!(&at_once, &one_by_one);
            proptest::prop_assert_eq!(at_once, Histogram::from_points(points));
        }
    }

    fn pts(list: &[i64]) -> Vec<TeamPoints> {
        list.iter().map(|&p| TeamPoints(p)).collect()
    }

    #[test]
    fn competition_ranking_shares_and_skips() {
        let points = pts(&[10, 30, 20, 30, 10, 5]);
        assert_eq!(ranks_by_sort(&points), vec![4, 1, 3, 1, 4, 6]);
        assert_eq!(ranks_by_histogram(&points), vec![4, 1, 3, 1, 4, 6]);
        let histogram = Histogram::from_points(points.iter().copied());
        assert_eq!(histogram.rank_of(TeamPoints(20)), 3);
        assert_eq!(
            histogram.rank_of(TeamPoints(25)),
            3,
            "a value between buckets"
        );
        assert_eq!(histogram.rank_of(TeamPoints(99)), 1);
        let table = RankTable::build(&points);
        assert_eq!(table.rank_of(TeamPoints(25)), 3);
        assert_eq!(table.rank_of(TeamPoints(99)), 1);
        assert_eq!(table.rank_of(TeamPoints(-1)), 7);
    }

    #[test]
    fn histogram_moves_entries() {
        let mut histogram = Histogram::from_points(pts(&[1, 2, 2, 3]));
        histogram.shift(TeamPoints(2), TeamPoints(5));
        assert_eq!(histogram.rank_of(TeamPoints(5)), 1);
        assert_eq!(histogram.rank_of(TeamPoints(2)), 3);
        assert_eq!(histogram.total(), 4);
        assert!(!histogram.remove(TeamPoints(42)));
        assert_eq!(ranks_by_sort(&[]), Vec::<u32>::new());
        assert_eq!(ranks_by_histogram(&[]), Vec::<u32>::new());
    }
}
