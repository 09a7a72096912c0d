//! Tests of loading: every validation problem, all reported at once, with positions and rule
//! names.

use std::path::Path;
use std::time::Duration;

use super::*;

fn problems(text: &str) -> Vec<Problem> {
    match parse_rules(Path::new("rules.toml"), text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.problems,
    }
}

fn ok(text: &str) -> RuleSet {
    match parse_rules(Path::new("rules.toml"), text) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    }
}

/// The single problem of `text`, which must contain `needle`.
fn one(text: &str, needle: &str) -> Problem {
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    let p = ps.into_iter().next().unwrap_or_else(|| unreachable!());
    assert!(
        p.message.contains(needle),
        "{:?} lacks {needle:?}",
        p.message
    );
    p
}

#[test]
fn toml_syntax_error_is_one_problem_with_position() {
    let p = one("[defaults]\nbudget = \"30s\"\n[[rule]\nname = \"x\"\n", "");
    assert_eq!((p.line, p.rule), (3, None));
    assert!(p.column >= 1);
}

#[test]
fn unknown_keys_everywhere_are_all_reported() {
    let text = "colour = 1\n[defaults]\nbudgett = \"1s\"\n[[rule]]\nname = \"a\"\nmatch.pattern = \"x\"\nmatch.usr = \"u\"\nbugdet = \"1s\"\n";
    let ps = problems(text);
    let got: Vec<(usize, usize, Option<&str>)> = ps
        .iter()
        .map(|p| (p.line, p.column, p.rule.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1, None),
            (3, 1, None),
            (7, 7, Some("a")),
            (8, 1, Some("a"))
        ]
    );
    assert!(
        ps.iter().all(|p| p.message.starts_with("unknown key")),
        "{ps:#?}"
    );
    assert!(ps[2].message.contains("`usr`") && ps[2].message.contains("user"));
}

#[test]
fn wrong_type_is_reported_by_serde_with_position() {
    let p = one(
        "[[rule]]\nname = \"a\"\nmatch.pattern = \"x\"\nmax_concurrency = \"four\"\n",
        "max_concurrency: invalid type: string \"four\", expected an integer",
    );
    assert_eq!((p.line, p.column, p.rule.as_deref()), (4, 19, Some("a")));
    let p = one(
        "[[rule]]\nname = \"b\"\nmatch.user = 7\n",
        "match.user: invalid type",
    );
    assert_eq!((p.line, p.rule.as_deref()), (3, Some("b")));
    one(
        "[[rule]]\nname = \"c\"\nmatch = \"x\"\n",
        "match: invalid type: string \"x\", expected a table",
    );
}

#[test]
fn bad_regex() {
    let p = one(
        "[[rule]]\nname = \"r\"\nmatch.pattern = \"(unclosed\"\n",
        "not a valid regex",
    );
    assert_eq!((p.line, p.column, p.rule.as_deref()), (3, 17, Some("r")));
    assert!(!p.message.contains('\n'), "{:?}", p.message);
}

#[test]
fn rewrite_that_does_not_parse() {
    let text = "[[rule]]\nname = \"w\"\nmatch.query = \"select * from t where a = 1\"\nrewrite = \"selec * frm t\"\n";
    let p = one(text, "rewrite does not parse");
    assert_eq!((p.line, p.rule.as_deref()), (4, Some("w")));
}

#[test]
fn match_query_that_does_not_parse() {
    let p = one(
        "[[rule]]\nname = \"q\"\nmatch.query = \"selec 1\"\n",
        "match.query does not parse",
    );
    assert_eq!(p.line, 3);
}

#[test]
fn rewrite_placeholder_beyond_the_example_values() {
    let text = "[[rule]]\nname = \"w\"\nmatch.query = \"select * from t where a = 1 and b = 'x'\"\nrewrite = \"select * from u where a = $3\"\n";
    let p = one(text, "$3");
    assert!(p.message.contains("only 2"), "{}", p.message);
    assert_eq!(p.line, 4);
    // $2 is fine.
    ok(&text.replace("$3", "$2"));
}

