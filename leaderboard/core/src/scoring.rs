//! The scoring engine: per-player statistics updated ball by ball, points as a
//! pure function of them, idempotent by `seq`, corrections re-derived from the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::cricsheet::CricsheetMatch;
use super::event::{Delivery, EventBody, Fielder, MatchEvent};
use super::ids::MatchId;
use super::points::PlayerPoints;
use super::rules::{highest_reached, Rules};

/// Cricsheet's wicket kinds that credit fielders.
const CAUGHT: &str = "caught";
const CAUGHT_AND_BOWLED: &str = "caught and bowled";
const STUMPED: &str = "stumped";
const RUN_OUT: &str = "run out";

/// The names of the fielders credited: substitutes earn nothing, though they
/// still count as listed fielders.
fn credited(fielders: &[Fielder]) -> impl Iterator<Item = &str> {
    fielders
        .iter()
        .filter(|fielder| !fielder.substitute)
        .filter_map(|fielder| fielder.name.as_deref())
}

/// A player's position in one match's player table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerIdx(pub u32);

/// A player's match statistics so far; points are a pure function of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayerStats {
    pub announced: bool,
    pub runs: u32,
    pub balls_faced: u32,
    pub fours: u32,
    pub sixes: u32,
    pub dismissed: bool,
    pub wickets: u32,
    pub bonus_wickets: u32,
    pub runs_conceded: u32,
    pub legal_balls: u32,
    pub maidens: u32,
    pub catches: u32,
    pub stumpings: u32,
    pub run_outs_direct: u32,
    pub run_outs_shared: u32,
}

impl PlayerStats {
    /// The player's points under `rules`, in constant time.
    pub fn points(&self, rules: &Rules) -> PlayerPoints {
        let batting = &rules.batting;
        let bowling = &rules.bowling;
        let fielding = &rules.fielding;
        let times = |count: u32, each: PlayerPoints| PlayerPoints(count as i32 * each.0);

        let mut total = PlayerPoints::ZERO;
        if self.announced {
            total += rules.announced;
        }
        total += times(self.runs, batting.run);
        total += times(self.fours, batting.boundary_bonus);
        total += times(self.sixes, batting.six_bonus);
        total += highest_reached(&batting.milestones, self.runs);
        if self.dismissed && self.runs == 0 {
            total += batting.duck;
        }
        total += batting.strike_rate.points(self.runs, self.balls_faced);

        total += times(self.wickets, bowling.wicket);
        total += times(self.bonus_wickets, bowling.bonus);
        total += highest_reached(&bowling.hauls, self.wickets);
        total += times(self.maidens, bowling.maiden);
        total += bowling.economy.points(self.runs_conceded, self.legal_balls);

        total += times(self.catches, fielding.catch);
        if self.catches >= fielding.catch_bonus.at {
            total += fielding.catch_bonus.points;
        }
        total += times(self.stumpings, fielding.stumping);
        total += times(self.run_outs_direct, fielding.run_out_direct);
        total += times(self.run_outs_shared, fielding.run_out_shared);
        total
    }
}

/// The deliveries of one (innings, over) so far, to decide maidens.
#[derive(Debug, Clone, Default)]
struct OverState {
    bowler: Option<PlayerIdx>,
    several_bowlers: bool,
    legal: u32,
    conceded: u32,
    maiden_of: Option<PlayerIdx>,
}

#[derive(Debug, Clone)]
struct LoggedDelivery {
    innings: u32,
    over: u32,
    super_over: bool,
    delivery: Delivery,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The `seq` was applied before; nothing changed.
    Duplicate,
    /// Applied; these players' points moved (new values).
    Changed(Vec<(PlayerIdx, PlayerPoints)>),
}

/// Why an event cannot be applied to this match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event of match {got} sent to the scorer of match {expected}")]
    WrongMatch { expected: String, got: String },
    #[error("correction {seq} names event {corrects}, which is not a delivery of this match")]
    UnknownCorrectionTarget { seq: u64, corrects: u64 },
    #[error("event {seq} arrives after the match ended")]
    AfterMatchEnd { seq: u64 },
}

/// Live scoring state of one match.
#[derive(Debug, Clone)]
pub struct MatchScorer {
    rules: Arc<Rules>,
    match_id: Option<MatchId>,
    names: Vec<String>,
    index: HashMap<String, PlayerIdx>,
    stats: Vec<PlayerStats>,
    points: Vec<PlayerPoints>,
    overs: HashMap<(u32, u32), OverState>,
    lineup: BTreeMap<String, Vec<String>>,
    log: BTreeMap<u64, LoggedDelivery>,
    applied: HashSet<u64>,
    ended_at: Option<u64>,
    version: u64,
}

