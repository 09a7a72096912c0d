//! Every statement's path through pgward, in one place. The session hands each client frame that
//! starts or names a statement (Query, Parse, Bind, Execute, Close, Sync, FunctionCall) to
//! [`Pipeline::on_client_frame`] before forwarding it, and each backend frame that completes one
//! (CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse, ReadyForQuery) to
//! [`Pipeline::on_backend_frame`].
//!
//! Phases of one statement, in one function (`phases`: `Pipeline::run_phases`): reject ->
//! cache (`cached`) -> admit (`admit`) -> rewrite (`rewrite`) -> run, with its time budget
//! (`budget`; enforced by `expire`) -> complete (`complete`: the outcome recorded once).
//! Fingerprints are cached per text, and a prepared statement is fingerprinted (and rejected or
//! rewritten) once at Parse (`parse`). docs/architecture.md charts the phases.
//!
//! The tracker mirrors the protocol's ordering: every Execute (and every statement of a simple
//! Query) expects exactly one completion, a ReadyForQuery closes everything up to its Sync, and
//! replies pgward makes itself (rejects, sheds) wait in the same queue, so they reach the client
//! in the order the client asked.

mod admit;
mod answer;
mod budget;
mod cached;
mod complete;
mod deferred;
mod expect;
mod expire;
mod fill;
mod fingerprints;
mod parse;
mod phases;
mod queue;
mod replies;
mod rewrite;
mod shared_server;
mod state;
mod statements;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

pub use expire::Expiry;
pub use fingerprints::{FingerprintCache, Fingerprinted};
use queue::Owed;
use statements::{Statement, Undo};
use tokio::sync::OwnedSemaphorePermit;

use crate::cache::{ResultCache, SessionCache};
use crate::eventlog::EventLog;
use crate::fingerprint::Strings;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::frontend::{Frontend, Target};
use crate::reload::{ActiveRules, Rules};
use crate::rules::Rule;
use crate::stats::Stats;

/// What the session does with a client frame after the pipeline saw it.
pub enum ClientAction {
    /// Send the original bytes upstream.
    Forward,
    /// Send these bytes upstream instead (a rewritten Query or Parse).
    Replace(Vec<u8>),
    /// Send nothing upstream (pgward answered, or the frame is skipped after an error).
    Drop,
    /// Stop reading client frames until the gate resolves, then offer the same frame again.
    Wait(Gate),
}

/// A wait before a held client frame is offered again.
pub struct Gate(pub Pin<Box<dyn Future<Output = Admitted> + Send>>);

/// How a wait at a [`Gate`] ended.
pub enum Admitted {
    /// A concurrency slot: the permit, or `None` when queue_timeout passed.
    Slot(Option<OwnedSemaphorePermit>),
    /// The identical query another session ran ended (or this one's budget passed).
    CacheFill,
    /// The limit's database-time budget may have refilled (or the wait's bound passed).
    DbTime,
}

/// Process-wide handles the per-session pipelines share.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub fingerprints: FingerprintCache,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    /// Statements slower than this are logged (`log.slow_statement`).
    pub slow_statement: Option<std::time::Duration>,
    /// Shed, budget and stale events: the first of each rule and outcome logged, the rest
    /// counted into periodic summaries.
    pub events: Arc<EventLog>,
}

/// Who the session is, for rule filters.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// Every startup parameter, as the client sent them (part of cache keys).
    pub params: Vec<(String, String)>,
    /// Transaction mode: session features that cannot survive a shared server are refused
    /// (`shared_server.rs`) and every batch is tracked so a refusal keeps its place.
    pub pooled: bool,
}

/// The rule a statement matched, in the snapshot it was matched under.
#[derive(Clone)]
struct Matched {
    rules: Arc<ActiveRules>,
    index: usize,
}

impl Matched {
    fn rule(&self) -> Option<&Rule> {
        self.rules.set.rules.get(self.index)
    }
}

