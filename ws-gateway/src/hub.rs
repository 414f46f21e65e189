//! The node's hub: which local clients follow which contest, and the fan-out
//! of each new contest state to them.
//!
//! Shaped like mini-redis's `db.rs`: one shared state behind a short-held
//! lock, and work done outside it. A contest with local subscribers is a
//! *room*. When its version moves, one task per room reads the new state from
//! Redis once, serializes it once per `top` size, and hands it to each event
//! loop that serves members of the room; there it is left in every member's
//! outbox, or written straight into the socket of a client that is caught up
//! (so a delivery never crosses cores, and mostly wakes no session at all);
//! clients that follow an entry get the same bytes plus their own small `me`. Notices that arrive while a room is refreshing are
//! folded into one more refresh (conflation at the node).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leaderboard_core::rank::CompetitionRanks;
use leaderboard_core::ContestId;
use leaderboard_hot::HotConnection;
use leaderboard_hot::{self as hot, ContestSnapshot, EntryTeam, ReadError, TeamCache};
use leaderboard_service::backoff::Backoff;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::metrics;
use crate::outbox::{Delivery, MyEntry, Outbox, Pending};
use crate::protocol::{self, Kind, ProtocolError, StateBody, Subscribe, TopRow};

/// What the hub asks of the node's pub/sub connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Subscribe(ContestId),
    Unsubscribe(ContestId),
}

/// A local client's subscription to one contest.
#[derive(Debug, Clone)]
struct Member {
    outbox: Arc<Outbox>,
    top: usize,
    entry: Option<Follow>,
    /// The event loop its session runs on.
    lane: Handle,
}

/// A room's members grouped by the event loop their sessions run on: a
/// fan-out hands each loop its own members, so the session wake-ups it
/// causes stay on that loop's core (no cross-core wake, no shared counters).
#[derive(Debug)]
struct Lane {
    handle: Handle,
    members: Vec<Member>,
}

#[derive(Debug, Clone)]
struct Follow {
    entry_id: Arc<str>,
    team: EntryTeam,
}

#[derive(Debug, Default)]
struct Room {
    members: HashMap<u64, Member>,
    /// `members` by event loop, rebuilt on the first fan-out after a change.
    lanes: Option<Arc<[Lane]>>,
    /// Version last fanned out.
    delivered: u64,
    /// A notice (or a resync) came since the last read began.
    stale: bool,
    /// A refresh task runs; notices only mark the room stale.
    refreshing: bool,
    /// When the oldest unserved notice arrived (for the fan-out histogram).
    noticed_at: Option<Instant>,
}

impl Room {
    fn lanes(&mut self) -> Arc<[Lane]> {
        let members = &self.members;
        self.lanes
            .get_or_insert_with(|| {
                let mut lanes: Vec<Lane> = Vec::new();
                for member in members.values() {
                    let id = member.lane.id();
                    match lanes.iter_mut().find(|lane| lane.handle.id() == id) {
                        Some(lane) => lane.members.push(member.clone()),
                        None => lanes.push(Lane {
                            handle: member.lane.clone(),
                            members: vec![member.clone()],
                        }),
                    }
                }
                lanes.into()
            })
            .clone()
    }

    /// Marks the room stale; true when the caller must start the refresh task.
    fn mark_stale(&mut self) -> bool {
        self.stale = true;
        !std::mem::replace(&mut self.refreshing, true)
    }
}

/// A contest's newest state on this node: its snapshot and top rows (read
/// once for the largest `top` a client may ask), and its frames rendered once
/// per `top` size.
#[derive(Debug)]
struct Latest {
    snapshot: ContestSnapshot,
    rows: Vec<TopRow>,
    bodies: Mutex<HashMap<usize, Arc<StateBody>>>,
}

impl Latest {
    fn stamp(&self) -> (u64, u64) {
        (self.snapshot.version, self.snapshot.ranks_version)
    }

    /// The shared body for `top` rows, serialized on first use.
    fn body(&self, top: usize) -> Arc<StateBody> {
        let mut bodies = self.bodies.lock().expect("bodies lock");
        bodies
            .entry(top)
            .or_insert_with(|| {
                Arc::new(StateBody::render(
                    self.snapshot.contest_id.as_str(),
                    self.snapshot.version,
                    self.snapshot.ranks_version,
                    self.snapshot.total,
                    &self.rows[..top.min(self.rows.len())],
                ))
            })
            .clone()
    }
}

#[derive(Debug)]
struct Inner {
    rooms: Mutex<HashMap<ContestId, Room>>,
    /// Followed entries' teams, validated when read.
    teams: TeamCache,
    team_reads: AtomicU64,
    /// Newest state per contest: subscribers share it (concurrent misses
    /// coalesce into one read), and each fan-out replaces it.
    latest: moka::future::Cache<ContestId, Arc<Latest>>,
    connection: HotConnection,
    channels: mpsc::UnboundedSender<Channel>,
    next_session: AtomicU64,
}

