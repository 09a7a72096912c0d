use super::*;
use proptest::prelude::*;

fn id(sql: &str) -> FingerprintId {
    normalize(sql).id
}

/// Pairs that must share an id.
const SAME: &[(&str, &str)] = &[
    (
        "SELECT * FROM t WHERE id = 1",
        "select * from t where id = 2",
    ),
    (
        "select * from t where id=1",
        "select  *  from t\n\twhere id =   1",
    ),
    (
        "SELECT * FROM users WHERE id = 42",
        "SELECT * FROM users WHERE id = $1",
    ),
    ("select /* hi */ 1", "select 1 -- trailing"),
    ("select /* a /* nested */ still comment */ 1", "select 1"),
    ("select $$a;b$$", "select 'b'"),
    ("select $tag$x;'y$tag$", "select 'z'"),
    (
        "select * from t where a = -5",
        "select * from t where a = 5",
    ),
    ("select * from t where a=-5", "select * from t where a = 7"),
    ("select f(-1)", "select f(1)"),
    (
        "select x from t where x between -1 and 10",
        "select x from t where x between 1 and 2",
    ),
    ("select -5", "select 5"),
    ("select '1'::int", "select '2'::int"),
    (
        "select * from t where id = any(array[1,2,3])",
        "select * from t where id = ANY(ARRAY[4])",
    ),
    (
        "select * from t where id in (1,2,3)",
        "select * from t where id in (1)",
    ),
    (
        "select * from t where s in ('a','b')",
        "select * from t where s in ('c')",
    ),
    (
        "select * from t where id in ($1,$2,$3)",
        "select * from t where id in (1, 2)",
    ),
    (
        "select * from t where id in (-1, 2)",
        "select * from t where id in (3)",
    ),
    (
        "select * from t where s in ('a'::text,'b'::text)",
        "select * from t where s in ('c'::text)",
    ),
    (
        "select * from t where a in (1,2,3) and b = 5",
        "select * from t where a in (1) and b = 6",
    ),
    (
        "select * from t where a in ($1,$2,$3) and b = $4",
        "select * from t where a in (1) and b = 6",
    ),
    ("select * from public.orders", "SELECT * FROM PUBLIC.ORDERS"),
    (
        "with x as (select 1) select * from x",
        "WITH x AS (SELECT 2) SELECT * FROM x",
    ),
    ("select '--', a from t", "select 'x', a from t"),
    (
        "select '/* no comment */', a from t",
        "select 'y', a from t",
    ),
    ("select E'a\\'b'", "select 'c'"),
    ("select e'it''s \\\\'", "select 'c'"),
    ("SeLeCt A fRoM T", "select a from t"),
    (
        "insert into t values (1,'a'),(2,'b')",
        "insert into t values (3,'c')",
    ),
    (
        "insert into t values ($1,$2),($3,$4),($5,$6)",
        "insert into t values (1,2)",
    ),
    (
        "insert into t values (1, now()), (2, now())",
        "insert into t values (3, now())",
    ),
    (
        "select * from t where a != 1",
        "select * from t where a <> 1",
    ),
    ("select 1;", "select 1"),
    ("select B'101'", "select 1"),
    ("select X'FF'", "select 'a'"),
    ("select 1.5e-3", "select 10"),
    ("select 0x1F", "select 1_000"),
    ("select .5", "select 5."),
    ("select DATE '2020-01-01'", "select date '2021-02-02'"),
    ("select U&'d\\0061t'", "select 'x'"),
    ("select N'abc'", "select 'x'"),
    ("select interval '1 day'", "select INTERVAL '2 hours'"),
    (
        "select * from t limit 10 offset 20",
        "select * from t limit 1 offset 0",
    ),
    (
        "select * from t where a = $2 and b = $1",
        "select * from t where a = $1 and b = $2",
    ),
    (
        "select * from t where a = 5 and b = $1",
        "select * from t where a = $1 and b = $2",
    ),
    ("select 'a'\n'b'", "select 'c'"),
    ("select ñame from t", "SELECT ñame FROM T"),
    ("select a->>'key' from t", "select a ->> 'other' from t"),
    (
        "select * from t where data @> '{\"a\":1}'",
        "select * from t where data@>'{}'",
    ),
    ("select \"A\" from t", "select \"A\"   from   t"),
    ("select a$b from t", "SELECT A$B FROM T"),
    ("select 1 -- unterminated", "select 2"),
    ("select 1 /* unterminated", "select 3"),
    (
        "select count(*) from t group by a order by a desc",
        "SELECT COUNT(*) FROM t GROUP BY a ORDER BY a DESC",
    ),
    (
        "update t set a = 1, b = 'x' where id = 3",
        "update t set a=2,b='y' where id=4",
    ),
    (
        "delete from t where id = 1 returning *",
        "DELETE FROM t WHERE id = $1 RETURNING *",
    ),
    ("select (1), [2]", "select ( 3 ) , [ 4 ]"),
    (
        "select a::numeric(10,2) from t",
        "select a :: numeric ( 12 , 4 ) from t",
    ),
    (
        "select * from t where a in (1,2) and b in (3,4,5)",
        "select * from t where a in (1) and b in (2)",
    ),
    (
        "select x from t where x = - 5",
        "select x from t where x = 5",
    ),
];

