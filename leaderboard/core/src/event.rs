//! The match event model of the contract: lineup, delivery, correction, match end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::MatchId;

/// The only event schema version this build reads and writes.
pub const EVENT_VERSION: u32 = 1;

/// One Cricsheet delivery object. Fields this engine does not read (`review`,
/// `replacements`, …) are kept in `other`, so the object travels verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub batter: String,
    pub bowler: String,
    pub non_striker: String,
    pub runs: Runs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Extras>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wickets: Vec<Wicket>,
    /// Some producers mark the flag on the delivery rather than on `runs`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_boundary: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runs {
    pub batter: u32,
    #[serde(default)]
    pub extras: u32,
    #[serde(default)]
    pub total: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_boundary: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wides: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noballs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legbyes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wicket {
    pub player_out: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fielders: Vec<Fielder>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fielder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub substitute: bool,
}

impl Delivery {
    pub fn wides(&self) -> u32 {
        self.extras
            .as_ref()
            .and_then(|extras| extras.wides)
            .unwrap_or(0)
    }

    pub fn noballs(&self) -> u32 {
        self.extras
            .as_ref()
            .and_then(|extras| extras.noballs)
            .unwrap_or(0)
    }

    /// Legal: neither a wide nor a no-ball.
    pub fn is_legal(&self) -> bool {
        self.wides() == 0 && self.noballs() == 0
    }

    /// Runs charged to the bowler: off the bat, wides and no-balls.
    pub fn runs_conceded(&self) -> u32 {
        self.runs.batter + self.wides() + self.noballs()
    }

    pub fn is_non_boundary(&self) -> bool {
        self.non_boundary || self.runs.non_boundary
    }

    /// Every player this delivery names, in a fixed order, repeats included.
    pub fn named_players(&self) -> impl Iterator<Item = &str> {
        [
            self.batter.as_str(),
            self.non_striker.as_str(),
            self.bowler.as_str(),
        ]
        .into_iter()
        .chain(self.wickets.iter().flat_map(|wicket| {
            std::iter::once(wicket.player_out.as_str()).chain(
                wicket
                    .fielders
                    .iter()
                    .filter_map(|fielder| fielder.name.as_deref()),
            )
        }))
    }

    /// Checks what serde cannot: names are present and plausible.
    pub fn validate(&self) -> Result<(), String> {
        for name in self.named_players() {
            if name.trim().is_empty() {
                return Err("a player name in the delivery is blank".into());
            }
        }
        for wicket in &self.wickets {
            if wicket.kind.trim().is_empty() {
                return Err(format!(
                    "wicket of `{}` has a blank kind",
                    wicket.player_out
                ));
            }
        }
        Ok(())
    }
}

/// A match event as it travels on `match-events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchEvent {
    pub v: u32,
    pub match_id: MatchId,
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The announced players, per team.
    Lineup {
        teams: BTreeMap<String, Vec<String>>,
    },
    /// One ball, verbatim from Cricsheet, with where it was bowled.
    Delivery {
        /// 1-based innings number.
        innings: u32,
        /// 0-based over number, as Cricsheet counts.
        over: u32,
        #[serde(default)]
        super_over: bool,
        delivery: Delivery,
    },
    /// Replaces the delivery of event `corrects`.
    Correction {
        corrects: u64,
        delivery: Delivery,
    },
    MatchEnd {},
}

/// Why an event was refused; the text goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a match event: {0}")]
    Malformed(String),
    #[error("unsupported event version {0} (this build reads version 1)")]
    Version(u32),
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl MatchEvent {
    /// Parses and validates one event from its JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<MatchEvent, EventError> {
        let event: MatchEvent = serde_json::from_slice(bytes)
            .map_err(|error| EventError::Malformed(error.to_string()))?;
        if event.v != EVENT_VERSION {
            return Err(EventError::Version(event.v));
        }
        event.validate()?;
        Ok(event)
    }

    pub fn validate(&self) -> Result<(), EventError> {
        match &self.body {
            EventBody::Lineup { teams } => {
                if teams.is_empty() {
                    return Err(EventError::Invalid("lineup names no team".into()));
                }
                for (team, players) in teams {
                    if players.iter().any(|name| name.trim().is_empty()) {
                        return Err(EventError::Invalid(format!(
                            "lineup of `{team}` has a blank player name"
                        )));
                    }
                }
                Ok(())
            }
            EventBody::Delivery {
                innings, delivery, ..
            } => {
                if *innings == 0 {
                    return Err(EventError::Invalid("innings numbers start at 1".into()));
                }
                delivery.validate().map_err(EventError::Invalid)
            }
            EventBody::Correction { corrects, delivery } => {
                if *corrects >= self.seq {
                    return Err(EventError::Invalid(format!(
                        "correction {} must follow the event it corrects ({corrects})",
                        self.seq
                    )));
                }
                delivery.validate().map_err(EventError::Invalid)
            }
            EventBody::MatchEnd {} => Ok(()),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a match event always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_examples_parse() {
        let lineup = br#"{"v":1,"type":"lineup","match_id":"1136561","seq":0,
            "teams":{"Mumbai Indians":["RG Sharma"],"Chennai Super Kings":["MS Dhoni"]}}"#;
        let event = MatchEvent::from_json(lineup).unwrap();
        assert!(matches!(event.body, EventBody::Lineup { .. }));

        let delivery = br#"{"v":1,"type":"delivery","match_id":"1136561","seq":17,"innings":1,
            "over":2,"super_over":false,"delivery":{"batter":"A","bowler":"B","non_striker":"C",
            "runs":{"batter":4,"extras":0,"total":4},"review":{"by":"X"}}}"#;
        let event = MatchEvent::from_json(delivery).unwrap();
        let EventBody::Delivery { delivery, .. } = &event.body else {
            panic!("expected a delivery");
        };
        assert!(
            delivery.other.contains_key("review"),
            "unknown fields travel verbatim"
        );
        let round_trip = MatchEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(round_trip, event);

        let end = br#"{"v":1,"type":"match_end","match_id":"1136561","seq":260}"#;
        assert!(matches!(
            MatchEvent::from_json(end).unwrap().body,
            EventBody::MatchEnd {}
        ));
    }

    #[test]
    fn bad_events_explain_themselves() {
        let error = MatchEvent::from_json(b"{not json").unwrap_err();
        assert!(matches!(error, EventError::Malformed(_)));
        let error = MatchEvent::from_json(br#"{"v":2,"type":"match_end","match_id":"1","seq":3}"#)
            .unwrap_err();
        assert_eq!(error, EventError::Version(2));
        let error = MatchEvent::from_json(
            br#"{"v":1,"type":"correction","match_id":"1","seq":3,"corrects":5,
            "delivery":{"batter":"A","bowler":"B","non_striker":"C","runs":{"batter":0}}}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("must follow"), "{error}");
        let error =
            MatchEvent::from_json(br#"{"v":1,"type":"toss","match_id":"1","seq":3}"#).unwrap_err();
        assert!(error.to_string().contains("toss"), "{error}");
    }
}
