//! How blocks and handles are written: one transaction per change, and the values this
//! process last saw, kept as hints.
//!
//! A block and the handles whose counts it changes are written together in one datastore
//! transaction, each key compared on the revision it was read at: an allocation and its
//! handle appear (or go) at once, and a crash can never leave one without the other.
//!
//! The remembered values only say where to start. Every write they inform is conditioned
//! on the remembered revision, so a stale value costs one failed transaction (which brings
//! back the current values), never a wrong allocation. Whoever decides something from them
//! that no write checks (that a block is full, that a handle holds nothing) reads again.
//!
//! Concurrent AutoAssigns in this process that land on the same block are combined: they
//! queue on the block, and whichever reaches it first writes the whole queue as one
//! transaction. Throughput on a busy node then grows with the number of callers instead of
//! collapsing into compare-and-swap retries. Correctness still comes from the compare alone:
//! other processes writing the same block are just other writers.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use calico_api::names::AffinityType;
use calico_datastore::{Datastore, DatastoreError, Expect, Key, KvPair, TxnOutcome, TxnWrite};
use ipnet::IpNet;
use tokio::sync::oneshot;

use crate::allocator::{IpamStats, MAX_ATTEMPTS};
use crate::block::AllocationBlock;
use crate::model::Handle;
use crate::pools::Reservations;
use crate::{IpamError, Result};

/// A block as last read or written, with the revision a write must compare against.
#[derive(Debug, Clone)]
pub(crate) struct CachedBlock {
    pub revision: i64,
    pub block: AllocationBlock,
}

/// A handle as last seen: its revision and value, or `None` when it did not exist.
pub(crate) type HandleState = Option<(i64, Handle)>;

/// A change to one handle, made only if it is still as seen (`base`: its revision, or
/// `None` for absent). `new: None` deletes it.
#[derive(Debug, Clone)]
pub(crate) struct HandleWrite {
    pub id: String,
    pub base: Option<i64>,
    pub new: Option<Handle>,
}

/// A change to one block, made only if it is still at `base`. `new: None` deletes it.
#[derive(Debug, Clone)]
pub(crate) struct BlockWrite {
    pub cidr: IpNet,
    pub base: i64,
    pub new: Option<AllocationBlock>,
}

/// What a [`Blocks::commit`] did.
#[derive(Debug)]
pub(crate) enum Commit {
    /// Written, at this revision.
    Done { revision: i64 },
    /// Something had changed; nothing was written. The current values: the block's, and
    /// each handle's in the order given.
    Stale {
        block: Option<Arc<CachedBlock>>,
        handles: Vec<HandleState>,
    },
}

/// Addresses to take from a block for one request.
#[derive(Debug, Clone)]
pub(crate) struct AssignOp {
    pub num: usize,
    pub handle: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// Only assign while the block still belongs to this owner.
    pub owner: Option<(AffinityType, String)>,
    pub reservations: Arc<Reservations>,
}

/// One request's share of a combined block write.
#[derive(Debug, Clone)]
pub(crate) enum BlockOp {
    Assign(AssignOp),
    /// Free every address the handle holds in the block. `seen` is the handle as the
    /// caller last saw it (the transaction compares against it).
    ReleaseHandle {
        handle: String,
        seen: HandleState,
    },
}

impl BlockOp {
    fn handle(&self) -> Option<&str> {
        match self {
            BlockOp::Assign(a) => a.handle.as_deref(),
            BlockOp::ReleaseHandle { handle, .. } => Some(handle),
        }
    }
}

/// What one request's share did.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpOutcome {
    pub assigned: Vec<IpNet>,
    pub released: Vec<IpAddr>,
    /// The request's handle as written, when the write changed it.
    pub handle: Option<HandleState>,
}

struct Pending {
    id: u64,
    op: BlockOp,
    done: oneshot::Sender<Result<OpOutcome>>,
}