/// Pairs that must not share an id.
const DIFFERENT: &[(&str, &str)] = &[
    ("select a from t", "select b from t"),
    ("select \"Name\" from t", "select name from t"),
    ("select \"users\".a from t", "select users.a from t"),
    ("select * from public.orders", "select * from orders"),
    ("select * from t where a = 1", "select * from t where a > 1"),
    ("select x - 5 from t", "select x = -5 from t"),
    ("select '1'::int", "select '1'::bigint"),
    (
        "select * from t where a in (1,2)",
        "select * from t where a in (select 1)",
    ),
    (
        "select * from t where a in (1,2)",
        "select * from t where a not in (1,2)",
    ),
    ("insert into t values (1,2)", "insert into t values (1,2,3)"),
    ("select * from t limit 1", "select * from t offset 1"),
    (
        "select * from t where a = $1 and b = $1",
        "select * from t where a = $1 and b = $2",
    ),
    ("select '--', a from t", "select -- , a from t\n 1"),
    ("select 1", "select 1, 2"),
    (
        "with x as (select 1) select * from x",
        "with y as (select 1) select * from y",
    ),
    (
        "select * from a join b on a.id = b.id",
        "select * from a left join b on a.id = b.id",
    ),
    ("select \"a\"\"b\" from t", "select \"a\" from t"),
    (
        "select * from t where a in (x, y)",
        "select * from t where a in (x)",
    ),
    ("select array[1,2]", "select array[x,y]"),
    (
        "insert into t values (1, now())",
        "insert into t values (1, 2)",
    ),
    ("select U&\"a\" from t", "select \"a\" from t"),
    ("select a.b from t", "select a, b from t"),
    (
        "select * from t order by a asc",
        "select * from t order by a desc",
    ),
    ("select count(*) from t", "select count(1) from t"),
    ("select 1; select 2", "select 1"),
    (
        "select * from t where a in (1,2,x)",
        "select * from t where a in (1,x)",
    ),
    (
        "select * from t where a = $1",
        "select * from t where a = b",
    ),
    ("select a from t", "select a from t2"),
    ("select ñame from t", "select name from t"),
    (
        "select * from t where a is null",
        "select * from t where a is not null",
    ),
];

#[test]
fn table_same_ids() {
    assert!(SAME.len() + DIFFERENT.len() >= 60);
    for (a, b) in SAME {
        let (na, nb) = (normalize(a), normalize(b));
        assert_eq!(
            na.id, nb.id,
            "expected same id:\n  {a:?} -> {:?}\n  {b:?} -> {:?}",
            na.text, nb.text
        );
        assert_eq!(na.text, nb.text);
    }
}

#[test]
fn table_different_ids() {
    for (a, b) in DIFFERENT {
        let (na, nb) = (normalize(a), normalize(b));
        assert_ne!(
            na.id, nb.id,
            "expected different ids:\n  {a:?} / {b:?} -> {:?}",
            na.text
        );
    }
}

