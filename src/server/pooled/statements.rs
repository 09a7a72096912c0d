//! A transaction-mode client's named prepared statements on shared server connections. The
//! client's name is mapped to pgward's own, `pgward_<128-bit hash of text and types>`, so one
//! statement many clients prepare exists once per server connection; a Bind or Describe of it
//! on a connection that lacks it is preceded by its Parse, whose ParseComplete the client never
//! sees. A client's Parse of a statement the connection already has is sent as Close + Parse
//! (the Close's answer swallowed), so the client gets PostgreSQL's own ParseComplete or error.
//! A client's Close only forgets the name: the statement stays on the server for the next
//! client, within the connection's bound. The unnamed statement keeps its name and is sent
//! again to a connection that has not seen it since it was parsed.

use std::collections::HashMap;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::owed::{Owed, Undo};
use super::params::{self, SetCapture};
use crate::pool::PreparedSet;
use crate::protocol::build;
use crate::protocol::frontend::{self, Target};
use crate::protocol::tag::frontend as tag;

/// Named statements a client may hold; past it a new name is sent under the client's own name
/// (PostgreSQL answers its Bind with 26000 if the client lands on another connection).
pub const MAX_NAMES: usize = 10_000;
/// A name no statement ever has: a client's Close of its statement becomes a Close of this,
/// which PostgreSQL answers with CloseComplete and nothing else.
const CLOSED: &[u8] = b"pgward_closed";

/// One statement as pgward prepares it on servers.
#[derive(Debug)]
pub struct Def {
    server_name: Box<[u8]>,
    /// The Parse frame under `server_name`.
    frame: Box<[u8]>,
    /// The settings change it makes when executed.
    capture: Option<SetCapture>,
}

/// The client's statements.
#[derive(Debug, Default)]
pub struct Statements {
    named: HashMap<Box<[u8]>, Arc<Def>>,
    unnamed: Option<Arc<Def>>,
    /// The held connection got `unnamed` since it was attached.
    unnamed_on_server: bool,
    /// Settings changes of portals bound in this transaction.
    portals: HashMap<Box<[u8]>, SetCapture>,
}

fn server_name(parse: &frontend::Parse<'_>) -> Box<[u8]> {
    let mut hasher = Xxh3::new();
    hasher.update(parse.sql);
    hasher.update(&[0]);
    hasher.update(parse.param_types);
    format!("pgward_{:032x}", hasher.digest128())
        .into_bytes()
        .into_boxed_slice()
}

impl Statements {
    /// A new server connection is held: it has none of the unnamed statement.
    pub fn attached(&mut self) {
        self.unnamed_on_server = false;
    }

    /// The connection went back; portals end with the transaction.
    pub fn detached(&mut self) {
        self.portals.clear();
    }

