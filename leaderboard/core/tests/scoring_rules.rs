//! One hand-written match per rule row of `scoring-t20.md`, scored with the
//! bundled rules. Every player named in a lineup starts from 4 points.

mod common;

use common::{ball, batting, dots, extra, non_boundary, wicket, Fixture};

const ANNOUNCED: i32 = 4;

fn points(fixture: &Fixture, player: &str) -> i32 {
    *fixture
        .score()
        .get(player)
        .unwrap_or_else(|| panic!("{player} is not in the scored players"))
}

#[test]
fn lineup_players_score_four_and_only_they() {
    let fixture = Fixture::new().innings(vec![vec![ball("a1", "b1", 0)]]);
    let scored = fixture.score();
    assert_eq!(scored.len(), 22, "every announced player is listed");
    assert_eq!(scored["b7"], ANNOUNCED, "announced but never on the field");
}

#[test]
fn runs_and_boundary_bonuses() {
    let fixture = Fixture::new().innings(vec![vec![
        ball("a1", "b1", 4),
        ball("a1", "b1", 6),
        ball("a1", "b1", 1),
        non_boundary(ball("a1", "b1", 4)),
        non_boundary(ball("a1", "b1", 6)),
    ]]);
    // 21 runs, one real four (+1), one real six (+2); all-run 4 and 6 score runs only
    assert_eq!(points(&fixture, "a1"), ANNOUNCED + 21 + 1 + 2);
}

#[test]
fn milestones_only_the_highest_applies() {
    // Fewer than 10 balls each, so strike rate does not apply.
    let cases: [(&[u32], i32); 4] = [
        (&[6, 6, 6, 6, 4, 1, 0, 0, 0], 29 + 4 * 2 + 1),
        (&[6, 6, 6, 6, 6, 0, 0, 0, 0], 30 + 5 * 2 + 4),
        (&[6, 6, 6, 6, 6, 6, 6, 6, 1], 49 + 8 * 2 + 4),
        (&[6, 6, 6, 6, 6, 6, 6, 6, 2], 50 + 8 * 2 + 8),
    ];
    for (per_ball, expected) in cases {
        let fixture = Fixture::new().innings(batting("a1", per_ball));
        assert_eq!(points(&fixture, "a1"), ANNOUNCED + expected, "{per_ball:?}");
    }
    // A hundred: 17 sixes in 17 balls (SR 600 adds +6) — 102 + 34 + 16 + 6.
    let fixture = Fixture::new().innings(batting("a1", &[6; 17]));
    assert_eq!(points(&fixture, "a1"), ANNOUNCED + 102 + 34 + 16 + 6);
}

#[test]
fn duck_needs_a_dismissal_with_zero_runs() {
    let bowled_first_ball =
        Fixture::new().innings(vec![vec![wicket(ball("a1", "b1", 0), "bowled", "a1", &[])]]);
    assert_eq!(points(&bowled_first_ball, "a1"), ANNOUNCED - 2);

    // Run out at the non-striker's end without facing: still a duck.
    let diamond = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "run out",
        "a11",
        &[("b5", false)],
    )]]);
    assert_eq!(points(&diamond, "a11"), ANNOUNCED - 2);

    let scored_one = Fixture::new().innings(vec![vec![
        ball("a1", "b1", 1),
        wicket(ball("a1", "b1", 0), "caught", "a1", &[("b2", false)]),
    ]]);
    assert_eq!(points(&scored_one, "a1"), ANNOUNCED + 1);

    let not_out = Fixture::new().innings(vec![dots("a1", "b1", 3)]);
    assert_eq!(points(&not_out, "a1"), ANNOUNCED, "not out on 0 is no duck");
}

#[test]
fn retired_hurt_is_not_out_and_not_a_wicket() {
    let fixture = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "retired hurt",
        "a1",
        &[],
    )]]);
    assert_eq!(points(&fixture, "a1"), ANNOUNCED);
    assert_eq!(points(&fixture, "b1"), ANNOUNCED);
}

