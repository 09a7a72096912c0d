#!/usr/bin/env python3
"""bench/pgload.py — a small PostgreSQL load generator that keeps going on errors.

pgbench (PostgreSQL 15) aborts a client on any error other than a serialization failure or a
deadlock, so it cannot count how many recommendation queries pgward answered, refused (53000),
or cancelled (57014). This tool speaks the simple query protocol itself (Python standard
library only; trust, cleartext or md5 password authentication) and logs every request.

Modes:
  flood  open loop: requests arrive at --rate per second (Poisson) for --duration seconds and
         are served by --clients connections; a request still queued --timeout seconds after
         its arrival is dropped ("timeout": the caller gave up). Latency is measured from the
         arrival, like pgbench -R. After the last arrival, requests still queued or in flight
         get --drain seconds; what is left then is "unanswered".
  closed closed loop: --clients connections each send the next request as soon as the previous
         one is answered, for --duration seconds.
  hold   open --clients connections, run "SELECT 1" on each, write --ready-file, then keep
         them open and idle for --duration seconds (per-client memory measurement).

Requests come from --script, a pgbench-style file: `\\set NAME random_zipfian(LO, HI, S)` and
`\\set NAME random(LO, HI)` lines, `--` comments, and one SQL statement in which `:NAME` is
replaced by the drawn value.

--log FILE gets one CSV line per request: arrival (unix seconds), latency_ms, status
(ok | SQLSTATE | timeout | unanswered | conn), rows. A JSON summary goes to stdout.
"""

import argparse
import asyncio
import bisect
import hashlib
import json
import os
import random
import re
import struct
import sys
import time


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C', '?????')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C", "XX000")