#[test]
fn exact_normalized_text() {
    let cases: &[(&str, &str)] = &[
        (
            "SELECT * FROM users WHERE id = 42;",
            "select*from users where id=$1",
        ),
        (
            "SELECT a, b FROM t WHERE x IN (1, 2, 3) AND y = -5",
            "select a,b from t where x in($1,...)and y=$2",
        ),
        (
            "select * from t where id = any(array[1,2,3]) and z = 'q'",
            "select*from t where id=any(array[$1,...])and z=$2",
        ),
        (
            "INSERT INTO t (a, b) VALUES (1, 'a'), (2, 'b') ON CONFLICT DO NOTHING",
            "insert into t(a,b)values($1,$2)on conflict do nothing",
        ),
        (
            "select '1'::int, DATE '2020-01-01'",
            "select $1::int,date $2",
        ),
        (
            "SELECT \"MyCol\", U&\"x\" FROM \"My\"\"T\"",
            "select \"MyCol\",u&\"x\" from \"My\"\"T\"",
        ),
        (
            "select * from t where a = $3 and b = 7 and c = $1",
            "select*from t where a=$1 and b=$2 and c=$3",
        ),
        (
            "select x - -5, a=-5, b@-5 from t",
            "select x-$1,a=$2,b@-$3 from t",
        ),
        ("select a - - b", "select a- -b"),
        (
            "select a <> b, c != d, e >= f, g || h, j::text, k -> 'l'",
            "select a<>b,c<>d,e>=f,g||h,j::text,k->$1",
        ),
        (
            "with x as (select 1) select * from x",
            "with x as(select $1)select*from x",
        ),
        ("select 'unterminated", "select $1"),
        (
            "update t set a = 1 where b in (select c from d where e in (2, 3))",
            "update t set a=$1 where b in(select c from d where e in($2,...))",
        ),
        ("select ((1))", "select(($1))"),
        ("values (1), (2), (3)", "values($1)"),
        (";;select 1;;", "select $1"),
        (
            "SELECT 1 FROM t WHERE a IN ($2, $1) AND b = $1",
            "select $1 from t where a in($2,...)and b=$3",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(normalize(sql).text, *want, "for {sql:?}");
    }
}

#[test]
fn id_is_xxh3_of_text() {
    let n = normalize("select 1");
    assert_eq!(
        n.id,
        FingerprintId(xxhash_rust::xxh3::xxh3_64(n.text.as_bytes()))
    );
}

#[test]
fn constants_are_source_ranges() {
    let sql = "select * from t where a in (1, 2) and b = -5 and c = 'x''y' and d = $1";
    let n = normalize(sql);
    let got: Vec<&str> = n.constants.iter().map(|r| &sql[r.clone()]).collect();
    assert_eq!(got, ["1", "2", "-5", "'x''y'"]);
    let sql = "select E'a\\'b', $q$x$q$, 1.5e-3, X'1F'";
    let got: Vec<String> = normalize(sql)
        .constants
        .iter()
        .map(|r| sql[r.clone()].to_string())
        .collect();
    assert_eq!(got, ["E'a\\'b'", "$q$x$q$", "1.5e-3", "X'1F'"]);
    assert!(normalize("select $1, a from t").constants.is_empty());
}

#[test]
fn split_statement_cases() {
    let cases: &[(&str, &[&str])] = &[
        ("select 1; select 2", &["select 1", "select 2"]),
        ("select ';' ; select 2;", &["select ';'", "select 2"]),
        (
            "select $$a;b$$; select $x$;$x$",
            &["select $$a;b$$", "select $x$;$x$"],
        ),
        (
            "select 1 -- ; not here\n; select 2",
            &["select 1", "select 2"],
        ),
        ("select /* ; */ 1;;; ;", &["select /* ; */ 1"]),
        (
            "select \"a;b\" from t; select E'\\';'",
            &["select \"a;b\" from t", "select E'\\';'"],
        ),
        ("  ;  ; /* only comment */ ;", &[]),
        (
            "create function f() returns int as $body$ select 1; $body$ language sql; select f()",
            &[
                "create function f() returns int as $body$ select 1; $body$ language sql",
                "select f()",
            ],
        ),
        ("select (1; 2); select 3", &["select (1; 2)", "select 3"]),
        (
            "select 'unterminated; select 2",
            &["select 'unterminated; select 2"],
        ),
        ("", &[]),
    ];
    for (sql, want) in cases {
        let got: Vec<&str> = split_statements(sql).into_iter().map(|r| &sql[r]).collect();
        assert_eq!(got, *want, "for {sql:?}");
    }
}

#[test]
fn analyze_kinds() {
    use StatementKind::*;
    let cases: &[(&str, StatementKind)] = &[
        ("SELECT 1", Read),
        ("(select 1) union (select 2)", Read),
        ("values (1)", Read),
        ("select * into newt from t", Write),
        ("INSERT INTO t VALUES (1)", Write),
        ("update t set a = 1", Write),
        ("delete from t", Write),
        (
            "merge into t using s on t.id = s.id when matched then delete",
            Write,
        ),
        ("truncate t", Write),
        ("copy t from stdin", Write),
        ("copy (select * from t) to stdout", Read),
        ("CREATE TABLE t (a int)", Ddl),
        ("alter table t add column b int", Ddl),
        ("drop table t", Ddl),
        ("BEGIN", Transaction),
        (
            "start transaction isolation level serializable",
            Transaction,
        ),
        ("commit", Transaction),
        ("rollback to savepoint s", Transaction),
        ("set transaction read only", Transaction),
        ("SET search_path = public", Utility),
        ("vacuum analyze t", Utility),
        ("explain select 1", Utility),
        ("show all", Utility),
        ("with x as (select 1) insert into t select * from x", Write),
        (
            "with x as (delete from t returning *) select * from x",
            Write,
        ),
        (
            "with recursive r(n) as (select 1 union all select n + 1 from r) select * from r",
            Read,
        ),
        ("", Utility),
        ("'junk", Utility),
    ];
    for (sql, want) in cases {
        let a = analyze(sql);
        assert_eq!(a.kind, *want, "for {sql:?}");
        assert_eq!(
            analyze(&normalize(sql).text).kind,
            *want,
            "normalized {sql:?}"
        );
    }
    assert_eq!(Ddl.as_str(), "ddl");
    assert_eq!(Transaction.as_str(), "transaction");
    assert_eq!(Read.as_str(), "read");
    assert_eq!(Write.as_str(), "write");
    assert_eq!(Utility.as_str(), "utility");
}

fn tables(sql: &str) -> (Vec<String>, Vec<String>) {
    let a = analyze(sql);
    assert!(a.parsed, "should parse: {sql:?}");
    (a.reads, a.writes)
}

#[test]
fn analyze_tables() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "select * from Orders o join public.Items i on i.oid = o.id",
            &["orders", "public.items"],
            &[],
        ),
        (
            "select * from a where id in (select aid from b where x in (select y from c))",
            &["a", "b", "c"],
            &[],
        ),
        (
            "with recent as (select * from orders) select * from recent join users u on true",
            &["orders", "users"],
            &[],
        ),
        (
            "insert into archive select * from orders where id = 1",
            &["orders"],
            &["archive"],
        ),
        ("insert into t select * from t", &["t"], &["t"]),
        (
            "update public.orders set total = 0 from items where items.oid = orders.id",
            &["items"],
            &["public.orders"],
        ),
        (
            "delete from sessions where user_id in (select id from users)",
            &["users"],
            &["sessions"],
        ),
        ("truncate a, b", &[], &["a", "b"]),
        (
            "with d as (delete from q returning *) insert into log select * from d",
            &[],
            &["q", "log"],
        ),
        ("create table t (a int)", &[], &["t"]),
        ("alter table s.t add column b int", &[], &["s.t"]),
        (
            "select * from \"Mixed\" m, \"lower\" l",
            &["\"Mixed\"", "lower"],
            &[],
        ),
        ("copy t to stdout", &["t"], &[]),
        ("copy t from stdin", &[], &["t"]),
    ];
    for (sql, reads, writes) in cases {
        assert_eq!(tables(sql), (s(reads), s(writes)), "for {sql:?}");
    }
    // Normalized text (with a collapsed list marker) still analyzes.
    let n = normalize("select * from t where id in (1,2,3)");
    assert_eq!(tables(&n.text), (s(&["t"]), s(&[])));
    let bad = analyze("selec * frm");
    assert!(!bad.parsed);
    assert!(bad.reads.is_empty() && bad.writes.is_empty());
}

