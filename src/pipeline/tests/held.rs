//! Cache hits with zero upstream messages in the extended protocol: a cacheable statement's
//! Parse, Bind and Describe are held until its Execute; a hit answers them all from pgward
//! (and the Sync too, when PostgreSQL got nothing of the batch), anything else sends them on
//! in order, byte for byte. A statement or portal pgward answered itself is sent upstream
//! first when a later message needs it there.

use super::*;

use super::batches::{ITEMS, ITEMS_CACHED};

fn rows() -> Vec<u8> {
    [data_row(&["1", "lamp"]), complete("SELECT 1")].concat()
}

fn description() -> Vec<u8> {
    row_description(&["id", "name"])
}

/// Sends `frames` once as a miss (all of it reaches PostgreSQL, in order) and answers it with
/// `answer`; the client gets PostgreSQL's answer as it is.
fn miss(s: &mut Session, sent: &[Vec<u8>], answer: &[Vec<u8>], now: Instant) {
    s.send(sent, now);
    assert_wire!(
        s.take_upstream(),
        sent.concat(),
        "a miss goes upstream unchanged"
    );
    s.backend(&frames(&answer.concat()), now + ms(1));
    assert_wire!(s.take_client(), answer.concat());
    assert!(!s.pipeline.busy());
}

#[test]
fn a_described_unnamed_statement_hit_sends_postgres_nothing() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let sent = described_batch(ITEMS, &["1"]);
    let answer = [
        parse_complete(),
        bind_complete(),
        description(),
        rows(),
        ready(),
    ];
    miss(&mut s, &sent, &answer, t0);
    s.send(&sent, t0 + ms(10));
    assert_wire!(
        s.take_upstream(),
        [],
        "the hit's batch sends PostgreSQL nothing"
    );
    assert_wire!(
        s.take_client(),
        answer.concat(),
        "ParseComplete, BindComplete, the RowDescription, the rows and ReadyForQuery from pgward"
    );
    assert!(!s.pipeline.busy());
    assert_eq!(counter(&shared, ITEMS, Counter::CacheHit), 1);
}

#[test]
fn a_prepared_statement_hit_sends_postgres_nothing() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    miss(
        &mut s,
        &[parse("s1", ITEMS), sync()],
        &[parse_complete(), ready()],
        t0,
    );
    let run = [
        bind("", "s1", &["1"]),
        describe_portal(""),
        execute(""),
        sync(),
    ];
    let answer = [bind_complete(), description(), rows(), ready()];
    miss(&mut s, &run, &answer, t0 + ms(5));
    s.send(&run, t0 + ms(10));
    assert_wire!(s.take_upstream(), []);
    assert_wire!(s.take_client(), answer.concat());
    // Without a Describe the same statement is keyed apart, and answered rows only.
    let bare = [bind("", "s1", &["1"]), execute(""), sync()];
    miss(
        &mut s,
        &bare,
        &[bind_complete(), rows(), ready()],
        t0 + ms(20),
    );
    s.send(&bare, t0 + ms(30));
    assert_wire!(s.take_upstream(), []);
    assert_wire!(s.take_client(), [bind_complete(), rows(), ready()].concat());
}

#[test]
fn a_statement_pgward_answered_is_parsed_upstream_before_a_bind_needs_it() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let sent = batch(ITEMS, &["1"]);
    let answer = [parse_complete(), bind_complete(), rows(), ready()];
    miss(&mut s, &sent, &answer, t0);
    s.send(&sent, t0 + ms(10));
    assert_wire!(s.take_upstream(), []);
    s.take_client();
    // The client binds the unnamed statement it believes parsed, with other values: a miss.
    // PostgreSQL's unnamed statement is not this one, so pgward parses it first.
    let again = [bind("", "", &["2"]), execute(""), sync()];
    s.send(&again, t0 + ms(20));
    assert_wire!(
        s.take_upstream(),
        [parse("", ITEMS), again.concat()].concat()
    );
    let other = [data_row(&["2", "desk"]), complete("SELECT 1")].concat();
    s.backend(
        &frames(&[parse_complete(), bind_complete(), other.clone(), ready()].concat()),
        t0 + ms(21),
    );
    assert_wire!(
        s.take_client(),
        [bind_complete(), other, ready()].concat(),
        "the ParseComplete of pgward's own Parse is swallowed"
    );
    assert!(!s.pipeline.busy());
    // From now on PostgreSQL has it: no second Parse.
    let third = [bind("", "", &["3"]), execute(""), sync()];
    s.send(&third, t0 + ms(30));
    assert_wire!(s.take_upstream(), third.concat());
}

