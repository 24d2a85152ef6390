#!/usr/bin/env python3
"""Start-up recovery of a large mail queue, with the real binary: writes a queue of N messages
(journal records in the on-disk format of core/src/mail/queue, one spool file each) into a data
folder, then starts `shardgate run` on it three times and prints, each time, the recovery line
the appliance logs (`mail queue recovered messages=N ... took=...`) and the process CPU time:

  1. on the queue as built (no clean-shutdown marker: the state after a crash, so the spool
     folder is listed; with --format json the journal is in the old format 1 and is upgraded,
     i.e. replayed as JSON and compacted into format 2), then stopped with SIGTERM (graceful:
     the journal gets the clean-shutdown marker);
  2. after that clean stop (the spool folder is not listed), then killed with SIGKILL;
  3. after the kill -9 (format 2 journal, spool folder listed in parallel with the replay).

Usage: python3 benches/mail_queue_recovery.py [N] [BINARY] [--format binary|json]
       (defaults: 1000000, target/release/shardgate, binary)
"""
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

MAGIC_V2 = b"SGMQJ002"
MAGIC_V1 = b"SGMQJ001"


def uint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def text(s):
    b = s.encode()
    return uint(len(b)) + b


def fields(n):
    queue_id = "%014X%02X" % (1_000_000 + n, 0)
    trace = (f"Received: from client.example.org ([192.0.2.1])\r\n\tby mx.example.com (shardgate) with ESMTP id {queue_id};"
             " Wed, 02 Dec 2026 05:00:00 +0000\r\n")
    return queue_id, f"user{n}@example.com", trace


def record_v2(n):
    """One `enqueued` record in format 2 (see core/src/mail/queue/codec.rs)."""
    queue_id, address, trace = fields(n)
    payload = b"".join([
        b"\x01", text(queue_id), uint(1_700_000_000_000), text("bob@example.org"), uint(10240), text(trace),
        text("client.example.org"), b"\x04" + bytes([192, 0, 2, 1]), b"\x00", b"\x00",
        b"\x01" + text("%016x" % n),  # correlation id
        uint(1),  # one recipient
        text(address), text("outbound"), b"\x03\x00", b"\x00", uint(0), uint(4_000_000_000_000), b"\x00",
    ])
    length = struct.pack("<I", len(payload))
    return queue_id, length + struct.pack("<I", zlib.crc32(length + payload)) + payload


def record_v1(n):
    """One `enqueued` record in format 1 (JSON), as journals were written before format 2."""
    import json
    queue_id, address, trace = fields(n)
    message = {
        "id": queue_id, "received_at_ms": 1_700_000_000_000, "sender": "bob@example.org",
        "recipients": [{"address": address, "route": "outbound", "action": {"process": {"queue": "normal"}},
                        "state": "pending", "attempts": 0, "next_attempt_ms": 4_000_000_000_000, "last_error": None}],
        "size": 10240, "trace_header": trace, "helo": "client.example.org", "client_ip": "192.0.2.1",
        "authenticated_user": None, "tls": False, "smtputf8": False, "body_8bit": False,
    }
    payload = json.dumps({"enqueued": message}, separators=(",", ":")).encode()
    return queue_id, struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def start(binary, config, label, stop):
    proc = subprocess.Popen([binary, "run", "--config", config], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "mail queue recovered" in line:
                with open(f"/proc/{proc.pid}/stat") as stat:
                    fields_ = stat.read().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                user, system = int(fields_[11]) / ticks, int(fields_[12]) / ticks
                print(f"[{label}] {line.strip()}")
                print(f"[{label}] process CPU time until then (start-up included): user {user:.2f}s system {system:.2f}s",
                      flush=True)
                break
        else:
            print(f"[{label}] the appliance exited without recovering the queue", flush=True)
    finally:
        if stop == "term":
            proc.send_signal(signal.SIGTERM)
            try:
                _, rest = proc.communicate(timeout=300)
                clean = "mail journal closed cleanly" in rest
                print(f"[{label}] stopped with SIGTERM (clean-shutdown marker written: {clean})", flush=True)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--format")]
    form = "binary"
    for i, a in enumerate(sys.argv[1:]):
        if a.startswith("--format="):
            form = a.split("=", 1)[1]
        elif a == "--format" and i + 2 < len(sys.argv):
            form = sys.argv[i + 2]
            args.remove(form)
    count = int(args[0]) if len(args) > 0 else 1_000_000
    binary = args[1] if len(args) > 1 else "target/release/shardgate"
    record, magic = (record_v1, MAGIC_V1) if form == "json" else (record_v2, MAGIC_V2)
    work = tempfile.mkdtemp(prefix="shardgate-queue-", dir="/var/tmp")
    queue = os.path.join(work, "data", "mail", "queue")
    spool = os.path.join(queue, "spool")
    os.makedirs(spool)
    started = time.monotonic()
    journal_path = os.path.join(queue, "journal-00000001.log")
    with open(journal_path, "wb", buffering=1 << 20) as journal:
        journal.write(magic)
        for n in range(count):
            queue_id, frame = record(n)
            journal.write(frame)
            os.close(os.open(os.path.join(spool, queue_id), os.O_CREAT | os.O_WRONLY, 0o600))
    journal_bytes = os.path.getsize(journal_path)
    print(f"built {count} messages ({journal_bytes / 1e6:.0f} MB journal, format {form}) in "
          f"{time.monotonic() - started:.1f}s", flush=True)
    config = os.path.join(work, "edge.toml")
    with open(config, "w") as f:
        port = 20000 + os.getpid() % 10000
        f.write(f'[runtime]\ndata_dir = "{work}/data"\n[email]\nhostname = "mx.example.com"\nlisten = ["127.0.0.1"]\n'
                f'[email.ports]\nsmtp = {port}\n[[email.routes]]\nname = "outbound"\naction = {{ type = "process" }}\n')
    try:
        start(binary, config, "1 as built (crash state)", "term")
        start(binary, config, "2 after a clean stop", "kill")
        start(binary, config, "3 after kill -9", "kill")
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