/// The queue of one block's pending requests, and the turn to write them (held by whoever
/// writes a batch, until the batch's transaction is done).
#[derive(Default)]
struct Slot {
    queue: Mutex<Vec<Pending>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Takes a caller's request back out of the queue if the caller goes away before anyone
/// picked it up, so that nobody carries it out unseen.
struct Withdraw<'a> {
    slot: &'a Slot,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        locked(&self.slot.queue).retain(|p| p.id != self.id);
    }
}

/// Requests combined into one transaction at most (each may add a handle to it).
const MAX_BATCH: usize = 64;
/// Remembered blocks and handles at most; past that the memory is dropped and refilled.
const MAX_CACHED_BLOCKS: usize = 256;
const MAX_CACHED_HANDLES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Blocks {
    ds: Arc<dyn Datastore>,
    stats: Arc<IpamStats>,
    blocks: Mutex<HashMap<IpNet, Arc<CachedBlock>>>,
    handles: Mutex<HashMap<String, (i64, Handle)>>,
    slots: Mutex<HashMap<IpNet, Arc<Slot>>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-updated by a panic: every change is one insert or remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn corrupt(kv: &KvPair, e: impl std::fmt::Display) -> IpamError {
    IpamError::Corrupt {
        key: kv.key.path(),
        reason: e.to_string(),
    }
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn decode_block(kv: &KvPair) -> Result<AllocationBlock> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(kv, e))
}

pub(crate) fn decode_handle(kv: &KvPair) -> Result<Handle> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(kv, e))
}

impl Blocks {
    pub fn new(ds: Arc<dyn Datastore>, stats: Arc<IpamStats>) -> Blocks {
        Blocks {
            ds,
            stats,
            blocks: Mutex::default(),
            handles: Mutex::default(),
            slots: Mutex::default(),
        }
    }

    // ---- remembered values ----

    /// The block as last seen, if remembered.
    pub fn cached(&self, cidr: IpNet) -> Option<Arc<CachedBlock>> {
        locked(&self.blocks).get(&cidr).cloned()
    }

    /// Remembers a block seen at `revision` (an older sighting never replaces a newer one).
    pub fn note_block(
        &self,
        cidr: IpNet,
        revision: i64,
        block: AllocationBlock,
    ) -> Arc<CachedBlock> {
        let fresh = Arc::new(CachedBlock { revision, block });
        let mut m = locked(&self.blocks);
        if let Some(known) = m.get(&cidr)
            && known.revision > revision
        {
            return fresh;
        }
        if m.len() >= MAX_CACHED_BLOCKS && !m.contains_key(&cidr) {
            m.clear();
        }
        m.insert(cidr, fresh.clone());
        fresh
    }

    pub fn note_kv(&self, cidr: IpNet, kv: &KvPair) -> Result<Arc<CachedBlock>> {
        Ok(self.note_block(cidr, kv.revision, decode_block(kv)?))
    }

    pub fn forget_block(&self, cidr: IpNet) {
        locked(&self.blocks).remove(&cidr);
    }

