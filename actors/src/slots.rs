//! `--max-concurrent-canaries`: how many canary runs may be in progress at once, operator-wide.
//!
//! Contract:
//! - The decision to wait is the core's (`rollout::decide` asks [`flagger_rollout::Gather::RolloutSlot`]
//!   right before a run would start, and keeps the canary in `Waiting` with
//!   `waiting for a rollout slot (N of M in progress)` when told [`RolloutSlot::Busy`]). This
//!   module only counts.
//! - A slot is held by every canary whose `.status.phase` holds one
//!   ([`flagger_rollout::Phase::holds_rollout_slot`]: Progressing, WaitingPromotion, Promoting,
//!   Finalising), as seen in the Canary cache, plus grants made but not yet visible there. The
//!   count is derived from `.status`, so a restarted operator counts the runs in flight before
//!   it granted anything; nothing but the grants in the last moments lives only in memory.
//! - First come, first served: canaries asking while all slots are taken queue in the order they
//!   first asked; a freed slot goes to the head of the queue, which is woken to tick at once.
//! - A grant ends when the cache shows the canary in a slot-holding phase (it is then counted by
//!   phase), when its actor says it did not start the run (`ReleaseRolloutSlot`), when the canary
//!   is deleted or its actor crashed, or after [`GRANT_TTL`] as a safety net for a watch that
//!   skipped the change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::Recipient;
use flagger_rollout::{Phase, RolloutSlot};
use tracing::warn;

use crate::key::CanaryKey;
use crate::messages::{ReleaseRolloutSlot, RequestRolloutSlot};

/// A grant not confirmed by the cache within this time is dropped.
pub const GRANT_TTL: Duration = Duration::from_secs(120);

/// The slot accounting of one operator (owned by the CanarySupervisor).
#[derive(Debug)]
pub struct SlotTable {
    limit: u32,
    /// Canaries whose last observed phase holds a slot.
    running: HashSet<CanaryKey>,
    /// Granted, not yet observed running.
    granted: HashMap<CanaryKey, Instant>,
    /// Waiting for a slot, in the order they first asked.
    queue: VecDeque<CanaryKey>,
}

impl SlotTable {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            running: HashSet::new(),
            granted: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Slots taken: running plus granted.
    pub fn in_progress(&self) -> u32 {
        u32::try_from(self.running.len() + self.granted.len()).unwrap_or(u32::MAX)
    }

    fn free(&self) -> usize {
        usize::try_from(self.limit.saturating_sub(self.in_progress())).unwrap_or(usize::MAX)
    }

    /// The phase of `key` as the Canary cache shows it. Returns the canaries to wake because a
    /// slot became free.
    pub fn observe(&mut self, key: &CanaryKey, phase: Phase, now: Instant) -> Vec<CanaryKey> {
        if phase.holds_rollout_slot() {
            self.granted.remove(key);
            self.remove_queued(key);
            self.running.insert(key.clone());
            return Vec::new();
        }
        let freed = self.running.remove(key);
        // A grant stays until the run shows up (a lagging event may still show the old phase).
        let expired = self.expire(now);
        if freed || expired {
            self.to_wake()
        } else {
            Vec::new()
        }
    }

    /// The canary is gone (deleted, or its actor restarts and will ask again).
    pub fn forget(&mut self, key: &CanaryKey) -> Vec<CanaryKey> {
        let freed = self.running.remove(key) | self.granted.remove(key).is_some();
        self.remove_queued(key);
        if freed { self.to_wake() } else { Vec::new() }
    }

    /// The canary's actor did not start a run after all (or stopped waiting for one).
    pub fn release(&mut self, key: &CanaryKey) -> Vec<CanaryKey> {
        let freed = self.granted.remove(key).is_some();
        let was_queued = self.remove_queued(key);
        if freed || was_queued {
            self.to_wake()
        } else {
            Vec::new()
        }
    }

    /// May `key` start a run now?
    pub fn request(&mut self, key: &CanaryKey, now: Instant) -> RolloutSlot {
        if self.running.contains(key) || self.granted.contains_key(key) {
            return RolloutSlot::Granted;
        }
        self.expire(now);
        if !self.queue.contains(key) {
            self.queue.push_back(key.clone());
        }
        let free = self.free();
        if self.queue.iter().take(free).any(|k| k == key) {
            self.remove_queued(key);
            self.granted.insert(key.clone(), now);
            return RolloutSlot::Granted;
        }
        RolloutSlot::Busy {
            in_progress: self.in_progress(),
            limit: self.limit,
        }
    }

    /// Queued canaries that a free slot is waiting for.
    fn to_wake(&self) -> Vec<CanaryKey> {
        self.queue.iter().take(self.free()).cloned().collect()
    }

    fn remove_queued(&mut self, key: &CanaryKey) -> bool {
        match self.queue.iter().position(|k| k == key) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self, now: Instant) -> bool {
        let before = self.granted.len();
        self.granted
            .retain(|_, at| now.saturating_duration_since(*at) < GRANT_TTL);
        self.granted.len() != before
    }
}

/// How a CanaryActor reaches the slot accounting (present only with a limit). Cheap to clone.
#[derive(Clone)]
pub struct RolloutSlots {
    pub limit: u32,
    pub request: Recipient<RequestRolloutSlot>,
    pub release: Recipient<ReleaseRolloutSlot>,
}

