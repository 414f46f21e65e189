//! The wire: client requests parsed from text frames, and the server's frames.
//!
//! Requests are parsed, not validated afterwards: a [`Request`] holds checked
//! ids and a bounded `top`, so the session never sees a bad value. Every
//! failure carries a stable `code` for the error frame.

use bytes::{BufMut, Bytes, BytesMut};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::{ContestId, EntryId};
use serde::{Deserialize, Serialize};

/// Largest `top` a client may ask for.
pub const MAX_TOP: usize = 100;
/// `top` when a subscribe leaves it out.
pub const DEFAULT_TOP: usize = 10;

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe(Subscribe),
    Unsubscribe { contest_id: ContestId },
    Ping,
}

/// `{"op":"subscribe",…}`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub contest_id: ContestId,
    pub top: usize,
    pub entry_id: Option<EntryId>,
    pub token: Option<String>,
    pub since_version: Option<u64>,
}

/// Why a frame was refused; `code` is stable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    op: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSubscribe {
    contest_id: String,
    #[serde(default)]
    top: Option<u64>,
    #[serde(default)]
    entry_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    since_version: Option<u64>,
}

#[derive(Deserialize)]
struct RawUnsubscribe {
    contest_id: String,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, ProtocolError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| ProtocolError::new("bad_json", format!("not JSON: {error}")))?;
    if !value.is_object() {
        return Err(ProtocolError::new(
            "bad_request",
            "a request is one JSON object",
        ));
    }
    let envelope: Envelope = serde_json::from_value(value.clone())
        .map_err(|error| ProtocolError::new("bad_request", error.to_string()))?;
    let op = match envelope.op {
        Some(serde_json::Value::String(op)) => op,
        Some(_) => return Err(ProtocolError::new("bad_request", "`op` must be a string")),
        None => return Err(ProtocolError::new("bad_request", "`op` is missing")),
    };
    let fields = |error: serde_json::Error| ProtocolError::new("bad_request", error.to_string());
    match op.as_str() {
        "ping" => Ok(Request::Ping),
        "unsubscribe" => {
            let raw: RawUnsubscribe = serde_json::from_value(value).map_err(fields)?;
            Ok(Request::Unsubscribe {
                contest_id: contest_id(&raw.contest_id)?,
            })
        }
        "subscribe" => {
            let raw: RawSubscribe = serde_json::from_value(value).map_err(fields)?;
            let top = match raw.top {
                None => DEFAULT_TOP,
                Some(top) if top as usize <= MAX_TOP => top as usize,
                Some(top) => {
                    return Err(ProtocolError::new(
                        "bad_request",
                        format!("top must be between 0 and {MAX_TOP}, not {top}"),
                    ))
                }
            };
            let entry_id = raw
                .entry_id
                .map(|entry| {
                    EntryId::parse(&entry)
                        .map_err(|error| ProtocolError::new("bad_request", error.to_string()))
                })
                .transpose()?;
            Ok(Request::Subscribe(Subscribe {
                contest_id: contest_id(&raw.contest_id)?,
                top,
                entry_id,
                token: raw.token,
                since_version: raw.since_version,
            }))
        }
        other => Err(ProtocolError::new(
            "unknown_op",
            format!("unknown op `{other}`: expected subscribe, unsubscribe or ping"),
        )),
    }
}

fn contest_id(text: &str) -> Result<ContestId, ProtocolError> {
    ContestId::parse(text).map_err(|error| ProtocolError::new("bad_request", error.to_string()))
}

/// One row of a frame's `top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    pub rank: u64,
    pub entry_id: String,
    pub user_id: String,
    pub points: TeamPoints,
}

/// A client's own entry in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Me<'a> {
    pub entry_id: &'a str,
    pub rank: u64,
    pub points: TeamPoints,
}

