//! `auth_query`: a user's secret read from PostgreSQL itself, through a configured auth user,
//! on pgward's own upstream connections (never a client's). Bounded everywhere: at most
//! [`MAX_CONNECTIONS`] lookups run at once (the rest wait for one), each within
//! `auth_query_timeout`; answers — a secret, or "no such user" — are cached for
//! `auth_query_cache_ttl` in at most [`CACHE_ENTRIES`] entries. The client side of the auth
//! user's login (SCRAM-SHA-256, md5, cleartext) and the frontend messages come from
//! `postgres-protocol`; the few backend messages read are decoded by `crate::protocol`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::IsNull;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::secret::Secret;
use super::settings::{AuthSettings, SettingsError};
use super::users_file::MAX_USER_NAME;
use crate::net::Stream;
use crate::protocol::backend::{self, auth as code};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::startup::StartupMessage;
use crate::protocol::tag::backend as tag;
use crate::upstream::{Upstream, UpstreamError};

/// Lookups (so upstream connections) at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Users whose answer is cached at once.
pub const CACHE_ENTRIES: u64 = 10_000;
/// Largest message accepted from PostgreSQL on these connections: a row holds one secret.
const MAX_MESSAGE: usize = 1 << 20;
/// Protocol 3.0.
const PROTOCOL: u32 = 196_608;

/// A cached answer: the user's secret, or `None` for no such user (or one without a password).
type Found = Option<Arc<Secret>>;

/// Why a lookup failed; the client is told only that pgward could not look it up.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error("auth_query: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("auth_query connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("auth_query: PostgreSQL refused the auth_user login: {0}")]
    Login(String),
    #[error("auth_query failed in PostgreSQL: {0}")]
    Query(String),
    #[error("auth_query: {0}")]
    Protocol(String),
    #[error("auth_query took longer than auth_query_timeout ({0:?})")]
    Timeout(Duration),
}

/// The auth user's login.
struct Login {
    user: String,
    password: Option<String>,
    database: String,
}

/// Looks secrets up with the configured query.
pub struct AuthQuery {
    upstream: Arc<Upstream>,
    login: Login,
    query: String,
    timeout: Duration,
    cache: Option<moka::sync::Cache<String, Found>>,
    /// Connections between lookups (at most [`MAX_CONNECTIONS`]).
    idle: Mutex<Vec<Stream>>,
    permits: Semaphore,
}

impl AuthQuery {
    /// `None` when `auth_query` is not set.
    pub fn new(
        settings: &AuthSettings,
        upstream: Arc<Upstream>,
    ) -> Result<Option<AuthQuery>, SettingsError> {
        let (Some(query), Some(user)) = (&settings.auth_query, &settings.auth_user) else {
            return Ok(None);
        };
        let ttl = settings.auth_query_cache_ttl.0;
        let cache = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Ok(Some(AuthQuery {
            upstream,
            login: Login {
                user: user.clone(),
                password: settings.auth_password()?,
                database: settings.auth_dbname.clone(),
            },
            query: query.clone(),
            timeout: settings.auth_query_timeout.0,
            cache,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
        }))
    }

    /// The secret of `user`, from the cache or PostgreSQL; `Ok(None)`: no such user.
    pub async fn lookup(&self, user: &str) -> Result<Found, LookupError> {
        if user.is_empty() || user.len() > MAX_USER_NAME {
            return Ok(None);
        }
        if let Some(found) = self.cached(user) {
            return Ok(found);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LookupError::Protocol("closed".into()))?;
        // Another lookup of the same user may have finished while this one waited.
        if let Some(found) = self.cached(user) {
            return Ok(found);
        }
        let found = tokio::time::timeout(self.timeout, self.ask(user))
            .await
            .map_err(|_| LookupError::Timeout(self.timeout))??;
        if let Some(cache) = &self.cache {
            cache.insert(user.to_owned(), found.clone());
        }
        Ok(found)
    }

