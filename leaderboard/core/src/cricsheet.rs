//! Cricsheet JSON matches (format 1.0.0 and 1.1.0) and their event streams.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::event::{Delivery, EventBody, MatchEvent, EVENT_VERSION};
use super::ids::MatchId;

/// Why a text is not a Cricsheet match.
#[derive(Debug, thiserror::Error)]
#[error("not a Cricsheet match: {0}")]
pub struct CricsheetError(String);

#[derive(Debug, Clone, Deserialize)]
pub struct CricsheetMatch {
    pub info: Info,
    pub innings: Vec<Innings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    /// Announced players per team (impact players included).
    pub players: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Innings {
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub overs: Vec<Over>,
    #[serde(default)]
    pub super_over: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Over {
    pub over: u32,
    pub deliveries: Vec<Delivery>,
}

/// One delivery with where it was bowled.
#[derive(Debug, Clone, Copy)]
pub struct PlacedDelivery<'a> {
    /// 1-based.
    pub innings: u32,
    pub over: u32,
    pub super_over: bool,
    pub delivery: &'a Delivery,
}

impl CricsheetMatch {
    /// Parses a Cricsheet match from JSON text.
    pub fn from_json(text: &str) -> Result<CricsheetMatch, CricsheetError> {
        let parsed: CricsheetMatch =
            serde_json::from_str(text).map_err(|error| CricsheetError(error.to_string()))?;
        if parsed.info.players.is_empty() {
            return Err(CricsheetError("info.players names no team".into()));
        }
        for placed in parsed.deliveries() {
            placed.delivery.validate().map_err(|message| {
                CricsheetError(format!(
                    "innings {} over {}: {message}",
                    placed.innings, placed.over
                ))
            })?;
        }
        Ok(parsed)
    }

    /// Every delivery in file order, super overs included.
    pub fn deliveries(&self) -> impl Iterator<Item = PlacedDelivery<'_>> {
        self.innings
            .iter()
            .enumerate()
            .flat_map(|(index, innings)| {
                innings.overs.iter().flat_map(move |over| {
                    over.deliveries.iter().map(move |delivery| PlacedDelivery {
                        innings: index as u32 + 1,
                        over: over.over,
                        super_over: innings.super_over,
                        delivery,
                    })
                })
            })
    }

    /// The first `upto` deliveries in file order, super overs excluded; all of
    /// them (super overs included) when `upto` is `None`.
    pub fn deliveries_upto(&self, upto: Option<usize>) -> Vec<PlacedDelivery<'_>> {
        match upto {
            None => self.deliveries().collect(),
            Some(limit) => self
                .deliveries()
                .filter(|placed| !placed.super_over)
                .take(limit)
                .collect(),
        }
    }

    /// The match as the event stream `ingest replay` publishes: a lineup
    /// (seq 0), one event per delivery, and the match end.
    pub fn events(&self, match_id: &MatchId, upto: Option<usize>) -> Vec<MatchEvent> {
        let mut events = Vec::new();
        let mut push = |body: EventBody| {
            let seq = events.len() as u64;
            events.push(MatchEvent {
                v: EVENT_VERSION,
                match_id: match_id.clone(),
                seq,
                body,
            });
        };
        push(EventBody::Lineup {
            teams: self.info.players.clone(),
        });
        for placed in self.deliveries_upto(upto) {
            push(EventBody::Delivery {
                innings: placed.innings,
                over: placed.over,
                super_over: placed.super_over,
                delivery: placed.delivery.clone(),
            });
        }
        if upto.is_none() {
            push(EventBody::MatchEnd {});
        }
        events
    }
}

/// A match id from a Cricsheet file name: the file's stem (`1136561.json`).
pub fn match_id_from_path(path: &std::path::Path) -> Result<MatchId, CricsheetError> {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| CricsheetError(format!("{} has no file name", path.display())))?;
    MatchId::parse(stem).map_err(|error| CricsheetError(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_match() {
        let error = CricsheetMatch::from_json(r#"{"hello":"world"}"#).unwrap_err();
        assert!(error.to_string().starts_with("not a Cricsheet match"));
        assert!(CricsheetMatch::from_json("[1,2]").is_err());
        assert!(CricsheetMatch::from_json(r#"{"info":{"players":{}},"innings":[]}"#).is_err());
    }
}
