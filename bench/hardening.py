#!/usr/bin/env python3
"""RSS and outcome of pgward under the memory attacks of issue #11 (cases 4 to 8).

Starts a throwaway PostgreSQL and one pgward binary with a default config and a rules file
that caches one ~100 KB result, then, one case at a time:

  4. two connections each declare a 1 GiB message: one as the startup packet, one as a Query
     after login; both send 64 KiB of it and wait;
  5. 10,000 idle TCP connections that never send a byte; how many pgward holds, and how many
     are still open after its auth_timeout (15 s by default);
  6. a client pipelines 4,000 cached ~100 KB queries and never reads;
  7. a client misses the cache on a ~20 MB result and never reads it; does a second client
     asking the same (single-flight waiter) get an answer, and how soon;
  8. 1,000 `POST /cache/invalidate?table=<40 KB name>`, each name different: RSS and how many
     bytes pgward's log grew by.

For each case it prints pgward's RSS before and after (VmRSS, KiB) and what happened. Run it
against two builds to compare them:

    python3 bench/hardening.py --pgward target/release/pgward --label new

It is a measurement, not a test: it waits fixed times for pgward to act.
"""

import argparse
import os
import pwd
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    best = None
    for d in sorted(os.listdir("/usr/lib/postgresql")):
        if os.path.exists(f"/usr/lib/postgresql/{d}/bin/initdb"):
            best = f"/usr/lib/postgresql/{d}/bin"
    return best or os.path.dirname(shutil.which("initdb") or "")