    /// `DEALLOCATE ALL` / `DISCARD ALL` succeeded.
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
        self.portals.clear();
    }

    /// Puts back what a Parse / Close that did not complete changed.
    pub fn undo(&mut self, undo: Undo) {
        let current = self.named.get(&undo.name);
        let ours = match (&undo.installed, current) {
            (Some(installed), Some(current)) => Arc::ptr_eq(installed, current),
            (None, None) => true,
            _ => false,
        };
        if !ours {
            return;
        }
        match undo.previous {
            Some(previous) => self.named.insert(undo.name, previous),
            None => self.named.remove(&undo.name),
        };
    }

    /// Writes `frame` (tag `kind`, body `body`) for the held server into `out`, renamed and
    /// preceded by what the server lacks. Frames of other kinds are not passed here.
    pub fn translate(
        &mut self,
        kind: u8,
        frame: &[u8],
        body: &[u8],
        server: &mut PreparedSet,
        owed: &mut Owed,
        out: &mut Vec<u8>,
    ) {
        match kind {
            tag::PARSE => match frontend::parse(body) {
                Some(parse) => self.parse(&parse, frame, server, owed, out),
                None => {
                    owed.parse(false, None, None);
                    out.extend_from_slice(frame);
                }
            },
            tag::BIND => match frontend::bind(body) {
                Some(bind) => self.bind(&bind, frame, server, owed, out),
                None => out.extend_from_slice(frame),
            },
            tag::DESCRIBE => match frontend::describe_or_close(body) {
                Some(Target::Statement(name)) => match self.ensure(name, server, owed, out) {
                    Some(def) => {
                        let target = Target::Statement(&def.server_name);
                        build::describe_or_close(out, tag::DESCRIBE, target);
                    }
                    None => out.extend_from_slice(frame),
                },
                _ => out.extend_from_slice(frame),
            },
            tag::CLOSE => match frontend::describe_or_close(body) {
                Some(Target::Statement(name)) if !name.is_empty() => {
                    let previous = self.named.remove(name);
                    let forgot = previous.is_some();
                    let undo = previous.map(|previous| Undo {
                        name: name.into(),
                        previous: Some(previous),
                        installed: None,
                    });
                    owed.close(false, None, undo);
                    if forgot {
                        let target = Target::Statement(CLOSED);
                        build::describe_or_close(out, tag::CLOSE, target);
                    } else {
                        out.extend_from_slice(frame);
                    }
                }
                Some(Target::Statement(_)) => {
                    self.unnamed = None;
                    owed.close(false, None, None);
                    out.extend_from_slice(frame);
                }
                _ => {
                    owed.close(false, None, None);
                    out.extend_from_slice(frame);
                }
            },
            _ => out.extend_from_slice(frame),
        }
    }

    /// The settings change of what an Execute of `portal` runs, if any.
    pub fn executed(&self, portal: &[u8]) -> Option<SetCapture> {
        self.portals.get(portal).cloned()
    }

    fn parse(
        &mut self,
        parse: &frontend::Parse<'_>,
        frame: &[u8],
        server: &mut PreparedSet,
        owed: &mut Owed,
        out: &mut Vec<u8>,
    ) {
        let capture = params::capture(parse.sql);
        if parse.statement.is_empty() {
            self.unnamed = Some(Arc::new(Def {
                server_name: Box::default(),
                frame: frame.into(),
                capture,
            }));
            self.unnamed_on_server = true;
            owed.parse(false, None, None);
            out.extend_from_slice(frame);
            return;
        }
        if let Some(previous) = self.named.get(parse.statement).cloned() {
            // PostgreSQL refuses a second Parse of a name (42P05): make sure the server has the
            // name's statement, then let it say so.
            self.prepare(&previous, server, owed, out);
            owed.parse(false, None, None);
            build::parse_renamed(out, parse, &previous.server_name);
            return;
        }
        if self.named.len() >= MAX_NAMES {
            owed.parse(false, None, None);
            out.extend_from_slice(frame);
            return;
        }
        let name = server_name(parse);
        let mut renamed = Vec::with_capacity(frame.len() + name.len());
        build::parse_renamed(&mut renamed, parse, &name);
        let def = Arc::new(Def {
            server_name: name.clone(),
            frame: renamed.into_boxed_slice(),
            capture,
        });
        self.named.insert(parse.statement.into(), def.clone());
        let undo = Undo {
            name: parse.statement.into(),
            previous: None,
            installed: Some(def.clone()),
        };
        if server.touch(&name) {
            // The server has it from another client: closed first, so that the client gets
            // PostgreSQL's own answer to its Parse. The name stays in the server's set
            // throughout (the Parse puts back what the Close took).
            build::describe_or_close(out, tag::CLOSE, Target::Statement(&name));
            owed.close(true, None, None);
            owed.parse(false, None, Some(undo));
        } else {
            self.evict(server, owed, out);
            server.insert(&name);
            owed.parse(false, Some(name), Some(undo));
        }
        out.extend_from_slice(&def.frame);
    }

    fn bind(
        &mut self,
        bind: &frontend::Bind<'_>,
        frame: &[u8],
        server: &mut PreparedSet,
        owed: &mut Owed,
        out: &mut Vec<u8>,
    ) {
        let capture = match bind.statement {
            b"" => self.unnamed.as_ref().and_then(|d| d.capture.clone()),
            name => self.named.get(name).and_then(|d| d.capture.clone()),
        };
        match capture {
            Some(capture) if self.portals.len() < MAX_NAMES => {
                self.portals.insert(bind.portal.into(), capture);
            }
            // No lookup per Bind while no portal of this transaction sets anything.
            _ if self.portals.is_empty() => {}
            _ => {
                self.portals.remove(bind.portal);
            }
        }
        match self.ensure(bind.statement, server, owed, out) {
            Some(def) => build::bind_renamed(out, bind, &def.server_name),
            None => out.extend_from_slice(frame),
        }
    }

    /// Makes sure the server has the client's statement `name`; returns its definition (the
    /// name to use there) when it is not the client's own name.
    fn ensure(
        &mut self,
        name: &[u8],
        server: &mut PreparedSet,
        owed: &mut Owed,
        out: &mut Vec<u8>,
    ) -> Option<Arc<Def>> {
        if name.is_empty() {
            if !self.unnamed_on_server
                && let Some(def) = &self.unnamed
            {
                out.extend_from_slice(&def.frame);
                owed.parse(true, None, None);
                self.unnamed_on_server = true;
            }
            return None;
        }
        let def = self.named.get(name)?.clone();
        self.prepare(&def, server, owed, out);
        Some(def)
    }

    /// Sends `def`'s Parse to a server that lacks it (its answer swallowed).
    fn prepare(&self, def: &Def, server: &mut PreparedSet, owed: &mut Owed, out: &mut Vec<u8>) {
        if server.touch(&def.server_name) {
            return;
        }
        self.evict(server, owed, out);
        out.extend_from_slice(&def.frame);
        // In the set from now on, so a second Bind before the answer does not send it again.
        server.insert(&def.server_name);
        owed.parse(true, Some(def.server_name.clone()), None);
    }

    /// Closes the server's least recently used statement when it holds its most.
    fn evict(&self, server: &mut PreparedSet, owed: &mut Owed, out: &mut Vec<u8>) {
        if let Some(victim) = server.evict_for_one() {
            build::describe_or_close(out, tag::CLOSE, Target::Statement(&victim));
            owed.close(true, Some(victim), None);
        }
    }
}
