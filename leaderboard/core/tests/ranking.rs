//! Histogram ranks equal sort ranks on random scores with many ties.

use leaderboard_core::rank::{ranks_by_histogram, ranks_by_sort, Histogram, RankTable};
use leaderboard_core::TeamPoints;
use proptest::prelude::*;

/// Scores drawn from a few values so that ties are the rule, not the exception,
/// with negative points and halves included.
fn tied_scores() -> impl Strategy<Value = Vec<TeamPoints>> {
    (1_i64..40).prop_flat_map(|distinct| {
        prop::collection::vec(
            (-distinct..distinct).prop_map(|v| TeamPoints(v * 3 + 1)),
            0..400,
        )
    })
}

/// Brute force from the definition: 1 + entries with strictly more points.
fn brute_force(points: &[TeamPoints]) -> Vec<u32> {
    points
        .iter()
        .map(|p| 1 + points.iter().filter(|q| *q > p).count() as u32)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn histogram_and_sort_ranks_agree(points in tied_scores()) {
        let by_sort = ranks_by_sort(&points);
        prop_assert_eq!(&by_sort, &ranks_by_histogram(&points));
        prop_assert_eq!(&by_sort, &brute_force(&points));
        let live = Histogram::from_points(points.iter().copied());
        let table = RankTable::build(&points);
        for (p, rank) in points.iter().zip(&by_sort) {
            prop_assert_eq!(live.rank_of(*p), u64::from(*rank));
            prop_assert_eq!(table.rank_of(*p), u64::from(*rank));
        }
    }

    #[test]
    fn competition_ranks_share_and_skip(points in tied_scores()) {
        let ranks = ranks_by_sort(&points);
        let mut sorted: Vec<(TeamPoints, u32)> = points.iter().copied().zip(ranks).collect();
        sorted.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        for (position, window) in sorted.windows(2).enumerate() {
            let ((p, r), (q, s)) = (window[0], window[1]);
            if p == q {
                prop_assert_eq!(r, s, "ties share a rank");
            } else {
                prop_assert_eq!(s as usize, position + 2, "the next rank skips the tied ones");
            }
        }
        if let Some((_, first)) = sorted.first() {
            prop_assert_eq!(*first, 1);
        }
    }

    #[test]
    fn live_histogram_follows_moves(points in tied_scores(), moves in prop::collection::vec((any::<prop::sample::Index>(), -30_i64..30), 0..50)) {
        let mut points = points;
        let mut live = Histogram::from_points(points.iter().copied());
        if !points.is_empty() {
            for (index, delta) in moves {
                let i = index.index(points.len());
                let new = TeamPoints(points[i].0 + delta);
                live.shift(points[i], new);
                points[i] = new;
            }
        }
        let expected = ranks_by_sort(&points);
        for (p, rank) in points.iter().zip(&expected) {
            prop_assert_eq!(live.rank_of(*p), u64::from(*rank));
        }
        prop_assert_eq!(live.total(), points.len() as u64);
    }
}
