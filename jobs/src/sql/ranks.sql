-- Every entry's team points and competition rank (1, 2, 2, 4), in page
-- order: points descending, ties by entry id descending, exactly as the hot
-- sorted set (ZREVRANGE) orders them.
--
-- Inputs: `entries` (entry_id, user_id, p0..p10 squad indexes, captain and
-- vice_captain slots) and `team_points(...)`, the UDF bound to the match's
-- player points (the `player_points` table), in half-point units, so ties
-- compare exactly.
--
-- Plan kept: ranks from a histogram. An entry's rank is 1 + the number of
-- entries with more points, so the ranks need only a GROUP BY points (a few
-- thousand groups, aggregated per partition in parallel), a running sum over
-- that small histogram, and a join of it back to the entries. A global
-- `RANK() OVER (ORDER BY points DESC)` (window.sql, kept for the benchmark)
-- runs on one partition and its window operator neither reserves memory nor
-- spills; see docs/benchmarks.md for both measured side by side. The final
-- ORDER BY is a SortExec: it sorts each partition under the memory pool
-- (spilling past its share) and merges them.
WITH scored AS (
    SELECT entry_id, user_id,
           team_points(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, captain, vice_captain) AS points
    FROM entries
),
histogram AS (
    SELECT points, COUNT(*) AS entries FROM scored GROUP BY points
),
better AS (
    SELECT points,
           COALESCE(SUM(entries) OVER (
               ORDER BY points DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ), 0) AS above
    FROM histogram
)
SELECT s.entry_id, s.user_id, s.points, CAST(b.above + 1 AS BIGINT) AS rank
FROM scored s JOIN better b ON s.points = b.points
ORDER BY s.points DESC, s.entry_id DESC