#[test]
fn rewrite_needs_match_query_and_allow() {
    let text = "[[rule]]\nname = \"f\"\nmatch.fingerprint = \"00000000000000ff\"\nrewrite = \"select 1\"\n";
    one(text, "rewrite needs match.query");
    let text = "[[rule]]\nname = \"p\"\nmatch.pattern = \"^select\"\nrewrite = \"select 1\"\n";
    one(text, "rewrite needs match.query");
    let text = "[[rule]]\nname = \"j\"\nmatch.query = \"select 1\"\naction = \"reject\"\nrewrite = \"select 2\"\n";
    one(text, "reject rule cannot also rewrite");
}

#[test]
fn duplicate_names() {
    let text = "[[rule]]\nname = \"d\"\nmatch.pattern = \"a\"\n\n[[rule]]\nname = \"d\"\nmatch.pattern = \"b\"\n";
    let p = one(
        text,
        "duplicate rule name (first used by the rule on line 1)",
    );
    assert_eq!((p.line, p.rule.as_deref()), (6, Some("d")));
}

#[test]
fn two_matchers_and_no_matcher() {
    let text = "[[rule]]\nname = \"two\"\nmatch.query = \"select 1\"\nmatch.pattern = \"x\"\n";
    let p = one(text, "match.query and match.pattern are both set");
    assert_eq!(p.line, 4);
    one(
        "[[rule]]\nname = \"none\"\nbudget = \"1s\"\n",
        "rule has no match",
    );
    one(
        "[[rule]]\nname = \"empty\"\nmatch.user = \"u\"\n",
        "match needs one of",
    );
}

#[test]
fn bad_fingerprint() {
    let p = one(
        "[[rule]]\nname = \"f\"\nmatch.fingerprint = \"9f3a\"\n",
        "16 hex digits",
    );
    assert_eq!((p.line, p.column), (3, 21));
    one(
        "[[rule]]\nname = \"f\"\nmatch.fingerprint = \"zzzzzzzzzzzzzzzz\"\n",
        "16 hex",
    );
}

#[test]
fn bad_durations() {
    let p = one(
        "[[rule]]\nname = \"b\"\nmatch.pattern = \"x\"\nbudget = \"150\"\n",
        "needs a unit",
    );
    assert_eq!((p.line, p.rule.as_deref()), (4, Some("b")));
    one(
        "[[rule]]\nname = \"b\"\nmatch.pattern = \"x\"\nbudget = \"0s\"\n",
        "greater than 0",
    );
    one("[defaults]\ncancel_grace = \"soon\"\n", "cancel_grace");
    one(
        "[defaults]\nbudget = \"5 fortnights\"\n",
        "unknown duration unit",
    );
    let text = "[[rule]]\nname = \"q\"\nmatch.pattern = \"x\"\nmax_concurrency = 2\nqueue_timeout = \"1y\"\n";
    one(text, "queue_timeout");
}

#[test]
fn max_concurrency_must_be_positive() {
    // 2^63-1 passed the check once and then panicked the reload (a semaphore that large).
    one(
        "[[rule]]\nname = \"m\"\nmatch.pattern = \"x\"\nmax_concurrency = 9223372036854775807\n",
        "1..=100000",
    );
    let p = one(
        "[[rule]]\nname = \"m\"\nmatch.pattern = \"x\"\nmax_concurrency = 0\n",
        "1..=100000",
    );
    assert_eq!((p.line, p.column), (4, 19));
    one(
        "[[rule]]\nname = \"m\"\nmatch.pattern = \"x\"\nmax_concurrency = -3\n",
        "1..=100000",
    );
    one(
        "[[rule]]\nname = \"m\"\nmatch.pattern = \"x\"\nqueue_timeout = \"1s\"\n",
        "only applies together with max_concurrency",
    );
}