/// Per-session statement bookkeeping.
pub struct Pipeline {
    shared: Arc<Shared>,
    identity: Identity,
    expected: queue::Queue,
    prepared: HashMap<Box<[u8]>, Statement>,
    portals: HashMap<Box<[u8]>, Statement>,
    /// The frame held back while it waits for a slot or another session's fill.
    held: state::Held,
    /// The client's current batch (messages up to a Sync).
    batch: state::Batch,
    /// The session's side of the result cache (None when the cache is disabled).
    cache: Option<SessionCache>,
    /// How this session's string literals lex (its `standard_conforming_strings`).
    strings: Strings,
    /// Set by a Parse or Close while it is routed; moved into its tracked answer.
    undo: Option<Box<Undo>>,
    /// A cacheable statement's Parse / Bind / Describe, held until its Execute (`deferred`).
    chain: deferred::Chain,
    /// Bytes for upstream ahead of the frame being handled (`drain_outbound`).
    outbound: Vec<u8>,
    /// The session used SQL-level PREPARE: statement names pgward does not know may exist.
    sql_prepare: bool,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>, identity: Identity) -> Self {
        let cache = shared.cache.enabled().then(|| {
            SessionCache::new(
                [
                    ("\0user", identity.user.as_str()),
                    ("\0database", identity.database.as_str()),
                ]
                .into_iter()
                .chain(
                    identity
                        .params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                ),
            )
        });
        Pipeline {
            shared,
            identity,
            expected: queue::Queue::new(),
            prepared: HashMap::new(),
            portals: HashMap::new(),
            held: state::Held::Nothing,
            batch: state::Batch::Idle,
            cache,
            strings: Strings::Standard,
            undo: None,
            chain: deferred::Chain::default(),
            outbound: Vec::new(),
            sql_prepare: false,
        }
    }

    /// The upstream reported the session's `standard_conforming_strings` (ParameterStatus):
    /// statement texts are lexed accordingly from now on, so literals never leak into stats.
    pub fn set_standard_conforming_strings(&mut self, on: bool) {
        self.strings = if on {
            Strings::Standard
        } else {
            Strings::Backslash
        };
    }

    /// True while the upstream still owes this session a response.
    pub fn busy(&self) -> bool {
        self.expected.busy()
    }

    /// Statements and replies owed to the client; the session stops reading a client that
    /// pipelines more than it reads.
    pub fn queued(&self) -> usize {
        self.expected.len()
    }

    /// The statement running now, by fingerprint, and since when it was received (for the
    /// session registry); `None` when nothing runs or it is not fingerprinted.
    pub fn running(&self) -> Option<(crate::fingerprint::FingerprintId, Instant)> {
        let running = self.expected.first_running()?;
        Some((running.stats.as_ref()?.id(), running.received))
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn transaction(&self) -> TransactionStatus {
        self.expected.transaction
    }

    /// Records the outcome of a gate the session waited on.
    pub fn admit(&mut self, admitted: Admitted) {
        match admitted {
            Admitted::Slot(permit) => self.held.slot_granted(permit, Instant::now()),
            Admitted::DbTime => self.held.db_time_refilled(),
            // The held frame already says since when; it is simply offered again.
            Admitted::CacheFill => {}
        }
    }

    /// Whether the current batch tracks the answers to Parse/Bind/Describe/Close (decided at
    /// its first message, so that it stays consistent until its Sync). Any rule may make
    /// pgward answer a message of the batch itself (a cache hit, a reject, a shed), and that
    /// answer must wait behind the ones PostgreSQL owes for the messages before it.
    fn batch_tracked(&mut self) -> bool {
        if self.batch == state::Batch::Idle {
            let tracked = self.shared.rules.any() || self.identity.pooled;
            self.batch = state::Batch::open(tracked);
        }
        self.batch.tracked()
    }

    fn recording(&self) -> bool {
        self.shared.stats.settings().enabled
    }

    /// Sees a complete client frame (`body` excludes tag and length) before it is forwarded.
    /// Bytes pgward sends upstream ahead of it (`drain_outbound`) are due first.
    pub fn on_client_frame(&mut self, tag: u8, body: &[u8], now: Instant) -> ClientAction {
        let message = Frontend::decode(tag, body);
        if self.batch.failed() && !matches!(message, Frontend::Sync | Frontend::Flush) {
            return ClientAction::Drop;
        }
        let answered_alone = message.is_answered_alone();
        let tracked =
            (answered_alone || matches!(message, Frontend::Execute(_))) && self.batch_tracked();
        let action = self.route_client_frame(message, body, now);
        let undo = self.undo.take();
        let forwarded = matches!(action, ClientAction::Forward | ClientAction::Replace(_));
        if tracked && answered_alone && forwarded {
            self.expected.push_response(Owed::Client(undo));
        }
        if forwarded {
            self.batch.sent();
        }
        action
    }

    fn route_client_frame(
        &mut self,
        message: Frontend<'_>,
        body: &[u8],
        now: Instant,
    ) -> ClientAction {
        match message {
            Frontend::Parse(Some(parse)) => {
                self.release_chain(false);
                self.on_parse(&parse, body)
            }
            Frontend::Bind(Some(bind)) => {
                let held = self.hold_bind(&bind, body);
                if !held {
                    self.release_chain(false);
                    self.ensure_statement(bind.statement);
                }
                self.on_bind(&bind);
                if held {
                    ClientAction::Drop
                } else {
                    ClientAction::Forward
                }
            }
            Frontend::Describe(Some(Target::Portal(portal))) => {
                if self.hold_describe(portal, body) {
                    return ClientAction::Drop;
                }
                self.release_chain(false);
                self.ensure_portal(portal);
                ClientAction::Forward
            }
            Frontend::Execute(execute) => self.on_execute(execute, now),
            message => {
                self.release_chain(false);
                self.route_unheld(message, now)
            }
        }
    }

    /// A message that never joins a held chain (which was released before it).
    fn route_unheld(&mut self, message: Frontend<'_>, now: Instant) -> ClientAction {
        match message {
            Frontend::Query(Some(sql)) => self.on_query(sql, now),
            Frontend::Query(None) => {
                self.expected.push_ready();
                ClientAction::Forward
            }
            Frontend::Describe(Some(Target::Statement(name))) => {
                self.ensure_statement(name);
                ClientAction::Forward
            }
            Frontend::Close(Some(Target::Statement(name))) => {
                let previous = self.prepared.remove(name);
                self.note_undo(name, previous);
                ClientAction::Forward
            }
            Frontend::Close(Some(Target::Portal(name))) => {
                self.portals.remove(name);
                ClientAction::Forward
            }
            Frontend::Sync if self.batch.answered_whole() => {
                // PostgreSQL got nothing of this batch: its state is what the last
                // ReadyForQuery said, and pgward says it again.
                self.batch = state::Batch::Idle;
                self.expected.push_reply(Vec::new(), true);
                ClientAction::Drop
            }
            Frontend::Sync | Frontend::FunctionCall => {
                self.batch = state::Batch::Idle;
                self.expected.push_ready();
                ClientAction::Forward
            }
            _ => ClientAction::Forward,
        }
    }

    fn count_queries(&self, n: usize) {
        self.shared
            .stats
            .proxy()
            .queries
            .fetch_add(n as u64, Relaxed);
    }
}