#[test]
fn fingerprint_id_display_and_parse() {
    let id = FingerprintId(0x00ab_cdef_0123_4567);
    assert_eq!(id.to_string(), "00abcdef01234567");
    assert_eq!(format!("{id:x}"), "00abcdef01234567");
    assert_eq!("00abcdef01234567".parse::<FingerprintId>(), Ok(id));
    assert_eq!("00ABCDEF01234567".parse::<FingerprintId>(), Ok(id));
    for bad in [
        "",
        "abc",
        "00abcdef012345678",
        "+0abcdef01234567",
        "00abcdef0123456g",
    ] {
        assert_eq!(
            bad.parse::<FingerprintId>(),
            Err(FingerprintIdParseError),
            "{bad:?}"
        );
    }
    assert_eq!(FingerprintId(0).to_string(), "0000000000000000");
    assert_eq!(FingerprintId(u64::MAX).to_string(), "ffffffffffffffff");
}

// ---------------------------------------------------------------- properties

/// Templates: `K` marks a keyword, `I` an identifier, `N` a number, `S` a string literal;
/// every other token is literal text. Tokens are joined by separators.
const TEMPLATES: &[&[&str]] = &[
    &[
        "Kselect", "Ia", ",", "Ib", "Kfrom", "It", "Kwhere", "Iid", "=", "N",
    ],
    &[
        "Kselect", "*", "Kfrom", "It", "Kwhere", "Ix", "Kin", "(", "N", ",", "N", ")", "Kand",
        "Iy", "=", "S",
    ],
    &[
        "Kinsert", "Kinto", "It", "(", "Ia", ",", "Ib", ")", "Kvalues", "(", "N", ",", "S", ")",
    ],
    &[
        "Kupdate", "It", "Kset", "Ia", "=", "S", "Kwhere", "Iid", "=", "N", "Kand", "Ib", "<", "N",
    ],
    &[
        "Kselect", "Ia", "Kfrom", "It", "Korder", "Kby", "Ia", "Klimit", "N", "Koffset", "N",
    ],
];

