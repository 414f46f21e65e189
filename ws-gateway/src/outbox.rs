//! A connection's bounded outbox.
//!
//! The hub leaves the newest state of each contest in the client's outbox,
//! and the session writes when the socket takes it, except for a client that
//! is caught up, whose state the fan-out writes straight into its socket (see
//! below). A contest holds at most one pending frame (a newer state replaces
//! an unsent one, which then goes out as a `snapshot`: the client fell behind),
//! and the control queue (pongs, errors, acknowledgements) is bounded, so a
//! slow client costs a fixed amount of memory and never delays anyone else.
//!
//! A fan-out's state for a client that is caught up (nothing waiting, no
//! write under way) skips the queue: [`Outbox::deliver`] writes it straight
//! into the connection's [`Wire`] and records it as sent, so the session is
//! not woken at all. Anything else takes the queue as before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use leaderboard_core::points::TeamPoints;
use leaderboard_core::ContestId;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::metrics;
use crate::protocol::{Kind, Me, StateBody};
use crate::wire::{Sent, Wire};

/// A client's own entry, as of one state.
#[derive(Debug, Clone, PartialEq)]
pub struct MyEntry {
    pub entry_id: Arc<str>,
    pub rank: u64,
    pub points: TeamPoints,
}

/// Orders a contest's states: (version, ranks_version).
pub type Stamp = (u64, u64);

/// The newest state of one contest not yet written to the client.
#[derive(Debug, Clone)]
pub struct Pending {
    pub version: Stamp,
    pub kind: Kind,
    pub body: Arc<StateBody>,
    pub me: Option<MyEntry>,
}

impl Pending {
    /// The frame to write: the shared bytes, or the shared fields plus `me`.
    pub fn frame(&self) -> Utf8Bytes {
        match &self.me {
            None => self.body.shared(self.kind),
            Some(me) => self.body.with_me(
                self.kind,
                &Me {
                    entry_id: &me.entry_id,
                    rank: me.rank,
                    points: me.points,
                },
            ),
        }
    }

    /// [`Pending::frame`] as it goes on the wire (WebSocket header included).
    fn wire_frame(&self) -> bytes::Bytes {
        match (&self.me, self.kind) {
            (None, Kind::Update) => self.body.update_wire(),
            (None, Kind::Snapshot) => crate::protocol::text_frame(&[self.frame().as_bytes()]).0,
            (Some(me), kind) => {
                self.body
                    .with_me_wire(
                        kind,
                        &Me {
                            entry_id: &me.entry_id,
                            rank: me.rank,
                            points: me.points,
                        },
                    )
                    .0
            }
        }
    }
}

/// What became of a state handed to [`Outbox::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written straight into the socket.
    Written,
    /// Left in the outbox for the session (the session was woken).
    Queued,
    /// The client already has it or something newer.
    Dropped,
}

#[derive(Debug)]
struct Slot {
    contest_id: ContestId,
    /// Stamp of the last state written for this contest.
    sent: Option<Stamp>,
    pending: Option<Pending>,
}

#[derive(Debug, Default)]
struct State {
    control: VecDeque<Utf8Bytes>,
    slots: Vec<Slot>,
    /// Next slot to look at, so that no contest starves the others.
    cursor: usize,
    overflowed: bool,
    /// The session popped a frame and has not come back for the next: its
    /// write may be under way.
    writing: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    control_limit: usize,
    /// The connection's socket, when states may be written straight in.
    wire: Option<Arc<Wire>>,
}