#[test]
fn reject_settings() {
    one(
        "[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\naction = \"reject\"\nsqlstate = \"4250\"\n",
        "sqlstate",
    );
    one(
        "[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\naction = \"reject\"\nsqlstate = \"42s01\"\n",
        "sqlstate",
    );
    one(
        "[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\nmessage = \"no\"\n",
        "only apply to action = \"reject\"",
    );
    one(
        "[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\naction = \"deny\"\n",
        "action must be",
    );
    one(
        "[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\nmode = \"dry-run\"\n",
        "mode must be",
    );
    let set = ok("[[rule]]\nname = \"s\"\nmatch.pattern = \"x\"\naction = \"reject\"\n");
    match &set.rules[0].action {
        Action::Reject { message, sqlstate } => {
            assert_eq!(sqlstate, DEFAULT_SQLSTATE);
            assert!(message.contains("\"s\""), "{message}");
        }
        Action::Allow => panic!("expected reject"),
    }
}

#[test]
fn missing_name_and_rule_not_an_array() {
    let p = one("[[rule]]\nmatch.pattern = \"x\"\n", "rule has no `name`");
    assert_eq!((p.line, p.rule), (1, None));
    one("[rule]\nname = \"x\"\n", "array of tables");
}

#[test]
fn all_problems_at_once_in_file_order_with_rule_names() {
    let text = r#"[defaults]
budget = "forever"

[[rule]]
name = "first"
match.pattern = "(oops"
max_concurrency = 0

[[rule]]
name = "second"
match.query = "select * from t where a = 1"
rewrite = "select * from u where a = $2"

[[rule]]
name = "first"
match.fingerprint = "123"
"#;
    let ps = problems(text);
    let got: Vec<(usize, Option<&str>)> = ps.iter().map(|p| (p.line, p.rule.as_deref())).collect();
    assert_eq!(
        got,
        [
            (2, None),
            (6, Some("first")),
            (7, Some("first")),
            (12, Some("second")),
            (15, Some("first")),
            (16, Some("first")),
        ],
        "{ps:#?}"
    );
    let shown = RulesError {
        path: "rules.toml".into(),
        problems: ps,
    }
    .to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 6, "{shown}");
    assert!(
        lines[1].starts_with("rules.toml:6:17: rule \"first\": match.pattern"),
        "{shown}"
    );
    assert!(lines[0].starts_with("rules.toml:2:10: budget: "), "{shown}");
}