fn render(
    t: &[&str],
    ks: &[bool],
    ids: &[String],
    nums: &[i64],
    strs: &[String],
    seps: &[&str],
) -> String {
    let (mut out, mut k, mut i, mut n, mut s) = (String::new(), 0, 0, 0, 0);
    for (pos, tok) in t.iter().enumerate() {
        if pos > 0 {
            out.push_str(seps.get(pos % seps.len().max(1)).copied().unwrap_or(" "));
        }
        match tok.split_at(1) {
            ("K", w) => {
                let up = ks.get(k).copied().unwrap_or(false);
                out.push_str(&if up { w.to_uppercase() } else { w.to_string() });
                k += 1;
            }
            ("I", w) => {
                out.push_str(ids.get(i).map(String::as_str).unwrap_or(w));
                i += 1;
            }
            ("N", _) => {
                out.push_str(&nums.get(n).copied().unwrap_or(1).to_string());
                n += 1;
            }
            ("S", _) => {
                let v = strs.get(s).cloned().unwrap_or_default();
                out.push('\'');
                out.push_str(&v.replace('\'', "''"));
                out.push('\'');
                s += 1;
            }
            _ => out.push_str(tok),
        }
    }
    out
}

fn seps() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec![
            " ",
            "  ",
            "\n",
            "\t",
            " /* c */ ",
            " -- c\n",
            "\r\n ",
            "/**/ ",
        ]),
        1..20,
    )
}

