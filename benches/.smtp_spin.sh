#!/usr/bin/env bash
# SMTP intake side by side: shardgate vs Postfix, the same load (Postfix's smtp-source: SESSIONS
# parallel sessions, MESSAGES messages of SIZE bytes, one recipient each), both accepting for
# example.test and queueing durably on the same disk (Postfix fsyncs its queue file before 250;
# shardgate group-commits its journal and the batch's spool files with one syncfs). Postfix only queues: every
# transport is deferred, so nothing is delivered while it runs; shardgate's route forwards to a
# closed port on loopback, so its messages are deferred too (one refused connect per attempt)
# instead of being written to Maildirs during the run. Prints messages/s for each and
# `smtp_intake_<SIZE>B postfix ratio=<shardgate/postfix>`.
# Usage: bash benches/smtp_vs_postfix.sh        (as root; installs postfix from Debian if missing)
# Env: SESSIONS, MESSAGES, SIZE, BENCH_DIR (file system for both queues), SG_BIN (binary to run).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-10240}
PF_PORT=${PF_PORT:-12626}
SG_PORT=${SG_PORT:-12625}
bash tests/ensure-packages.sh --no-install-recommends postfix bc
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p shardgate-appliance --quiet

# Both queues live under BENCH_DIR (the same file system for both; default /var/tmp). On a
# file system without a journal, ext4 scans for inodes not recently deleted on every create,
# which dominates both peers' CPU once many files were deleted there: use a fresh journaled
# ext4 (e.g. a loop mount) for numbers that mean something.
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/shardgate-smtp-bench.XXXXXX")
chmod 755 "$work"
sg_pid=""
cleanup() {
  postfix -c "$work/pf/etc" stop >/dev/null 2>&1 || true
  [ -n "$sg_pid" ] && kill "$sg_pid" 2>/dev/null || true
  postconf -X alternate_config_directories >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Postfix: a private instance (own config, queue and log) on PF_PORT.
mkdir -p "$work/pf/etc" "$work/pf/spool" "$work/pf/data"
cp -r /etc/postfix/. "$work/pf/etc/"
chown postfix "$work/pf/data"
sed -i -E 's/^smtp +inet .*/127.0.0.1:'"$PF_PORT"' inet n - n - - smtpd/' "$work/pf/etc/master.cf"
sed -i -E 's/^([a-z]+ +unix +[-n] +[-n] +)y /\1n /' "$work/pf/etc/master.cf"
grep -q '^postlog' "$work/pf/etc/master.cf" || echo 'postlog   unix-dgram n  -       n       -       1       postlogd' >> "$work/pf/etc/master.cf"
postconf -c "$work/pf/etc" -e queue_directory="$work/pf/spool" data_directory="$work/pf/data" \
  inet_interfaces=127.0.0.1 inet_protocols=ipv4 myhostname=pf.example.test mydestination=example.test \
  mynetworks=127.0.0.0/8 'defer_transports=local,virtual,smtp,relay,error' \
  'smtpd_recipient_restrictions=permit_mynetworks,reject' maillog_file="$work/pf/maillog" \
  maillog_file_prefixes="$work" compatibility_level=3.6 smtpd_client_connection_count_limit=1000 \
  default_process_limit=200 smtpd_tls_security_level=none smtp_tls_security_level=none \
  'smtpd_tls_cert_file=' 'smtpd_tls_key_file=' 'alias_maps=' 'alias_database=' 'local_recipient_maps='
postconf -e alternate_config_directories="$work/pf/etc"
postfix -c "$work/pf/etc" set-permissions >/dev/null 2>&1 || true
postfix -c "$work/pf/etc" start >/dev/null 2>&1

# shardgate: the intake on SG_PORT, data under the same disk.
cat > "$work/edge.toml" <<EOF
[runtime]
data_dir = "$work/sg"
spin_before_park = "${SPIN:-200us}"
[email]
hostname = "sg.example.test"
listen = ["127.0.0.1"]
local_domains = ["example.test"]
connections_per_ip = 1000
[email.ports]
smtp = $SG_PORT
[[email.routes]]
name = "deferred"
match = { recipients = "*@example.test" }
action = { type = "forward", host = "127.0.0.1", port = ${DEFER_PORT:-9}, starttls = "none" }
EOF
"${SG_BIN:-target/release/shardgate}" run --config "$work/edge.toml" 2>"$work/sg.log" &
sg_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SG_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$PF_PORT") 2>/dev/null && break
  sleep 0.1
done

rate() { # port → messages/s
  local start end
  start=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@example.org -t user@example.test "127.0.0.1:$1"
  end=$(date +%s.%N)
  echo "$MESSAGES / ($end - $start)" | bc -l
}
pf=$(rate "$PF_PORT")
sg=$(rate "$SG_PORT")
pf_queued=$(find "$work/pf/spool/deferred" "$work/pf/spool/active" "$work/pf/spool/incoming" -type f 2>/dev/null | wc -l)
sg_queued=$(find "$work/sg/mail/queue/spool" -type f | wc -l)
printf 'postfix:   %.0f messages/s (%s queued)\n' "$pf" "$pf_queued"
printf 'shardgate: %.0f messages/s (%s queued)\n' "$sg" "$sg_queued"
printf 'smtp_intake_%sB postfix ratio=%.3f\n' "$SIZE" "$(echo "$sg / $pf" | bc -l)"
