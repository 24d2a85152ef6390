#!/usr/bin/env python3
"""Start-up recovery of a large mail queue, with the real binary: writes a queue of N messages
(journal records in the on-disk format of core/src/mail/queue, one spool file each) into a data
folder, starts `shardgate run` on it, and prints the recovery line the appliance logs
(`mail queue recovered messages=N ... took=...`), then stops it.

Usage: python3 benches/mail_queue_recovery.py [N] [BINARY]   (defaults: 1000000, target/release/shardgate)
"""
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

MAGIC = b"SGMQJ001"


def record(n):
    queue_id = "%014X%02X" % (1_000_000 + n, 0)
    message = {
        "id": queue_id,
        "received_at_ms": 1_700_000_000_000,
        "sender": "bob@example.org",
        "recipients": [{
            "address": f"user{n}@example.com",
            "route": "outbound",
            "action": {"process": {"queue": "normal"}},
            "state": "pending",
            "attempts": 0,
            "next_attempt_ms": 4_000_000_000_000,
            "last_error": None,
        }],
        "size": 10240,
        "trace_header": f"Received: from client.example.org ([192.0.2.1])\r\n\tby mx.example.com (shardgate) with ESMTP id {queue_id}; Wed, 02 Dec 2026 05:00:00 +0000\r\n",
        "helo": "client.example.org",
        "client_ip": "192.0.2.1",
        "authenticated_user": None,
        "tls": False,
        "smtputf8": False,
        "body_8bit": False,
    }
    payload = json.dumps({"enqueued": message}, separators=(",", ":")).encode()
    return queue_id, struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/shardgate"
    work = tempfile.mkdtemp(prefix="shardgate-queue-", dir="/var/tmp")
    queue = os.path.join(work, "data", "mail", "queue")
    spool = os.path.join(queue, "spool")
    os.makedirs(spool)
    started = time.monotonic()
    with open(os.path.join(queue, "journal-00000001.log"), "wb", buffering=1 << 20) as journal:
        journal.write(MAGIC)
        for n in range(count):
            queue_id, frame = record(n)
            journal.write(frame)
            os.close(os.open(os.path.join(spool, queue_id), os.O_CREAT | os.O_WRONLY, 0o600))
    journal_bytes = os.path.getsize(os.path.join(queue, "journal-00000001.log"))
    print(f"built {count} messages ({journal_bytes / 1e6:.0f} MB journal) in {time.monotonic() - started:.1f}s", flush=True)
    config = os.path.join(work, "edge.toml")
    with open(config, "w") as f:
        port = 20000 + os.getpid() % 10000
        f.write(f'[runtime]\ndata_dir = "{work}/data"\n[email]\nhostname = "mx.example.com"\nlisten = ["127.0.0.1"]\n'
                f'[email.ports]\nsmtp = {port}\n[[email.routes]]\nname = "outbound"\naction = {{ type = "process" }}\n')
    proc = subprocess.Popen([binary, "run", "--config", config], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "mail queue recovered" in line:
                print(line.strip())
                with open(f"/proc/{proc.pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
                print(f"process CPU time until then (start-up included): user {user:.2f}s system {system:.2f}s")
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