#[test]
fn describe_and_deallocate_of_a_named_statement_pgward_answered_reach_a_parsed_one() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let fill = [
        parse("s2", ITEMS),
        bind("", "s2", &["1"]),
        execute(""),
        sync(),
    ];
    miss(
        &mut s,
        &fill,
        &[parse_complete(), bind_complete(), rows(), ready()],
        t0,
    );
    // A new name, the same statement and values: a hit, and s3 exists only in pgward.
    let hit = [
        parse("s3", ITEMS),
        bind("", "s3", &["1"]),
        execute(""),
        sync(),
    ];
    s.send(&hit, t0 + ms(10));
    assert_wire!(s.take_upstream(), []);
    assert_wire!(
        s.take_client(),
        [parse_complete(), bind_complete(), rows(), ready()].concat()
    );
    s.send(&[describe_statement("s3"), sync()], t0 + ms(20));
    assert_wire!(
        s.take_upstream(),
        [parse("s3", ITEMS), describe_statement("s3"), sync()].concat()
    );
    s.backend(&[parse_complete(), description(), ready()], t0 + ms(21));
    assert_wire!(s.take_client(), [description(), ready()].concat());
    // s2's hit leaves it answered again only if re-parsed by the client; DEALLOCATE of a
    // statement pgward answered (s4) reaches a statement PostgreSQL has.
    let hit4 = [
        parse("s4", ITEMS),
        bind("", "s4", &["1"]),
        execute(""),
        sync(),
    ];
    s.send(&hit4, t0 + ms(30));
    assert_wire!(s.take_upstream(), []);
    s.take_client();
    s.send(&[query("DEALLOCATE s4")], t0 + ms(40));
    assert_wire!(
        s.take_upstream(),
        [parse("s4", ITEMS), query("DEALLOCATE s4")].concat()
    );
}

#[test]
fn a_flush_or_another_statement_sends_the_held_messages_first() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&[parse("", ITEMS), flush()], t0);
    assert_wire!(s.take_upstream(), [parse("", ITEMS), flush()].concat());
    s.backend(&[parse_complete()], t0 + ms(1));
    assert_wire!(s.take_client(), parse_complete());
    // A Bind held, then a Parse of another statement: the Bind goes first.
    s.send(&[bind("", "", &["1"]), parse("", "select 2")], t0 + ms(2));
    assert_wire!(
        s.take_upstream(),
        [bind("", "", &["1"]), parse("", "select 2")].concat()
    );
}

#[test]
fn a_hit_and_a_miss_in_one_batch_answer_in_order() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let sent = batch(ITEMS, &["1"]);
    miss(
        &mut s,
        &sent,
        &[parse_complete(), bind_complete(), rows(), ready()],
        t0,
    );
    let other = "select * from items where id = $1 and 1 = 1";
    let frames_sent = [
        parse("", ITEMS),
        bind("", "", &["1"]),
        execute(""),
        parse("", other),
        bind("", "", &["1"]),
        execute(""),
        sync(),
    ];
    s.send(&frames_sent, t0 + ms(10));
    assert_wire!(
        s.take_upstream(),
        frames_sent[3..].concat(),
        "only the miss and the Sync go upstream"
    );
    assert_wire!(
        s.take_client(),
        [parse_complete(), bind_complete(), rows()].concat(),
        "the hit is answered at once: nothing is owed before it"
    );
    let answer = [
        parse_complete(),
        bind_complete(),
        data_row(&["1", "lamp"]),
        complete("SELECT 1"),
        ready(),
    ];
    s.backend(&answer, t0 + ms(11));
    assert_wire!(s.take_client(), answer.concat());
    assert!(!s.pipeline.busy());
}

