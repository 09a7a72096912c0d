//! The relay driven over real loopback sockets with fed frames: the test plays both the client
//! and PostgreSQL, so limits, backpressure, Terminate and panics are checked byte for byte,
//! without a database and without timing assumptions (every wait is on bytes or an ending).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::cache::{CacheSettings, ResultCache};
use crate::pipeline::{FingerprintCache, Identity, Shared};
use crate::protocol::tag::{backend as be, frontend as fe};
use crate::reload::Rules;
use crate::stats::{Stats, StatsSettings};

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

fn pipeline(rules_toml: Option<&str>) -> Pipeline {
    let stats = Arc::new(Stats::new(&StatsSettings::default()));
    let rules = match rules_toml {
        None => Rules::load(None).unwrap(),
        Some(text) => {
            let dir = std::env::temp_dir().join(format!(
                "pgward-relay-{}-{:x}",
                std::process::id(),
                xxhash_rust::xxh3::xxh3_64(text.as_bytes())
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("rules.toml");
            std::fs::write(&path, text).unwrap();
            Rules::load(Some(&path)).unwrap()
        }
    };
    let cache = ResultCache::new(&CacheSettings::default(), stats.on_cache_removed());
    let shared = Arc::new(Shared {
        stats,
        fingerprints: FingerprintCache::new(64),
        rules: Arc::new(rules),
        cache,
        slow_statement: None,
        events: Arc::new(crate::eventlog::EventLog::new(std::time::Instant::now())),
    });
    Pipeline::new(shared, Identity::default())
}

/// A relay between a test "client" and a test "server" socket.
struct Rig {
    relay: Relay,
    client: TcpStream,
    server: TcpStream,
}

async fn rig(max_message: usize, rules: Option<&str>) -> Rig {
    let (client, client_side) = pair().await;
    let (server_side, server) = pair().await;
    let relay = Relay::new(
        Stream::Plain(client_side),
        Stream::Plain(server_side),
        pipeline(rules),
        max_message,
    );
    Rig {
        relay,
        client,
        server,
    }
}

struct NoHooks;

impl SessionHooks for NoHooks {
    fn backend_key(&mut self, upstream: CancelKey) -> CancelKey {
        upstream
    }
    fn cancel_upstream(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn ready() -> Vec<u8> {
    frame(be::READY_FOR_QUERY, b"I")
}

/// Runs the relay until it ends or `until` finishes, whichever is first.
async fn run_until<T>(relay: &mut Relay, until: impl Future<Output = T>) -> Result<T, Ending> {
    let mut hooks = NoHooks;
    tokio::select! {
        ending = relay.run(&mut hooks) => Err(ending),
        value = until => Ok(value),
    }
}

/// Reads exactly `n` bytes.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn a_huge_declared_length_costs_only_the_bytes_that_came() {
    let mut rig = rig(1 << 30, None).await;
    rig.server.write_all(&ready()).await.unwrap();
    let server = &mut rig.server;
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, 6)).await;
    assert_eq!(got.ok(), Some(ready()));
    // A Query declaring ~1 GiB, of which 64 KiB arrive.
    let mut header = vec![fe::QUERY];
    header.extend_from_slice(&((1u32 << 30) - 16).to_be_bytes());
    rig.client.write_all(&header).await.unwrap();
    rig.client.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
    // Waits on the event itself: every byte sent is in the relay's buffer.
    let sent = header.len() + 64 * 1024;
    while rig.relay.client.recv.filled().len() < sent {
        let turn = run_until(&mut rig.relay, tokio::task::yield_now()).await;
        assert!(turn.is_ok(), "the relay ended: {:?}", turn.err());
    }
    let held = rig.relay.client.recv.capacity();
    assert!(
        held < 512 * 1024,
        "buffer grew to {held} bytes for 64 KiB read"
    );
    let _ = server;
}

#[tokio::test]
async fn before_authentication_only_startup_sized_messages_pass() {
    let mut rig = rig(1 << 30, None).await;
    let mut header = vec![fe::PASSWORD];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    rig.client.write_all(&header).await.unwrap();
    let ending = run_until(&mut rig.relay, std::future::pending::<()>()).await;
    match ending {
        Err(Ending::ClientProtocol(message)) => assert!(message.contains("over the limit")),
        other => panic!("expected a protocol violation, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_panic_ends_the_session_not_the_process() {
    struct Panicky;
    impl SessionHooks for Panicky {
        fn backend_key(&mut self, _: CancelKey) -> CancelKey {
            panic!("injected fault");
        }
        fn cancel_upstream(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
            None
        }
    }
    let mut rig = rig(1 << 20, None).await;
    rig.server
        .write_all(&frame(be::BACKEND_KEY_DATA, &[0, 0, 0, 7, 1, 2, 3, 4]))
        .await
        .unwrap();
    let ending = rig.relay.run(&mut Panicky).await;
    assert!(matches!(ending, Ending::Panicked), "{ending:?}");
}

#[tokio::test]
async fn terminate_waits_for_the_upstream_to_finish() {
    let mut rig = rig(1 << 20, None).await;
    rig.server.write_all(&ready()).await.unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, 6)).await;
    assert_eq!(got.ok(), Some(ready()));
    // A statement is running; the client terminates without waiting for it.
    let query = frame(fe::QUERY, b"select pg_sleep(2)\0");
    let terminate = frame(fe::TERMINATE, b"");
    rig.client.write_all(&query).await.unwrap();
    rig.client.write_all(&terminate).await.unwrap();
    let mut upstream_got = vec![0; query.len() + terminate.len()];
    let read = run_until(&mut rig.relay, rig.server.read_exact(&mut upstream_got)).await;
    assert!(read.is_ok_and(|r| r.is_ok()));
    assert_eq!(upstream_got, [query, terminate.clone()].concat());
    // Postgres finishes the statement, answers, then closes.
    let answer = [frame(be::COMMAND_COMPLETE, b"SELECT 1\0"), ready()].concat();
    rig.server.write_all(&answer).await.unwrap();
    rig.server.shutdown().await.unwrap();
    drop(rig.server);
    let ending = run_until(&mut rig.relay, std::future::pending::<()>()).await;
    assert!(matches!(ending, Err(Ending::ClientTerminated)));
    rig.relay.flush().await;
    let got = read_n(&mut rig.client, answer.len()).await;
    assert_eq!(
        got, answer,
        "the answer reaches the client before the close"
    );
}

#[tokio::test]
async fn a_client_that_queues_more_than_max_queued_statements_is_held() {
    let mut rig = rig(1 << 20, None).await;
    rig.server.write_all(&ready()).await.unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, 6)).await;
    assert_eq!(got.ok(), Some(ready()));
    // Each Query owes a completion and a ReadyForQuery: twice MAX_QUEUED fill the queue twice.
    let query = frame(fe::QUERY, b"select 1\0");
    let all: Vec<u8> = query.repeat(MAX_QUEUED);
    let (mut client_reader, mut client_writer) = rig.client.into_split();
    let writer =
        tokio::spawn(async move { client_writer.write_all(&all).await.map(|_| client_writer) });
    let mut server = rig.server;
    let mut relay = rig.relay;
    while !relay.client_backlog {
        let turn = run_until(&mut relay, tokio::task::yield_now()).await;
        assert!(turn.is_ok(), "the relay ended: {:?}", turn.err());
        assert!(
            relay.pipeline.queued() <= MAX_QUEUED,
            "the queue passed its bound"
        );
    }
    assert_eq!(relay.pipeline.queued(), MAX_QUEUED);
    // One answer frees a place: the relay takes up the waiting frames again, up to the bound.
    let answer = [frame(be::COMMAND_COMPLETE, b"SELECT 1\0"), ready()].concat();
    server.write_all(&answer).await.unwrap();
    let mut got = vec![0; answer.len()];
    let read = run_until(&mut relay, client_reader.read_exact(&mut got)).await;
    assert!(read.is_ok_and(|r| r.is_ok()));
    assert_eq!(got, answer);
    while relay.pipeline.queued() < MAX_QUEUED {
        let turn = run_until(&mut relay, tokio::task::yield_now()).await;
        assert!(turn.is_ok(), "the relay ended: {:?}", turn.err());
    }
    assert_eq!(
        relay.pipeline.queued(),
        MAX_QUEUED,
        "the bound holds after the refill"
    );
    assert!(relay.client_backlog);
    writer.abort();
}

