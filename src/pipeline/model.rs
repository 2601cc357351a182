//! Exhaustive model check of the fence protocol that keeps one active RR per fingerprint.
//! It lives beside `writer`, which drives the protocol: the writer's steps (`writer::Step`)
//! and the claim's (`k8s::Records`) carry the names of this model's program counter `Pc`.
//! The protocol: docs/protocol.md.
//!
//! One writer step is one API call. `GetRecord` reads the Lease `sg-<fp>` (on a writer's
//! first look the process cache may serve any version it has had); `ListRrs` lists the
//! fingerprint's RRs when there is no record; `GetRr` reads the RR the view names (any
//! state the name has had); `PatchStatus` and `PatchStatusAfterCreate` are the status
//! patches carrying the RR's resourceVersion; `ClaimRecord` creates the Lease or updates
//! it carrying its resourceVersion; `CreateRr` creates the claimed RR, and `GiveUp` is the
//! fit check failing just before it; `Release` clears the holder of a claim that produced
//! no RR. The environment steps are `LeaseExpire` (the server's clock passes the lease),
//! `Complete` (kubernaut ends a remediation), `Backoff` (it ends one with a
//! `nextAllowedExecution` ahead, or for manual review: terminal, yet it holds its problem),
//! `BackoffPasses` (the server's clock passes it, with no write), `Delete` (retention or an
//! operator), `Sweep` (the record sweep) and `LoseRecord` (anyone deleting the record).
//! "Active" is `rrs::holds`.
//!
//! Histories are kept as sets, since a stale read may return any earlier state, and a reader
//! keeps only whether what it read is still current: that is all a resourceVersion
//! precondition can tell, so states that differ only in version numbers are one state.

use std::collections::BTreeSet;
use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model, Path, Property};

#[derive(Clone, Copy, Debug)]
struct Config {
    locking: bool,
    fencing: bool,
    /// The protocol this replaces: no generation in the record, and the next name is one more
    /// than the highest generation among the RRs listed, terminal ones included.
    old_protocol: bool,
    /// Delete(n) is disabled while a writer has claimed n and has not sent its create yet.
    assume_no_delete_while_claimed: bool,
    /// A GetRr answering `terminal` is never stale. The service reads every RR consistently
    /// (`RemediationRequests::get`); the model lets active and missing answers be stale all the same.
    consistent_terminal: bool,
    /// The record sweep runs, under its `min_age` assumption: no writer pauses that long
    /// between its claim and its create.
    sweep: bool,
    /// kubernaut's orchestrator may end an RR with a backoff that holds its problem.
    backoff: bool,
    /// The rule this replaces: a writer reads a terminal phase as released, whatever
    /// `nextAllowedExecution` and the outcome say.
    ignore_backoff: bool,
    /// A writer that finds no record lists the fingerprint's RRs (`ListRrs`) and goes on
    /// from the one that holds the problem, or the highest generation; off is the rule this
    /// replaces (no record: generation 1).
    discover: bool,
    /// The sweep is two calls, as it is in the service (`SweepRead`: the LIST that judges a
    /// record old, free and naming a missing RR; `SweepDelete`: the delete carrying the
    /// version read, which fails if the record was written since).
    split_sweep: bool,
    /// The rule this replaces: a claim identical to the record (locking off, the same
    /// generation) writes nothing, so the sweep's version stays current.
    noop_claims: bool,
    /// Anyone may delete the record (`LoseRecord`: a person, a restore, another release),
    /// except while a writer has claimed and not yet sent its create, or acts on a view
    /// that saw no record (between its `ListRrs` and the create of the record).
    lose_records: bool,
}

/// PROTOCOL is the protocol as the service implements it.
const PROTOCOL: Config = Config {
    locking: true,
    fencing: true,
    old_protocol: false,
    assume_no_delete_while_claimed: true,
    consistent_terminal: true,
    sweep: false,
    backoff: false,
    ignore_backoff: false,
    discover: true,
    lose_records: false,
    split_sweep: false,
    noop_claims: false,
};

/// Fence is the model. Each writer processes one signal (k = 1) in at most `max_rounds`
/// rounds; generations, Completes and Deletes are bounded so that the state space is finite.
struct Fence {
    cfg: Config,
    writers: u8,
    max_generation: u8,
    max_rounds: u8,
    max_completes: u8,
    max_deletes: u8,
}

/// Version is a version of the record R; generation 0 and name 0 mean none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Version {
    present: bool,
    generation: u8,
    name: u8,
    holder: Option<u8>,
}

/// Rr is the state of an RR; Active, Terminal and Backoff carry the occurrence count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Rr {
    #[default]
    Never,
    Active(u8),
    Terminal(u8),
    Deleted,
    /// Terminal with a backoff; true once the server's clock has passed it.
    Backoff(u8, bool),
}

/// Name is one RR name (rr-<fp>-<n>, or a fresh name with fencing off): its current state,
/// how many times it was created, and the kinds of state it had before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Name {
    now: Rr,
    incarnation: u8,
    past: u8,
}

// The kinds of RR state a writer tells apart; never-created and deleted look alike (404).
const MISSING: u8 = 1;
const ACTIVE: u8 = 2;
const TERMINAL: u8 = 4;

fn kind(r: Rr) -> u8 {
    match r {
        Rr::Never | Rr::Deleted => MISSING,
        Rr::Active(_) | Rr::Backoff(_, false) => ACTIVE,
        Rr::Terminal(_) | Rr::Backoff(_, true) => TERMINAL,
    }
}