#[test]
fn retired_out_and_obstructing_are_ducks_but_not_bowler_wickets() {
    for kind in ["retired out", "obstructing the field"] {
        let fixture =
            Fixture::new().innings(vec![vec![wicket(ball("a1", "b1", 0), kind, "a1", &[])]]);
        assert_eq!(points(&fixture, "a1"), ANNOUNCED - 2, "{kind}");
        assert_eq!(points(&fixture, "b1"), ANNOUNCED, "{kind}");
    }
}

#[test]
fn bowler_wickets_and_lbw_bowled_bonus() {
    let cases = [
        ("bowled", 25 + 8),
        ("lbw", 25 + 8),
        ("caught", 25),
        ("stumped", 25),
        ("hit wicket", 25),
        ("caught and bowled", 25 + 8), // the catch is the bowler's
        ("run out", 0),
    ];
    for (kind, expected) in cases {
        let fielders: &[(&str, bool)] = match kind {
            "caught" | "stumped" | "run out" => &[("b9", false)],
            _ => &[],
        };
        let fixture = Fixture::new().innings(vec![vec![wicket(
            ball("a1", "b1", 1),
            kind,
            "a1",
            fielders,
        )]]);
        assert_eq!(points(&fixture, "b1"), ANNOUNCED + expected, "{kind}");
    }
}

#[test]
fn hauls_only_the_highest_applies() {
    for (wickets, haul) in [(2, 0), (3, 4), (4, 8), (5, 16), (6, 16)] {
        let over: Vec<_> = (0..wickets)
            .map(|i| {
                wicket(
                    ball(&format!("a{}", i + 1), "b1", 1),
                    "caught",
                    &format!("a{}", i + 1),
                    &[("b9", false)],
                )
            })
            .collect();
        let fixture = Fixture::new().innings(vec![over]);
        // one run per ball conceded, fewer than 12 balls: no economy points
        assert_eq!(
            points(&fixture, "b1"),
            ANNOUNCED + 25 * wickets + haul,
            "{wickets} wickets"
        );
    }
}

#[test]
fn maiden_over() {
    let maiden = Fixture::new().innings(vec![dots("a1", "b1", 6)]);
    assert_eq!(points(&maiden, "b1"), ANNOUNCED + 12);

    // Leg-byes are not charged to the bowler: still a maiden.
    let mut with_legbyes = dots("a1", "b1", 5);
    with_legbyes.push(extra(ball("a1", "b1", 0), "legbyes", 4));
    assert_eq!(
        points(&Fixture::new().innings(vec![with_legbyes]), "b1"),
        ANNOUNCED + 12
    );

    // A wide concedes a run: no maiden (and 6 legal balls still make the over).
    let mut with_wide = dots("a1", "b1", 6);
    with_wide.insert(2, extra(ball("a1", "b1", 0), "wides", 1));
    assert_eq!(
        points(&Fixture::new().innings(vec![with_wide]), "b1"),
        ANNOUNCED
    );

    // A no-ball concedes its extra: no maiden.
    let mut with_noball = dots("a1", "b1", 6);
    with_noball.insert(0, extra(ball("a1", "b1", 0), "noballs", 1));
    assert_eq!(
        points(&Fixture::new().innings(vec![with_noball]), "b1"),
        ANNOUNCED
    );

    // An incomplete (live) over is not yet a maiden.
    let live = Fixture::new().innings(vec![dots("a1", "b1", 5)]);
    assert_eq!(points(&live, "b1"), ANNOUNCED);

    // Two bowlers shared the over: a maiden for neither.
    let mut shared = dots("a1", "b1", 3);
    shared.extend(dots("a1", "b2", 3));
    let shared = Fixture::new().innings(vec![shared]);
    assert_eq!(points(&shared, "b1"), ANNOUNCED);
    assert_eq!(points(&shared, "b2"), ANNOUNCED);

    // Two maidens in a spell of 12 legal balls: 24 plus economy 0.0 (< 5): +6.
    let spell = Fixture::new().innings(vec![dots("a1", "b1", 6), dots("a1", "b1", 6)]);
    assert_eq!(points(&spell, "b1"), ANNOUNCED + 24 + 6);
}

