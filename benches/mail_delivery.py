"""Scripted run: mail delivery throughput and 50 MB streaming (not a test; no assertions).

Usage: python3 benches/mail_delivery.py [BIN] [N]   (BIN default target/release/shardgate, N 3000)
Queues N 2 KiB messages through SMTP while the forward next hop (Postfix's smtp-sink) is down,
starts the sink, flushes the queue (`shardgate queue retry --all`) and times the delivery; then
one 50 MB message through SMTP and delivery, with the appliance's peak RSS (VmHWM).
"""
import json, os, signal, smtplib, subprocess, sys, tempfile, threading, time
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/shardgate"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
base = tempfile.mkdtemp(prefix="mail-delivery-")
os.chmod(base, 0o777); os.makedirs(base + "/sink"); os.chmod(base + "/sink", 0o777)
SMTP, SINK = 22535, 22636
open(base + "/edge.toml", "w").write(f'''
[runtime]
data_dir = "{base}/data"
[email]
hostname = "mx.example.test"
listen = ["127.0.0.1"]
local_domains = ["example.test"]
relay_networks = ["127.0.0.0/8"]
max_message_size = 60000000
[email.ports]
smtp = {SMTP}
[[email.routes]]
name = "relay"
match = {{ recipients = "*@relay.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {SINK} }}
[email.delivery]
retry_initial = "1h"
retry_max = "1h"
''')
app = subprocess.Popen([BIN, "run", "--config", base + "/edge.toml"], stderr=open(base + "/run.log", "w"))
time.sleep(2)
def mem():
    return " ".join(l.strip() for l in open(f"/proc/{app.pid}/status") if l.startswith(("VmHWM", "VmRSS")))
body = "Subject: m\r\nFrom: a@b.example\r\n\r\n" + ("x" * 78 + "\r\n") * 25
def load(c, count):
    s = smtplib.SMTP("127.0.0.1", SMTP, timeout=30)
    for n in range(count):
        s.sendmail("load@b.example", ["sink@relay.test"], body)
    s.quit()
t0 = time.time()
threads = [threading.Thread(target=load, args=(c, N // 8)) for c in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
queued = (N // 8) * 8
print(f"intake: {queued} msgs in {time.time()-t0:.2f}s = {queued/(time.time()-t0):.0f} msg/s", flush=True)
time.sleep(1.5)
sink = subprocess.Popen(["/usr/sbin/smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [ "-d", base + "/sink/%M.", f"127.0.0.1:{SINK}", "256"], stderr=subprocess.DEVNULL)
time.sleep(0.3)
t2 = time.time()
r = subprocess.run([BIN, "queue", "retry", "--all", "--config", base + "/edge.toml"], capture_output=True, text=True)
print("  ", r.stdout.strip(), r.stderr.strip(), flush=True)
while len(os.listdir(base + "/sink")) < queued and time.time() - t2 < 90:
    time.sleep(0.05)
t4 = time.time(); got = len(os.listdir(base + "/sink"))
print(f"delivery: {got} msgs to smtp-sink in {t4-t2:.2f}s = {got/(t4-t2):.0f} msg/s; {mem()}", flush=True)
time.sleep(1.2); print("  ", json.load(open(base + "/data/stats.json")).get("mail_delivery"), flush=True)
big = "Subject: big\r\n\r\n" + ("y" * 998 + "\r\n") * 50000
before = len(os.listdir(base + "/sink")); t5 = time.time()
s = smtplib.SMTP("127.0.0.1", SMTP, timeout=300); s.sendmail("a@b.example", ["big@relay.test"], big); s.quit()
t6 = time.time()
while len(os.listdir(base + "/sink")) <= before and time.time() - t6 < 60:
    time.sleep(0.05)
path = max((os.path.join(base + "/sink", f) for f in os.listdir(base + "/sink")), key=os.path.getmtime)
last = -1
while os.path.getsize(path) != last:
    last = os.path.getsize(path); time.sleep(0.3)
print(f"50 MB: accepted in {t6-t5:.2f}s, delivered {time.time()-t6-0.3:.2f}s after the 250 ({last/1e6:.1f} MB); {mem()}", flush=True)
sink.kill(); app.send_signal(signal.SIGTERM); app.wait(timeout=30); sink.wait()
subprocess.run(["rm", "-rf", base])