#[derive(Serialize)]
struct Body<'a> {
    contest_id: &'a str,
    version: u64,
    /// The version the `top` rows were ranked at (behind `version` for a
    /// moment in contests too large for one write).
    ranks_version: u64,
    total: u64,
    top: &'a [TopRow],
}

/// A contest's state serialized once, shared by every client asking for the
/// same `top`: the JSON fields after `"type"`, up to (not including) `me`.
#[derive(Debug, Clone)]
pub struct StateBody {
    /// `"contest_id":…,"version":…,"total":…,"top":[…]` without braces.
    fields: Bytes,
    /// The `update` frame with `"me":null` as it goes on the wire: the
    /// WebSocket header, then the JSON (which `update` shares).
    update_wire: Bytes,
    /// The whole `update` frame with `"me":null`.
    pub update: tokio_tungstenite::tungstenite::Utf8Bytes,
    /// The whole `snapshot` frame with `"me":null`.
    pub snapshot: tokio_tungstenite::tungstenite::Utf8Bytes,
}

/// Which of the two state frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Update,
}

impl Kind {
    fn prefix(self) -> &'static [u8] {
        match self {
            Kind::Snapshot => br#"{"type":"snapshot","#,
            Kind::Update => br#"{"type":"update","#,
        }
    }
}

impl StateBody {
    pub fn render(
        contest_id: &str,
        version: u64,
        ranks_version: u64,
        total: u64,
        top: &[TopRow],
    ) -> StateBody {
        let json = serde_json::to_vec(&Body {
            contest_id,
            version,
            ranks_version,
            total,
            top,
        })
        .expect("state frames serialize");
        // `{…}` → `…`: the fields, to be framed with a type and a `me`.
        let fields = Bytes::copy_from_slice(&json[1..json.len() - 1]);
        StateBody::from_fields(fields)
    }

    fn from_fields(fields: Bytes) -> StateBody {
        let frame = |kind: Kind| {
            let parts: [&[u8]; 3] = [kind.prefix(), &fields, br#","me":null}"#];
            text_frame(&parts)
        };
        let (update_wire, header) = frame(Kind::Update);
        let (snapshot, snapshot_header) = frame(Kind::Snapshot);
        StateBody {
            update: utf8(update_wire.slice(header..)),
            snapshot: utf8(snapshot.slice(snapshot_header..)),
            update_wire,
            fields,
        }
    }

    /// A copy with bytes of its own (not shared): for an event loop whose
    /// clients then clone and drop only its reference counts.
    pub fn copy(&self) -> StateBody {
        StateBody::from_fields(Bytes::copy_from_slice(&self.fields))
    }

    /// The shared `update` frame as it goes on the wire (header included).
    pub fn update_wire(&self) -> Bytes {
        self.update_wire.clone()
    }

    /// The shared frame of `kind`, without serializing anything.
    pub fn shared(&self, kind: Kind) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        match kind {
            Kind::Snapshot => self.snapshot.clone(),
            Kind::Update => self.update.clone(),
        }
    }

    /// The frame of one client following an entry: the shared fields copied
    /// once, then its own small `me`.
    pub fn with_me(&self, kind: Kind, me: &Me<'_>) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        let (wire, header) = self.with_me_wire(kind, me);
        utf8(wire.slice(header..))
    }

    /// [`StateBody::with_me`] as it goes on the wire, and the header's length.
    pub fn with_me_wire(&self, kind: Kind, me: &Me<'_>) -> (Bytes, usize) {
        let me = serde_json::to_vec(me).expect("me serializes");
        text_frame(&[kind.prefix(), &self.fields, br#","me":"#, &me, b"}"])
    }
}

/// An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2, as a
/// server sends it) holding `parts` one after the other, and the length of
/// its header.
pub fn text_frame(parts: &[&[u8]]) -> (Bytes, usize) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x81); // FIN, text
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    let header = out.len();
    for part in parts {
        out.put_slice(part);
    }
    (out.freeze(), header)
}