impl MatchScorer {
    pub fn new(rules: Arc<Rules>) -> MatchScorer {
        MatchScorer {
            rules,
            match_id: None,
            names: Vec::new(),
            index: HashMap::new(),
            stats: Vec::new(),
            points: Vec::new(),
            overs: HashMap::new(),
            lineup: BTreeMap::new(),
            log: BTreeMap::new(),
            applied: HashSet::new(),
            ended_at: None,
            version: 0,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn match_id(&self) -> Option<&MatchId> {
        self.match_id.as_ref()
    }

    /// Rises by one with every applied (non-duplicate) event.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    pub fn has_applied(&self, seq: u64) -> bool {
        self.applied.contains(&seq)
    }

    /// The highest `seq` applied so far.
    pub fn last_seq(&self) -> Option<u64> {
        self.applied.iter().copied().max()
    }

    /// Applies one event once: a `seq` seen before is ignored.
    pub fn apply(&mut self, event: &MatchEvent) -> Result<Applied, ApplyError> {
        match &self.match_id {
            Some(expected) if *expected != event.match_id => {
                return Err(ApplyError::WrongMatch {
                    expected: expected.to_string(),
                    got: event.match_id.to_string(),
                })
            }
            _ => {}
        }
        if self.applied.contains(&event.seq) {
            return Ok(Applied::Duplicate);
        }
        if self.ended_at.is_some() && !matches!(event.body, EventBody::Correction { .. }) {
            return Err(ApplyError::AfterMatchEnd { seq: event.seq });
        }
        let changed = match &event.body {
            EventBody::Lineup { teams } => {
                let before = self.points.clone();
                self.lineup = teams.clone();
                self.rebuild();
                self.changed_since(&before)
            }
            EventBody::Delivery {
                innings,
                over,
                super_over,
                delivery,
            } => {
                let logged = LoggedDelivery {
                    innings: *innings,
                    over: *over,
                    super_over: *super_over,
                    delivery: delivery.clone(),
                };
                let touched = self.add_delivery(&logged);
                self.log.insert(event.seq, logged);
                self.refresh(touched)
            }
            EventBody::Correction { corrects, delivery } => {
                let Some(target) = self.log.get_mut(corrects) else {
                    return Err(ApplyError::UnknownCorrectionTarget {
                        seq: event.seq,
                        corrects: *corrects,
                    });
                };
                target.delivery = delivery.clone();
                let before = self.points.clone();
                self.rebuild();
                self.changed_since(&before)
            }
            EventBody::MatchEnd {} => {
                self.ended_at = Some(event.seq);
                Vec::new()
            }
        };
        self.match_id.get_or_insert_with(|| event.match_id.clone());
        self.applied.insert(event.seq);
        self.version += 1;
        Ok(Applied::Changed(changed))
    }

    /// Every player met so far (lineup or deliveries), in order of appearance.
    pub fn players(&self) -> impl Iterator<Item = (PlayerIdx, &str, PlayerPoints)> {
        self.names
            .iter()
            .zip(&self.points)
            .enumerate()
            .map(|(idx, (name, points))| (PlayerIdx(idx as u32), name.as_str(), *points))
    }

    pub fn player_index(&self, name: &str) -> Option<PlayerIdx> {
        self.index.get(name).copied()
    }

    pub fn name(&self, idx: PlayerIdx) -> &str {
        &self.names[idx.0 as usize]
    }

    /// A player's points; zero for a player who has not appeared.
    pub fn points_of(&self, name: &str) -> PlayerPoints {
        self.player_index(name)
            .map_or(PlayerPoints::ZERO, |idx| self.points[idx.0 as usize])
    }

    pub fn stats_of(&self, name: &str) -> Option<&PlayerStats> {
        self.player_index(name)
            .map(|idx| &self.stats[idx.0 as usize])
    }

    /// Points by player name.
    pub fn points_by_name(&self) -> BTreeMap<String, PlayerPoints> {
        self.players()
            .map(|(_, name, points)| (name.to_owned(), points))
            .collect()
    }

    fn player(&mut self, name: &str) -> PlayerIdx {
        if let Some(idx) = self.index.get(name) {
            return *idx;
        }
        let idx = PlayerIdx(self.names.len() as u32);
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), idx);
        self.stats.push(PlayerStats::default());
        self.points.push(PlayerPoints::ZERO);
        idx
    }

    fn stats(&mut self, idx: PlayerIdx) -> &mut PlayerStats {
        &mut self.stats[idx.0 as usize]
    }

    /// Recomputes the cached points of `touched` players and reports those that moved.
    fn refresh(&mut self, mut touched: Vec<PlayerIdx>) -> Vec<(PlayerIdx, PlayerPoints)> {
        touched.sort_unstable();
        touched.dedup();
        let mut changed = Vec::new();
        for idx in touched {
            let now = self.stats[idx.0 as usize].points(&self.rules);
            let cached = &mut self.points[idx.0 as usize];
            if *cached != now {
                *cached = now;
                changed.push((idx, now));
            }
        }
        changed
    }

    fn changed_since(&self, before: &[PlayerPoints]) -> Vec<(PlayerIdx, PlayerPoints)> {
        self.points
            .iter()
            .enumerate()
            .filter(|(idx, now)| before.get(*idx).copied().unwrap_or_default() != **now)
            .map(|(idx, now)| (PlayerIdx(idx as u32), *now))
            .collect()
    }

    /// Re-derives every statistic from the lineup and the (corrected) log.
    fn rebuild(&mut self) {
        self.stats
            .iter_mut()
            .for_each(|stats| *stats = PlayerStats::default());
        self.overs.clear();
        let lineup = std::mem::take(&mut self.lineup);
        for name in lineup.values().flatten() {
            let idx = self.player(name);
            self.stats(idx).announced = true;
        }
        self.lineup = lineup;
        let log = std::mem::take(&mut self.log);
        for logged in log.values() {
            self.add_delivery(logged);
        }
        self.log = log;
        for idx in 0..self.stats.len() {
            self.points[idx] = self.stats[idx].points(&self.rules);
        }
    }

    /// Adds one delivery to the statistics; returns the players it touched.
    fn add_delivery(&mut self, logged: &LoggedDelivery) -> Vec<PlayerIdx> {
        let delivery = &logged.delivery;
        let mut touched: Vec<PlayerIdx> = Vec::with_capacity(6);
        for name in delivery.named_players() {
            touched.push(self.player(name));
        }
        if logged.super_over {
            return touched;
        }
        let rules = Arc::clone(&self.rules);
        let batter = self.player(&delivery.batter);
        let bowler = self.player(&delivery.bowler);

        let batting = self.stats(batter);
        batting.runs += delivery.runs.batter;
        if delivery.wides() == 0 {
            batting.balls_faced += 1;
        }
        if !delivery.is_non_boundary() {
            match delivery.runs.batter {
                4 => batting.fours += 1,
                6 => batting.sixes += 1,
                _ => {}
            }
        }

        let bowling = self.stats(bowler);
        bowling.runs_conceded += delivery.runs_conceded();
        if delivery.is_legal() {
            bowling.legal_balls += 1;
        }
        touched.extend(self.update_over(logged, bowler));

        for wicket in &delivery.wickets {
            let out = self.player(&wicket.player_out);
            let kind = wicket.kind.as_str();
            if !rules.not_out_kinds.iter().any(|not_out| not_out == kind) {
                self.stats(out).dismissed = true;
            }
            if rules.bowling.wicket_kinds.iter().any(|k| k == kind) {
                self.stats(bowler).wickets += 1;
            }
            if rules.bowling.bonus_kinds.iter().any(|k| k == kind) {
                self.stats(bowler).bonus_wickets += 1;
            }
            match kind {
                CAUGHT => {
                    for name in credited(&wicket.fielders) {
                        let fielder = self.player(name);
                        self.stats(fielder).catches += 1;
                    }
                }
                CAUGHT_AND_BOWLED => self.stats(bowler).catches += 1,
                STUMPED => {
                    for name in credited(&wicket.fielders) {
                        let fielder = self.player(name);
                        self.stats(fielder).stumpings += 1;
                    }
                }
                RUN_OUT => match wicket.fielders.len() {
                    0 => {}
                    1 => {
                        for name in credited(&wicket.fielders) {
                            let fielder = self.player(name);
                            self.stats(fielder).run_outs_direct += 1;
                        }
                    }
                    listed => {
                        for name in credited(&wicket.fielders[listed - 2..]) {
                            let fielder = self.player(name);
                            self.stats(fielder).run_outs_shared += 1;
                        }
                    }
                },
                _ => {}
            }
        }
        touched
    }

    /// Tracks the over this delivery belongs to and moves its maiden, if any.
    /// Returns the bowler whose maiden count changed.
    fn update_over(&mut self, logged: &LoggedDelivery, bowler: PlayerIdx) -> Option<PlayerIdx> {
        let balls_per_over = self.rules.bowling.balls_per_over;
        let over = self.overs.entry((logged.innings, logged.over)).or_default();
        match over.bowler {
            None => over.bowler = Some(bowler),
            Some(first) if first != bowler => over.several_bowlers = true,
            Some(_) => {}
        }
        if logged.delivery.is_legal() {
            over.legal += 1;
        }
        over.conceded += logged.delivery.runs_conceded();
        let maiden_of =
            (!over.several_bowlers && over.legal == balls_per_over && over.conceded == 0)
                .then_some(bowler);
        if maiden_of == over.maiden_of {
            return None;
        }
        let previous = std::mem::replace(&mut over.maiden_of, maiden_of);
        if let Some(previous) = previous {
            self.stats(previous).maidens -= 1;
        }
        if let Some(now) = maiden_of {
            self.stats(now).maidens += 1;
        }
        previous.or(maiden_of)
    }
}

/// Scores a whole Cricsheet match (or its first `upto` deliveries) from scratch.
pub fn score_match(
    rules: Arc<Rules>,
    match_id: &MatchId,
    cricsheet: &CricsheetMatch,
    upto: Option<usize>,
) -> MatchScorer {
    let mut scorer = MatchScorer::new(rules);
    for event in cricsheet.events(match_id, upto) {
        scorer
            .apply(&event)
            .expect("a freshly numbered event stream always applies");
    }
    scorer
}
