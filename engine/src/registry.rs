//! The registry: call UUID → call record, for every live call.
//!
//! Calls live in a chunked slab (fixed 4096-call chunks, so growing never doubles memory or moves calls);
//! one hash index maps both a call's own UUID and its current outbound leg's UUID to its slot. Finished
//! calls leave at once, but their ids are remembered for a while (so that a late CHANNEL_DESTROY is known
//! as late, not as a stranger) and the last few keep their trace for `rtc_core call <uuid>`.

use std::collections::{HashMap, HashSet, VecDeque};

use foldhash::fast::RandomState;

use crate::call::{Call, CallState, CallView};
use crate::fsm::Symbol;
use crate::id::CallId;

/// Where an id points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// The call's own (inbound) channel.
    A(u32),
    /// The outbound channel currently bridged or being tried for the call in that slot.
    B(u32),
}

const B_BIT: u32 = 1 << 31;
const CHUNK: usize = 4096;

/// A slab in fixed-size chunks. Hand-written because the `slab` crate keeps one `Vec`, whose doubling
/// would cost up to twice the memory per call at the sizes this engine runs at.
struct Slab<T> {
    chunks: Vec<Vec<Option<T>>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            self.chunks[slot as usize / CHUNK][slot as usize % CHUNK] = Some(value);
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let n = self.chunks.len() - 1;
        let chunk = &mut self.chunks[n];
        chunk.push(Some(value));
        (n * CHUNK + chunk.len() - 1) as u32
    }

    fn get(&self, slot: u32) -> Option<&T> {
        self.chunks
            .get(slot as usize / CHUNK)?
            .get(slot as usize % CHUNK)?
            .as_ref()
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.chunks
            .get_mut(slot as usize / CHUNK)?
            .get_mut(slot as usize % CHUNK)?
            .as_mut()
    }

    fn remove(&mut self, slot: u32) -> Option<T> {
        let v = self
            .chunks
            .get_mut(slot as usize / CHUNK)?
            .get_mut(slot as usize % CHUNK)?
            .take()?;
        self.len -= 1;
        self.free.push(slot);
        if self.len == 0 {
            // Give memory back after a burst.
            self.chunks.clear();
            self.free = Vec::new();
        }
        Some(v)
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten().flatten()
    }
}

/// Ids and traces of calls that have finished.
struct Finished {
    ids: HashSet<CallId, RandomState>,
    order: VecDeque<CallId>,
    id_cap: usize,
    recent: VecDeque<CallView>,
    recent_cap: usize,
}

/// The live calls.
pub struct Registry {
    slab: Slab<Call>,
    /// UUID → slot, with the top bit set for outbound legs.
    index: HashMap<CallId, u32, RandomState>,
    /// Live calls per state.
    by_state: [u32; CallState::COUNT],
    finished: Finished,
}

/// A call id that is already registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call {0} is already registered")]
pub struct AlreadyRegistered(pub CallId);

impl Registry {
    /// `finished_ids`: how many finished ids to remember; `finished_traces`: how many finished calls keep
    /// their trace.
    pub fn new(finished_ids: usize, finished_traces: usize) -> Self {
        Registry {
            slab: Slab::new(),
            index: HashMap::default(),
            by_state: [0; CallState::COUNT],
            finished: Finished {
                ids: HashSet::default(),
                order: VecDeque::new(),
                id_cap: finished_ids,
                recent: VecDeque::new(),
                recent_cap: finished_traces,
            },
        }
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.slab.len
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.slab.len == 0
    }

    /// Registers a new call; refused if its id is already live.
    pub fn insert(&mut self, call: Call) -> Result<u32, AlreadyRegistered> {
        let id = call.id;
        if self.index.contains_key(&id) {
            return Err(AlreadyRegistered(id));
        }
        self.by_state[call.state.index()] += 1;
        let slot = self.slab.insert(call);
        self.index.insert(id, slot);
        Ok(slot)
    }

    /// Which call, and which leg of it, an id belongs to.
    #[inline]
    pub fn find(&self, id: &CallId) -> Option<Leg> {
        self.index.get(id).map(|&s| {
            if s & B_BIT != 0 {
                Leg::B(s & !B_BIT)
            } else {
                Leg::A(s)
            }
        })
    }

    /// The slot of the live call `id` (its A leg).
    pub fn slot_of(&self, id: &CallId) -> Option<u32> {
        match self.find(id)? {
            Leg::A(s) => Some(s),
            Leg::B(_) => None,
        }
    }

    /// The call in `slot`.
    pub fn get(&self, slot: u32) -> Option<&Call> {
        self.slab.get(slot)
    }