fn count(r: Rr) -> u8 {
    match r {
        Rr::Active(count) | Rr::Terminal(count) | Rr::Backoff(count, _) => count,
        Rr::Never | Rr::Deleted => 0,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Pc {
    #[default]
    GetRecord,
    ListRrs,
    GetRr,
    PatchStatus,
    ClaimRecord,
    CreateRr,
    PatchStatusAfterCreate,
    Release,
    Done,
}

/// Read is what a read was served: the current state, or an earlier one (for the record, an
/// index into its past versions; for an RR, the kind of an earlier state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Read {
    Fresh,
    Stale(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    Call(u8, Pc, Read),
    GiveUp(u8),
    LeaseExpire,
    Complete(u8),
    Backoff(u8),
    BackoffPasses(u8),
    Delete(u8),
    Sweep,
    SweepRead,
    SweepDelete,
    LoseRecord,
}

// Ghost flags of a writer's current round, read only by the `sometimes` properties.
const COLLIDED: u8 = 1;
const TOOK_OVER: u8 = 2;
const CREATED: u8 = 4;
const CLAIMED_SETTLED: u8 = 8;
const COUNTED_OWN_ENDED: u8 = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Writer {
    pc: Pc,
    view: Version,
    /// The view is still R's current version: an update carrying it would succeed.
    fresh_view: bool,
    next: u8,
    /// The RR the writer reads, patches or creates.
    name: u8,
    /// The RR state read is still current: a status patch carrying it would succeed.
    fresh_read: bool,
    claimed: bool,
    /// This round created the RR it patches: it is counted on whatever its phase.
    own: bool,
    /// The RR the view names was read existing (terminal): its claim is over, so the
    /// view's holder does not block.
    settled: bool,
    /// No write to R since our claim: the release would succeed.
    fresh_claim: bool,
    /// The (name, incarnation) this writer's signal was acknowledged on.
    acked: Option<(u8, u8)>,
    rounds: u8,
    flags: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct State {
    record: Version,
    expired: bool,
    /// R's earlier versions, a sorted set: what a stale cache may still hold.
    past: Vec<Version>,
    rrs: Vec<Name>,
    writers: Vec<Writer>,
    fresh_names: u8,
    completes: u8,
    deletes: u8,
    swept: bool,
    /// What a split sweep read: Some(still current).
    sweep_read: Option<bool>,
    lost: bool,
    /// A lease has expired at some point (a ghost, read only by `EXCLUSIVE`).
    ever_expired: bool,
    /// A signal was counted on an RR in backoff (a ghost, read by a `sometimes`).
    counted_in_backoff: bool,
}

impl State {
    fn write_record(&mut self, v: Version) {
        if let Err(i) = self.past.binary_search(&self.record) {
            self.past.insert(i, self.record);
        }
        self.record = v;
        self.expired = false; // every write renews the lease on the server's clock
        if let Some(current) = &mut self.sweep_read {
            *current = false;
        }
        for w in &mut self.writers {
            (w.fresh_view, w.fresh_claim) = (false, false);
        }
    }

    fn write_rr(&mut self, n: u8, now: Rr) {
        let rr = &mut self.rrs[n as usize];
        if kind(rr.now) == MISSING && kind(now) != MISSING {
            rr.incarnation += 1;
        }
        rr.past |= kind(rr.now);
        rr.now = now;
        for w in self.writers.iter_mut().filter(|w| w.name == n) {
            w.fresh_read = false;
        }
    }
}

impl Fence {
    fn new(cfg: Config, writers: u8) -> Self {
        Fence {
            cfg,
            writers,
            max_generation: 3,
            max_rounds: 2,
            max_completes: 2,
            max_deletes: 2,
        }
    }

    /// blocked: with locking on, a holder in the view whose lease has not expired on the
    /// server's clock, and whose RR the writer has not read existing, makes the writer wait,
    /// re-reading R (and then the RR it names).
    fn blocked(&self, s: &State, w: &Writer) -> bool {
        self.cfg.locking && w.view.holder.is_some() && !(w.fresh_view && s.expired) && !w.settled
    }

    /// step2 goes on from a new view: list the RRs if there is no record (`discover`), read
    /// the view's RR, or claim the next generation if it names none.
    fn step2(&self, w: &mut Writer) {
        if self.cfg.discover && !self.cfg.old_protocol && !w.view.present && w.view.name == 0 {
            w.pc = Pc::ListRrs;
        } else if self.cfg.old_protocol || w.view.name != 0 {
            (w.name, w.pc) = (w.view.name, Pc::GetRr);
        } else {
            (w.next, w.pc) = (w.view.generation + 1, Pc::ClaimRecord);
        }
    }

    /// decide is step 2 finding the view's RR terminal (next = g + 1) or missing (reuse g,
    /// to collide with a writer that claimed it and may still create it).
    fn decide(&self, w: &mut Writer, terminal: bool) {
        (w.next, w.pc) = (w.view.generation + u8::from(terminal), Pc::ClaimRecord);
        w.settled = terminal;
    }

    /// finish ends a round: release a claim that produced no RR (the old protocol releases
    /// every claim), then stop, or start over with a fresh GET.
    fn finish(&self, w: &mut Writer) {
        let produced = w.acked.is_some() && !self.cfg.old_protocol;
        if self.cfg.locking && w.claimed && !produced && w.pc != Pc::Release {
            w.pc = Pc::Release;
            return;
        }
        (w.claimed, w.fresh_claim, w.own) = (false, false, false);
        if w.acked.is_some() || w.rounds + 1 >= self.max_rounds {
            w.pc = Pc::Done; // without an acknowledgement this is a 503
        } else {
            (w.rounds, w.flags, w.pc) = (w.rounds + 1, 0, Pc::GetRecord);
        }
    }

    fn call(&self, s: &mut State, id: u8, call: Pc, read: Read) {
        let mut w = s.writers[id as usize].clone();
        self.step(s, &mut w, id, call, read);
        canon(&mut w);
        s.writers[id as usize] = w;
    }

    fn step(&self, s: &mut State, w: &mut Writer, id: u8, call: Pc, read: Read) {
        let now = s.rrs[w.name as usize].now;
        match call {
            Pc::GetRecord => self.get_record(s, w, read),
            Pc::ListRrs => self.list_rrs(s, w),
            Pc::GetRr if self.cfg.old_protocol && !w.claimed => self.list_old(s, w),
            Pc::GetRr => self.get_rr(w, read, now),
            Pc::PatchStatusAfterCreate if w.own => self.patch_own(s, w, now),
            Pc::PatchStatus | Pc::PatchStatusAfterCreate => self.patch_status(s, w, now),
            Pc::ClaimRecord => self.claim_record(s, w, id),
            Pc::CreateRr => self.create_rr(s, w, now),
            Pc::Release => self.release(s, w),
            Pc::Done => unreachable!("a done writer makes no calls"),
        }
    }

    fn get_record(&self, s: &State, w: &mut Writer, read: Read) {
        w.view = match read {
            Read::Fresh => s.record,
            Read::Stale(i) => s.past[i as usize],
        };
        w.fresh_view = read == Read::Fresh;
        w.settled = false;
        self.step2(w);
    }

    fn list_rrs(&self, s: &State, w: &mut Writer) {
        // A consistent LIST by field selector: every RR of the fingerprint as it is.
        let names = 1..s.rrs.len() as u8;
        let kind_of = |n: &u8| kind(s.rrs[*n as usize].now);
        let holding = names.clone().find(|n| kind_of(n) == ACTIVE);
        let highest = names.filter(|n| kind_of(n) != MISSING).max().unwrap_or(0);
        if w.view.present {
            // The RR the record names is missing: count on the RR that holds the
            // problem, go past a later generation, or re-claim the same one.
            match holding {
                Some(n) => (w.name, w.pc) = (n, Pc::GetRr),
                None if highest > w.view.generation => {
                    (w.next, w.settled, w.pc) = (highest + 1, false, Pc::ClaimRecord);
                }
                None => self.decide(w, false),
            }
            return;
        }
        w.view = Version {
            present: false,
            generation: highest,
            name: holding.unwrap_or(highest),
            holder: None,
        };
        w.fresh_view = !s.record.present;
        if w.view.name != 0 {
            (w.name, w.pc) = (w.view.name, Pc::GetRr);
        } else {
            (w.next, w.pc) = (1, Pc::ClaimRecord);
        }
    }

    /// list_old is the old protocol's GetRr: a LIST of the fingerprint's RRs.
    fn list_old(&self, s: &State, w: &mut Writer) {
        // The LIST is served fresh: a stale one would only weaken the old protocol.
        let names = 1..s.rrs.len() as u8;
        let kind_of = |n: &u8| kind(s.rrs[*n as usize].now);
        if let Some(n) = names.clone().find(|n| kind_of(n) == ACTIVE) {
            (w.name, w.fresh_read, w.pc) = (n, true, Pc::PatchStatus);
        } else {
            let top = names.filter(|n| kind_of(n) != MISSING).max();
            (w.next, w.pc) = (top.unwrap_or(0) + 1, Pc::ClaimRecord);
        }
    }

    fn get_rr(&self, w: &mut Writer, read: Read, now: Rr) {
        w.fresh_read = read == Read::Fresh;
        let got = match read {
            Read::Fresh if self.cfg.ignore_backoff && matches!(now, Rr::Backoff(..)) => TERMINAL,
            Read::Fresh => kind(now),
            Read::Stale(k) => k,
        };
        match got {
            MISSING if w.claimed => self.finish(w),
            _ if w.own => w.pc = Pc::PatchStatusAfterCreate,
            ACTIVE => w.pc = Pc::PatchStatus,
            _ if w.claimed => self.finish(w),
            MISSING if self.cfg.discover && !self.cfg.old_protocol => w.pc = Pc::ListRrs,
            k => self.decide(w, k == TERMINAL),
        }
    }

    /// patch_own is PatchStatusAfterCreate on the RR this round created. The batch's own RR
    /// is counted on even if the orchestrator ended it at once: the signals that opened it
    /// are its occurrences, and no second RR is opened.
    fn patch_own(&self, s: &mut State, w: &mut Writer, now: Rr) {
        match now {
            Rr::Never | Rr::Deleted => self.finish(w),
            Rr::Active(count) | Rr::Terminal(count) | Rr::Backoff(count, _) if w.fresh_read => {
                let counted = match now {
                    Rr::Active(_) => Rr::Active(count + 1),
                    Rr::Backoff(_, passed) => Rr::Backoff(count + 1, passed),
                    _ => Rr::Terminal(count + 1),
                };
                if kind(now) == TERMINAL {
                    w.flags |= COUNTED_OWN_ENDED;
                }
                s.write_rr(w.name, counted);
                w.acked = Some((w.name, s.rrs[w.name as usize].incarnation));
                self.finish(w);
            }
            _ => w.pc = Pc::GetRr, // 409: GET it again
        }
    }

    fn patch_status(&self, s: &mut State, w: &mut Writer, now: Rr) {
        match now {
            Rr::Never | Rr::Deleted if w.claimed => self.finish(w),
            Rr::Never | Rr::Deleted if self.cfg.old_protocol => w.pc = Pc::GetRr,
            Rr::Never | Rr::Deleted => self.decide(w, false), // 404: treat as missing
            Rr::Active(count) if w.fresh_read => {
                s.write_rr(w.name, Rr::Active(count + 1));
                w.acked = Some((w.name, s.rrs[w.name as usize].incarnation));
                self.finish(w);
            }
            // Read while it held; the clock may have passed since, which writes nothing.
            Rr::Backoff(count, passed) if w.fresh_read => {
                s.write_rr(w.name, Rr::Backoff(count + 1, passed));
                w.acked = Some((w.name, s.rrs[w.name as usize].incarnation));
                s.counted_in_backoff = true;
                self.finish(w);
            }
            _ => w.pc = Pc::GetRr, // 409: GET it again
        }
    }

    fn claim_record(&self, s: &mut State, w: &mut Writer, id: u8) {
        // An update carrying the view's rv, or a create if the view had no record.
        let ok = if w.view.present {
            w.fresh_view
        } else {
            !s.record.present
        };
        if !ok {
            (w.view, w.fresh_view, w.settled) = (s.record, true, false); // 409: GET R
            self.step2(w);
            return;
        }
        w.name = if self.cfg.fencing || self.cfg.old_protocol {
            w.next
        } else {
            s.fresh_names += 1;
            s.fresh_names
        };
        if s.record.holder.is_some() && w.settled && !s.expired {
            w.flags |= CLAIMED_SETTLED;
        } else if s.record.holder.is_some() && !w.settled {
            w.flags |= TOOK_OVER;
        }
        let fenced = !self.cfg.old_protocol;
        let claimed = Version {
            present: true,
            generation: if fenced { w.next } else { 0 },
            name: if fenced { w.name } else { 0 },
            holder: self.cfg.locking.then_some(id),
        };
        // The old rule: a merge patch equal to the record is no write at all.
        if !(self.cfg.noop_claims && claimed == s.record) {
            s.write_record(claimed);
        }
        (w.claimed, w.fresh_claim, w.settled, w.pc) = (true, true, false, Pc::CreateRr);
    }

    fn create_rr(&self, s: &mut State, w: &mut Writer, now: Rr) {
        if kind(now) != MISSING {
            w.flags |= COLLIDED; // 409 AlreadyExists: GET the winner's RR
            w.pc = Pc::GetRr;
            return;
        }
        s.write_rr(w.name, Rr::Active(0));
        (w.fresh_read, w.pc) = (true, Pc::PatchStatusAfterCreate);
        w.own = !self.cfg.old_protocol;
        w.flags |= CREATED;
    }

    fn release(&self, s: &mut State, w: &mut Writer) {
        if w.fresh_claim {
            let free = Version {
                holder: None,
                ..s.record
            };
            s.write_record(free);
        }
        self.finish(w); // else 409: taken over after our lease expired; leave it
    }
}

/// canon clears what a writer no longer needs, so that equal futures are one state.
fn canon(w: &mut Writer) {
    let (view, next, name, read) = match w.pc {
        Pc::GetRr => (!w.claimed, false, true, false),
        Pc::PatchStatus => (!w.claimed, false, true, true),
        Pc::ClaimRecord => (true, true, false, false),
        Pc::ListRrs => (true, false, false, false),
        Pc::CreateRr => (false, false, true, false),
        Pc::PatchStatusAfterCreate => (false, false, true, true),
        _ => (false, false, false, false),
    };
    if !view {
        (w.view, w.fresh_view) = (Version::default(), false);
    }
    w.next *= u8::from(next);
    w.name *= u8::from(name);
    w.fresh_read &= read;
    w.settled &= w.pc == Pc::ClaimRecord;
    w.own &= matches!(w.pc, Pc::GetRr | Pc::PatchStatusAfterCreate);
    w.rounds *= u8::from(w.pc != Pc::Done);
}

fn one_active(s: &State) -> bool {
    s.rrs.iter().filter(|r| kind(r.now) == ACTIVE).count() <= 1
}

fn exclusive(s: &State) -> bool {
    let missing = |w: &&Writer| kind(s.rrs[w.name as usize].now) == MISSING;
    let creating = s
        .writers
        .iter()
        .filter(|w| w.pc == Pc::CreateRr)
        .filter(missing)
        .count();
    s.ever_expired || creating <= 1
}

/// all_counted: an existing RR counts at least the signals acknowledged on its incarnation.
fn all_counted(s: &State) -> bool {
    s.rrs.iter().enumerate().all(|(n, r)| {
        let mine = Some((n as u8, r.incarnation));
        let acks = s.writers.iter().filter(|w| w.acked == mine).count() as u8;
        kind(r.now) == MISSING || count(r.now) >= acks
    })
}

const ONE_ACTIVE: &str = "at most one active RR";
/// EXCLUSIVE is what the lock is for: until a lease expires, one writer at a time is about
/// to create an RR that does not exist, even though a hold whose RR exists ends without a
/// release. (A writer that claimed on a stale "missing" and will collide does not count.)
/// Without locking it fails, as `fenced_without_locking_holds` asserts.
const EXCLUSIVE: &str = "until a lease expires, at most one writer is about to create a missing RR";
const COUNTED: &str = "every acknowledged signal is counted";
const ACK_AFTER_COLLISION: &str = "a writer acknowledges after an AlreadyExists collision";
const SECOND_GENERATION: &str = "a second generation RR is created after a Complete";
const TAKEOVER_CREATES: &str = "a takeover after LeaseExpire leads to a create";
const SETTLED_CREATES: &str =
    "a claim over an unexpired holder whose RR exists (no release) leads to a create";
const SWEPT_AND_CLAIMED: &str = "a swept record is claimed again";
const OWN_ENDED_COUNTED: &str =
    "a batch whose new RR the orchestrator ended at once is counted on it";
const COUNTED_IN_BACKOFF: &str = "a signal is counted on an RR held by a backoff";
const NEW_AFTER_BACKOFF: &str = "a new generation is created once the clock passes a backoff";
const SOMETIMES: [&str; 5] = [
    ACK_AFTER_COLLISION,
    SECOND_GENERATION,
    TAKEOVER_CREATES,
    SETTLED_CREATES,
    OWN_ENDED_COUNTED,
];

impl Fence {
    /// writer_actions are the calls writer `id` may make next.
    fn writer_actions(&self, s: &State, id: u8, w: &Writer, out: &mut Vec<Action>) {
        let call = |pc, read| Action::Call(id, pc, read);
        match w.pc {
            Pc::GetRecord => {
                out.push(call(Pc::GetRecord, Read::Fresh));
                if w.rounds == 0 {
                    let cached = (0..s.past.len() as u8).map(Read::Stale);
                    out.extend(cached.map(|r| call(Pc::GetRecord, r)));
                }
            }
            Pc::GetRr if self.cfg.old_protocol && !w.claimed => {
                out.push(call(Pc::GetRr, Read::Fresh));
            }
            Pc::GetRr => {
                out.push(call(Pc::GetRr, Read::Fresh));
                let past = s.rrs[w.name as usize].past;
                for k in [MISSING, ACTIVE, TERMINAL] {
                    // Under a claim a terminal answer only makes the writer start over.
                    let stale_ok = k != TERMINAL || !self.cfg.consistent_terminal || w.claimed;
                    if past & k != 0 && stale_ok {
                        out.push(call(Pc::GetRr, Read::Stale(k)));
                    }
                }
            }
            Pc::ClaimRecord if self.blocked(s, w) => {
                if !w.fresh_view {
                    out.push(call(Pc::GetRecord, Read::Fresh));
                }
            }
            Pc::Done => {}
            pc => {
                out.push(call(pc, Read::Fresh));
                if pc == Pc::CreateRr && self.cfg.locking {
                    out.push(Action::GiveUp(id));
                }
            }
        }
    }
}

impl Model for Fence {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            rrs: vec![Name::default(); self.max_generation as usize + 1],
            writers: vec![Writer::default(); self.writers as usize],
            ..State::default()
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for (id, w) in s.writers.iter().enumerate() {
            self.writer_actions(s, id as u8, w, out);
        }
        if s.record.holder.is_some() && !s.expired {
            out.push(Action::LeaseExpire);
        }
        for n in 1..s.rrs.len() as u8 {
            let now = s.rrs[n as usize].now;
            if s.completes < self.max_completes && kind(now) == ACTIVE {
                out.push(Action::Complete(n));
            }
            if self.cfg.backoff && s.completes < self.max_completes && matches!(now, Rr::Active(_))
            {
                out.push(Action::Backoff(n));
            }
            if matches!(now, Rr::Backoff(_, false)) {
                out.push(Action::BackoffPasses(n));
            }
            let claimed = |w: &Writer| w.pc == Pc::CreateRr && w.name == n;
            let excluded = self.cfg.assume_no_delete_while_claimed && s.writers.iter().any(claimed);
            if s.deletes < self.max_deletes && kind(now) != MISSING && !excluded {
                out.push(Action::Delete(n));
            }
        }
        // The sweep deletes a free record whose RR does not exist and that nobody wrote for
        // min_age, which outlasts any writer paused between its claim and its create.
        let free = s.record.holder.is_none() || s.expired;
        let unnamed = kind(s.rrs[s.record.name as usize].now) == MISSING;
        let pending = s.writers.iter().any(|w| w.pc == Pc::CreateRr);
        let judged = !s.swept && s.record.present && free && unnamed && !pending;
        if self.cfg.sweep && !self.cfg.split_sweep && judged {
            out.push(Action::Sweep);
        }
        if self.cfg.sweep && self.cfg.split_sweep {
            if judged && s.sweep_read.is_none() {
                out.push(Action::SweepRead);
            }
            if s.sweep_read == Some(true) {
                out.push(Action::SweepDelete);
            }
        }
        // The assumption: a record is not lost while a writer acts on a view that saw no
        // record (from its LIST up to the create of the record), nor between a claim and its
        // create; each is a window of one or two API calls.
        let recovering = s.writers.iter().any(|w| {
            !w.claimed
                && !w.view.present
                && matches!(w.pc, Pc::GetRr | Pc::PatchStatus | Pc::ClaimRecord)
        });
        if self.cfg.lose_records && !s.lost && s.record.present && !pending && !recovering {
            out.push(Action::LoseRecord);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Call(id, pc, read) => self.call(&mut s, id, pc, read),
            Action::GiveUp(id) => {
                let w = &mut s.writers[id as usize];
                w.rounds = self.max_rounds; // a 503: release, and do not start over
                self.finish(w);
                canon(w);
            }
            Action::LeaseExpire => (s.expired, s.ever_expired) = (true, true),
            Action::Complete(n) => {
                let count = count(s.rrs[n as usize].now);
                s.write_rr(n, Rr::Terminal(count));
                s.completes += 1;
            }
            Action::Backoff(n) => {
                let count = count(s.rrs[n as usize].now);
                s.write_rr(n, Rr::Backoff(count, false));
                s.completes += 1;
            }
            Action::BackoffPasses(n) => {
                // The clock moves; the object (and its resourceVersion) does not.
                let rr = &mut s.rrs[n as usize];
                rr.past |= kind(rr.now);
                rr.now = Rr::Backoff(count(rr.now), true);
            }
            Action::Delete(n) => {
                s.write_rr(n, Rr::Deleted);
                s.deletes += 1;
            }
            Action::Sweep => {
                s.write_record(Version::default());
                s.swept = true;
            }
            Action::SweepRead => s.sweep_read = Some(true),
            Action::SweepDelete => {
                s.write_record(Version::default());
                (s.swept, s.sweep_read) = (true, None);
            }
            Action::LoseRecord => {
                s.write_record(Version::default());
                s.lost = true;
            }
        }
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        let max = self.max_generation;
        let fits = |w: &Writer| w.next <= max && w.name <= max;
        s.record.generation <= max && s.fresh_names <= max && s.writers.iter().all(fits)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(ONE_ACTIVE, |_, s: &State| one_active(s)),
            Property::always(COUNTED, |_, s: &State| all_counted(s)),
            Property::always(EXCLUSIVE, |_, s: &State| exclusive(s)),
            Property::sometimes(ACK_AFTER_COLLISION, |_, s: &State| {
                let hit = |w: &Writer| w.acked.is_some() && w.flags & COLLIDED != 0;
                s.writers.iter().any(hit)
            }),
            Property::sometimes(SECOND_GENERATION, |_, s: &State| {
                s.completes > 0 && s.rrs.iter().skip(2).any(|r| r.incarnation > 0)
            }),
            Property::sometimes(TAKEOVER_CREATES, |_, s: &State| {
                let both = TOOK_OVER | CREATED;
                s.writers.iter().any(|w| w.flags & both == both)
            }),
            Property::sometimes(SETTLED_CREATES, |_, s: &State| {
                let both = CLAIMED_SETTLED | CREATED;
                s.writers.iter().any(|w| w.flags & both == both)
            }),
            Property::sometimes(OWN_ENDED_COUNTED, |_, s: &State| {
                s.writers.iter().any(|w| w.flags & COUNTED_OWN_ENDED != 0)
            }),
        ];
        if self.cfg.sweep {
            let reclaimed = |_: &Fence, s: &State| s.swept && s.record.present;
            properties.push(Property::sometimes(SWEPT_AND_CLAIMED, reclaimed));
        }
        if self.cfg.backoff {
            properties.push(Property::sometimes(COUNTED_IN_BACKOFF, |_, s: &State| {
                s.counted_in_backoff
            }));
            properties.push(Property::sometimes(NEW_AFTER_BACKOFF, |_, s: &State| {
                let passed = |r: &Name| matches!(r.now, Rr::Backoff(_, true));
                let first = s.rrs.iter().position(passed);
                first.is_some_and(|i| s.rrs[i + 1..].iter().any(|r| kind(r.now) == ACTIVE))
            }));
        }
        properties
    }
}

fn show(v: Version) -> String {
    let holder = v.holder.map_or("free".into(), |h| format!("held by w{h}"));
    match (v.present, v.name) {
        (false, _) => "absent".into(),
        (true, 0) => holder,
        (true, n) => format!("g{} rr-{n} {holder}", v.generation),
    }
}

impl Fence {
    /// describe renders one step of a trace with what the call was served or returned.
    fn describe(&self, s: &State, a: Action, t: &State) -> String {
        let (id, pc, read) = match a {
            Action::Call(id, pc, read) => (id, pc, read),
            Action::GiveUp(id) => return format!("w{id} GiveUp (fit check fails)"),
            Action::Complete(n) => return format!("Complete rr-{n}"),
            Action::Backoff(n) => return format!("Backoff rr-{n}"),
            Action::BackoffPasses(n) => return format!("BackoffPasses rr-{n}"),
            Action::Delete(n) => return format!("Delete rr-{n}"),
            other => return format!("{other:?}"),
        };
        let (w, after) = (&s.writers[id as usize], &t.writers[id as usize]);
        let n = w.name;
        let rr = |n: usize| format!("rr-{n} {:?}", s.rrs[n].now);
        let outcome = match (pc, read) {
            (Pc::GetRecord, Read::Fresh) => show(after.view),
            (Pc::GetRecord, _) => format!("{} (stale)", show(after.view)),
            (Pc::ListRrs, _) => format!("no record; RRs say {}", show(after.view)),
            (Pc::GetRr, _) if self.cfg.old_protocol && !w.claimed => {
                let live = (1..s.rrs.len()).filter(|&n| kind(s.rrs[n].now) != MISSING);
                format!("LIST {:?}", live.map(rr).collect::<Vec<_>>())
            }
            (Pc::GetRr, Read::Fresh) => rr(n as usize),
            (Pc::GetRr, Read::Stale(k)) => {
                let k = ["", "missing", "active", "", "terminal"][k as usize];
                format!("rr-{n} {k} (stale)")
            }
            (Pc::ClaimRecord, _) if t.record == s.record && after.claimed => {
                format!("g{} rr-{}: ok, but no write (no-op)", w.next, after.name)
            }
            (Pc::ClaimRecord, _) if t.record == s.record => "409".into(),
            (Pc::ClaimRecord, _) if self.cfg.old_protocol => format!("rr-{}: ok", after.name),
            (Pc::ClaimRecord, _) => format!("g{} rr-{}: ok", w.next, after.name),
            (Pc::CreateRr, _) if after.pc == Pc::PatchStatusAfterCreate => format!("rr-{n}: 201"),
            (Pc::CreateRr, _) => format!("rr-{n}: 409 AlreadyExists"),
            (Pc::Release, _) if t.record == s.record => "409, left alone".into(),
            (Pc::Release, _) => "ok".into(),
            _ if after.acked.is_some() && w.acked.is_none() => format!("rr-{n}: 200, acknowledged"),
            _ if kind(s.rrs[n as usize].now) == MISSING => format!("rr-{n}: 404"),
            _ => format!("rr-{n}: 409"),
        };
        format!("w{id} {pc:?} -> {outcome}")
    }

    /// trace renders a path up to the first state that breaks `property`.
    fn trace(&self, path: Path<State, Action>, property: fn(&State) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for p in path.into_vec().windows(2) {
            out.push(self.describe(&p[0].0, p[0].1.unwrap(), &p[1].0));
            if !property(&p[1].0) {
                break;
            }
        }
        out
    }

    /// replay runs a documented trace, checking that every step is enabled.
    fn replay(&self, steps: &[Action]) -> State {
        let mut s = self.init_states().remove(0);
        for (i, &a) in steps.iter().enumerate() {
            let mut enabled = Vec::new();
            self.actions(&s, &mut enabled);
            assert!(
                enabled.contains(&a),
                "step {} ({a:?}) is not enabled",
                i + 1
            );
            let t = self.next_state(&s, a).unwrap();
            eprintln!("  {:2}. {}", i + 1, self.describe(&s, a, &t));
            s = t;
        }
        s
    }
}

/// script parses a trace written the way traces print: "w0 GetRecord, Delete rr-1".
/// "w0 GetRr stale terminal" is a GET served an earlier, terminal state.
fn script(text: &str) -> Vec<Action> {
    let num = |s: &str| s.trim_start_matches(|c: char| !c.is_ascii_digit()).parse();
    let pc = |name: &str| match name {
        "GetRecord" => Pc::GetRecord,
        "ListRrs" => Pc::ListRrs,
        "GetRr" => Pc::GetRr,
        "PatchStatus" => Pc::PatchStatus,
        "ClaimRecord" => Pc::ClaimRecord,
        "CreateRr" => Pc::CreateRr,
        "PatchStatusAfterCreate" => Pc::PatchStatusAfterCreate,
        "Release" => Pc::Release,
        _ => panic!("unknown call {name}"),
    };
    let step = |step: &str| match step.split_whitespace().collect::<Vec<_>>()[..] {
        ["LeaseExpire"] => Action::LeaseExpire,
        ["LoseRecord"] => Action::LoseRecord,
        ["Complete", n] => Action::Complete(num(n).unwrap()),
        ["Backoff", n] => Action::Backoff(num(n).unwrap()),
        ["BackoffPasses", n] => Action::BackoffPasses(num(n).unwrap()),
        ["Delete", n] => Action::Delete(num(n).unwrap()),
        [w, "GetRr", "stale", "terminal"] => {
            Action::Call(num(w).unwrap(), Pc::GetRr, Read::Stale(TERMINAL))
        }
        [w, "GetRr", "stale", "missing"] => {
            Action::Call(num(w).unwrap(), Pc::GetRr, Read::Stale(MISSING))
        }
        [w, call] => Action::Call(num(w).unwrap(), pc(call), Read::Fresh),
        _ => panic!("cannot parse step {step:?}"),
    };
    let steps = text.split(',').map(str::trim);
    steps.filter(|s| !s.is_empty()).map(step).collect()
}

/// run checks a model to the end, or until `stop` (a property's name) is discovered.
fn run(name: &str, model: Fence, stop: Option<&'static str>) -> impl Checker<Fence> {
    let started = Instant::now();
    let mut builder = model.checker();
    if let Some(p) = stop {
        builder = builder.finish_when(HasDiscoveries::AnyOf(BTreeSet::from([p])));
    }
    let checker = builder.spawn_bfs().join();
    eprintln!(
        "{name}: {} states generated, {} unique, depth {}, {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

/// holds asserts that neither safety property has a counterexample in the whole state space.
fn holds(checker: &impl Checker<Fence>) {
    assert!(checker.is_done(), "the check must run to the end");
    type Check = fn(&State) -> bool;
    for (name, property) in [(ONE_ACTIVE, one_active as Check), (COUNTED, all_counted)] {
        if let Some(path) = checker.discovery(name) {
            let steps = checker.model().trace(path, property).join("\n");
            panic!("counterexample to {name:?}:\n{steps}");
        }
    }
    let model = checker.model();
    if let Some(path) = checker.discovery(EXCLUSIVE).filter(|_| model.cfg.locking) {
        let steps = model.trace(path, exclusive).join("\n");
        panic!("counterexample to {EXCLUSIVE:?}:\n{steps}");
    }
}

/// duplicates asserts that the checker finds two active RRs (and prints its trace), and that
/// the documented trace is a run of the model that ends with two active RRs.
fn duplicates(checker: &impl Checker<Fence>, documented: &str) {
    let path = checker.discovery(ONE_ACTIVE);
    let path = path.expect("the checker must find two active RRs");
    for (i, step) in checker.model().trace(path, one_active).iter().enumerate() {
        eprintln!("  {:2}. {step}", i + 1);
    }
    eprintln!("documented trace:");
    let end = checker.model().replay(&script(documented));
    assert!(
        !one_active(&end),
        "the documented trace must end with two active RRs"
    );
}

#[test]
fn fenced_with_locking_holds_and_reaches_every_path() {
    let checker = run("fenced, locking", Fence::new(PROTOCOL, 2), None);
    holds(&checker);
    for p in SOMETIMES {
        assert!(checker.discovery(p).is_some(), "{p:?} must be reachable");
    }
}

#[test]
fn the_sweep_holds() {
    let cfg = Config {
        sweep: true,
        ..PROTOCOL
    };
    // Tighter bounds: one Complete.
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("sweep", model, None);
    holds(&checker);
    let reclaimed = checker.discovery(SWEPT_AND_CLAIMED).is_some();
    assert!(reclaimed, "a record must be swept and claimed again");
}

#[test]
fn fenced_without_locking_holds() {
    let cfg = Config {
        locking: false,
        ..PROTOCOL
    };
    let checker = run("fenced, locking off", Fence::new(cfg, 2), None);
    holds(&checker);
    let collided = checker.discovery(ACK_AFTER_COLLISION).is_some();
    assert!(
        collided,
        "without locking, collisions must still be reachable"
    );
    let racing = checker.discovery(EXCLUSIVE).is_some();
    assert!(racing, "without locking, two writers race to create");
}

#[test]
fn three_writers_hold() {
    // Tighter bounds: one round per writer, one Complete, generations up to 2.
    let mut model = Fence::new(PROTOCOL, 3);
    (model.max_rounds, model.max_completes, model.max_generation) = (1, 1, 2);
    let checker = run("fenced, locking, 3 writers", model, None);
    holds(&checker);
}

/// A writer that claimed a fresh name and paused past its lease is taken over by one that
/// also finds no RR, and both create: the fence is what makes the second create collide.
#[test]
fn unfenced_paused_holder_duplicates() {
    let cfg = Config {
        fencing: false,
        ..PROTOCOL
    };
    let checker = run("unfenced", Fence::new(cfg, 2), Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 ListRrs, w0 ClaimRecord, LeaseExpire,
         w1 GetRecord, w1 GetRr, w1 ListRrs, w1 ClaimRecord, w1 CreateRr,
         w0 CreateRr",
    );
}

/// The old fence is derived from the RRs that happen to exist, so
/// deleting a terminal RR lowers it. Y (w1) sees rr-1 completed, plans rr-2 and pauses; rr-1
/// is deleted; Z (w0) sees nothing, takes over and creates rr-1; Y creates rr-2. Z's first
/// round plays the writer that created rr-1 (its status patch lost to the Complete).
#[test]
fn old_protocol_duplicates_when_a_terminal_rr_is_deleted() {
    let cfg = Config {
        old_protocol: true,
        ..PROTOCOL
    };
    let checker = run("old protocol", Fence::new(cfg, 2), Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 GetRr, w0 ClaimRecord, w0 CreateRr, Complete rr-1,
         w0 PatchStatusAfterCreate, w0 GetRr, w0 Release,
         w1 GetRecord, w1 GetRr, w1 ClaimRecord, LeaseExpire, Delete rr-1,
         w0 GetRecord, w0 GetRr, w0 ClaimRecord, w0 CreateRr,
         w1 CreateRr",
    );
}

/// The known residual case, which the stated assumption excludes: w0 claims rr-1 and pauses;
/// w1 takes over, creates rr-1, sees it complete and opens rr-2; rr-1 is deleted while w0's
/// create is pending; that create lands and re-creates rr-1.
#[test]
fn deleting_a_claimed_name_duplicates() {
    let cfg = Config {
        assume_no_delete_while_claimed: false,
        ..PROTOCOL
    };
    let checker = run("deletes unrestricted", Fence::new(cfg, 2), Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 ListRrs, w0 ClaimRecord, LeaseExpire,
         w1 GetRecord, w1 GetRr, w1 ListRrs, w1 ClaimRecord, w1 CreateRr, Complete rr-1,
         w1 PatchStatusAfterCreate, w1 GetRr stale missing, w1 Release,
         w1 GetRecord, w1 GetRr, w1 ClaimRecord, w1 CreateRr, Delete rr-1,
         w0 CreateRr",
    );
}

/// Why a terminal answer must come from a consistent read (a GET of an RR may otherwise be
/// served stale): rr-1 completes and retention deletes it; w1 finds it missing and
/// re-creates it (generation 1 is reused); w0's GET of rr-1, served from a lagging cache,
/// returns the deleted incarnation as terminal, so w0 opens rr-2 beside the new rr-1. No
/// pause and no expiry are needed.
#[test]
fn a_stale_terminal_read_duplicates() {
    let cfg = Config {
        consistent_terminal: false,
        ..PROTOCOL
    };
    let checker = run("stale terminal read", Fence::new(cfg, 2), Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 ListRrs, w0 ClaimRecord, w0 CreateRr, Complete rr-1,
         w0 PatchStatusAfterCreate, w0 GetRr stale missing, w0 Release, Delete rr-1,
         w1 GetRecord, w1 GetRr, w1 ListRrs, w1 ClaimRecord, w1 CreateRr, w1 PatchStatusAfterCreate,
         w0 GetRecord, w0 GetRr stale terminal, w0 ClaimRecord, w0 CreateRr",
    );
}

/// An RR that kubernaut ended with a backoff (or for manual review) holds its problem until
/// the API server's clock passes `nextAllowedExecution`: a signal meanwhile is counted on it,
/// and only afterwards does the next generation open.
#[test]
fn backoff_holds_and_releases_on_the_servers_clock() {
    let cfg = Config {
        backoff: true,
        ..PROTOCOL
    };
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("backoff", model, None);
    holds(&checker);
    for p in [COUNTED_IN_BACKOFF, NEW_AFTER_BACKOFF] {
        assert!(checker.discovery(p).is_some(), "{p:?} must be reachable");
    }
}

/// The rule this replaces: a writer that reads a terminal phase as released opens rr-2 while
/// rr-1 is still held by its backoff.
#[test]
fn ignoring_the_backoff_duplicates() {
    let cfg = Config {
        backoff: true,
        ignore_backoff: true,
        ..PROTOCOL
    };
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("backoff ignored", model, Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 ListRrs, w0 ClaimRecord, w0 CreateRr, w0 PatchStatusAfterCreate, Backoff rr-1,
         w1 GetRecord, w1 GetRr, w1 ClaimRecord, w1 CreateRr",
    );
}

/// A lost record (deleted by anyone, at any step but between a claim and its create) never
/// opens a second active RR: a writer that finds no record lists the fingerprint's RRs and
/// goes on from the one that holds the problem, or from the highest generation.
#[test]
fn a_lost_record_holds() {
    let cfg = Config {
        lose_records: true,
        ..PROTOCOL
    };
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("lost record", model, None);
    holds(&checker);
}

/// The rule this replaces: without the list, a writer that finds no record starts again at
/// generation 1, beside the active rr-2 once rr-1 is gone.
#[test]
fn a_lost_record_without_discovery_duplicates() {
    let cfg = Config {
        lose_records: true,
        discover: false,
        ..PROTOCOL
    };
    let checker = run(
        "lost record, no discovery",
        Fence::new(cfg, 2),
        Some(ONE_ACTIVE),
    );
    duplicates(
        &checker,
        "w0 GetRecord, w0 ClaimRecord, w0 CreateRr, w1 GetRecord, Complete rr-1,
         w1 GetRr, w1 ClaimRecord, w1 CreateRr, Delete rr-1,
         w0 PatchStatusAfterCreate, w0 Release, LoseRecord,
         w0 GetRecord, w0 ClaimRecord, w0 CreateRr",
    );
}

/// The sweep as the service runs it, a LIST then a delete carrying the version it read:
/// every claim is a real write, so a claim between the two makes the delete fail.
#[test]
fn a_split_sweep_holds() {
    let cfg = Config {
        sweep: true,
        split_sweep: true,
        locking: false,
        ..PROTOCOL
    };
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("split sweep, locking off", model, None);
    holds(&checker);
}

/// The rule this replaces: with locking off, a claim of the generation the record already
/// names wrote nothing. The record's version did not move, so a writer that read it before
/// (and read rr-1 terminal) still wins its compare-and-swap for generation 2 after rr-1 was
/// re-created under that very claim; a sweep that read the record could delete it likewise.
#[test]
fn a_noop_claim_duplicates() {
    let cfg = Config {
        sweep: true,
        split_sweep: true,
        locking: false,
        noop_claims: true,
        ..PROTOCOL
    };
    let checker = run("no-op claims", Fence::new(cfg, 2), Some(ONE_ACTIVE));
    duplicates(
        &checker,
        "w0 GetRecord, w0 ListRrs, w0 ClaimRecord, w0 CreateRr, w1 GetRecord, Complete rr-1,
         w1 GetRr, Delete rr-1, w0 PatchStatusAfterCreate,
         w0 GetRecord, w0 GetRr, w0 ListRrs, w0 ClaimRecord, w0 CreateRr,
         w1 ClaimRecord, w1 CreateRr",
    );
}

/// Real writes close the sweep's race on their own: the split sweep without discovery
/// keeps one active RR.
#[test]
fn real_claims_close_the_split_sweep_without_discovery() {
    let cfg = Config {
        sweep: true,
        split_sweep: true,
        locking: false,
        discover: false,
        ..PROTOCOL
    };
    let mut model = Fence::new(cfg, 2);
    model.max_completes = 1;
    let checker = run("real claims, split sweep, no discovery", model, None);
    holds(&checker);
}
