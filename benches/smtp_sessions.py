#!/usr/bin/env python3
"""Concurrent SMTP sessions on one shard: open N sessions (greeting + EHLO each), keep them all
open, check that every one still answers NOOP, and report the appliance's memory per session.

Usage: python3 benches/smtp_sessions.py PORT PID [N]
  PORT  an [email] smtp port of a running shardgate (run it with [runtime] shards = [0] so every
        session lands on one shard, and connections_per_ip >= N)
  PID   its process id (for VmRSS)
  N     sessions (default 10000; needs `ulimit -n` above N in both processes)
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_reply(sock):
    data = b""
    while not data.endswith(b"\r\n") or (len(data.splitlines()[-1]) > 3 and data.splitlines()[-1][3:4] == b"-"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    before = rss_kib(pid)
    sessions = []
    started = time.monotonic()
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if not read_reply(sock).startswith(b"220"):
            raise SystemExit(f"session {n}: no greeting")
        sock.sendall(b"EHLO bench.example\r\n")
        if not read_reply(sock).startswith(b"250"):
            raise SystemExit(f"session {n}: EHLO refused")
        sessions.append(sock)
    opened = time.monotonic() - started
    during = rss_kib(pid)
    for sock in sessions:
        sock.sendall(b"NOOP\r\n")
    alive = sum(1 for sock in sessions if read_reply(sock).startswith(b"250"))
    print(f"sessions={count} alive={alive} open_time={opened:.2f}s "
          f"rss_before={before}KiB rss_with_sessions={during}KiB per_session={(during - before) / count:.1f}KiB")
    for sock in sessions:
        sock.close()
    if alive != count:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