def as_pg_user(cmd):
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def start_postgres(work):
    data = os.path.join(work, "pgdata")
    os.makedirs(data)
    if os.getuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(work, pw.pw_uid, pw.pw_gid)
        os.chown(data, pw.pw_uid, pw.pw_gid)
    bindir = pg_bin()
    subprocess.run(as_pg_user([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    subprocess.run(as_pg_user([f"{bindir}/pg_ctl", "-D", data, "-w", "-l", f"{data}/log", "-o",
                               f"-p {port} -k {work} -c max_connections=200", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    return bindir, data, port


def startup_packet(user="postgres", database="postgres"):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body


def query(sql):
    return message(b"Q", sql.encode() + b"\0")


def read_until_ready(sock):
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return buf, False
        buf += chunk
        # ReadyForQuery is the last message of an answer.
        if len(buf) >= 6 and buf[-6:-1] == b"Z\0\0\0\x05":
            return buf, True


def login(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(startup_packet())
    _, ok = read_until_ready(s)
    assert ok, "login failed"
    return s


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def select_1_works(port):
    try:
        s = login(port)
        s.sendall(query("SELECT 1"))
        out, ok = read_until_ready(s)
        s.close()
        return ok and b"D" in out
    except (OSError, AssertionError):
        return False


def report(case, before, after, outcome):
    print(f"case {case}: RSS {before} KiB -> {after} KiB ({after - before:+d} KiB); {outcome}",
          flush=True)


def case_4(pid, port):
    before = rss_kib(pid)
    a = socket.create_connection(("127.0.0.1", port))
    a.sendall(struct.pack("!I", 1 << 30) + b"\0" * 65536)
    b = login(port)
    b.sendall(b"Q" + struct.pack("!I", (1 << 30) - 16) + b"x" * 65536)
    time.sleep(2)
    after = rss_kib(pid)
    states = []
    for s in (a, b):
        s.settimeout(0.5)
        try:
            data = s.recv(4096)
            states.append("closed with an error" if data else "closed")
        except socket.timeout:
            states.append("held open")
    report(4, before, after, f"startup-packet conn {states[0]}, post-login conn {states[1]}; "
           f"SELECT 1 afterwards: {'ok' if select_1_works(port) else 'FAILED'}")
    a.close()
    b.close()


def case_5(pid, port, count):
    before = rss_kib(pid)
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    time.sleep(2)

    def still_open():
        n = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    pass  # an error message waits: pgward refused it
                else:
                    continue
            except BlockingIOError:
                n += 1
            except OSError:
                continue
        return n

    held = still_open()
    after = rss_kib(pid)
    ok = select_1_works(port)
    time.sleep(16)
    later = still_open()
    report(5, before, after, f"{len(socks)} connected, {held} held open after 2 s, {later} after "
           f"18 s; SELECT 1 while they waited: {'ok' if ok else 'FAILED'}")
    for s in socks:
        s.close()


def case_6(pid, port, count):
    s = login(port)
    s.sendall(query("SELECT v FROM big"))  # fills the cache entry
    read_until_ready(s)
    before = rss_kib(pid)
    payload = query("SELECT v FROM big") * count
    s.settimeout(5)
    sent = 0
    try:
        while sent < len(payload):
            sent += s.send(payload[sent:])
    except socket.timeout:
        pass
    time.sleep(3)
    after = rss_kib(pid)
    report(6, before, after, f"{sent // len(query('SELECT v FROM big'))} of {count} queries "
           f"accepted by pgward while the client read nothing; SELECT 1 from another client: "
           f"{'ok' if select_1_works(port) else 'FAILED'}")
    s.close()


def case_7(pid, port, wait):
    before = rss_kib(pid)
    filler = login(port)
    filler.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    filler.sendall(query("SELECT v FROM huge"))  # a miss: this client fills, and never reads
    time.sleep(1)
    waiter = login(port)
    start = time.monotonic()
    waiter.sendall(query("SELECT v FROM huge"))
    waiter.settimeout(wait)
    try:
        out, ok = read_until_ready(waiter)
        outcome = (f"second client answered after {time.monotonic() - start:.1f} s "
                   f"({'rows' if b'D' in out else 'an error' if b'E' in out else 'nothing'})")
    except socket.timeout:
        outcome = f"second client still waiting after {wait} s"
    after = rss_kib(pid)
    report(7, before, after, f"{outcome}; SELECT 1 from another client: "
           f"{'ok' if select_1_works(port) else 'FAILED'}")
    filler.close()
    waiter.close()


def http_post(port, path):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                  f"Connection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out.split(b" ", 2)[1].decode() if out.startswith(b"HTTP/") else "none"


def case_8(pid, admin_port, log, count):
    before = rss_kib(pid)
    log_before = os.path.getsize(log)
    statuses = {}
    for i in range(count):
        name = f"t{i:05d}" + "n" * 40_000
        st = http_post(admin_port, f"/cache/invalidate?table={name}")
        statuses[st] = statuses.get(st, 0) + 1
    time.sleep(1)
    after = rss_kib(pid)
    grew = os.path.getsize(log) - log_before
    report(8, before, after, f"HTTP statuses {statuses}; log grew by {grew} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pgward", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--pipelined", type=int, default=4000)
    ap.add_argument("--wait", type=int, default=20, help="case 7: seconds the waiter waits")
    ap.add_argument("--invalidations", type=int, default=1000)
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < args.idle + 100:
        sys.exit(f"case 5 needs {args.idle + 100} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="pgward-hardening-")
    bindir, data, pg_port = start_postgres(work)
    proc = None
    try:
        subprocess.run([f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres",
                        "-qc", "CREATE TABLE big AS SELECT repeat('x', 100000) AS v; "
                        "CREATE TABLE huge AS SELECT repeat('y', 100000) AS v "
                        "FROM generate_series(1, 200)"], check=True)
        port = free_port()
        admin_port = free_port()
        log = f"{work}/pgward.log"
        with open(f"{work}/rules.toml", "w") as f:
            f.write('[[rule]]\nname = "big"\nmatch.query = "SELECT v FROM big"\n'
                    'cache.ttl = "10m"\n'
                    '[[rule]]\nname = "huge"\nmatch.query = "SELECT v FROM huge"\n'
                    'cache.ttl = "10m"\n')
        with open(f"{work}/pgward.toml", "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nrules = "rules.toml"\n'
                    f'[upstream]\naddress = "127.0.0.1:{pg_port}"\ntls = "disable"\n'
                    f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n')
        proc = subprocess.Popen([args.pgward, "--config", f"{work}/pgward.toml"],
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        for _ in range(100):
            if select_1_works(port):
                break
            time.sleep(0.1)
        print(f"== {args.label} {args.pgward}: idle RSS {rss_kib(proc.pid)} KiB", flush=True)
        case_4(proc.pid, port)
        case_6(proc.pid, port, args.pipelined)
        case_7(proc.pid, port, args.wait)
        case_8(proc.pid, admin_port, log, args.invalidations)
        case_5(proc.pid, port, args.idle)
        print(f"pgward still running: {proc.poll() is None}")
    finally:
        if proc:
            proc.kill()
        subprocess.run(as_pg_user([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