    fn cached(&self, user: &str) -> Option<Found> {
        self.cache.as_ref().and_then(|cache| cache.get(user))
    }

    /// Runs the query on an idle connection, or a new one when there is none or the idle one
    /// turns out closed (PostgreSQL may end idle sessions).
    async fn ask(&self, user: &str) -> Result<Found, LookupError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(mut stream) = idle {
            match run_query(&mut stream, &self.query, user).await {
                Ok(found) => {
                    self.keep(stream);
                    return Ok(found);
                }
                Err(LookupError::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut stream = connect(&self.upstream, &self.login).await?;
        let found = run_query(&mut stream, &self.query, user).await?;
        self.keep(stream);
        Ok(found)
    }

    fn keep(&self, stream: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_CONNECTIONS {
            idle.push(stream);
        }
    }
}

/// Opens a connection and logs the auth user in, up to its first ReadyForQuery.
async fn connect(upstream: &Upstream, login: &Login) -> Result<Stream, LookupError> {
    let mut stream = upstream.connect().await?;
    let startup = StartupMessage {
        protocol: PROTOCOL,
        params: vec![
            ("user".into(), login.user.clone()),
            ("database".into(), login.database.clone()),
            ("application_name".into(), "pgward auth_query".into()),
        ],
    };
    stream.write_all(&startup.encode()).await?;
    let mut scram: Option<ScramSha256> = None;
    let mut out = BytesMut::new();
    loop {
        let (kind, body) = read_message(&mut stream).await?;
        match kind {
            tag::AUTHENTICATION => authenticate_step(&body, login, &mut scram, &mut out)?,
            tag::READY_FOR_QUERY => return Ok(stream),
            tag::ERROR_RESPONSE => {
                return Err(LookupError::Login(text(backend::error_message(&body))));
            }
            tag::PARAMETER_STATUS | tag::BACKEND_KEY_DATA | tag::NOTICE_RESPONSE => {}
            tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => return Err(unexpected(other, "logging in")),
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Answers one authentication request of the server into `out`.
fn authenticate_step(
    body: &[u8],
    login: &Login,
    scram: &mut Option<ScramSha256>,
    out: &mut BytesMut,
) -> Result<(), LookupError> {
    let data = backend::auth_data(body);
    let password = || {
        login.password.as_deref().ok_or_else(|| {
            LookupError::Login(
                "PostgreSQL asks for a password; set auth_password_file or auth_password_env"
                    .into(),
            )
        })
    };
    let protocol = |e: std::io::Error| LookupError::Protocol(e.to_string());
    match backend::auth_code(body) {
        Some(code::OK) => {}
        Some(code::CLEARTEXT_PASSWORD) => {
            frontend::password_message(password()?.as_bytes(), out).map_err(protocol)?;
        }
        Some(code::MD5_PASSWORD) => {
            let salt: [u8; 4] = data
                .try_into()
                .map_err(|_| LookupError::Protocol("malformed md5 salt".into()))?;
            let hash = md5_hash(login.user.as_bytes(), password()?.as_bytes(), salt);
            frontend::password_message(hash.as_bytes(), out).map_err(protocol)?;
        }
        Some(code::SASL) => {
            if !backend::sasl_mechanisms(body).contains(&SCRAM_SHA_256.as_bytes()) {
                return Err(LookupError::Login(
                    "the server offers no SCRAM-SHA-256".into(),
                ));
            }
            let client = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
            frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), out)
                .map_err(protocol)?;
            *scram = Some(client);
        }
        Some(code::SASL_CONTINUE) => {
            let client = scram
                .as_mut()
                .ok_or_else(|| unexpected(tag::AUTHENTICATION, "SCRAM"))?;
            client.update(data).map_err(protocol)?;
            frontend::sasl_response(client.message(), out).map_err(protocol)?;
        }
        Some(code::SASL_FINAL) => {
            // Checks the server's signature: the auth user's server really knows its verifier.
            let client = scram
                .as_mut()
                .ok_or_else(|| unexpected(tag::AUTHENTICATION, "SCRAM"))?;
            client.finish(data).map_err(protocol)?;
        }
        Some(other) => {
            return Err(LookupError::Login(format!(
                "unsupported authentication request {other}"
            )));
        }
        None => {
            return Err(LookupError::Protocol(
                "malformed authentication request".into(),
            ));
        }
    }
    Ok(())
}

/// One extended-protocol round trip: the query with `user` as `$1`, up to ReadyForQuery.
async fn run_query(stream: &mut Stream, query: &str, user: &str) -> Result<Found, LookupError> {
    let mut out = BytesMut::new();
    let protocol = |e: std::io::Error| LookupError::Protocol(e.to_string());
    frontend::parse("", query, std::iter::empty(), &mut out).map_err(protocol)?;
    let serialize = |value: &str, buf: &mut BytesMut| {
        buf.put_slice(value.as_bytes());
        Ok(IsNull::No)
    };
    frontend::bind("", "", [], [user], serialize, [], &mut out)
        .map_err(|_| LookupError::Protocol("cannot encode the Bind message".into()))?;
    frontend::execute("", 0, &mut out).map_err(protocol)?;
    frontend::sync(&mut out);
    stream.write_all(&out).await?;
    let mut rows: Vec<Found> = Vec::new();
    let mut failed = None;
    loop {
        let (kind, body) = read_message(stream).await?;
        match kind {
            tag::DATA_ROW if rows.is_empty() => rows.push(secret_of(&body)?),
            tag::DATA_ROW => {
                failed.get_or_insert(LookupError::Protocol(
                    "the query returned more than one row".into(),
                ));
            }
            tag::ERROR_RESPONSE => {
                failed = Some(LookupError::Query(text(backend::error_message(&body))));
            }
            tag::READY_FOR_QUERY => break,
            tag::PARSE_COMPLETE
            | tag::BIND_COMPLETE
            | tag::COMMAND_COMPLETE
            | tag::EMPTY_QUERY_RESPONSE
            | tag::NOTICE_RESPONSE
            | tag::PARAMETER_STATUS => {}
            other => return Err(unexpected(other, "running auth_query")),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(rows.pop().flatten()),
    }
}

/// The secret in a row `(name, secret)`: NULL (a role without a password) is no secret.
fn secret_of(body: &[u8]) -> Result<Found, LookupError> {
    let columns =
        backend::data_row(body).ok_or_else(|| LookupError::Protocol("malformed DataRow".into()))?;
    let [_, value] = columns.as_slice() else {
        return Err(LookupError::Protocol(format!(
            "the query must return two columns (name, secret), not {}",
            columns.len()
        )));
    };
    let Some(value) = value else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value)
        .map_err(|_| LookupError::Protocol("the secret is not UTF-8".into()))?;
    match Secret::parse(text) {
        Ok(secret) => Ok(Some(Arc::new(secret))),
        // An empty password cannot log in, as in PostgreSQL.
        Err(super::secret::SecretError::Empty) => Ok(None),
        Err(e) => Err(LookupError::Protocol(e.to_string())),
    }
}

/// One whole message from PostgreSQL: its tag and body.
async fn read_message(stream: &mut Stream) -> Result<(u8, Vec<u8>), LookupError> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let header = frame::parse_header(&head, MAX_MESSAGE)
        .map_err(|e| LookupError::Protocol(e.to_string()))?
        .ok_or_else(|| LookupError::Protocol("truncated message".into()))?;
    let mut body = Vec::new();
    let wanted = u64::try_from(header.body_len).unwrap_or(u64::MAX);
    let n = (&mut *stream).take(wanted).read_to_end(&mut body).await?;
    if n != header.body_len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok((header.tag, body))
}

fn text(message: Option<&[u8]>) -> String {
    String::from_utf8_lossy(message.unwrap_or(b"(no message)")).into_owned()
}

fn unexpected(kind: u8, during: &str) -> LookupError {
    LookupError::Protocol(format!("unexpected message type {kind} while {during}"))
}
