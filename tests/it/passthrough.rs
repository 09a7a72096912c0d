//! Everything a client does flows through unchanged: simple and extended protocol, pipelining,
//! COPY both ways, notifications, notices, large values and results, empty queries,
//! FunctionCall, startup parameters.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, TryStreamExt, future, pin_mut};
use tokio_postgres::AsyncMessage;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_return_what_postgres_returns() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();

    let rows = client
        .simple_query("SELECT 1 AS one, 'two' AS two; SELECT 3")
        .await
        .unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "3"]);

    let statement = client.prepare("SELECT $1::int + $2::int").await.unwrap();
    for i in 0..5 {
        let row = client.query_one(&statement, &[&i, &10]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 10);
    }
    let err = client.query_one("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(code(&err), "22012");
    // The session is still usable after an error.
    assert_eq!(
        client
            .query_one("SELECT 'ok'::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_keep_their_order() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let statement = client.prepare("SELECT $1::int * 2").await.unwrap();
    // tokio-postgres sends all of these before reading any response: many Parse/Bind/Execute
    // and Syncs in flight at once.
    let futures = (0..200).map(|i| {
        let client = &client;
        let statement = &statement;
        async move {
            client
                .query_one(statement, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = future::join_all(futures).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap(), i as i32 * 2);
    }
    // Errors in the middle of a pipeline fail only their own statement.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int", &[]),
        client.query_one("SELECT nope", &[]),
        client.query_one("SELECT 3::int", &[])
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(code(&b.unwrap_err()), "42703");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_forwarded() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let conn = format!(
        "{} application_name=checkout-svc options='-c search_path=pg_catalog -c work_mem=7MB'",
        conn_string(proxy.proxy_addr, TRUST_USER, None)
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_setting('application_name'), current_setting('search_path'), current_setting('work_mem'), current_user", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "checkout-svc");
    assert_eq!(row.get::<_, String>(1), "pg_catalog");
    assert_eq!(row.get::<_, String>(2), "7MB");
    assert_eq!(row.get::<_, String>(3), TRUST_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100k_rows_in_and_out() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE copied (id int, label text)")
        .await
        .unwrap();

    let sink = client.copy_in("COPY copied FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tlabel-{i}\n"));
        if chunk.len() > 64 * 1024 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(chunk)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    let row = client
        .query_one("SELECT count(*), sum(id) FROM copied", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 100_000);
    assert_eq!(row.get::<_, i64>(1), 4_999_950_000);

    let stream = client.copy_out("COPY copied TO STDOUT").await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 100_000);
    assert!(text.starts_with(b"0\tlabel-0\n"));
}

/// Peak resident memory of a process, from /proc (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_result_streams_with_flat_memory() {
    // pgward runs as its own process here, so its memory is measured alone.
    let cluster = shared();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &cluster.addr(),
            "--admin-listen",
            "",
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = connect_when_up(addr).await;
    // About 130 MB on the wire; the client drops each row as it arrives.
    let rows = client
        .query_raw(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        assert_eq!(row.unwrap().get::<_, String>(1).len(), 100);
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    let peak_mib = peak_rss_kib(child.id()) / 1024;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        peak_mib < 40,
        "pgward's peak memory was {peak_mib} MiB while relaying 130 MB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_values_both_ways() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let size = 50 * 1024 * 1024;
    let row = client
        .query_one("SELECT repeat('v', $1)", &[&(size as i32)])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0).len(), size);
    let big = "w".repeat(size);
    let row = client
        .query_one("SELECT length($1::text)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), size as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_reach_the_client() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let (listener, mut connection) = tokio_postgres::connect(
        &conn_string(proxy.proxy_addr, TRUST_USER, None),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        let _ = tx.send(m);
        future::ready(())
    }));
    listener
        .batch_execute("LISTEN orders_changed")
        .await
        .unwrap();
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();

    let notifier = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    notifier
        .batch_execute("NOTIFY orders_changed, 'order 42'")
        .await
        .unwrap();

    let mut got_notice = false;
    let mut got_notification = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(got_notice && got_notification) {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("messages arrive")
            .expect("channel open");
        match message.unwrap() {
            AsyncMessage::Notice(n) => got_notice |= n.message() == "hello from plpgsql",
            AsyncMessage::Notification(n) => {
                assert_eq!((n.channel(), n.payload()), ("orders_changed", "order 42"));
                got_notification = true;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queries_function_calls_and_parameter_status() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let mut raw = Raw::startup(
        proxy.proxy_addr,
        &[("user", TRUST_USER), ("database", "postgres")],
    )
    .await;

    raw.send(&query_message("")).await;
    let tags: Vec<u8> = raw.read_until_ready().await.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"IZ");

    raw.send(&query_message("SET application_name = 'renamed'"))
        .await;
    let messages = raw.read_until_ready().await;
    assert!(
        messages
            .iter()
            .any(|(t, b)| *t == b'S' && b.starts_with(b"application_name\0renamed\0")),
        "ParameterStatus missing: {messages:?}"
    );

    // FunctionCall ('F'): int4pl(20, 22) in binary.
    raw.send(&query_message("SELECT 'int4pl'::regproc::oid"))
        .await;
    let messages = raw.read_until_ready().await;
    let (_, row) = messages.iter().find(|m| m.0 == b'D').expect("oid row");
    let oid: u32 = String::from_utf8_lossy(&row[6..]).parse().unwrap();
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes()); // one format code
    body.extend_from_slice(&1i16.to_be_bytes()); // binary
    body.extend_from_slice(&2i16.to_be_bytes()); // two arguments
    for v in [20i32, 22] {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&1i16.to_be_bytes()); // binary result
    raw.send(&message(b'F', &body)).await;
    let messages = raw.read_until_ready().await;
    let (_, result) = messages
        .iter()
        .find(|m| m.0 == b'V')
        .expect("FunctionCallResponse");
    assert_eq!(&result[4..8], &42i32.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_work_through_pgward() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let port = proxy.proxy_addr.port().to_string();
    let psql = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-t",
            "-A",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            TRUST_USER,
            "-d",
            "postgres",
        ])
        .args([
            "-c",
            "SELECT 40 + 2",
            "-c",
            "\\copy (SELECT g FROM generate_series(1,3) g) TO STDOUT",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&psql.stdout), "42\n1\n2\n3\n");

    let pgbench = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("pgbench");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg("postgres");
        cmd
    };
    let init = pgbench(&["-i", "-s", "1", "-q"]).output().await.unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        let run = pgbench(&["-S", "-n", "-t", "200", "-c", "4", "-M", mode])
            .output()
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{mode}: {out}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{mode}: {out}"
        );
    }
}