/// The answer to [`flagger_rollout::Gather::RolloutSlot`]: always granted without a limit.
pub async fn request_slot(slots: Option<&RolloutSlots>, key: &CanaryKey) -> RolloutSlot {
    let Some(slots) = slots else {
        return RolloutSlot::Granted;
    };
    match slots
        .request
        .send(RequestRolloutSlot { key: key.clone() })
        .await
    {
        Ok(slot) => slot,
        Err(error) => {
            // Only while shutting down; waiting is the safe answer.
            warn!(msg = "rollout slot accounting unavailable", %error);
            RolloutSlot::Busy {
                in_progress: slots.limit,
                limit: slots.limit,
            }
        }
    }
}

/// A CanaryActor's side of the protocol, after each tick: `asked` is what this tick was told
/// (None when it did not ask), `holds` whether the status it ended with holds a slot. Keeps
/// `queued` (the actor's "I am in the queue") and tells the accounting when a grant went unused
/// or the canary stopped waiting.
pub fn after_tick(
    slots: Option<&RolloutSlots>,
    key: &CanaryKey,
    asked: Option<RolloutSlot>,
    holds: bool,
    queued: &mut bool,
) {
    let Some(slots) = slots else { return };
    let release = match asked {
        Some(RolloutSlot::Busy { .. }) => {
            *queued = true;
            false
        }
        Some(RolloutSlot::Granted) => {
            *queued = false;
            !holds
        }
        None => std::mem::take(queued),
    };
    if release {
        slots
            .release
            .do_send(ReleaseRolloutSlot { key: key.clone() });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(name: &str) -> CanaryKey {
        CanaryKey::new("test", name)
    }

    fn busy(in_progress: u32, limit: u32) -> RolloutSlot {
        RolloutSlot::Busy { in_progress, limit }
    }

    #[test]
    fn grants_up_to_the_limit_then_queues_in_order() {
        let t0 = Instant::now();
        let mut slots = SlotTable::new(2);
        assert_eq!(slots.request(&key("a"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("b"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("c"), t0), busy(2, 2));
        assert_eq!(slots.request(&key("d"), t0), busy(2, 2));
        // Asking again keeps the answer (and the place in line).
        assert_eq!(slots.request(&key("a"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("d"), t0), busy(2, 2));

        // Grants turn into runs as the cache catches up; the count stays the same.
        assert!(slots.observe(&key("a"), Phase::Progressing, t0).is_empty());
        assert!(slots.observe(&key("b"), Phase::Progressing, t0).is_empty());
        assert_eq!(slots.in_progress(), 2);
        // A run moving through its phases keeps its slot.
        assert!(slots.observe(&key("a"), Phase::Promoting, t0).is_empty());
        assert!(slots.observe(&key("a"), Phase::Finalising, t0).is_empty());
        assert_eq!(slots.in_progress(), 2);

        // a finishes: the first in line (c, not d) is woken and gets the slot.
        assert_eq!(
            slots.observe(&key("a"), Phase::Succeeded, t0),
            vec![key("c")]
        );
        assert_eq!(slots.request(&key("d"), t0), busy(1, 2), "d is behind c");
        assert_eq!(slots.request(&key("c"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("d"), t0), busy(2, 2));
    }

    #[test]
    fn a_stale_event_does_not_end_a_grant() {
        let t0 = Instant::now();
        let mut slots = SlotTable::new(1);
        assert_eq!(slots.request(&key("a"), t0), RolloutSlot::Granted);
        // The watch still shows the phase from before the run started.
        assert!(slots.observe(&key("a"), Phase::Succeeded, t0).is_empty());
        assert_eq!(slots.request(&key("b"), t0), busy(1, 1));
    }

    #[test]
    fn counts_runs_from_status_after_a_restart() {
        let t0 = Instant::now();
        let mut slots = SlotTable::new(1);
        // What a restarted operator finds in the cache.
        slots.observe(&key("a"), Phase::WaitingPromotion, t0);
        slots.observe(&key("b"), Phase::Waiting, t0);
        assert_eq!(slots.request(&key("b"), t0), busy(1, 1));
        assert_eq!(slots.request(&key("a"), t0), RolloutSlot::Granted);
        assert_eq!(slots.observe(&key("a"), Phase::Failed, t0), vec![key("b")]);
        assert_eq!(slots.request(&key("b"), t0), RolloutSlot::Granted);
    }

    #[test]
    fn releases_deletions_and_expiry_free_slots() {
        let t0 = Instant::now();
        let mut slots = SlotTable::new(1);
        assert_eq!(slots.request(&key("a"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("b"), t0), busy(1, 1));
        assert_eq!(slots.request(&key("c"), t0), busy(1, 1));
        // a's tick did not start the run after all.
        assert_eq!(slots.release(&key("a")), vec![key("b")]);
        // b no longer wants a slot (its revision went back): c is next.
        assert_eq!(slots.release(&key("b")), vec![key("c")]);
        assert_eq!(slots.request(&key("c"), t0), RolloutSlot::Granted);
        assert_eq!(slots.request(&key("d"), t0), busy(1, 1));
        // c is deleted.
        assert_eq!(slots.forget(&key("c")), vec![key("d")]);
        assert_eq!(slots.request(&key("d"), t0), RolloutSlot::Granted);
        // d's grant never shows up in the cache: it expires.
        let later = t0 + GRANT_TTL + Duration::from_secs(1);
        assert_eq!(slots.request(&key("e"), later), RolloutSlot::Granted);
        // Releasing what is not held changes nothing.
        assert!(slots.release(&key("zz")).is_empty());
        assert_eq!(slots.in_progress(), 1);
    }
}