proptest! {
    #[test]
    fn whitespace_case_and_literals_keep_id(
        t in 0..TEMPLATES.len(),
        ks in prop::collection::vec(any::<bool>(), 12),
        nums in prop::collection::vec(-100_000i64..100_000, 4),
        strs in prop::collection::vec(".{0,12}", 2),
        s in seps(),
    ) {
        let tpl = TEMPLATES[t];
        let base = render(tpl, &[], &[], &[], &[], &[" "]);
        let varied = render(tpl, &ks, &[], &nums, &strs, &s);
        prop_assert_eq!(normalize(&base).text, normalize(&varied).text, "{} / {}", base, varied);
        prop_assert_eq!(id(&base), id(&varied));
    }

    #[test]
    fn changing_an_identifier_changes_id(
        t in 0..TEMPLATES.len(),
        which in 0usize..6,
        a in "c_[a-z0-9_]{0,8}",
        b in "c_[a-z0-9_]{0,8}",
    ) {
        prop_assume!(a != b);
        let tpl = TEMPLATES[t];
        let n_ids = tpl.iter().filter(|x| x.starts_with('I')).count();
        let which = which % n_ids;
        let mk = |name: &str| -> Vec<String> {
            (0..n_ids).map(|i| if i == which { name.to_string() } else { format!("i{i}") }).collect()
        };
        let qa = render(tpl, &[], &mk(&a), &[], &[], &[" "]);
        let qb = render(tpl, &[], &mk(&b), &[], &[], &[" "]);
        prop_assert_ne!(id(&qa), id(&qb), "{} / {}", qa, qb);
    }

    #[test]
    fn never_panics_on_unicode(s in any::<String>()) {
        check_total(&s);
    }

    #[test]
    fn never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        check_total(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn never_panics_on_sql_soup(s in "[ a-zA-Z0-9_$'\"();,.:*/+<>=!@&|\\-\\[\\]\\\\\n\u{e9}\u{4e2d}]{0,120}") {
        check_total(&s);
    }
}

fn check_total(s: &str) {
    let a = normalize(s);
    let b = normalize(s);
    assert_eq!(a, b, "deterministic");
    assert_eq!(
        a.id,
        FingerprintId(xxhash_rust::xxh3::xxh3_64(a.text.as_bytes()))
    );
    let mut prev_end = 0;
    for r in &a.constants {
        assert!(
            r.start >= prev_end && r.start < r.end && s.get(r.clone()).is_some(),
            "{r:?} in {s:?}"
        );
        prev_end = r.end;
    }
    let mut prev_end = 0;
    for r in split_statements(s) {
        assert!(
            r.start >= prev_end && r.start < r.end && s.get(r.clone()).is_some(),
            "{r:?} in {s:?}"
        );
        prev_end = r.end;
    }
    let an = analyze(s);
    if !an.parsed {
        assert!(an.reads.is_empty() && an.writes.is_empty());
    }
    let _ = analyze(&a.text);
}

#[test]
fn pathological_inputs_stay_total() {
    let deep = "(".repeat(20_000) + &")".repeat(20_000);
    let n = normalize(&format!("select {deep}"));
    assert_eq!(n.text.len(), "select".len() + 40_000);
    assert!(!analyze(&format!("select {deep}")).parsed);
    let long_expr = format!("select {}", vec!["1"; 5_000].join("+"));
    assert_eq!(normalize(&long_expr).constants.len(), 5_000);
    let _ = analyze(&long_expr);
    let many_lists = format!("select {}", "array[".repeat(50) + &"]".repeat(50));
    let _ = normalize(&many_lists);
    let big_param = normalize("select $99999999999999999999, $70, $70, $1");
    assert_eq!(big_param.text, "select $1,$2,$2,$3");
    assert_eq!(normalize("select /* /* */").text, "select");
    assert_eq!(normalize("select $a$ unterminated").text, "select $1");
    assert_eq!(normalize("select E'\\").text, "select $1");
}

#[test]
fn report_query_collapses_and_parses() {
    let sql =
        "SELECT a FROM public.orders WHERE s IN ('paid','shipped') AND r = ANY(ARRAY['eu','us'])";
    let n = normalize(sql);
    assert_eq!(
        n.text,
        "select a from public.orders where s in($1,...)and r=any(array[$2,...])"
    );
    assert_eq!(n.constants.len(), 4);
    let a = analyze(sql);
    assert_eq!(
        (a.kind, a.parsed, a.reads),
        (StatementKind::Read, true, vec!["public.orders".to_string()])
    );
}

/// Runs `f` on a thread with half the stack of a tokio worker (2 MiB), in a debug build: a
/// recursion that input can deepen aborts the test process instead of passing, and what passes
/// has at least twice the room on a real worker.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn huge_expression_chains_are_not_parsed_and_do_not_overflow() {
    for op in ["+", " AND ", " OR ", "||", "::int+"] {
        let sql = format!("SELECT 1{}", format!("{op}1").repeat(300_000));
        let a = on_worker_stack(move || {
            let n = normalize(&sql);
            (analyze(&sql), analyze(&n.text))
        });
        assert_eq!((a.0.kind, a.0.parsed), (StatementKind::Read, false), "{op}");
        assert!(!a.1.parsed, "{op}");
    }
}

