//! What every adapter needs to turn stored bytes back into the domain's
//! values, validated like input: a bad record or id is `Corrupt`, naming what.

use leaderboard_core::ids::IdError;
use leaderboard_core::store::StoreError;

/// A JSON record that does not parse, as `Corrupt` naming `what`.
pub(crate) fn corrupt(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |error| StoreError::Corrupt {
        what,
        message: error.to_string(),
    }
}

/// A stored id, parsed; a bad one is `Corrupt` naming `what`.
pub(crate) fn id<T>(
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
    text: &str,
) -> Result<T, StoreError> {
    parse(text).map_err(|error| StoreError::Corrupt {
        what: what.to_owned(),
        message: error.to_string(),
    })
}

/// Milliseconds since the Unix epoch, as the stores record times.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