#[test]
fn past_the_registry_bound_new_names_are_passed_through_unfollowed() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let names: Vec<Vec<u8>> = (0..crate::pipeline::statements::MAX_NAMES)
        .map(|i| parse(&format!("s{i}"), ITEMS))
        .collect();
    s.send(&names, t0);
    s.send(&[sync()], t0);
    s.take_upstream();
    // One more name: not followed, so not held back for the cache either.
    s.send(&[parse("one_too_many", ITEMS)], t0);
    assert_wire!(s.take_upstream(), parse("one_too_many", ITEMS));
    // The unnamed statement, which it follows, is still held until its Execute.
    s.send(&[sync(), parse("", ITEMS)], t0);
    assert_wire!(s.take_upstream(), sync());
}

#[test]
fn discard_all_forgets_every_statement_and_a_pipelined_deallocate_all_keeps_the_later_one() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    miss(
        &mut s,
        &[parse("s1", ITEMS), sync()],
        &[parse_complete(), ready()],
        t0,
    );
    let run = [bind("", "s1", &["1"]), execute(""), sync()];
    miss(
        &mut s,
        &run,
        &[bind_complete(), rows(), ready()],
        t0 + ms(1),
    );
    s.send(&run, t0 + ms(2));
    assert_wire!(s.take_upstream(), [], "a hit while PostgreSQL has s1");
    s.take_client();
    s.send(&[query("DISCARD ALL")], t0 + ms(3));
    assert_wire!(s.take_upstream(), query("DISCARD ALL"));
    s.backend(&[complete("DISCARD ALL"), ready()], t0 + ms(4));
    s.take_client();
    // s1 is gone upstream: its Bind must reach PostgreSQL, which answers 26000.
    s.send(&run, t0 + ms(5));
    assert_wire!(
        s.take_upstream(),
        run.concat(),
        "never a hit for a statement PostgreSQL dropped"
    );
    s.backend(
        &[
            pg_error("26000", "prepared statement \"s1\" does not exist"),
            ready(),
        ],
        t0 + ms(6),
    );
    s.take_client();
    // DEALLOCATE ALL pipelined before a new Parse of s1: the later statement is kept.
    s.send(
        &[query("DEALLOCATE ALL"), parse("s1", ITEMS), sync()],
        t0 + ms(7),
    );
    assert_wire!(
        s.take_upstream(),
        [query("DEALLOCATE ALL"), parse("s1", ITEMS), sync()].concat()
    );
    s.backend(
        &[
            complete("DEALLOCATE ALL"),
            ready(),
            parse_complete(),
            ready(),
        ],
        t0 + ms(8),
    );
    s.take_client();
    s.send(&run, t0 + ms(9));
    assert_wire!(
        s.take_upstream(),
        [],
        "s1 from after the DEALLOCATE ALL hits again"
    );
}

#[test]
fn after_an_sql_prepare_a_named_parse_is_never_answered_by_pgward() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    // The name may now exist upstream without pgward knowing it.
    s.send(&[query("PREPARE s9 AS SELECT 1")], t0);
    assert_wire!(s.take_upstream(), query("PREPARE s9 AS SELECT 1"));
    s.backend(&[complete("PREPARE"), ready()], t0 + ms(1));
    s.take_client();
    s.send(&[parse("s9", ITEMS)], t0 + ms(2));
    assert_wire!(
        s.take_upstream(),
        parse("s9", ITEMS),
        "sent at once: a duplicate name is PostgreSQL's 42P05 to give"
    );
}