    /// Reads a block now (and remembers it). `None`: it does not exist.
    pub async fn read(&self, cidr: IpNet) -> Result<Option<Arc<CachedBlock>>> {
        match self.ds.get(&Key::Block { cidr }).await {
            Ok(kv) => Ok(Some(self.note_kv(cidr, &kv)?)),
            Err(DatastoreError::NotFound { .. }) => {
                self.forget_block(cidr);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The remembered block, else read now.
    pub async fn cached_or_read(&self, cidr: IpNet) -> Result<Option<Arc<CachedBlock>>> {
        match self.cached(cidr) {
            Some(c) => Ok(Some(c)),
            None => self.read(cidr).await,
        }
    }

    /// The handle as last seen, if remembered (`None` also when unknown: only a read says
    /// that a handle does not exist).
    pub fn handle_hint(&self, id: &str) -> Option<(i64, Handle)> {
        locked(&self.handles).get(id).cloned()
    }

    fn note_handle(&self, id: &str, state: HandleState) {
        let mut m = locked(&self.handles);
        match state {
            Some(s) => {
                if m.len() >= MAX_CACHED_HANDLES && !m.contains_key(id) {
                    m.clear();
                }
                m.insert(id.to_string(), s);
            }
            None => {
                m.remove(id);
            }
        }
    }

    /// Reads a handle now (and remembers it).
    pub async fn read_handle(&self, id: &str) -> Result<HandleState> {
        let key = Key::Handle { id: id.to_string() };
        let state = match self.ds.get(&key).await {
            Ok(kv) => Some((kv.revision, decode_handle(&kv)?)),
            Err(DatastoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        self.note_handle(id, state.clone());
        Ok(state)
    }

    /// The remembered handle, else read now.
    pub async fn handle_or_read(&self, id: &str) -> Result<HandleState> {
        match self.handle_hint(id) {
            Some(s) => Ok(Some(s)),
            None => self.read_handle(id).await,
        }
    }

    // ---- writing ----

    /// Writes a block change and handle changes in one transaction, each compared on the
    /// revision it was seen at. Remembers what was written, or what was found instead.
    pub async fn commit(
        &self,
        block: Option<BlockWrite>,
        handles: Vec<HandleWrite>,
    ) -> Result<Commit> {
        // A handle that was absent and stays absent needs no write (and is reported absent).
        let all = handles;
        let handles: Vec<HandleWrite> = all
            .iter()
            .filter(|h| h.base.is_some() || h.new.is_some())
            .cloned()
            .collect();
        let mut writes = Vec::with_capacity(handles.len() + 1);
        if let Some(b) = &block {
            writes.push(TxnWrite {
                key: Key::Block { cidr: b.cidr },
                expect: Expect::Revision(b.base),
                value: b.new.as_ref().map(encode),
            });
        }
        for h in &handles {
            writes.push(TxnWrite {
                key: Key::Handle { id: h.id.clone() },
                expect: h.base.map_or(Expect::Absent, Expect::Revision),
                value: h.new.as_ref().map(encode),
            });
        }
        if writes.is_empty() {
            return Ok(Commit::Done { revision: 0 });
        }
        let outcome = match self.ds.txn(&writes).await {
            Ok(o) => o,
            Err(e) => {
                // It may or may not have been applied: remember nothing.
                if let Some(b) = &block {
                    self.forget_block(b.cidr);
                }
                for h in &handles {
                    self.note_handle(&h.id, None);
                }
                return Err(e.into());
            }
        };
        match outcome {
            TxnOutcome::Committed { revision } => {
                if block.is_some() {
                    self.stats.block_writes.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(b) = block {
                    match b.new {
                        Some(new) => {
                            self.note_block(b.cidr, revision, new);
                        }
                        None => self.forget_block(b.cidr),
                    }
                }
                for h in handles {
                    self.note_handle(&h.id, h.new.map(|n| (revision, n)));
                }
                Ok(Commit::Done { revision })
            }
            TxnOutcome::Failed { current } => {
                self.stats.cas_conflicts.fetch_add(1, Ordering::Relaxed);
                let mut current = current.into_iter();
                let block = match &block {
                    Some(b) => match current.next().flatten() {
                        Some(kv) => Some(self.note_kv(b.cidr, &kv)?),
                        None => {
                            self.forget_block(b.cidr);
                            None
                        }
                    },
                    None => None,
                };
                let mut found = HashMap::with_capacity(handles.len());
                for (h, kv) in handles.iter().zip(current) {
                    let state = match kv {
                        Some(kv) => Some((kv.revision, decode_handle(&kv)?)),
                        None => None,
                    };
                    self.note_handle(&h.id, state.clone());
                    found.insert(h.id.as_str(), state);
                }
                let states = all
                    .iter()
                    .map(|h| found.get(h.id.as_str()).cloned().flatten())
                    .collect();
                Ok(Commit::Stale {
                    block,
                    handles: states,
                })
            }
        }
    }

    /// Runs one request's change to a block, combined with whatever else this process is
    /// changing in it: assigns up to `num` addresses (fewer or none when the block fills up,
    /// is gone, or no longer belongs to the op's owner), or frees a handle's addresses.
    ///
    /// A caller that goes away while its request waits takes it back; one that goes away
    /// while its own request is being written may or may not have had it applied, as with
    /// any write. A batch that carries other callers' requests always runs to the end.
    pub async fn run(self: &Arc<Self>, cidr: IpNet, op: BlockOp) -> Result<OpOutcome> {
        let slot = locked(&self.slots).entry(cidr).or_default().clone();
        let out = self.run_queued(cidr, &slot, op).await;
        self.release_slot(cidr, slot);
        out
    }

    async fn run_queued(
        self: &Arc<Self>,
        cidr: IpNet,
        slot: &Slot,
        op: BlockOp,
    ) -> Result<OpOutcome> {
        let id = slot.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, mut result) = oneshot::channel();
        locked(&slot.queue).push(Pending { id, op, done });
        let _withdraw = Withdraw { slot, id };
        let answered = |result: &mut oneshot::Receiver<Result<OpOutcome>>| match result.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            // The batch carrying the request ended without answering (it panicked).
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(IpamError::Internal {
                reason: format!("the combined write to block {cidr} ended without an answer"),
            })),
        };
        loop {
            if let Some(r) = answered(&mut result) {
                return r;
            }
            let turn = slot.turn.clone().lock_owned().await;
            if let Some(r) = answered(&mut result) {
                return r;
            }
            let batch: Vec<Pending> = {
                let mut q = locked(&slot.queue);
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            match batch.len() {
                0 => {}
                // Nobody else's request: no batch runs while the turn is held, and ours is
                // not answered, so it is the one in the queue.
                1 => self.run_batch(cidr, batch).await,
                _ => {
                    // Other callers' requests ride along: run to the end whatever happens to
                    // this caller, holding the turn until the transaction is done.
                    let me = self.clone();
                    let run = tokio::spawn(async move {
                        me.run_batch(cidr, batch).await;
                        drop(turn);
                    });
                    if run.await.is_err() {
                        tracing::error!(block = %cidr, "a combined block write panicked");
                    }
                }
            }
        }
    }

    /// [`Blocks::run`] for an assignment: the addresses taken.
    pub async fn assign(self: &Arc<Self>, cidr: IpNet, op: AssignOp) -> Result<Vec<IpNet>> {
        Ok(self.run(cidr, BlockOp::Assign(op)).await?.assigned)
    }

    fn release_slot(&self, cidr: IpNet, slot: Arc<Slot>) {
        let mut slots = locked(&self.slots);
        drop(slot);
        // Only the map's reference is left: nobody is queued or writing.
        if let Some(s) = slots.get(&cidr)
            && Arc::strong_count(s) == 1
            && locked(&s.queue).is_empty()
        {
            slots.remove(&cidr);
        }
    }

    async fn run_batch(&self, cidr: IpNet, batch: Vec<Pending>) {
        let ops: Vec<&BlockOp> = batch.iter().map(|p| &p.op).collect();
        match self.write_batch(cidr, &ops).await {
            Ok(results) => {
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.done.send(Ok(r));
                }
            }
            Err(e) if batch.len() > 1 && !e.is_transient() => {
                // One request's data may be at fault (a corrupt handle record): go one by
                // one so that only its own request fails.
                for p in batch {
                    let r = self
                        .write_batch(cidr, &[&p.op])
                        .await
                        .map(|mut v| v.pop().unwrap_or_default());
                    let _ = p.done.send(r);
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.done.send(Err(e.clone()));
                }
            }
        }
    }

    async fn write_batch(&self, cidr: IpNet, ops: &[&BlockOp]) -> Result<Vec<OpOutcome>> {
        let mut current = self.cached_or_read(cidr).await?;
        // Handles start as the caller saw them, else as remembered, else as absent (a new
        // pod's handle); a wrong guess fails the transaction, which brings back the truth.
        let mut states: BTreeMap<String, HandleState> = BTreeMap::new();
        for op in ops {
            match op {
                // What a releasing caller saw is what its transaction must compare against.
                BlockOp::ReleaseHandle { handle, seen } => {
                    states.insert(handle.clone(), seen.clone());
                }
                BlockOp::Assign(a) => {
                    if let Some(h) = &a.handle {
                        states
                            .entry(h.clone())
                            .or_insert_with(|| self.handle_hint(h));
                    }
                }
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some(cur) = current.clone() else {
                return Ok(vec![OpOutcome::default(); ops.len()]);
            };
            let mut b = cur.block.clone();
            let mut results: Vec<OpOutcome> = Vec::with_capacity(ops.len());
            let mut touched: BTreeMap<&str, ()> = BTreeMap::new();
            let mut released_any = false;
            for op in ops {
                let mut r = OpOutcome::default();
                match op {
                    BlockOp::Assign(a) => {
                        let owned = a
                            .owner
                            .as_ref()
                            .is_none_or(|(kind, owner)| b.is_owned_by(*kind, owner));
                        if owned {
                            let reserved = |ip| a.reservations.contains(ip);
                            r.assigned = b.assign(a.num, a.handle.as_deref(), &a.attrs, &reserved);
                        }
                    }
                    BlockOp::ReleaseHandle { handle, .. } => {
                        r.released = b.release_handle(handle, None);
                        released_any |= !r.released.is_empty();
                    }
                }
                if (!r.assigned.is_empty() || !r.released.is_empty())
                    && let Some(h) = op.handle()
                {
                    touched.insert(h, ());
                }
                results.push(r);
            }
            if results
                .iter()
                .all(|r| r.assigned.is_empty() && r.released.is_empty())
            {
                return Ok(results);
            }
            // Each touched handle counts what it holds in this block after the batch.
            let block_name = cidr.to_string();
            let mut handle_writes = Vec::with_capacity(touched.len());
            for id in touched.keys() {
                let held = b.ips_for_handle(id).len();
                let state = states.get(*id).cloned().flatten();
                let mut h = state.as_ref().map(|(_, h)| h.clone()).unwrap_or_default();
                if held == 0 {
                    h.block.remove(&block_name);
                } else {
                    h.block.insert(block_name.clone(), held);
                }
                handle_writes.push(HandleWrite {
                    id: id.to_string(),
                    base: state.map(|(r, _)| r),
                    new: (!h.block.is_empty()).then_some(h),
                });
            }
            let new_handles: BTreeMap<String, Option<Handle>> = handle_writes
                .iter()
                .map(|w| (w.id.clone(), w.new.clone()))
                .collect();
            // Absent before and after is not written, so nothing checked it: do not report it.
            let checked: BTreeMap<String, bool> = handle_writes
                .iter()
                .map(|w| (w.id.clone(), w.base.is_some() || w.new.is_some()))
                .collect();
            // An emptied block no host has affinity for goes away, as in Calico.
            let new_block = if released_any && b.is_empty() && b.owner().is_none() {
                None
            } else {
                b.sequence_number += 1;
                Some(b)
            };
            let write = BlockWrite {
                cidr,
                base: cur.revision,
                new: new_block,
            };
            match self.commit(Some(write), handle_writes).await? {
                Commit::Done { revision } => {
                    for (op, r) in ops.iter().zip(results.iter_mut()) {
                        if let Some(h) = op.handle()
                            && let Some(new) = new_handles.get(h)
                            && checked.get(h) == Some(&true)
                        {
                            r.handle = Some(new.clone().map(|n| (revision, n)));
                        }
                    }
                    return Ok(results);
                }
                Commit::Stale { block, handles } => {
                    current = block;
                    for (id, s) in new_handles.keys().zip(handles) {
                        states.insert(id.clone(), s);
                    }
                }
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "writing a block",
            attempts: MAX_ATTEMPTS,
        })
    }
}