/// `upstream.address = "SOCKET_DIRECTORY:PORT"`: pgward reaches PostgreSQL over its Unix socket
/// (PostgreSQL sees a local connection: no client address), and a budget's CancelRequest goes
/// the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_can_be_a_unix_socket() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.upstream.address = format!("{}:{}", cluster.dir.display(), cluster.port);
    config.rules = Some(crate::rules::rules_file(
        "[[rule]]\nname = \"short\"\nmatch.pattern = 'pg_sleep'\nbudget = \"50ms\"\n",
    ));
    let proxy = start_proxy(config).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid = backend_pid(&client).await;
    let local = cluster.psql(&format!(
        "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = {pid}"
    ));
    assert_eq!(
        local, "t",
        "the session's backend was not reached over the Unix socket"
    );
    let e = client
        .simple_query("SELECT pg_sleep(10)")
        .await
        .expect_err("the budget cancels it over the socket");
    assert_eq!(code(&e), "57014", "{e:?}");
    let rows = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(rows.get::<_, i32>(0), 42);
}

/// `server.unix_socket_dir`: clients on this host connect over pgward's Unix socket, named as
/// PostgreSQL names its own (psql -h DIR -p PORT finds it), and ops see where they came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_connect_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("pgward-sock-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = config_for(shared());
    config.server.unix_socket_dir = Some(dir.clone());
    let proxy = start_proxy(config).await;
    let port = proxy.proxy_addr.port();
    assert!(dir.join(format!(".s.PGSQL.{port}")).exists());
    let url = format!(
        "host={} port={port} user={TRUST_USER} dbname=postgres",
        dir.display()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let out = std::process::Command::new("psql")
        .args(["-XAt", "-h"])
        .arg(&dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            TRUST_USER,
            "-d",
            "postgres",
            "-c",
            "SELECT 'via socket'",
        ])
        .output()
        .expect("psql");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "via socket");
    let (_, body) =
        crate::stats_http::http(proxy.admin_addr.unwrap(), "GET", "/sessions", None).await;
    assert!(body.contains("\"peer\":\"unix socket\""), "{body}");
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
}
