-- The same ranks as ranks.sql from a global window function: the plan the
-- recompute does not use, kept so the benchmark can run both side by side.
-- With no PARTITION BY, the window runs on a single partition (every row
-- through one core), and DataFusion's window operators neither reserve
-- memory nor spill.
SELECT entry_id, user_id, points,
       CAST(RANK() OVER (ORDER BY points DESC) AS BIGINT) AS rank
FROM (
    SELECT entry_id, user_id,
           team_points(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, captain, vice_captain) AS points
    FROM entries
) scored
ORDER BY points DESC, entry_id DESC