#[test]
fn load_rules_reports_unreadable_file() {
    let e = match load_rules(Path::new("/nonexistent/pgward/rules.toml")) {
        Ok(_) => panic!("loaded a missing file"),
        Err(e) => e,
    };
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/pgward/rules.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn an_empty_rules_file_is_refused_but_a_comment_only_one_loads() {
    let dir = std::env::temp_dir().join(format!("pgward-empty-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.toml");
    for empty in ["", "  \n\t\n"] {
        std::fs::write(&path, empty).unwrap();
        let Err(e) = load_rules(&path) else {
            panic!("an empty file loaded")
        };
        assert!(e.to_string().contains("the rules file is empty"), "{e}");
    }
    std::fs::write(&path, "# no rules\n").unwrap();
    assert!(load_rules(&path).unwrap().rules.is_empty());
}

#[test]
fn empty_file_and_defaults() {
    let set = ok("");
    assert!(set.rules.is_empty());
    assert_eq!(set.default_budget, None);
    assert_eq!(set.cancel_grace, DEFAULT_CANCEL_GRACE);
    let set = ok("[defaults]\nbudget = \"off\"\ncancel_grace = \"250ms\"\n");
    assert_eq!(
        (set.default_budget, set.cancel_grace),
        (None, Duration::from_millis(250))
    );
    let e = RuleSet::empty();
    assert!(e.rules.is_empty() && e.default_budget.is_none());
    assert_eq!(e.cancel_grace, Duration::from_secs(1));
}

#[test]
fn cache_table_compiles_with_defaults() {
    let set = ok(r#"
[[rule]]
name = "reco"
match.pattern = "reco"
cache.ttl = "60s"
cache.stale_for = "10m"
cache.invalidate = "ttl"
on_budget_exceeded = "serve_stale"
on_upstream_error = "serve_stale"

[[rule]]
name = "plain"
match.pattern = "x"
cache.ttl = "1s"
"#);
    let reco = set.rules[0].cache.expect("cache");
    assert_eq!(reco.ttl, Duration::from_secs(60));
    assert_eq!(reco.stale_for, Duration::from_secs(600));
    assert_eq!(reco.refresh, Refresh::Background);
    assert_eq!(reco.invalidate, Invalidate::TtlOnly);
    assert_eq!(reco.max_entry_size, 1024 * 1024);
    assert_eq!(set.rules[0].on_budget_exceeded, Fallback::ServeStale);
    assert_eq!(set.rules[0].on_upstream_error, Fallback::ServeStale);
    let plain = set.rules[1].cache.expect("cache");
    assert_eq!(
        (plain.stale_for, plain.invalidate),
        (Duration::ZERO, Invalidate::OnWrite)
    );
    assert_eq!(set.rules[1].on_budget_exceeded, Fallback::Error);
    assert!(set.caches());
}

#[test]
fn cache_problems_are_all_reported_with_positions() {
    let ps = problems(
        r#"
[[rule]]
name = "bad"
match.pattern = "x"
cache.ttl = "0s"
cache.stale_for = "soon"
cache.refresh = "lazy"
cache.max_entry_size = "lots"
cache.invalidate = "never"
on_budget_exceeded = "panic"

[[rule]]
name = "stale-without-cache"
match.pattern = "y"
on_budget_exceeded = "serve_stale"

[[rule]]
name = "no-ttl"
match.pattern = "z"
cache.stale_for = "1m"

[[rule]]
name = "typo"
match.pattern = "w"
cache.tll = "1m"
"#,
    );
    let expect = [
        (5, "cache.ttl must be greater than 0"),
        (6, "cache.stale_for"),
        (7, "cache.refresh must be"),
        (8, "cache.max_entry_size"),
        (9, "cache.invalidate must be"),
        (10, "on_budget_exceeded must be"),
        (15, "needs a cache table"),
        (20, "cache needs a ttl"),
        (25, "unknown key `tll` in cache"),
    ];
    assert_eq!(ps.len(), expect.len(), "{ps:#?}");
    for (p, (line, needle)) in ps.iter().zip(expect) {
        assert_eq!(p.line, line, "{p:?}");
        assert!(
            p.message.contains(needle),
            "{:?} lacks {needle:?}",
            p.message
        );
    }
}

#[test]
fn reject_and_observe_rules_cannot_cache() {
    one(
        "[[rule]]\nname = \"r\"\nmatch.pattern = \"x\"\naction = \"reject\"\ncache.ttl = \"1s\"\n",
        "a reject rule cannot also cache",
    );
    one(
        "[[rule]]\nname = \"o\"\nmatch.pattern = \"x\"\nmode = \"observe\"\ncache.ttl = \"1s\"\n",
        "observe-mode rule cannot cache",
    );
}

const LIMITED: &str = r#"
[limits.reco]
max_concurrency = 2
max_db_time = "250ms/s"

[limits.reports]
max_db_time = "1s/2s"
db_time_burst = "2s"
queue_timeout = "200ms"

[[rule]]
name = "reco-a"
match.pattern = "reco_a"
limit = "reco"

[[rule]]
name = "reco-b"
match.pattern = "reco_b"
limit = "reco"
"#;

#[test]
fn shared_limits_compile_and_rules_refer_to_them() {
    let set = ok(LIMITED);
    let names: Vec<&str> = set.limits.iter().map(|l| &*l.name).collect();
    assert_eq!(names, ["reco", "reports"]);
    let reco = &set.limits[0];
    assert_eq!(reco.max_concurrency, Some(2));
    let db = reco.db_time.unwrap();
    assert_eq!(db.per_second, Duration::from_millis(250));
    assert_eq!(
        db.burst,
        Duration::from_millis(250),
        "one second's worth by default"
    );
    assert_eq!(reco.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
    let reports = &set.limits[1];
    assert_eq!(
        reports.db_time.unwrap().per_second,
        Duration::from_millis(500)
    );
    assert_eq!(reports.db_time.unwrap().burst, Duration::from_secs(2));
    assert_eq!(reports.queue_timeout, Duration::from_millis(200));
    assert_eq!(set.rules[0].limit, Some(0));
    assert_eq!(set.rules[1].limit, Some(0));
}

#[test]
fn every_limit_mistake_is_reported() {
    let rule = "[[rule]]\nname = \"r\"\nmatch.pattern = \"x\"\n";
    one(
        &format!("{rule}limit = \"nope\"\n"),
        "limit \"nope\" is not defined (defined: none)",
    );
    one(
        &format!("[limits.a]\nmax_concurrency = 1\n{rule}limit = \"a\"\nmax_concurrency = 2\n"),
        "either its own max_concurrency or a shared limit",
    );
    one("[limits.a]\nmax_db_time = \"250ms\"\n", "like \"250ms/s\"");
    one("[limits.a]\nmax_db_time = \"lots/s\"\n", "cannot read");
    one(
        "[limits.a]\nmax_db_time = \"100s/s\"\n",
        "between 1ms/s and 64s/s",
    );
    one(
        "[limits.a]\nmax_db_time = \"1ms/1h\"\n",
        "between 1ms/s and 64s/s",
    );
    one(
        "[limits.a]\nmax_concurrency = 1\ndb_time_burst = \"1s\"\n",
        "only applies together with max_db_time",
    );
    one(
        "[limits.a]\nmax_db_time = \"1s/s\"\ndb_time_burst = \"2m\"\n",
        "between 1ms and 60s",
    );
    one("[limits.a]\nqueue_timeout = \"1s\"\n", "limits nothing");
    one(
        "[limits.a]\nmax_concurrency = 0\n",
        "max_concurrency must be 1..=",
    );
    one(
        "[limits.a]\nmax_rows = 3\n",
        "unknown key `max_rows` in [limits.a]",
    );
    one("limits = 3\n", "must be a table of tables");
}

#[test]
fn protect_tables_name_a_rule_or_an_application() {
    let set = ok(&format!(
        "{LIMITED}\n[[protect]]\nrule = \"reco-a\"\np99 = \"20ms\"\n\n[[protect]]\napplication_name = \"checkout\"\np99 = \"500us\"\nwindow = \"10s\"\n"
    ));
    assert_eq!(set.protect.len(), 2);
    assert_eq!(set.protect[0].traffic, Protected::Rule(0));
    assert_eq!(&*set.protect[0].name, "rule:reco-a");
    assert_eq!(set.protect[0].window, DEFAULT_WINDOW);
    assert_eq!(set.protect[1].p99, Duration::from_micros(500));
    assert_eq!(&*set.protect[1].name, "application_name:checkout");
    let rule = "[[rule]]\nname = \"r\"\nmatch.pattern = \"x\"\n";
    one(
        &format!("{rule}[[protect]]\nrule = \"nope\"\np99 = \"20ms\"\n"),
        "rule \"nope\" is not defined",
    );
    one(
        &format!("{rule}[[protect]]\nrule = \"r\"\n"),
        "needs its objective",
    );
    one(
        &format!("{rule}[[protect]]\np99 = \"20ms\"\n"),
        "exactly one of rule",
    );
    one(
        &format!("{rule}[[protect]]\nrule = \"r\"\napplication_name = \"a\"\np99 = \"1s\"\n"),
        "exactly one of rule",
    );
    one(
        &format!("{rule}[[protect]]\nrule = \"r\"\np99 = \"2m\"\n"),
        "p99 must be between",
    );
    one(
        &format!("{rule}[[protect]]\nrule = \"r\"\np99 = \"1s\"\nwindow = \"5m\"\n"),
        "window must be between 1s and 60s",
    );
    one(
        &format!("{rule}[[protect]]\nrule = \"r\"\np99 = \"1s\"\nslo = 1\n"),
        "unknown key `slo`",
    );
    one(
        &format!(
            "{rule}[[protect]]\nrule = \"r\"\np99 = \"1s\"\n[[protect]]\nrule = \"r\"\np99 = \"2s\"\n"
        ),
        "protected twice",
    );
    one("[protect]\nrule = \"r\"\n", "must be an array of tables");
}
