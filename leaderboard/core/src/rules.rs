//! The scoring rules file: its TOML shape, exact rate bands, and validation.

use std::cmp::Ordering;
use std::str::FromStr;

use serde::Deserialize;

use super::points::PlayerPoints;

/// The bundled default rules, `t20-classic`.
pub const T20_CLASSIC: &str = include_str!("../rules/t20-classic.toml");

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file {origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    #[error("rules file {origin} is not valid: {message}")]
    Invalid { origin: String, message: String },
}

/// A complete, validated rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub name: String,
    pub announced: PlayerPoints,
    pub batting: BattingRules,
    pub bowling: BowlingRules,
    pub fielding: FieldingRules,
    /// Wicket kinds whose `player_out` is not dismissed.
    pub not_out_kinds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattingRules {
    pub run: PlayerPoints,
    pub boundary_bonus: PlayerPoints,
    pub six_bonus: PlayerPoints,
    pub duck: PlayerPoints,
    /// Sorted by threshold, ascending.
    pub milestones: Vec<Threshold>,
    pub strike_rate: RateRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BowlingRules {
    pub wicket: PlayerPoints,
    pub wicket_kinds: Vec<String>,
    pub bonus: PlayerPoints,
    pub bonus_kinds: Vec<String>,
    /// Sorted by threshold, ascending.
    pub hauls: Vec<Threshold>,
    pub maiden: PlayerPoints,
    pub balls_per_over: u32,
    pub economy: RateRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldingRules {
    pub catch: PlayerPoints,
    pub catch_bonus: Threshold,
    pub stumping: PlayerPoints,
    pub run_out_direct: PlayerPoints,
    pub run_out_shared: PlayerPoints,
}

/// "From `at` upward, `points`": milestones, hauls and the catch bonus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub at: u32,
    pub points: PlayerPoints,
}

/// Picks the points of the highest threshold reached, or zero.
pub fn highest_reached(thresholds: &[Threshold], value: u32) -> PlayerPoints {
    thresholds
        .iter()
        .rev()
        .find(|threshold| value >= threshold.at)
        .map_or(PlayerPoints::ZERO, |threshold| threshold.points)
}

/// A rate scored in bands: rate = count × `per_balls` / balls, from `min_balls` balls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    pub per_balls: u32,
    pub min_balls: u32,
    pub bands: Vec<Band>,
}

impl RateRule {
    /// Points for `count` (runs) over `balls`, comparing exactly; zero below
    /// `min_balls` or outside every band.
    pub fn points(&self, count: u32, balls: u32) -> PlayerPoints {
        if balls < self.min_balls || balls == 0 {
            return PlayerPoints::ZERO;
        }
        let rate = Ratio::new(
            i128::from(count) * i128::from(self.per_balls),
            i128::from(balls),
        );
        self.bands
            .iter()
            .find(|band| band.contains(rate))
            .map_or(PlayerPoints::ZERO, |band| band.points)
    }
}

/// A positive-denominator fraction compared by cross-multiplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    numerator: i128,
    denominator: i128,
}

impl Ratio {
    pub fn new(numerator: i128, denominator: i128) -> Ratio {
        assert!(denominator > 0, "ratio denominator must be positive");
        Ratio {
            numerator,
            denominator,
        }
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.numerator * other.denominator).cmp(&(other.numerator * self.denominator))
    }
}

impl FromStr for Ratio {
    type Err = String;

    /// Parses a plain decimal such as `7`, `-2.5` or `133.25` exactly.
    fn from_str(text: &str) -> Result<Ratio, String> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 9 {
            return Err(format!("`{text}` is not a decimal number"));
        }
        let denominator = 10_i128.pow(fraction.len() as u32);
        let magnitude: i128 = format!("{whole}{fraction}")
            .parse()
            .map_err(|_| format!("`{text}` is out of range"))?;
        Ok(Ratio::new(
            if negative { -magnitude } else { magnitude },
            denominator,
        ))
    }
}

/// One end of a band; `None` is an open end (±infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub value: Ratio,
    pub inclusive: bool,
}