/// Two overs by b1 conceding `runs` off the bat in total, none of them maidens.
fn two_overs_conceding(runs: u32) -> Fixture {
    let first = runs / 2 + runs % 2;
    let second = runs / 2;
    let over = |total: u32| -> Vec<_> {
        let mut per_ball = vec![0_u32; 6];
        for i in 0..total as usize {
            per_ball[i % 6] += 1;
        }
        per_ball.into_iter().map(|r| ball("a1", "b1", r)).collect()
    };
    Fixture::new().innings(vec![over(first), over(second)])
}

#[test]
fn economy_band_edges() {
    // ER = runs / 2 over 12 legal balls.
    let cases = [
        (9, 6),   // 4.5
        (10, 4),  // 5.0
        (11, 4),  // 5.5
        (12, 2),  // 6.0
        (14, 2),  // 7.0
        (15, 0),  // 7.5
        (19, 0),  // 9.5
        (20, -2), // 10.0
        (22, -2), // 11.0
        (23, -4), // 11.5
        (24, -4), // 12.0
        (25, -6), // 12.5
    ];
    for (runs, expected) in cases {
        assert_eq!(
            points(&two_overs_conceding(runs), "b1"),
            ANNOUNCED + expected,
            "{runs} runs"
        );
    }
    // 11 legal balls: no economy points at all.
    let short = Fixture::new().innings(vec![
        vec![ball("a1", "b1", 6); 6],
        vec![ball("a1", "b1", 6); 5],
    ]);
    assert_eq!(points(&short, "b1"), ANNOUNCED);
    // Wides and no-balls are conceded but not legal: 12 legal balls, (2 + 2) + (1 + 1 + 1) = 7 runs -> ER 3.5 (+6).
    let mut first = dots("a1", "b1", 6);
    first[0] = ball("a1", "b1", 2);
    first.push(extra(ball("a1", "b1", 0), "wides", 2));
    let mut second = dots("a1", "b1", 6);
    second[0] = ball("a1", "b1", 1);
    second.push(extra(ball("a1", "b1", 1), "noballs", 1));
    let with_extras = Fixture::new().innings(vec![first, second]);
    assert_eq!(points(&with_extras, "b1"), ANNOUNCED + 6);
}

#[test]
fn strike_rate_band_edges() {
    // Ten balls, no boundaries: SR = runs × 10.
    let cases = [
        (18, 6), // 180
        (17, 4), // 170
        (16, 4), // 160
        (15, 2), // 150
        (13, 2), // 130
        (12, 0), // 120
        (8, 0),  // 80
        (7, -2), // 70
        (6, -2), // 60
        (5, -4), // 50
        (4, -6), // 40
        (0, -6), // 0, not out
    ];
    for (runs, expected) in cases {
        let mut per_ball = vec![0_u32; 10];
        for i in 0..runs {
            per_ball[i % 10] += 1;
        }
        let fixture = Fixture::new().innings(batting("a1", &per_ball));
        assert_eq!(
            points(&fixture, "a1"),
            ANNOUNCED + runs as i32 + expected,
            "{runs} off 10"
        );
    }
    // Nine balls: no strike-rate points. A wide is not a ball faced; a no-ball is.
    let mut balls: Vec<_> = dots("a1", "b1", 9);
    balls.push(extra(ball("a1", "b1", 0), "wides", 1));
    assert_eq!(
        points(&Fixture::new().innings(vec![balls.clone()]), "a1"),
        ANNOUNCED
    );
    balls.push(extra(ball("a1", "b1", 0), "noballs", 1));
    assert_eq!(
        points(&Fixture::new().innings(vec![balls]), "a1"),
        ANNOUNCED - 6
    );
}

