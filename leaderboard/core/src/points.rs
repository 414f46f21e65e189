//! Exact point values: whole player points and half-point team points, never floats.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde::{Serialize, Serializer};

/// A player's fantasy points. The rules award whole points, so an integer is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayerPoints(pub i32);

impl PlayerPoints {
    pub const ZERO: PlayerPoints = PlayerPoints(0);
}

impl Add for PlayerPoints {
    type Output = PlayerPoints;
    fn add(self, rhs: PlayerPoints) -> PlayerPoints {
        PlayerPoints(self.0 + rhs.0)
    }
}

impl AddAssign for PlayerPoints {
    fn add_assign(&mut self, rhs: PlayerPoints) {
        self.0 += rhs.0;
    }
}

impl Sub for PlayerPoints {
    type Output = PlayerPoints;
    fn sub(self, rhs: PlayerPoints) -> PlayerPoints {
        PlayerPoints(self.0 - rhs.0)
    }
}

impl fmt::Display for PlayerPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for PlayerPoints {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.0)
    }
}

/// A team's points in half-point units: the vice-captain's ×1.5 makes halves,
/// and nothing finer, so `TeamPoints(247)` is exactly 123.5 points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TeamPoints(pub i64);

impl TeamPoints {
    pub const ZERO: TeamPoints = TeamPoints(0);

    /// The value in half-point units.
    pub fn halves(self) -> i64 {
        self.0
    }

    /// Builds team points from a player's points with a multiplier given in halves
    /// (2 = ×1, 3 = ×1.5, 4 = ×2).
    pub fn weighted(points: PlayerPoints, weight_halves: i64) -> TeamPoints {
        TeamPoints(i64::from(points.0) * weight_halves)
    }

    /// Converts a JSON-style decimal (whole or .5) back to team points.
    pub fn from_f64_exact(value: f64) -> Option<TeamPoints> {
        let doubled = value * 2.0;
        (doubled.fract() == 0.0 && doubled.abs() < 9.0e15).then_some(TeamPoints(doubled as i64))
    }

    /// The value as a JSON number; exact, since every half fits an f64 mantissa.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 2.0
    }
}

impl Add for TeamPoints {
    type Output = TeamPoints;
    fn add(self, rhs: TeamPoints) -> TeamPoints {
        TeamPoints(self.0 + rhs.0)
    }
}

impl AddAssign for TeamPoints {
    fn add_assign(&mut self, rhs: TeamPoints) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for TeamPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 2;
        if self.0 % 2 == 0 {
            write!(f, "{whole}")
        } else if self.0 < 0 && whole == 0 {
            write!(f, "-0.5")
        } else {
            write!(f, "{whole}.5")
        }
    }
}

/// Serialized as a JSON number: an integer when whole, `x.5` otherwise.
impl Serialize for TeamPoints {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % 2 == 0 {
            serializer.serialize_i64(self.0 / 2)
        } else {
            serializer.serialize_f64(self.as_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_points_display_and_json_are_exact() {
        assert_eq!(TeamPoints(247).to_string(), "123.5");
        assert_eq!(TeamPoints(-1).to_string(), "-0.5");
        assert_eq!(TeamPoints(-3).to_string(), "-1.5");
        assert_eq!(TeamPoints(246).to_string(), "123");
        assert_eq!(serde_json::to_string(&TeamPoints(247)).unwrap(), "123.5");
        assert_eq!(serde_json::to_string(&TeamPoints(246)).unwrap(), "123");
        assert_eq!(TeamPoints::from_f64_exact(123.5), Some(TeamPoints(247)));
        assert_eq!(TeamPoints::from_f64_exact(0.25), None);
    }

    #[test]
    fn weights_are_in_halves() {
        assert_eq!(TeamPoints::weighted(PlayerPoints(7), 3), TeamPoints(21));
        assert_eq!(TeamPoints::weighted(PlayerPoints(7), 3).to_string(), "10.5");
    }
}