#[test]
fn the_longest_analyzed_chain_fits_a_worker_stack() {
    // Just under the token limit: sqlparser builds, visits and drops the deepest tree it may.
    let terms = MAX_ANALYZED_TOKENS / 2 - 2;
    for op in ["+", " AND ", "->"] {
        let sql = format!("SELECT 1{} FROM t", format!("{op}1").repeat(terms));
        assert!(within_parser_limits(&sql));
        let a = on_worker_stack(move || analyze(&sql));
        assert!(a.parsed, "{op}");
        assert_eq!(a.reads, ["t"]);
    }
}

#[test]
fn deep_nesting_is_refused_by_the_parser_not_the_stack() {
    let parens = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let subqueries = format!(
        "SELECT * FROM t WHERE a IN {}1{}",
        "(SELECT ".repeat(3_000),
        ")".repeat(3_000)
    );
    for sql in [parens, subqueries] {
        let (a, n) = on_worker_stack(move || (analyze(&sql), normalize(&sql)));
        assert!(!a.parsed);
        assert!(!n.text.is_empty());
    }
}

#[test]
fn backslash_strings_follow_the_session_setting() {
    let sql = r"select 'x\' leaked' from t where b = 'y'";
    let off = normalize_with(sql, Strings::Backslash);
    assert_eq!(off.text, "select $1 from t where b=$2");
    assert!(!normalize(sql).text.contains("from t where b"));
    assert_eq!(
        split_statements_with(r"select 'a\';b'; select 2", Strings::Backslash).len(),
        2
    );
}

/// Found by the `normalize` fuzz target: a stray `$` (not a parameter, not a dollar quote) was
/// written flush against its neighbours, so the normalized text lexed differently: `$ $`
/// became `$$` (a dollar quote), `a $b` became the one word `a$b`, `$ 1` became `$$1`.
#[test]
fn a_stray_dollar_keeps_its_spacing_so_normalizing_is_stable() {
    for sql in [
        "$\u{c}$",
        "$ $",
        "tag$t $axtg",
        "select $ 1",
        "select $ abc$ x",
        "x $ \"y\"",
    ] {
        for strings in [Strings::Standard, Strings::Backslash] {
            let once = normalize_with(sql, strings).text;
            assert_eq!(normalize_with(&once, strings).text, once, "for {sql:?}");
        }
    }
    assert_eq!(normalize("select $ 1").text, "select $ $1");
}

/// Found by the `normalize` fuzz target: a lone `:` written flush against a following `=`
/// or `:` made `:=` (one operator) or `::` (a cast) in the normalized text, which then
/// normalized differently.
#[test]
fn a_lone_colon_before_equals_stays_apart() {
    for sql in [
        "@: =",
        ": : =",
        ": :: =",
        "a : = b",
        "a : => b",
        "a[1 : 2]",
        "x : : int",
    ] {
        let once = normalize(sql).text;
        assert_eq!(normalize(&once).text, once, "for {sql:?}");
    }
    assert_eq!(normalize("a : = b").text, "a: =b");
}

/// Found by the `normalize` fuzz target (as `in(0values)`): an IN list whose element held a
/// VALUES list collapsed, and its `,...` then read as a VALUES separator, so every pass added
/// another `,...`. An element holding a VALUES list now never collapses, as one holding
/// brackets never did.
#[test]
fn an_in_list_holding_values_does_not_collapse() {
    for sql in [
        "in(0values)",
        "select 1 where 1 in (values (1))",
        "select 1 where 1 in (values (1), (2))",
    ] {
        let once = normalize(sql).text;
        assert_eq!(normalize(&once).text, once, "for {sql:?}");
    }
    assert_eq!(
        normalize("select 1 where 1 in (values (1), (2))").text,
        "select $1 where $2 in(values($3))"
    );
}

/// Found by the `analyze` fuzz target (as `;with xy$ `): a leading `;` made the kind Utility,
/// but normalizing drops it, so the raw and the normalized text of one statement had
/// different kinds. `analyze` accepts either, so both must agree.
#[test]
fn a_leading_semicolon_does_not_change_the_kind() {
    for (sql, kind) in [
        (";with x as (select 1) select * from x", StatementKind::Read),
        ("; ;insert into t values (1)", StatementKind::Write),
        (";(select 1)", StatementKind::Read),
    ] {
        assert_eq!(analyze(sql).kind, kind, "for {sql:?}");
        assert_eq!(analyze(&normalize(sql).text).kind, kind, "for {sql:?}");
    }
    assert_eq!(analyze(";").kind, StatementKind::Utility);
}