fn utf8(bytes: Bytes) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes)
        .expect("frames are built from UTF-8 JSON")
}

/// `{"type":"pong"}`.
pub fn pong() -> tokio_tungstenite::tungstenite::Utf8Bytes {
    tokio_tungstenite::tungstenite::Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

/// `{"type":"error","code":…,"message":…}`, with the contest when it concerns one.
pub fn error(
    code: &str,
    message: &str,
    contest_id: Option<&str>,
) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    #[derive(Serialize)]
    struct ErrorFrame<'a> {
        r#type: &'static str,
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        contest_id: Option<&'a str>,
    }
    serde_json::to_string(&ErrorFrame {
        r#type: "error",
        code,
        message,
        contest_id,
    })
    .expect("error frames serialize")
    .into()
}

#[derive(Serialize)]
struct Ack<'a> {
    r#type: &'static str,
    contest_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
}

/// `{"type":"subscribed",…}`: a resumed subscription whose client is up to date.
pub fn subscribed(contest_id: &str, version: u64) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    serde_json::to_string(&Ack {
        r#type: "subscribed",
        contest_id,
        version: Some(version),
        resumed: Some(true),
    })
    .expect("acks serialize")
    .into()
}

/// `{"type":"unsubscribed","contest_id":…}`.
pub fn unsubscribed(contest_id: &str) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    serde_json::to_string(&Ack {
        r#type: "unsubscribed",
        contest_id,
        version: None,
        resumed: None,
    })
    .expect("acks serialize")
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a client's tungstenite reads from `wire`.
    fn read_as_client(wire: &[u8]) -> String {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        let mut socket =
            WebSocket::from_raw_socket(std::io::Cursor::new(wire.to_vec()), Role::Client, None);
        match socket.read().expect("a whole frame") {
            tokio_tungstenite::tungstenite::Message::Text(text) => text.as_str().to_owned(),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    #[test]
    fn text_frames_are_read_by_a_websocket_client_at_every_length_encoding() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "x".repeat(len);
            let (wire, header) = text_frame(&[text.as_bytes()]);
            assert_eq!(&wire[header..], text.as_bytes());
            assert_eq!(read_as_client(&wire), text, "length {len}");
        }
    }

    #[test]
    fn state_frames_on_the_wire_carry_the_frame_the_session_would_send() {
        let top = [TopRow {
            rank: 1,
            entry_id: "e1".into(),
            user_id: "u1".into(),
            points: TeamPoints(42),
        }];
        let body = StateBody::render("c1", 7, 7, 1, &top);
        assert_eq!(read_as_client(&body.update_wire()), body.update.as_str());
        let copy = body.copy();
        assert_eq!(read_as_client(&copy.update_wire()), body.update.as_str());
        assert_eq!(copy.snapshot.as_str(), body.snapshot.as_str());
        let me = Me {
            entry_id: "e9",
            rank: 3,
            points: TeamPoints(10),
        };
        let (wire, _) = body.with_me_wire(Kind::Update, &me);
        assert_eq!(
            read_as_client(&wire),
            body.with_me(Kind::Update, &me).as_str()
        );
    }

    #[test]
    fn subscribe_is_parsed_with_defaults_and_bounds() {
        let request = parse(r#"{"op":"subscribe","contest_id":"c1"}"#).unwrap();
        assert_eq!(
            request,
            Request::Subscribe(Subscribe {
                contest_id: ContestId::parse("c1").unwrap(),
                top: DEFAULT_TOP,
                entry_id: None,
                token: None,
                since_version: None,
            })
        );
        let full = parse(
            r#"{"op":"subscribe","contest_id":"c1","top":0,"entry_id":"e42","token":"ab","since_version":17}"#,
        )
        .unwrap();
        let Request::Subscribe(full) = full else {
            panic!("not a subscribe")
        };
        assert_eq!(full.top, 0);
        assert_eq!(full.entry_id.unwrap().as_str(), "e42");
        assert_eq!(full.since_version, Some(17));
        assert_eq!(parse(r#"{"op":"ping"}"#).unwrap(), Request::Ping);
        assert!(matches!(
            parse(r#"{"op":"unsubscribe","contest_id":"c1"}"#).unwrap(),
            Request::Unsubscribe { .. }
        ));
    }

    #[test]
    fn bad_frames_get_stable_codes() {
        let code = |text: &str| parse(text).unwrap_err().code;
        assert_eq!(code("{nope"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"contest_id":"c1"}"#), "bad_request");
        assert_eq!(code(r#"{"op":7}"#), "bad_request");
        assert_eq!(code(r#"{"op":"dance"}"#), "unknown_op");
        assert_eq!(code(r#"{"op":"subscribe"}"#), "bad_request");
        assert_eq!(
            code(r#"{"op":"subscribe","contest_id":"c1","top":101}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","contest_id":"c 1"}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","contest_id":"c1","entry_id":""}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","contest_id":"c1","top":-1}"#),
            "bad_request"
        );
    }

    #[test]
    fn state_frames_are_the_contract_shape() {
        let top = vec![TopRow {
            rank: 1,
            entry_id: "e1".into(),
            user_id: "u1".into(),
            points: TeamPoints(247),
        }];
        let body = StateBody::render("c1", 9, 9, 3, &top);
        let update: serde_json::Value = serde_json::from_str(body.update.as_str()).unwrap();
        assert_eq!(
            update,
            serde_json::json!({"type":"update","contest_id":"c1","version":9,"ranks_version":9,"total":3,
                "top":[{"rank":1,"entry_id":"e1","user_id":"u1","points":123.5}],"me":null})
        );
        let snapshot: serde_json::Value = serde_json::from_str(body.snapshot.as_str()).unwrap();
        assert_eq!(snapshot["type"], "snapshot");
        let mine = body.with_me(
            Kind::Update,
            &Me {
                entry_id: "e7",
                rank: 2,
                points: TeamPoints(10),
            },
        );
        let mine: serde_json::Value = serde_json::from_str(mine.as_str()).unwrap();
        assert_eq!(
            mine["me"],
            serde_json::json!({"entry_id":"e7","rank":2,"points":5})
        );
        assert_eq!(mine["top"], update["top"]);
    }

    proptest! {
        /// Whatever arrives, parsing answers (never panics), and every
        /// refusal has one of the documented codes.
        #[test]
        fn any_text_is_parsed_or_refused(text in ".{0,200}") {
            if let Err(error) = parse(&text) {
                prop_assert!(["bad_json", "bad_request", "unknown_op"].contains(&error.code));
            }
        }

        /// Structured but hostile requests: random ops, ids and numbers.
        #[test]
        fn hostile_requests_are_parsed_or_refused(
            op in prop_oneof![Just("subscribe".to_owned()), Just("unsubscribe".to_owned()), Just("ping".to_owned()), "[a-z]{0,12}"],
            contest in ".{0,80}",
            entry in proptest::option::of(".{0,80}"),
            top in proptest::option::of(any::<i64>()),
            since in proptest::option::of(any::<i64>()),
        ) {
            let mut request = serde_json::json!({"op": op, "contest_id": contest});
            if let Some(entry) = entry { request["entry_id"] = entry.into(); }
            if let Some(top) = top { request["top"] = top.into(); }
            if let Some(since) = since { request["since_version"] = since.into(); }
            match parse(&request.to_string()) {
                Ok(Request::Subscribe(subscribe)) => {
                    prop_assert!(subscribe.top <= MAX_TOP);
                    prop_assert_eq!(subscribe.contest_id.as_str(), contest.as_str());
                }
                Ok(_) => {}
                Err(error) => prop_assert!(["bad_json", "bad_request", "unknown_op"].contains(&error.code)),
            }
        }
    }
}
