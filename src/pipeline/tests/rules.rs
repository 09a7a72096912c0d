//! Rules applied at a statement's first phases: a reject rule answers without going upstream,
//! a rewrite rule changes the SQL that goes upstream (simple Query and Parse).

use super::*;

const REJECT: &str = r#"
[[rule]]
name = "no-export"
match.pattern = '^select\*from orders$'
action = "reject"
message = "full exports run on the report replica"
sqlstate = "42501"
"#;

#[test]
fn a_reject_rule_answers_the_query_itself_and_sends_nothing_upstream() {
    let shared = shared(REJECT);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&[query("SELECT * FROM orders")], t0);
    assert!(
        s.take_upstream().is_empty(),
        "a rejected query never reaches PostgreSQL"
    );
    let id = fp(&shared, "SELECT * FROM orders");
    let expected = [
        error(
            Severity::Error,
            "42501",
            "full exports run on the report replica",
            &format!("rejected by pgward rule \"no-export\" (fingerprint {id})"),
            None,
        ),
        ready(),
    ]
    .concat();
    assert_wire!(s.take_client(), expected);
    assert!(!s.pipeline.busy(), "nothing is owed by PostgreSQL");
    assert_eq!(
        counter(&shared, "SELECT * FROM orders", Counter::Rejected),
        1
    );
    // Other statements of the session are untouched.
    let other = query("SELECT * FROM orders WHERE id = 1");
    s.send(std::slice::from_ref(&other), t0);
    assert_wire!(s.take_upstream(), other);
    assert!(s.take_client().is_empty());
}

const REWRITE: &str = r#"
[[rule]]
name = "products-from-cache"
match.query = "SELECT name FROM products WHERE id = 42"
rewrite = "SELECT name FROM products_cache WHERE id = $1"
"#;

#[test]
fn a_rewrite_rule_changes_the_sql_sent_upstream() {
    let shared = shared(REWRITE);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&[query("select name from products where id = 7")], t0);
    assert_wire!(
        s.take_upstream(),
        query("SELECT name FROM products_cache WHERE id = 7"),
        "the rule's text, with the client's value in place of $1"
    );
    // PostgreSQL's answer to the rewritten query reaches the client as it was sent.
    let answer = [
        row_description(&["name"]),
        data_row(&["lamp"]),
        complete("SELECT 1"),
        ready(),
    ];
    s.backend(&answer, t0 + ms(5));
    assert_wire!(s.take_client(), answer.concat());
    assert!(!s.pipeline.busy());
}

#[test]
fn a_rewrite_rule_changes_a_parse_and_keeps_the_clients_parameters() {
    let shared = shared(REWRITE);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(
        &batch("select name from products where id = $1", &["7"]),
        t0,
    );
    // The rewrite still uses $1: declared as the client left it (0, unspecified), so the
    // client's Bind with one value stays valid.
    let mut rewritten = Vec::new();
    build::parse(
        &mut rewritten,
        b"",
        "SELECT name FROM products_cache WHERE id = $1",
        &[0],
    )
    .unwrap();
    let expected = [rewritten, bind("", "", &["7"]), execute(""), sync()].concat();
    assert_wire!(s.take_upstream(), expected);
}

const OBSERVED: &str = r#"
[[rule]]
name = "no-export"
match.pattern = '^select\*from orders$'
action = "reject"
mode = "observe"

[[rule]]
name = "products-from-cache"
match.query = "SELECT name FROM products WHERE id = 42"
rewrite = "SELECT name FROM products_cache WHERE id = $1"
mode = "observe"
"#;

#[test]
fn observed_reject_and_rewrite_rules_only_count() {
    let shared = shared(OBSERVED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let (export, product) = (
        "SELECT * FROM orders",
        "select name from products where id = 7",
    );
    s.send(&[query(export), query(product)], t0);
    assert_wire!(
        s.take_upstream(),
        [query(export), query(product)].concat(),
        "both go upstream as the client sent them"
    );
    assert!(s.take_client().is_empty());
    assert_eq!(counter(&shared, export, Counter::WouldReject), 1);
    assert_eq!(counter(&shared, export, Counter::Rejected), 0);
    assert_eq!(counter(&shared, product, Counter::WouldRewrite), 1);
}