/// A rate interval and the points it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
    pub points: PlayerPoints,
    pub text: String,
}

impl Band {
    pub fn contains(&self, rate: Ratio) -> bool {
        let above_lower = self.lower.is_none_or(|bound| match rate.cmp(&bound.value) {
            Ordering::Greater => true,
            Ordering::Equal => bound.inclusive,
            Ordering::Less => false,
        });
        let below_upper = self.upper.is_none_or(|bound| match rate.cmp(&bound.value) {
            Ordering::Less => true,
            Ordering::Equal => bound.inclusive,
            Ordering::Greater => false,
        });
        above_lower && below_upper
    }

    /// Parses interval notation: `[5, 6)`, `(170, inf)`, `(-inf, 50)`.
    fn parse(text: &str, points: PlayerPoints) -> Result<Band, String> {
        let trimmed = text.trim();
        let bad =
            || format!("band `{text}` is not an interval such as \"[5, 6)\" or \"(12, inf)\"");
        let lower_inclusive = match trimmed.chars().next() {
            Some('[') => true,
            Some('(') => false,
            _ => return Err(bad()),
        };
        let upper_inclusive = match trimmed.chars().last() {
            Some(']') => true,
            Some(')') => false,
            _ => return Err(bad()),
        };
        let inner = &trimmed[1..trimmed.len() - 1];
        let (low, high) = inner.split_once(',').ok_or_else(bad)?;
        let lower = match low.trim() {
            "-inf" if !lower_inclusive => None,
            "-inf" => return Err(format!("band `{text}` cannot include -inf")),
            value => Some(Bound {
                value: value.parse()?,
                inclusive: lower_inclusive,
            }),
        };
        let upper = match high.trim() {
            "inf" | "+inf" if !upper_inclusive => None,
            "inf" | "+inf" => return Err(format!("band `{text}` cannot include inf")),
            value => Some(Bound {
                value: value.parse()?,
                inclusive: upper_inclusive,
            }),
        };
        if let (Some(low), Some(high)) = (lower, upper) {
            let empty = match low.value.cmp(&high.value) {
                Ordering::Greater => true,
                Ordering::Equal => !(low.inclusive && high.inclusive),
                Ordering::Less => false,
            };
            if empty {
                return Err(format!("band `{text}` is empty"));
            }
        }
        Ok(Band {
            lower,
            upper,
            points,
            text: text.to_owned(),
        })
    }
}

/// Checks that no rate falls in two bands.
fn check_disjoint(name: &str, bands: &[Band]) -> Result<(), String> {
    let mut sorted: Vec<&Band> = bands.iter().collect();
    sorted.sort_by(|a, b| match (a.lower, b.lower) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.value.cmp(&y.value).then(y.inclusive.cmp(&x.inclusive)),
    });
    for pair in sorted.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        let overlaps = match (first.upper, second.lower) {
            (None, _) | (_, None) => true,
            (Some(end), Some(start)) => match end.value.cmp(&start.value) {
                Ordering::Greater => true,
                Ordering::Equal => end.inclusive && start.inclusive,
                Ordering::Less => false,
            },
        };
        if overlaps {
            return Err(format!(
                "{name} bands `{}` and `{}` overlap",
                first.text, second.text
            ));
        }
    }
    Ok(())
}

impl Rules {
    /// The bundled `t20-classic` rules.
    pub fn t20_classic() -> Rules {
        Rules::from_toml(T20_CLASSIC, "t20-classic").expect("the bundled rules are valid")
    }

    /// Parses and validates rules from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|error| RulesError::Parse {
            origin: origin.to_owned(),
            message: error.to_string().trim().replace('\n', " "),
        })?;
        file.validate().map_err(|message| RulesError::Invalid {
            origin: origin.to_owned(),
            message,
        })
    }
}