def parse_error(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class Conn:
    """One connection speaking the simple query protocol."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer

    @classmethod
    async def open(cls, host, port, user, database, password, app):
        reader, writer = await asyncio.open_connection(host, port)
        c = cls(reader, writer)
        params = b""
        for k, v in (("user", user), ("database", database), ("application_name", app)):
            params += k.encode() + b"\0" + v.encode() + b"\0"
        params += b"\0"
        writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
        await writer.drain()
        while True:
            t, body = await c.read()
            if t == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code == 0:
                    continue
                if code == 3:
                    c.send(b"p", (password or "").encode() + b"\0")
                elif code == 5:
                    salt = body[4:8]
                    inner = hashlib.md5(((password or "") + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    c.send(b"p", b"md5" + outer.encode() + b"\0")
                else:
                    raise RuntimeError(f"authentication method {code} not supported (use trust, password or md5)")
                await writer.drain()
            elif t == b"E":
                raise PgError(parse_error(body))
            elif t == b"Z":
                return c
            # S (parameter status), K (backend key), N (notice): ignore

    def send(self, t, body):
        self.w.write(t + struct.pack("!i", 4 + len(body)) + body)

    async def read(self):
        head = await self.r.readexactly(5)
        n = struct.unpack("!i", head[1:])[0]
        body = await self.r.readexactly(n - 4) if n > 4 else b""
        return head[:1], body

    async def query(self, sql):
        """Run one statement; return the row count, raise PgError on an ErrorResponse."""
        self.send(b"Q", sql.encode() + b"\0")
        await self.w.drain()
        rows = 0
        err = None
        while True:
            t, body = await self.read()
            if t == b"D":
                rows += 1
            elif t == b"E":
                err = PgError(parse_error(body))
            elif t == b"Z":
                if err is not None:
                    raise err
                return rows

    def close(self):
        try:
            self.send(b"X", b"")
            self.w.close()
        except Exception:
            pass


class Script:
    SET_RE = re.compile(r"^\\set\s+(\w+)\s+(random_zipfian|random)\s*\(([^)]*)\)\s*$")

    def __init__(self, path):
        self.vars = []
        sql = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                s = line.strip()
                if not s or s.startswith("--"):
                    continue
                if s.startswith("\\"):
                    m = self.SET_RE.match(s)
                    if not m:
                        raise SystemExit(f"{path}: unsupported meta-command: {s}")
                    args = [a.strip() for a in m.group(3).split(",")]
                    if m.group(2) == "random_zipfian":
                        lo, hi, p = int(args[0]), int(args[1]), float(args[2])
                        self.vars.append((m.group(1), zipf_sampler(lo, hi, p)))
                    else:
                        lo, hi = int(args[0]), int(args[1])
                        self.vars.append((m.group(1), lambda lo=lo, hi=hi: random.randint(lo, hi)))
                else:
                    sql.append(line.rstrip("\n"))
        self.sql = "\n".join(sql).strip()
        if not self.sql:
            raise SystemExit(f"{path}: no SQL statement")

    def next(self):
        sql = self.sql
        for name, draw in self.vars:
            sql = re.sub(r":" + name + r"\b", str(draw()), sql)
        return sql


def zipf_sampler(lo, hi, s):
    """Values lo..hi with P(lo + k - 1) proportional to k^-s (what pgbench's random_zipfian draws)."""
    cdf = []
    total = 0.0
    for k in range(1, hi - lo + 2):
        total += k ** -s
        cdf.append(total)
    return lambda: lo + bisect.bisect_left(cdf, random.random() * total)


class Run:
    def __init__(self, args):
        self.a = args
        self.script = Script(args.script) if args.script else None
        self.records = []  # (arrival, latency_ms, status, rows)
        self.deadline = 0.0
        self.conn_errors = 0

    async def connect(self):
        a = self.a
        return await Conn.open(a.host, a.port, a.user, a.dbname, os.environ.get("PGPASSWORD"), a.application_name)

    async def worker_conn(self):
        """Connect, retrying until the run ends; None when it ended."""
        while time.time() < self.deadline:
            try:
                return await self.connect()
            except (OSError, asyncio.IncompleteReadError, PgError, RuntimeError) as e:
                self.conn_errors += 1
                if self.conn_errors <= 5:
                    print(f"pgload: connect: {e}", file=sys.stderr)
                await asyncio.sleep(0.2)
        return None

    async def one(self, conn, arrival):
        """Send one request; returns (conn or None when the connection was lost)."""
        sql = self.script.next()
        try:
            rows = await conn.query(sql)
            self.records.append((arrival, (time.time() - arrival) * 1000.0, "ok", rows))
            return conn
        except PgError as e:
            self.records.append((arrival, (time.time() - arrival) * 1000.0, e.sqlstate, 0))
            return conn
        except (OSError, asyncio.IncompleteReadError):
            self.records.append((arrival, (time.time() - arrival) * 1000.0, "conn", 0))
            conn.close()
            return None

    async def flood_worker(self, queue):
        conn = None
        while True:
            arrival = await queue.get()
            if arrival is None:
                break
            if time.time() - arrival > self.a.timeout:
                self.records.append((arrival, (time.time() - arrival) * 1000.0, "timeout", 0))
                continue
            if conn is None:
                conn = await self.worker_conn()
                if conn is None:
                    self.records.append((arrival, (time.time() - arrival) * 1000.0, "unanswered", 0))
                    continue
            self.inflight[id(asyncio.current_task())] = arrival
            conn = await self.one(conn, arrival)
            self.inflight.pop(id(asyncio.current_task()), None)
        if conn is not None:
            conn.close()

    async def flood(self):
        a = self.a
        queue = asyncio.Queue()
        self.inflight = {}
        start = time.time()
        self.deadline = start + a.duration
        workers = [asyncio.create_task(self.flood_worker(queue)) for _ in range(a.clients)]
        t = start
        while True:
            t += random.expovariate(a.rate)
            if t >= self.deadline:
                break
            delay = t - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(t)
        await asyncio.sleep(max(0.0, self.deadline - time.time()))
        # arrivals are over; the last ones get up to --drain seconds to be answered
        drain_end = time.time() + a.drain
        while (not queue.empty() or self.inflight) and time.time() < drain_end:
            await asyncio.sleep(0.05)
        # what is still queued or in flight now was not answered in the run
        while not queue.empty():
            arrival = queue.get_nowait()
            self.records.append((arrival, (time.time() - arrival) * 1000.0, "unanswered", 0))
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        now = time.time()
        for arrival in self.inflight.values():
            self.records.append((arrival, (now - arrival) * 1000.0, "unanswered", 0))

    async def closed_worker(self):
        conn = await self.worker_conn()
        while conn is not None and time.time() < self.deadline:
            conn = await self.one(conn, time.time())
            if conn is None:
                conn = await self.worker_conn()
        if conn is not None:
            conn.close()

    async def closed(self):
        self.deadline = time.time() + self.a.duration
        workers = [asyncio.create_task(self.closed_worker()) for _ in range(self.a.clients)]
        await asyncio.sleep(self.a.duration)
        await asyncio.wait(workers, timeout=self.a.timeout)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def hold(self):
        a = self.a
        self.deadline = time.time() + a.duration + 60

        async def open_one():
            c = await self.connect()
            await c.query("SELECT 1")
            return c

        conns = []
        # connect in batches so the listen backlog never overflows
        for i in range(0, a.clients, 50):
            conns += await asyncio.gather(*(open_one() for _ in range(i, min(a.clients, i + 50))))
        if a.ready_file:
            with open(a.ready_file, "w") as f:
                f.write(f"{len(conns)}\n")
        await asyncio.sleep(a.duration)
        for c in conns:
            c.close()
        print(json.dumps({"mode": "hold", "clients": len(conns)}))

    def summary(self, elapsed):
        by = {}
        for r in self.records:
            by[r[2]] = by.get(r[2], 0) + 1
        ok = sorted(r[1] for r in self.records if r[2] == "ok")

        def pct(p):
            if not ok:
                return None
            return round(ok[min(len(ok) - 1, int(p / 100.0 * len(ok)))], 3)

        n = len(self.records)
        return {
            "mode": self.a.mode,
            "requests": n,
            "answered": by.get("ok", 0),
            "answered_pct": round(100.0 * by.get("ok", 0) / n, 3) if n else None,
            "by_status": by,
            "throughput_per_s": round(by.get("ok", 0) / elapsed, 2) if elapsed > 0 else None,
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99)},
            "connect_errors": self.conn_errors,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["flood", "closed", "hold"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("--application-name", default="pgload")
    ap.add_argument("--script", help="pgbench-style script (flood, closed)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (flood)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds a queued request waits before the caller gives up (flood)")
    ap.add_argument("--drain", type=float, default=0.0, help="flood: seconds after the last arrival that requests still queued or in flight may take to finish")
    ap.add_argument("--log", help="CSV file: one line per request")
    ap.add_argument("--ready-file", help="hold: written once every connection is open")
    ap.add_argument("--seed", type=int, help="random seed")
    a = ap.parse_args()
    if a.seed is not None:
        random.seed(a.seed)
    if a.mode in ("flood", "closed") and not a.script:
        ap.error("--script is needed for " + a.mode)
    run = Run(a)
    t0 = time.time()
    try:
        asyncio.run(getattr(run, a.mode)())
    except KeyboardInterrupt:
        pass
    if a.mode == "hold":
        return
    elapsed = min(time.time() - t0, a.duration) if a.mode == "flood" else time.time() - t0
    if a.log:
        with open(a.log, "w") as f:
            f.write("arrival,latency_ms,status,rows\n")
            for arrival, lat, status, rows in sorted(run.records):
                f.write(f"{arrival:.6f},{lat:.3f},{status},{rows}\n")
    print(json.dumps(run.summary(elapsed)))


if __name__ == "__main__":
    main()
