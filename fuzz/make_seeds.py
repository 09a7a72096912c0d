#!/usr/bin/env python3
"""Writes the hand-made seed corpora in fuzz/seeds/<target>/ (checked in; see docs/fuzzing.md).

Frames mirror the messages of the protocol unit tests and of a psql/JDBC session; SQL, rules
and config texts are taken from the repository's own tests and example files, so the seeds
change when those do. Run from the repository root: python3 fuzz/make_seeds.py
"""
import ast
import hashlib
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def frame(tag, body=b""):
    return tag + struct.pack(">i", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def write(target, items):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    for item in dict.fromkeys(items):  # dedupe, keep order
        name = hashlib.sha1(item).hexdigest()[:16]
        (d / name).write_bytes(item)
    print(f"{target}: {len(list(d.iterdir()))} seeds")


def rust_strings(path, pattern):
    """Plain Rust string literals in `path` whose content matches `pattern`."""
    text = (ROOT / path).read_text()
    out = []
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', text):
        raw = m.group(1)
        if not re.search(pattern, raw):
            continue
        try:
            out.append(ast.literal_eval('"' + raw.replace("\\'", "'") + '"'))
        except (ValueError, SyntaxError):
            continue
    return out


def frontend():
    parse = frame(b"P", cstr("s1") + cstr("select $1") + b"\0\x01" + b"\0\0\0\x17")
    bind = frame(b"B", cstr("") + cstr("s1") + b"\0\0\0\x01\0\0\0\x0242\0\0")
    execute = frame(b"E", cstr("") + b"\0\0\0\0")
    sync = frame(b"S")
    many_types = frame(b"P", cstr("") + cstr("select $1, $2") + b"\x80\x00" + b"\0\0\0\x19" * 8)
    return [
        frame(b"Q", cstr("select 1")),
        frame(b"Q", cstr("SELECT * FROM orders WHERE id = 42; SELECT 2")),
        frame(b"Q", cstr("a") + b"b\0"),
        parse + bind + frame(b"D", b"P\0") + execute + sync,
        parse + frame(b"D", cstr("Ss1")) + frame(b"H") + sync,
        frame(b"P", cstr("") + cstr("select 1") + b"\0\0") + sync,
        frame(b"P", cstr("s") + cstr("select") + b"\0\x02\0\0\0\x17"),
        many_types,
        frame(b"C", cstr("Ss1")) + frame(b"C", cstr("Pp")) + sync,
        frame(b"d", b"1\t2\n") + frame(b"c") + frame(b"f", cstr("aborted")),
        frame(b"p", cstr("secret")),
        frame(b"p", cstr("SCRAM-SHA-256") + b"\0\0\0\x20n,,n=,r=abcdefghijklmnopqrstuvwx"),
        frame(b"F", b"\0\0\x04\xd2\0\0\0\x01\0\0\0\x01\0\0\0\x01" + b"x" + b"\0\0"),
        frame(b"X"),
        b"Q\xff\xff\xff\xff",
        b"Q\0\0\0\x03",
        b"d\0\0\x10\0" + b"x" * 16,
        b"Z\0\0\0\x04",
        frame(b"E", b"\0\0\0"),
        frame(b"D", b"X\0"),
    ]


def backend():
    sasl = frame(b"R", b"\0\0\0\x0a" + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0")
    error = frame(b"E", b"SERROR\0VFATAL\0C28P01\0Mpassword authentication failed\0\0")
    login = (
        frame(b"R", b"\0\0\0\0")
        + frame(b"S", cstr("server_version") + cstr("17.2"))
        + frame(b"S", cstr("standard_conforming_strings") + cstr("off"))
        + frame(b"K", b"\0\0\x30\x39" + b"abcd")
        + frame(b"Z", b"I")
    )
    row_desc = frame(b"T", b"\0\x01" + cstr("a") + b"\0" * 6 + b"\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0")
    data_row = frame(b"D", b"\0\x01\0\0\0\x0242")
    return [
        sasl,
        login,
        error,
        frame(b"N", b"SNOTICE\0C00000\0Mhello\0\0"),
        row_desc + data_row + frame(b"C", cstr("SELECT 1")) + frame(b"Z", b"T"),
        frame(b"C", cstr("INSERT 0 3")) + frame(b"C", cstr("COPY 100000")) + frame(b"Z", b"E"),
        frame(b"C", cstr("CREATE TABLE")) + frame(b"C", cstr("12")) + frame(b"C", b""),
        frame(b"1") + frame(b"2") + frame(b"3") + frame(b"n") + frame(b"s") + frame(b"I"),
        frame(b"t", b"\0\x02\0\0\0\x17\0\0\0\x19"),
        frame(b"K", b"\0\0\0\x07" + b"k" * 32),
        frame(b"K", b"\0\0\0\x07"),
        frame(b"R", b"\0\0\0\x05salt"),
        frame(b"R", b"\0\0\0\x0bv=abc"),
        frame(b"v", b"\0\x03\0\x02\0\0\0\x01" + cstr("_pq_.x")),
        frame(b"d", b"copy data"),
        frame(b"E", b"garbage"),
        frame(b"Z", b"TT"),
        frame(b"Z", b"\x05"),  # a status byte PostgreSQL never sends (found by the fuzzer)
    ]


def startup():
    def message(params, protocol=196608):
        body = struct.pack(">I", protocol)
        for k, v in params:
            body += cstr(k) + cstr(v)
        body += b"\0"
        return struct.pack(">I", len(body) + 4) + body

    def special(code, rest=b""):
        return struct.pack(">II", 8 + len(rest), code) + rest

    return [
        message([("user", "alice")]),
        message([("user", "alice"), ("database", "shop"), ("application_name", "checkout"),
                 ("options", "-c search_path=app")]),
        message([("user", "bob"), ("client_encoding", "UTF8"), ("DateStyle", "ISO")], 196610),
        message([("user", "bob"), ("_pq_.command_trace", "on")], 196611),
        message([("database", "nouser")]),
        message([("user", "")]),
        message([("user", "\u00e9l\u00e8ve")]),
        special(80877103),
        special(80877104),
        special(80877102, b"\0\0\0\x2a\x01\x02\x03\x04"),
        special(80877102, b"\0\0\0\x2a" + b"s" * 32),
        special(80877102, b"\0\0\0\x2a"),
        special(80877102, b"\0\0\0\x2a" + b"s" * 257),
        struct.pack(">II", 8, 131072),
        struct.pack(">I", 3),
        struct.pack(">I", 65536),
        b"\xff\xff\xff\xff",
        struct.pack(">I", 13) + b"\0\x03\0\0user\0\xff\0\0",
        struct.pack(">I", 10) + b"\0\x03\0\0u\0",
    ]


SQL_WORDS = r"(?i)^\s*(select|insert|update|delete|with|values|table|create|drop|alter|begin|" \
    r"start|commit|rollback|set|reset|discard|copy|explain|do|call|execute|vacuum|lock|truncate)\b"


def sql():
    found = []
    for path in ["src/fingerprint/tests.rs", "src/cache/tests.rs", "src/cache/plan.rs",
                 "src/rules/rewrite.rs", "src/pipeline/phases.rs", "src/pipeline/admit.rs",
                 "src/pipeline/rewrite.rs", "src/pipeline/parse.rs", "tests/it/cache.rs"]:
        found += rust_strings(path, SQL_WORDS)
    found += [
        r"select 'x\' leaked' from t where b = 'y'",
        "select $a$ unterminated",
        "select E'\\",
        "select /* /* */",
        "select U&'d\\0061t\\+000061' from \"Quoted\".\"T\" where x = B'101' and y = X'ff'",
        "select 1e10, .5, 1_000, 0x1f, -3 from t where a = any(array[1, 2]) and b in (1, 2)",
        "insert into t values (1, 'a'), (2, 'b') on conflict do nothing returning *",
        "SELECT " + "(" * 40 + "1" + ")" * 40,
        "SELECT 1" + "+1" * 200,
        "select a from t for update; select b from u for share",
        "with recursive r as (select 1 union all select n + 1 from r) select * from r",
        "create temp table tt (a int); insert into tt select * from pg_temp.x",
        "select now(), random(), set_config('a', 'b', false)",
    ]
    return [s.encode() for s in found[:80]]


def rules():
    found = [(ROOT / p).read_text() for p in ["rules.toml", "docker/rules.toml"]]
    for path in ["src/rules/tests.rs", "src/rules/evaluate_tests.rs", "tests/it/rules.rs"]:
        found += rust_strings(path, r"\[\[rule\]\]|\[defaults\]")
    out = []
    for i, text in enumerate(found[:50]):
        seed = text.encode()
        if i % 3 == 0:  # the target tries the statement after a NUL too
            seed += b"\0select * from orders where id = 7"
        out.append(seed)
    return out


def config():
    found = [(ROOT / p).read_text() for p in ["pgward.toml", "docker/pgward.toml"]]
    found += rust_strings("src/config.rs", r"=")
    found += [
        "",
        "[server]\nlisten = \"0.0.0.0:6432\"\nmax_message_size = \"1GiB\"\n[upstream]\n"
        "address = \"[::1]:5432\"\ntls = \"verify-full\"\n",
        "[log]\nslow_statement = \"off\"\nformat = \"json\"\nlevel = \"debug\"\n",
        "[cache]\nmax_size = \"64MiB\"\nvolatile_functions = [\"f\", \"g\"]\n",
        "listen = \"127.0.0.1:7000\"\n\u00e9 = 1\n",
    ]
    return [t.encode() for t in found[:50]]


def main():
    sql_seeds = sql()
    write("frontend_frames", frontend())
    write("backend_frames", backend())
    write("startup", startup())
    write("normalize", sql_seeds)
    write("analyze", sql_seeds)
    write("cache_plan", sql_seeds)
    write("rules", rules())
    write("config", config())


if __name__ == "__main__":
    main()