// The file's shape, kept apart from `Rules` so that unknown keys are refused
// and every value is checked once, at load time.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    name: String,
    lineup: LineupFile,
    batting: BattingFile,
    bowling: BowlingFile,
    fielding: FieldingFile,
    dismissal: DismissalFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineupFile {
    announced: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BattingFile {
    run: i32,
    boundary_bonus: i32,
    six_bonus: i32,
    duck: i32,
    milestones: Vec<MilestoneFile>,
    strike_rate: RateFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MilestoneFile {
    runs: u32,
    points: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaulFile {
    wickets: u32,
    points: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatchBonusFile {
    catches: u32,
    points: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    per_balls: u32,
    min_balls: u32,
    bands: Vec<BandFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BandFile {
    range: String,
    points: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BowlingFile {
    wicket: i32,
    wicket_kinds: Vec<String>,
    bonus: i32,
    bonus_kinds: Vec<String>,
    hauls: Vec<HaulFile>,
    maiden: i32,
    balls_per_over: u32,
    economy: RateFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldingFile {
    catch: i32,
    catch_bonus: CatchBonusFile,
    stumping: i32,
    run_out_direct: i32,
    run_out_shared: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DismissalFile {
    not_out_kinds: Vec<String>,
}

fn thresholds(
    name: &str,
    pairs: impl Iterator<Item = (u32, i32)>,
) -> Result<Vec<Threshold>, String> {
    let list: Vec<Threshold> = pairs
        .map(|(at, points)| Threshold {
            at,
            points: PlayerPoints(points),
        })
        .collect();
    if list.windows(2).any(|pair| pair[0].at >= pair[1].at) {
        return Err(format!(
            "{name} must be listed in strictly increasing order"
        ));
    }
    if list.iter().any(|threshold| threshold.at == 0) {
        return Err(format!("{name} thresholds must be at least 1"));
    }
    Ok(list)
}

fn rate(name: &str, file: RateFile) -> Result<RateRule, String> {
    if file.per_balls == 0 {
        return Err(format!("{name}.per_balls must be at least 1"));
    }
    let bands = file
        .bands
        .into_iter()
        .map(|band| Band::parse(&band.range, PlayerPoints(band.points)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| format!("{name}: {message}"))?;
    check_disjoint(name, &bands)?;
    Ok(RateRule {
        per_balls: file.per_balls,
        min_balls: file.min_balls,
        bands,
    })
}

impl RulesFile {
    fn validate(self) -> Result<Rules, String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.bowling.balls_per_over == 0 {
            return Err("bowling.balls_per_over must be at least 1".into());
        }
        Ok(Rules {
            name: self.name,
            announced: PlayerPoints(self.lineup.announced),
            batting: BattingRules {
                run: PlayerPoints(self.batting.run),
                boundary_bonus: PlayerPoints(self.batting.boundary_bonus),
                six_bonus: PlayerPoints(self.batting.six_bonus),
                duck: PlayerPoints(self.batting.duck),
                milestones: thresholds(
                    "batting.milestones",
                    self.batting.milestones.iter().map(|m| (m.runs, m.points)),
                )?,
                strike_rate: rate("batting.strike_rate", self.batting.strike_rate)?,
            },
            bowling: BowlingRules {
                wicket: PlayerPoints(self.bowling.wicket),
                wicket_kinds: self.bowling.wicket_kinds,
                bonus: PlayerPoints(self.bowling.bonus),
                bonus_kinds: self.bowling.bonus_kinds,
                hauls: thresholds(
                    "bowling.hauls",
                    self.bowling.hauls.iter().map(|h| (h.wickets, h.points)),
                )?,
                maiden: PlayerPoints(self.bowling.maiden),
                balls_per_over: self.bowling.balls_per_over,
                economy: rate("bowling.economy", self.bowling.economy)?,
            },
            fielding: FieldingRules {
                catch: PlayerPoints(self.fielding.catch),
                catch_bonus: Threshold {
                    at: self.fielding.catch_bonus.catches,
                    points: PlayerPoints(self.fielding.catch_bonus.points),
                },
                stumping: PlayerPoints(self.fielding.stumping),
                run_out_direct: PlayerPoints(self.fielding.run_out_direct),
                run_out_shared: PlayerPoints(self.fielding.run_out_shared),
            },
            not_out_kinds: self.dismissal.not_out_kinds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_rules_load() {
        let rules = Rules::t20_classic();
        assert_eq!(rules.name, "t20-classic");
        assert_eq!(rules.batting.strike_rate.bands.len(), 7);
        assert_eq!(rules.bowling.economy.bands.len(), 7);
    }

    #[test]
    fn economy_band_edges_are_exact() {
        let economy = Rules::t20_classic().bowling.economy;
        // runs conceded over 12 legal balls (2 overs): ER = runs / 2
        let er = |runs| economy.points(runs, 12).0;
        assert_eq!(er(9), 6); // 4.5
        assert_eq!(er(10), 4); // 5.0
        assert_eq!(er(11), 4); // 5.5
        assert_eq!(er(12), 2); // 6.0
        assert_eq!(er(14), 2); // 7.0
        assert_eq!(er(15), 0); // 7.5
        assert_eq!(er(19), 0); // 9.5
        assert_eq!(er(20), -2); // 10.0
        assert_eq!(er(22), -2); // 11.0
        assert_eq!(er(23), -4); // 11.5
        assert_eq!(er(24), -4); // 12.0
        assert_eq!(er(25), -6); // 12.5
        assert_eq!(economy.points(0, 11).0, 0, "below 12 legal balls");
        // 13 balls, 15 runs: ER = 6.923..., band [6, 7]
        assert_eq!(economy.points(15, 13).0, 2);
        // 13 balls, 16 runs: ER = 7.38..., band (7, 10)
        assert_eq!(economy.points(16, 13).0, 0);
    }

    #[test]
    fn strike_rate_band_edges_are_exact() {
        let sr = Rules::t20_classic().batting.strike_rate;
        let at = |runs| sr.points(runs, 10).0;
        assert_eq!(at(18), 6); // 180
        assert_eq!(at(17), 4); // 170
        assert_eq!(at(16), 4); // 160
        assert_eq!(at(15), 2); // 150
        assert_eq!(at(13), 2); // 130
        assert_eq!(at(12), 0); // 120
        assert_eq!(at(8), 0); // 80
        assert_eq!(at(7), -2); // 70
        assert_eq!(at(6), -2); // 60
        assert_eq!(at(5), -4); // 50
        assert_eq!(at(4), -6); // 40
        assert_eq!(sr.points(0, 9).0, 0, "below 10 balls");
        // 17/10 = 170 vs 29/17 = 170.58..: strictly above 170
        assert_eq!(sr.points(29, 17).0, 6);
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!("7".parse::<Ratio>().unwrap(), Ratio::new(7, 1));
        assert!("7.25".parse::<Ratio>().unwrap() == Ratio::new(725, 100));
        assert!("-2.5".parse::<Ratio>().unwrap() < Ratio::new(-2, 1));
        assert!("x".parse::<Ratio>().is_err());
    }

    #[test]
    fn bad_rules_get_precise_errors() {
        let overlapping = T20_CLASSIC.replace("\"[5, 6)\"", "\"[5, 6]\"");
        let error = Rules::from_toml(&overlapping, "custom.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("custom.toml"), "{error}");
        assert!(error.contains("overlap"), "{error}");

        let unknown = T20_CLASSIC.replace("maiden = 12", "maiden = 12\nmaidens = 3");
        let error = Rules::from_toml(&unknown, "x").unwrap_err().to_string();
        assert!(error.contains("maidens"), "{error}");

        let bad_band = T20_CLASSIC.replace("\"(170, inf)\"", "\"170+\"");
        let error = Rules::from_toml(&bad_band, "x").unwrap_err().to_string();
        assert!(error.contains("170+"), "{error}");
    }

    #[test]
    fn custom_rules_change_points_without_code() {
        let doubled = T20_CLASSIC.replace("wicket = 25", "wicket = 50");
        let rules = Rules::from_toml(&doubled, "x").unwrap();
        assert_eq!(rules.bowling.wicket, PlayerPoints(50));
    }
}