/// See the module documentation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// A hub reading through `connection`; channel changes go to `channels`
    /// (the pub/sub subscriber).
    pub fn new(
        connection: HotConnection,
        max_staleness: Duration,
        channels: mpsc::UnboundedSender<Channel>,
    ) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                rooms: Mutex::new(HashMap::new()),
                teams: TeamCache::new(connection.clone(), 5_000_000),
                team_reads: AtomicU64::new(0),
                latest: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(max_staleness)
                    .build(),
                connection,
                channels,
                next_session: AtomicU64::new(1),
            }),
        }
    }

    /// A fresh id for a session.
    pub fn session_id(&self) -> u64 {
        self.inner.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Contests with local subscribers.
    pub fn contests(&self) -> Vec<ContestId> {
        self.rooms().keys().cloned().collect()
    }

    /// Redis reads made for this node's clients (each coalesced miss once).
    pub fn backend_reads(&self) -> u64 {
        self.inner.team_reads.load(Ordering::Relaxed)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<ContestId, Room>> {
        self.inner.rooms.lock().expect("hub lock")
    }

    /// Adds (or replaces) a session's subscription and leaves its first state
    /// in its outbox: a snapshot, or nothing new when `since_version` is current.
    pub async fn subscribe(
        &self,
        session: u64,
        outbox: &Arc<Outbox>,
        request: &Subscribe,
    ) -> Result<(), ProtocolError> {
        let contest_id = &request.contest_id;
        let entry = match &request.entry_id {
            Some(entry_id) => {
                let team = self
                    .inner
                    .teams
                    .get(contest_id, entry_id, || {
                        self.inner.team_reads.fetch_add(1, Ordering::Relaxed);
                    })
                    .await
                    .map_err(|error| read_error(error, "unknown_entry"))?;
                Some(Follow {
                    entry_id: Arc::from(entry_id.as_str()),
                    team,
                })
            }
            None => None,
        };
        let member = Member {
            outbox: outbox.clone(),
            top: request.top,
            entry,
            lane: Handle::current(),
        };
        // Before the fan-outs can see the member: their states may then
        // reach the outbox ahead of the snapshot below, and go out as one.
        outbox.open(contest_id);
        let new_room = {
            let mut rooms = self.rooms();
            let new_room = !rooms.contains_key(contest_id);
            let room = rooms.entry(contest_id.clone()).or_default();
            room.lanes = None;
            if room.members.insert(session, member.clone()).is_none() {
                metrics::SUBSCRIPTIONS.inc();
            }
            new_room
        };
        if new_room {
            metrics::ROOMS.inc();
            let _ = self
                .inner
                .channels
                .send(Channel::Subscribe(contest_id.clone()));
            // No notices were followed for this contest until now.
            self.inner.latest.invalidate(contest_id).await;
        }
        let first = async {
            let latest = self
                .inner
                .latest
                .try_get_with(contest_id.clone(), self.read_latest(contest_id))
                .await
                .map_err(|error: Arc<ProtocolError>| (*error).clone())?;
            let snapshot = &latest.snapshot;
            if request.since_version == Some(snapshot.version) {
                outbox.mark_sent(contest_id, latest.stamp());
                outbox.push_control(protocol::subscribed(contest_id.as_str(), snapshot.version));
                return Ok(());
            }
            outbox.push_state(
                contest_id,
                Pending {
                    version: latest.stamp(),
                    kind: Kind::Snapshot,
                    me: my_entry(&member, snapshot),
                    body: latest.body(member.top),
                },
            );
            Ok(())
        };
        let result = first.await;
        if result.is_err() {
            self.leave(session, contest_id);
        }
        result
    }

    /// Removes a session's subscription; the last one out unsubscribes the node.
    pub fn leave(&self, session: u64, contest_id: &ContestId) {
        let emptied = {
            let mut rooms = self.rooms();
            let Some(room) = rooms.get_mut(contest_id) else {
                return;
            };
            if room.members.remove(&session).is_some() {
                metrics::SUBSCRIPTIONS.dec();
                room.lanes = None;
            }
            if room.members.is_empty() {
                rooms.remove(contest_id);
                true
            } else {
                false
            }
        };
        if emptied {
            metrics::ROOMS.dec();
            let _ = self
                .inner
                .channels
                .send(Channel::Unsubscribe(contest_id.clone()));
        }
    }

    /// A contest's change notice: the room refreshes once, however many
    /// notices come while it reads. The notice's version is not compared:
    /// a large contest announces the same version twice (once for its
    /// histogram, once when its sorted set has caught up), and both must be
    /// read.
    pub fn notice(&self, contest_id: &ContestId) {
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(contest_id) else {
            return;
        };
        room.noticed_at.get_or_insert_with(Instant::now);
        if room.mark_stale() {
            drop(rooms);
            self.spawn_refresh(contest_id.clone());
        }
    }

    /// Re-reads every room (after a gap in notices); clients only get a
    /// frame if the version moved.
    pub fn resync(&self) {
        for contest_id in self.contests() {
            self.force(&contest_id);
        }
    }

    /// Re-reads one room whatever its versions say (its channel was just
    /// subscribed, so a notice may have been missed).
    pub fn force(&self, contest_id: &ContestId) {
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(contest_id) else {
            return;
        };
        if room.mark_stale() {
            drop(rooms);
            self.spawn_refresh(contest_id.clone());
        }
    }

    /// Refreshes the room in a task of its own. Should the refresh panic
    /// anyway, the room is marked stale and not refreshing, so the next
    /// notice starts a new refresh instead of finding the flag stuck.
    fn spawn_refresh(&self, contest_id: ContestId) {
        use futures::FutureExt;
        let hub = self.clone();
        tokio::spawn(async move {
            let refresh = std::panic::AssertUnwindSafe(hub.refresh(contest_id.clone()));
            if refresh.catch_unwind().await.is_err() {
                metrics::REFRESH_PANICS.inc();
                tracing::error!(contest = %contest_id, "a room refresh panicked; the next notice retries it");
                if let Some(room) = hub.rooms().get_mut(&contest_id) {
                    room.refreshing = false;
                    room.stale = true;
                }
            }
        });
    }

    /// Reads and fans out the room's state until no notice came during a read.
    async fn refresh(&self, contest_id: ContestId) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let noticed = match self.rooms().get_mut(&contest_id) {
                Some(room) => {
                    room.stale = false;
                    room.noticed_at.take()
                }
                None => return,
            };
            let result = self.fan_out(&contest_id, noticed).await;
            let failed = {
                let mut rooms = self.rooms();
                let Some(room) = rooms.get_mut(&contest_id) else {
                    return;
                };
                match result {
                    Ok(version) => {
                        room.delivered = version;
                        if !room.stale {
                            room.refreshing = false;
                            return;
                        }
                        None
                    }
                    Err(error) => {
                        room.stale = true;
                        if let Some(noticed) = noticed {
                            room.noticed_at.get_or_insert(noticed);
                        }
                        Some(error)
                    }
                }
            };
            match failed {
                None => backoff.reset(),
                Some(error) => {
                    tracing::warn!(contest = %contest_id, %error, "cannot read the contest's state, retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// One read of the contest; then each event loop with members gets the
    /// state, serializes it once per `top` size and writes one outbox per
    /// member. Returns the version fanned out.
    async fn fan_out(
        &self,
        contest_id: &ContestId,
        noticed: Option<Instant>,
    ) -> Result<u64, ProtocolError> {
        let latest = self.read_latest(contest_id).await?;
        self.inner
            .latest
            .insert(contest_id.clone(), latest.clone())
            .await;
        let lanes = match self.rooms().get_mut(contest_id) {
            Some(room) => room.lanes(),
            None => return Ok(latest.snapshot.version),
        };
        let here = Handle::try_current().ok().map(|handle| handle.id());
        let mut local = None;
        for index in 0..lanes.len() {
            let lane = &lanes[index];
            if Some(lane.handle.id()) == here {
                local = Some(lane);
            } else {
                let (contest_id, latest, lanes) =
                    (contest_id.clone(), latest.clone(), lanes.clone());
                lane.handle.spawn(async move {
                    deliver(&contest_id, &latest, &lanes[index].members, noticed).await;
                });
            }
        }
        // This task's own loop last: the others are already under way.
        if let Some(lane) = local {
            deliver(contest_id, &latest, &lane.members, noticed).await;
        }
        metrics::STATES_BUILT.inc();
        Ok(latest.snapshot.version)
    }

    /// Reads the contest's newest state with the largest top a client may ask.
    async fn read_latest(&self, contest_id: &ContestId) -> Result<Arc<Latest>, ProtocolError> {
        let (snapshot, rows) = self.read(contest_id, protocol::MAX_TOP).await?;
        Ok(Arc::new(Latest {
            snapshot,
            rows,
            bodies: Mutex::new(HashMap::new()),
        }))
    }

    /// The contest's snapshot (version, histogram, player points) and its top
    /// `top` rows with competition ranks, from one Redis transaction.
    async fn read(
        &self,
        contest_id: &ContestId,
        top: usize,
    ) -> Result<(ContestSnapshot, Vec<TopRow>), ProtocolError> {
        let mut connection = self.inner.connection.clone();
        let ((meta, histogram, rows), users) = hot::read_top(&mut connection, contest_id, top)
            .await
            .map_err(|error| ProtocolError::new("unavailable", error.to_string()))?;
        let mut snapshot = ContestSnapshot::from_parts(contest_id, &meta, histogram)
            .map_err(|error| read_error(error, "unknown_contest"))?;
        if let Some(rows) = snapshot.top_page(0, top) {
            // The top rows the writer keeps at every version: fresh with the
            // ball even while a large contest's sorted set catches up.
            snapshot.ranks_version = snapshot.version;
            let rows = rows
                .into_iter()
                .map(|row| TopRow {
                    rank: row.rank,
                    entry_id: row.entry_id,
                    user_id: row.user_id,
                    points: row.points,
                })
                .collect();
            return Ok((snapshot, rows));
        }
        let mut top_rows = Vec::with_capacity(rows.len());
        let mut users = users.into_iter();
        let mut ranks = CompetitionRanks::new();
        for (entry_id, score) in &rows {
            let points = hot::points_of_score(contest_id, entry_id, *score)
                .map_err(|error| read_error(error, "unknown_contest"))?;
            let user_id = users.next().flatten().ok_or_else(|| {
                read_error(
                    ReadError::corrupt(contest_id, format!("entry `{entry_id}` has no owner")),
                    "unknown_contest",
                )
            })?;
            top_rows.push(TopRow {
                rank: ranks.next(points),
                entry_id: entry_id.clone(),
                user_id,
                points,
            });
        }
        Ok((snapshot, top_rows))
    }
}

/// Members a fan-out serves before it lets the event loop's other tasks run.
const DELIVERIES_PER_TURN: usize = 256;

/// Hands `latest` to each of one event loop's members: written straight
/// into a caught-up client's socket, else left in its outbox. The bodies
/// (serialized once per `top` size) are copied once for this call, so their
/// reference counts are touched by this event loop only, never bounced
/// between cores. Writing to thousands of sockets takes a while, so the
/// loop's other work (handshakes, requests, pings) gets a turn every
/// [`DELIVERIES_PER_TURN`] members. `noticed` is when the version notice
/// arrived (for `ws_fanout_seconds`).
async fn deliver(
    contest_id: &ContestId,
    latest: &Latest,
    members: &[Member],
    noticed: Option<Instant>,
) {
    let mut bodies: Vec<(usize, Arc<StateBody>)> = Vec::new();
    let mut written = 0;
    for (served, member) in members.iter().enumerate() {
        if served > 0 && served % DELIVERIES_PER_TURN == 0 {
            tokio::task::yield_now().await;
        }
        let body = match bodies.iter().find(|(top, _)| *top == member.top) {
            Some((_, body)) => body.clone(),
            None => {
                let body = Arc::new(latest.body(member.top).copy());
                bodies.push((member.top, body.clone()));
                body
            }
        };
        let delivery = member.outbox.deliver(
            contest_id,
            Pending {
                version: latest.stamp(),
                kind: Kind::Update,
                me: my_entry(member, &latest.snapshot),
                body,
            },
        );
        written += u64::from(delivery == Delivery::Written);
    }
    // Counted once per loop and fan-out, not once per client.
    metrics::WRITTEN_DIRECTLY.inc_by(written);
    metrics::FRAMES_SENT
        .with_label_values(&["update"])
        .inc_by(written);
    if let Some(noticed) = noticed {
        metrics::FANOUT_SECONDS.observe(noticed.elapsed().as_secs_f64());
    }
}

/// The member's own entry, exact from the snapshot's histogram and its team;
/// a team that does not fit the contest's squad (corrupt in Redis) is
/// reported and left out, and the rest of the frame is still delivered.
fn my_entry(member: &Member, snapshot: &ContestSnapshot) -> Option<MyEntry> {
    let follow = member.entry.as_ref()?;
    match snapshot.score(&follow.entry_id, &follow.team.team) {
        Ok((points, rank)) => Some(MyEntry {
            entry_id: follow.entry_id.clone(),
            rank,
            points,
        }),
        Err(error) => {
            let _ = read_error(error, "unknown_entry");
            None
        }
    }
}

fn read_error(error: ReadError, not_found: &'static str) -> ProtocolError {
    match error {
        ReadError::NotFound(message) => ProtocolError::new(not_found, message),
        ReadError::Backend(message) => ProtocolError::new("unavailable", message),
        ReadError::Corrupt(message) => {
            metrics::CORRUPT_READS.inc();
            tracing::error!(%message, "corrupt hot state read, not served");
            ProtocolError::new(
                "unavailable",
                "the contest's state cannot be read right now",
            )
        }
    }
}
