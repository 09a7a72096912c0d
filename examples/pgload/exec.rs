//! One connection and one request on it: the script's statements in the workload's protocol
//! (simple: text with the values inlined; extended: an unnamed statement per execution;
//! prepared: named statements prepared once per connection), with the outcome classified.

use std::cell::Cell;
use std::error::Error as StdError;

use bytes::BytesMut;
use futures_util::{StreamExt, pin_mut};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Row, SimpleQueryMessage, Statement};

use crate::script::{Script, Stmt, Values};
use crate::spec::Protocol;
use crate::stats::Outcome;

/// A value sent as text with an unspecified type, so PostgreSQL reads it as the type the
/// statement needs (what pgbench does with its variables).
#[derive(Debug)]
struct TextParam(String);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

pub struct Session {
    client: Client,
    /// The server ended the session with a FATAL error (the socket may not look closed yet).
    fatal: Cell<bool>,
    prepared: Vec<Option<Statement>>,
    sql: String,
}

/// Open a connection; its I/O runs in a task of its own.
pub async fn connect(config: &Config) -> Result<Session, tokio_postgres::Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // The error (if any) reaches the client as a closed connection.
        let _ = conn.await;
    });
    Ok(Session {
        client,
        fatal: Cell::new(false),
        prepared: Vec::new(),
        sql: String::new(),
    })
}

/// How a request ended, and whether the connection must be replaced.
pub struct Done {
    pub outcome: Outcome,
    pub rows: u64,
    pub broken: bool,
}

impl Session {
    /// `SELECT 1` answered (the connection is usable).
    pub async fn ping(&self) -> bool {
        self.client.simple_query("SELECT 1").await.is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.fatal.get() || self.client.is_closed()
    }

    /// An error's outcome; a FATAL one marks this session as ended.
    fn classify(&self, e: tokio_postgres::Error) -> Outcome {
        if e.as_db_error()
            .is_some_and(|d| matches!(d.severity(), "FATAL" | "PANIC"))
        {
            self.fatal.set(true);
        }
        classify(e)
    }

    /// Run every statement of the script; the first failing one ends the request (a script
    /// of several statements is then rolled back, as its transaction is aborted).
    pub async fn run(&mut self, script: &Script, protocol: Protocol, v: &mut Values) -> Done {
        let mut rows = 0u64;
        for (i, stmt) in script.stmts.iter().enumerate() {
            let res = match protocol {
                Protocol::Simple => self.simple(stmt, v).await,
                Protocol::Extended => self.extended(i, stmt, v, false).await,
                Protocol::Prepared => self.extended(i, stmt, v, true).await,
            };
            match res {
                Ok(n) => rows = rows.saturating_add(n),
                Err(outcome) => {
                    let broken = self.is_closed();
                    if !broken && script.stmts.len() > 1 {
                        // Outside a transaction this only warns.
                        let _ = self.client.batch_execute("ROLLBACK").await;
                    }
                    return Done {
                        outcome,
                        rows: 0,
                        broken: broken || self.is_closed(),
                    };
                }
            }
        }
        Done {
            outcome: Outcome::Ok,
            rows,
            broken: false,
        }
    }

    async fn simple(&mut self, stmt: &Stmt, v: &mut Values) -> Result<u64, Outcome> {
        stmt.render(v, &mut self.sql).map_err(|_| Outcome::Client)?;
        let stream = self.client.simple_query_raw(&self.sql).await;
        let stream = stream.map_err(|e| self.classify(e))?;
        pin_mut!(stream);
        let mut rows = 0u64;
        let mut first = true;
        while let Some(msg) = stream.next().await {
            if let SimpleQueryMessage::Row(row) = msg.map_err(|e| self.classify(e))? {
                if stmt.gset && first {
                    for (i, col) in row.columns().iter().enumerate() {
                        v.set_got(col.name(), row.get(i).unwrap_or(""));
                    }
                }
                first = false;
                rows = rows.saturating_add(1);
            }
        }
        Ok(rows)
    }

    async fn extended(
        &mut self,
        index: usize,
        stmt: &Stmt,
        v: &mut Values,
        prepare: bool,
    ) -> Result<u64, Outcome> {
        let params: Vec<TextParam> = stmt
            .params(v)
            .map_err(|_| Outcome::Client)?
            .into_iter()
            .map(TextParam)
            .collect();
        let stream = if prepare {
            let st = self.statement(index, stmt).await?;
            self.client.query_raw(&st, params.iter()).await
        } else {
            let typed = params.iter().map(|p| (p as &dyn ToSql, Type::UNKNOWN));
            self.client.query_typed_raw(&stmt.numbered, typed).await
        };
        let stream = stream.map_err(|e| self.classify(e))?;
        pin_mut!(stream);
        let mut rows = 0u64;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| self.classify(e))?;
            if stmt.gset && rows == 0 {
                gset_row(&row, v)?;
            }
            rows = rows.saturating_add(1);
        }
        Ok(rows)
    }

    /// This connection's prepared statement for the script's statement `index`.
    async fn statement(&mut self, index: usize, stmt: &Stmt) -> Result<Statement, Outcome> {
        if let Some(Some(st)) = self.prepared.get(index) {
            return Ok(st.clone());
        }
        let types = vec![Type::UNKNOWN; stmt.param_count()];
        let st = self
            .client
            .prepare_typed(&stmt.numbered, &types)
            .await
            .map_err(|e| self.classify(e))?;
        if self.prepared.len() <= index {
            self.prepared.resize(index.saturating_add(1), None);
        }
        if let Some(slot) = self.prepared.get_mut(index) {
            *slot = Some(st.clone());
        }
        Ok(st)
    }
}

/// Store a binary-format row's columns as text variables (the integer and text types).
fn gset_row(row: &Row, v: &mut Values) -> Result<(), Outcome> {
    for (i, col) in row.columns().iter().enumerate() {
        let text = match *col.type_() {
            Type::INT8 => row.try_get::<_, i64>(i).map(|n| n.to_string()),
            Type::INT4 => row.try_get::<_, i32>(i).map(|n| n.to_string()),
            Type::INT2 => row.try_get::<_, i16>(i).map(|n| n.to_string()),
            _ => row.try_get::<_, String>(i),
        };
        v.set_got(col.name(), &text.map_err(|_| Outcome::Client)?);
    }
    Ok(())
}

/// An error's outcome: its SQLSTATE when PostgreSQL sent one, a lost connection when the
/// socket broke, a client-side error otherwise.
fn classify(e: tokio_postgres::Error) -> Outcome {
    match e.code() {
        Some(code) => Outcome::from_sqlstate(code.code()),
        None if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) => {
            Outcome::Lost
        }
        None => Outcome::Client,
    }
}