impl Outbox {
    pub fn new(control_limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            control_limit,
            wire: None,
        }
    }

    /// An outbox whose caught-up states go straight into `wire`.
    pub fn with_wire(control_limit: usize, wire: Arc<Wire>) -> Outbox {
        Outbox {
            wire: Some(wire),
            ..Outbox::new(control_limit)
        }
    }

    /// A fan-out's new state: written straight into the socket when the
    /// client is caught up on this contest, nothing else waits and no write
    /// is under way; otherwise left in the outbox as [`Outbox::push_state`] does.
    pub fn deliver(&self, contest_id: &ContestId, pending: Pending) -> Delivery {
        if let Some(wire) = &self.wire {
            let mut state = self.state.lock().expect("outbox lock");
            if state.control.is_empty() && !state.writing && !state.overflowed {
                let slot = state.slots.iter_mut().find(|s| &s.contest_id == contest_id);
                if let Some(slot) = slot {
                    let caught_up = slot.pending.is_none()
                        && slot.sent.is_some_and(|sent| sent < pending.version);
                    if caught_up {
                        match wire.try_send(&pending.wire_frame()) {
                            Sent::Whole => {
                                slot.sent = Some(pending.version);
                                return Delivery::Written;
                            }
                            Sent::Part => {
                                slot.sent = Some(pending.version);
                                drop(state);
                                // The session finishes the frame.
                                self.ready.notify_one();
                                return Delivery::Written;
                            }
                            Sent::No => {}
                        }
                    }
                }
            }
        }
        match self.push_state(contest_id, pending) {
            Some(_) => Delivery::Queued,
            None => Delivery::Dropped,
        }
    }

    /// Queues a control frame; past the limit the outbox is marked overflowed
    /// and the session closes the connection.
    pub fn push_control(&self, frame: Utf8Bytes) {
        let mut state = self.state.lock().expect("outbox lock");
        if state.control.len() >= self.control_limit {
            state.overflowed = true;
        } else {
            state.control.push_back(frame);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Makes room for a contest's states (a subscription begins). Until then,
    /// and once [`Outbox::remove`]d, its states are dropped: a fan-out that
    /// gathered its members before the client unsubscribed sends it nothing
    /// after the acknowledgement.
    pub fn open(&self, contest_id: &ContestId) {
        let mut state = self.state.lock().expect("outbox lock");
        if !state.slots.iter().any(|s| &s.contest_id == contest_id) {
            state.slots.push(Slot {
                contest_id: contest_id.clone(),
                sent: None,
                pending: None,
            });
        }
    }

    /// Leaves `pending` as the contest's next frame unless the client already
    /// has it or something newer, or the contest is not [`Outbox::open`].
    /// The first state of a contest goes out as a `snapshot`. Returns whether
    /// an unsent state was replaced, or `None` when `pending` was dropped.
    pub fn push_state(&self, contest_id: &ContestId, mut pending: Pending) -> Option<bool> {
        let mut state = self.state.lock().expect("outbox lock");
        let slot = state
            .slots
            .iter_mut()
            .find(|s| &s.contest_id == contest_id)?;
        match slot.sent {
            Some(sent) => {
                if pending.version < sent
                    || (pending.version == sent && pending.kind == Kind::Update)
                {
                    return None;
                }
            }
            // The client has nothing of this contest yet.
            None => pending.kind = Kind::Snapshot,
        }
        let mut conflated = false;
        if let Some(old) = &slot.pending {
            if old.version > pending.version {
                return None;
            }
            // The client never saw `old`: what it gets instead is a snapshot.
            if old.kind == Kind::Snapshot || old.version < pending.version {
                pending.kind = Kind::Snapshot;
            }
            conflated = old.version < pending.version;
        }
        slot.pending = Some(pending);
        drop(state);
        if conflated {
            metrics::CONFLATED.inc();
        }
        self.ready.notify_one();
        Some(conflated)
    }

    /// Records that the client holds `version` of an open contest without a
    /// frame (a resumed subscription that was already up to date).
    pub fn mark_sent(&self, contest_id: &ContestId, version: Stamp) {
        let mut state = self.state.lock().expect("outbox lock");
        if let Some(slot) = state.slots.iter_mut().find(|s| &s.contest_id == contest_id) {
            slot.sent = Some(version);
        }
    }

    /// Forgets a contest (unsubscribed).
    pub fn remove(&self, contest_id: &ContestId) {
        let mut state = self.state.lock().expect("outbox lock");
        state.slots.retain(|s| &s.contest_id != contest_id);
    }

    /// The next frame to write: control frames first, then states in turn.
    /// Until it returns `None`, the session counts as writing (see
    /// [`Outbox::deliver`]): it comes back for the next frame only once the
    /// last one is written.
    pub fn pop(&self) -> Option<Utf8Bytes> {
        let mut state = self.state.lock().expect("outbox lock");
        state.writing = true;
        if let Some(frame) = state.control.pop_front() {
            return Some(frame);
        }
        let count = state.slots.len();
        for step in 0..count {
            let index = (state.cursor + step) % count;
            let slot = &mut state.slots[index];
            if let Some(pending) = slot.pending.take() {
                slot.sent = Some(pending.version);
                state.cursor = (index + 1) % count;
                drop(state);
                return Some(pending.frame());
            }
        }
        state.writing = false;
        None
    }

    /// The stamp last written for a contest.
    pub fn sent_version(&self, contest_id: &ContestId) -> Option<Stamp> {
        let state = self.state.lock().expect("outbox lock");
        state
            .slots
            .iter()
            .find(|s| &s.contest_id == contest_id)
            .and_then(|s| s.sent)
    }

    pub fn overflowed(&self) -> bool {
        self.state.lock().expect("outbox lock").overflowed
    }

    /// Resolves when something was queued since the last one resolved.
    pub fn ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopRow;

    fn state(version: u64, kind: Kind) -> Pending {
        let top = [TopRow {
            rank: 1,
            entry_id: "e1".into(),
            user_id: "u1".into(),
            points: TeamPoints(version as i64),
        }];
        Pending {
            version: (version, version),
            kind,
            body: Arc::new(StateBody::render("c1", version, version, 1, &top)),
            me: None,
        }
    }

    fn parsed(frame: Utf8Bytes) -> serde_json::Value {
        serde_json::from_str(frame.as_str()).unwrap()
    }

    #[test]
    fn a_slow_client_gets_the_latest_state_as_a_snapshot() {
        let outbox = Outbox::new(4);
        let contest = ContestId::parse("c1").unwrap();
        outbox.open(&contest);
        assert_eq!(
            outbox.push_state(&contest, state(1, Kind::Update)),
            Some(false)
        );
        for version in 2..1000 {
            outbox.push_state(&contest, state(version, Kind::Update));
        }
        let frame = parsed(outbox.pop().unwrap());
        assert_eq!(frame["type"], "snapshot");
        assert_eq!(frame["version"], 999);
        assert!(
            outbox.pop().is_none(),
            "one frame per contest, never a backlog"
        );
    }

    #[test]
    fn older_or_already_sent_states_are_dropped() {
        let outbox = Outbox::new(4);
        let contest = ContestId::parse("c1").unwrap();
        outbox.open(&contest);
        outbox.push_state(&contest, state(5, Kind::Snapshot));
        outbox.push_state(&contest, state(4, Kind::Update));
        let frame = parsed(outbox.pop().unwrap());
        assert_eq!(
            (frame["type"].as_str(), frame["version"].as_u64()),
            (Some("snapshot"), Some(5))
        );
        outbox.push_state(&contest, state(5, Kind::Update));
        outbox.push_state(&contest, state(3, Kind::Update));
        assert!(outbox.pop().is_none());
        outbox.push_state(&contest, state(6, Kind::Update));
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "update");
        outbox.mark_sent(&contest, (9, 9));
        outbox.push_state(&contest, state(9, Kind::Update));
        assert!(outbox.pop().is_none());
    }

    #[test]
    fn a_contest_the_client_left_gets_no_more_states() {
        // A fan-out that gathered its members before the client unsubscribed
        // may still hand over a state after the acknowledgement.
        let outbox = Outbox::new(4);
        let contest = ContestId::parse("c1").unwrap();
        outbox.open(&contest);
        outbox.push_state(&contest, state(1, Kind::Snapshot));
        outbox.pop().unwrap();
        outbox.remove(&contest);
        outbox.push_control(crate::protocol::unsubscribed("c1"));
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "unsubscribed");
        assert_eq!(outbox.push_state(&contest, state(2, Kind::Update)), None);
        assert_eq!(
            outbox.deliver(&contest, state(3, Kind::Update)),
            Delivery::Dropped
        );
        assert!(outbox.pop().is_none(), "nothing after the unsubscribe ack");
        // Nor before a subscription opens it.
        let other = ContestId::parse("c2").unwrap();
        assert_eq!(outbox.push_state(&other, state(1, Kind::Update)), None);
        outbox.open(&other);
        assert_eq!(
            outbox.push_state(&other, state(1, Kind::Update)),
            Some(false)
        );
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "snapshot");
    }

    #[test]
    fn control_frames_are_bounded_and_go_first() {
        let outbox = Outbox::new(2);
        let contest = ContestId::parse("c1").unwrap();
        outbox.open(&contest);
        outbox.push_state(&contest, state(1, Kind::Update));
        outbox.push_control(crate::protocol::pong());
        outbox.push_control(crate::protocol::pong());
        assert!(!outbox.overflowed());
        outbox.push_control(crate::protocol::pong());
        assert!(outbox.overflowed());
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "pong");
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "pong");
        // A contest's first state is its snapshot.
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "snapshot");
    }

    #[tokio::test]
    async fn caught_up_states_go_straight_into_the_socket_and_the_rest_waits_its_turn() {
        use tokio::io::AsyncReadExt;
        let (wire, mut client) = crate::wire::pair().await;
        let outbox = Outbox::with_wire(4, wire);
        let contest = ContestId::parse("c1").unwrap();
        outbox.open(&contest);
        // The first state of a subscription goes through the session, as
        // a snapshot.
        assert_eq!(
            outbox.deliver(&contest, state(1, Kind::Update)),
            Delivery::Queued
        );
        let first = parsed(outbox.pop().unwrap());
        assert_eq!(
            (first["type"].as_str(), first["version"].as_u64()),
            (Some("snapshot"), Some(1))
        );
        assert!(outbox.pop().is_none());
        // Caught up: straight in, nothing left for the session.
        let second = state(2, Kind::Update);
        let expected = second.body.update_wire();
        assert_eq!(outbox.deliver(&contest, second), Delivery::Written);
        assert!(outbox.pop().is_none());
        let mut read = vec![0; expected.len()];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(read, expected);
        assert_eq!(
            outbox.deliver(&contest, state(2, Kind::Update)),
            Delivery::Dropped
        );
        // A control frame waits: the state queues behind it.
        outbox.push_control(crate::protocol::pong());
        assert_eq!(
            outbox.deliver(&contest, state(3, Kind::Update)),
            Delivery::Queued
        );
        assert_eq!(parsed(outbox.pop().unwrap())["type"], "pong");
        // The session is writing a frame it popped: nothing overtakes it.
        assert_eq!(
            outbox.deliver(&contest, state(4, Kind::Update)),
            Delivery::Queued
        );
        let frame = parsed(outbox.pop().unwrap());
        assert_eq!(
            (frame["type"].as_str(), frame["version"].as_u64()),
            (Some("snapshot"), Some(4))
        );
        assert!(outbox.pop().is_none());
        assert_eq!(
            outbox.deliver(&contest, state(5, Kind::Update)),
            Delivery::Written
        );
    }

    #[test]
    fn contests_take_turns() {
        let outbox = Outbox::new(2);
        let a = ContestId::parse("a").unwrap();
        let b = ContestId::parse("b").unwrap();
        outbox.open(&a);
        outbox.open(&b);
        outbox.push_state(&a, state(1, Kind::Update));
        outbox.push_state(&b, state(1, Kind::Update));
        outbox.pop().unwrap();
        outbox.push_state(&a, state(2, Kind::Update));
        // b has waited longer than a's newer state.
        let second = parsed(outbox.pop().unwrap());
        assert_eq!(second["version"], 1);
        assert_eq!(parsed(outbox.pop().unwrap())["version"], 2);
    }
}