#[test]
fn catches_and_the_three_catch_bonus() {
    let catches = |count: usize| {
        let over: Vec<_> = (0..count)
            .map(|i| {
                wicket(
                    ball(&format!("a{}", i + 1), &format!("b{}", i + 1), 1),
                    "caught",
                    &format!("a{}", i + 1),
                    &[("b9", false)],
                )
            })
            .collect();
        Fixture::new().innings(vec![over])
    };
    assert_eq!(points(&catches(2), "b9"), ANNOUNCED + 16);
    assert_eq!(points(&catches(3), "b9"), ANNOUNCED + 24 + 4);
    assert_eq!(
        points(&catches(4), "b9"),
        ANNOUNCED + 32 + 4,
        "the bonus applies once"
    );

    // Caught and bowled: the bowler takes the catch (and it counts toward the bonus).
    let fixture = Fixture::new().innings(vec![vec![
        wicket(ball("a1", "b1", 1), "caught and bowled", "a1", &[]),
        wicket(ball("a2", "b1", 1), "caught", "a2", &[("b1", false)]),
        wicket(ball("a3", "b1", 1), "caught", "a3", &[("b1", false)]),
    ]]);
    // 3 wickets (75 + haul 4) + c&b bonus? no: c&b is not lbw/bowled; 3 catches (24 + 4)
    assert_eq!(points(&fixture, "b1"), ANNOUNCED + 75 + 4 + 24 + 4);
}

#[test]
fn stumping_credits_the_keeper() {
    let fixture = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "stumped",
        "a1",
        &[("b3", false)],
    )]]);
    assert_eq!(points(&fixture, "b3"), ANNOUNCED + 12);
    assert_eq!(points(&fixture, "b1"), ANNOUNCED + 25);
}

#[test]
fn run_outs_by_number_of_fielders() {
    let run_out = |fielders: &[(&str, bool)]| {
        Fixture::new().innings(vec![vec![wicket(
            ball("a1", "b1", 1),
            "run out",
            "a1",
            fielders,
        )]])
    };
    let none = run_out(&[]).score();
    assert!(
        ["b1", "b2", "b3", "b4"]
            .iter()
            .all(|p| none[*p] == ANNOUNCED),
        "no fielder, no points"
    );

    let direct = run_out(&[("b2", false)]).score();
    assert_eq!(direct["b2"], ANNOUNCED + 12);
    assert_eq!(direct["b1"], ANNOUNCED, "run outs are not bowler wickets");

    let two = run_out(&[("b2", false), ("b3", false)]).score();
    assert_eq!((two["b2"], two["b3"]), (ANNOUNCED + 6, ANNOUNCED + 6));

    let three = run_out(&[("b2", false), ("b3", false), ("b4", false)]).score();
    assert_eq!(
        (three["b2"], three["b3"], three["b4"]),
        (ANNOUNCED, ANNOUNCED + 6, ANNOUNCED + 6),
        "only the last two listed"
    );
}

#[test]
fn substitute_fielders_earn_nothing() {
    // A substitute not in the lineup is listed, at 0 points.
    let caught = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "caught",
        "a1",
        &[("x sub", true)],
    )]]);
    let scored = caught.score();
    assert_eq!(scored["x sub"], 0);
    assert_eq!(scored["b1"], ANNOUNCED + 25, "the bowler keeps the wicket");

    let direct = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "run out",
        "a1",
        &[("b2", true)],
    )]]);
    assert_eq!(
        direct.score()["b2"],
        ANNOUNCED,
        "a named substitute earns nothing either"
    );

    let shared = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "run out",
        "a1",
        &[("b2", false), ("x sub", true)],
    )]]);
    let scored = shared.score();
    assert_eq!((scored["b2"], scored["x sub"]), (ANNOUNCED + 6, 0));

    let stumped = Fixture::new().innings(vec![vec![wicket(
        ball("a1", "b1", 0),
        "stumped",
        "a1",
        &[("x sub", true)],
    )]]);
    assert_eq!(stumped.score()["x sub"], 0);
}

#[test]
fn super_overs_score_nothing() {
    let fixture = Fixture::new()
        .innings(vec![vec![ball("a1", "b1", 1)]])
        .super_over(vec![vec![
            ball("a1", "b1", 6),
            wicket(ball("a2", "b1", 0), "bowled", "a2", &[]),
            ball("a3", "b2", 4),
        ]]);
    let scored = fixture.score();
    assert_eq!(scored["a1"], ANNOUNCED + 1);
    assert_eq!(scored["a2"], ANNOUNCED, "no duck in a super over");
    assert_eq!(scored["b1"], ANNOUNCED, "no wicket in a super over");
    assert_eq!(scored["a3"], ANNOUNCED);
}