    /// The call in `slot`, to change it.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Call> {
        self.slab.get_mut(slot)
    }

    /// The live call `id`.
    pub fn by_id(&self, id: &CallId) -> Option<&Call> {
        self.slab.get(self.slot_of(id)?)
    }

    /// Moves the call in `slot` to `to`, keeping the per-state counts.
    pub fn set_state(&mut self, slot: u32, to: CallState) {
        if let Some(call) = self.slab.get_mut(slot) {
            self.by_state[call.state.index()] -= 1;
            self.by_state[to.index()] += 1;
            call.state = to;
        }
    }

    /// Ties outbound leg `b` to the call in `slot`, replacing (and forgetting) any previous one.
    pub fn link_b_leg(&mut self, slot: u32, b: CallId) {
        let Some(call) = self.slab.get_mut(slot) else {
            return;
        };
        let old = call.b_leg.replace(b);
        call.b_seen = 0;
        self.index.insert(b, slot | B_BIT);
        if let Some(old) = old {
            // The earlier attempt's last events (DESTROY...) still come: known as finished, they cannot
            // take the call back from the new attempt.
            self.index.remove(&old);
            self.remember_id(old);
        }
    }

    /// Removes the call in `slot` and its outbound leg, remembering its id and trace.
    pub fn remove(&mut self, slot: u32, now_us: u64) -> Option<Call> {
        let call = self.slab.remove(slot)?;
        self.by_state[call.state.index()] -= 1;
        self.index.remove(&call.id);
        if let Some(b) = call.b_leg {
            self.index.remove(&b);
        }
        self.remember(&call, now_us);
        Some(call)
    }

    fn remember_id(&mut self, id: CallId) {
        let f = &mut self.finished;
        if f.id_cap == 0 {
            return;
        }
        if f.order.len() >= f.id_cap
            && let Some(old) = f.order.pop_front()
        {
            f.ids.remove(&old);
        }
        if f.ids.insert(id) {
            f.order.push_back(id);
        }
    }

    fn remember(&mut self, call: &Call, now_us: u64) {
        self.remember_id(call.id);
        if let Some(b) = call.b_leg {
            self.remember_id(b);
        }
        let f = &mut self.finished;
        if f.recent_cap > 0 {
            if f.recent.len() == f.recent_cap {
                f.recent.pop_front();
            }
            f.recent.push_back(CallView::of(call, now_us));
        }
    }

    /// Whether `id` belonged to a call that has finished (recently enough to be remembered).
    pub fn is_finished(&self, id: &CallId) -> bool {
        self.finished.ids.contains(id)
    }

    /// The trace of a finished call, if still kept.
    pub fn finished_view(&self, id: &CallId) -> Option<&CallView> {
        self.finished.recent.iter().rev().find(|v| v.uuid == *id)
    }

    /// Live calls in `state`.
    pub fn count(&self, state: CallState) -> u32 {
        self.by_state[state.index()]
    }

    /// Every live call, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.slab.iter()
    }

    /// Slots of every live call (for sweeps and shutdown, which change the registry as they go).
    pub fn slots(&self) -> Vec<u32> {
        self.slab
            .iter()
            .filter_map(|c| self.slot_of(&c.id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u128) -> Call {
        Call::new(CallId::from_u128(n), 0)
    }

    #[test]
    fn insert_find_remove() {
        let mut r = Registry::new(4, 2);
        let s = r.insert(call(1)).unwrap();
        assert_eq!(
            r.insert(call(1)),
            Err(AlreadyRegistered(CallId::from_u128(1)))
        );
        assert_eq!(r.find(&CallId::from_u128(1)), Some(Leg::A(s)));
        r.link_b_leg(s, CallId::from_u128(100));
        assert_eq!(r.find(&CallId::from_u128(100)), Some(Leg::B(s)));
        r.link_b_leg(s, CallId::from_u128(101));
        assert_eq!(r.find(&CallId::from_u128(100)), None);
        assert!(
            r.is_finished(&CallId::from_u128(100)),
            "a replaced leg is known as finished"
        );
        assert_eq!(r.count(CallState::Created), 1);
        r.set_state(s, CallState::Connected);
        assert_eq!(r.count(CallState::Created), 0);
        assert_eq!(r.count(CallState::Connected), 1);
        let c = r.remove(s, 0).unwrap();
        assert_eq!(c.id, CallId::from_u128(1));
        assert!(r.is_empty());
        assert_eq!(r.count(CallState::Connected), 0);
        assert!(r.is_finished(&CallId::from_u128(1)));
        assert!(r.is_finished(&CallId::from_u128(101)));
        assert!(r.finished_view(&CallId::from_u128(1)).is_some());
        assert_eq!(r.find(&CallId::from_u128(101)), None);
    }

    #[test]
    fn finished_memory_is_bounded() {
        let mut r = Registry::new(4, 2);
        for n in 0..10 {
            let s = r.insert(call(n)).unwrap();
            r.remove(s, 0);
        }
        assert!(!r.is_finished(&CallId::from_u128(0)));
        assert!(r.is_finished(&CallId::from_u128(9)));
        assert!(r.finished_view(&CallId::from_u128(7)).is_none());
        assert!(r.finished_view(&CallId::from_u128(8)).is_some());
    }

    #[test]
    fn slots_are_reused_across_chunks() {
        let mut r = Registry::new(0, 0);
        let slots: Vec<u32> = (0..5000).map(|n| r.insert(call(n)).unwrap()).collect();
        assert_eq!(r.len(), 5000);
        for (n, s) in slots.iter().enumerate().take(100) {
            assert_eq!(r.remove(*s, 0).unwrap().id, CallId::from_u128(n as u128));
        }
        let s = r.insert(call(9999)).unwrap();
        assert!(s < 100);
        assert_eq!(r.iter().count(), 4901);
        assert_eq!(r.slots().len(), 4901);
    }
}