#[tokio::test]
async fn cached_answers_wait_while_the_client_does_not_read() {
    let rules = "[[rule]]\nname = \"big\"\nmatch.query = \"select big\"\ncache.ttl = \"60s\"\n";
    let mut rig = rig(1 << 20, Some(rules)).await;
    rig.server.write_all(&ready()).await.unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, 6)).await;
    assert_eq!(got.ok(), Some(ready()));
    // The first run fills the entry with a ~100 KB result.
    let query = frame(fe::QUERY, b"select big\0");
    rig.client.write_all(&query).await.unwrap();
    let mut upstream_got = vec![0; query.len()];
    let read = run_until(&mut rig.relay, rig.server.read_exact(&mut upstream_got)).await;
    assert!(read.is_ok_and(|r| r.is_ok()));
    let mut row_description = 1u16.to_be_bytes().to_vec();
    row_description.extend_from_slice(b"big\0");
    row_description.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255, 0, 0,
    ]);
    let value = vec![b'v'; 100 * 1024];
    let mut data_row = 1u16.to_be_bytes().to_vec();
    data_row.extend_from_slice(&(value.len() as u32).to_be_bytes());
    data_row.extend_from_slice(&value);
    let answer = [
        frame(be::ROW_DESCRIPTION, &row_description),
        frame(be::DATA_ROW, &data_row),
        frame(be::COMMAND_COMPLETE, b"SELECT 1\0"),
        ready(),
    ]
    .concat();
    rig.server.write_all(&answer).await.unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, answer.len())).await;
    assert_eq!(
        got.ok(),
        Some(answer.clone()),
        "the first answer passes as sent"
    );
    // 400 hits (~40 MB) are asked for, and none is read.
    let (_reader, mut writer) = rig.client.into_split();
    let asks = query.repeat(400);
    let write = tokio::spawn(async move { writer.write_all(&asks).await.map(|_| writer) });
    let mut relay = rig.relay;
    while !relay.client_backlog && relay.to_client.len() <= 2 * HIGH_WATER {
        let turn = run_until(&mut relay, tokio::task::yield_now()).await;
        assert!(turn.is_ok(), "the relay ended: {:?}", turn.err());
    }
    assert!(
        relay.to_client.len() < HIGH_WATER + answer.len(),
        "{} bytes of answers queued for a client that reads nothing",
        relay.to_client.len()
    );
    assert!(
        relay.client_backlog,
        "the rest of the client's queries wait unread"
    );
    write.abort();
}

#[tokio::test]
async fn nothing_goes_upstream_while_pgwards_own_cancel_is_unanswered() {
    let mut rig = rig(1 << 20, None).await;
    rig.server.write_all(&ready()).await.unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.client, 6)).await;
    assert_eq!(got.ok(), Some(ready()));
    // As after a budget passed: PostgreSQL has not yet closed pgward's cancel connection.
    let (handled, pending) = tokio::sync::oneshot::channel::<()>();
    rig.relay.cancel_in_flight = Some(pending);
    let query = frame(fe::QUERY, b"select 2\0");
    rig.client.write_all(&query).await.unwrap();
    // Waits on the event: the pipeline saw the Query (it now expects its answer).
    while !rig.relay.pipeline.busy() {
        let turn = run_until(&mut rig.relay, tokio::task::yield_now()).await;
        assert!(turn.is_ok(), "the relay ended: {:?}", turn.err());
    }
    assert_eq!(
        rig.relay.to_upstream.len(),
        query.len(),
        "a statement went to PostgreSQL before the cancel was handled"
    );
    handled.send(()).unwrap();
    let got = run_until(&mut rig.relay, read_n(&mut rig.server, query.len())).await;
    assert_eq!(got.ok(), Some(query));
}
