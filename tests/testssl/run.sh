#!/usr/bin/env bash
# testssl.sh against shardgate's TLS termination: a private CA, a leaf for edge.example.test
# (90 days, CRL distribution point), a terminate route on loopback, then testssl.sh with the CA
# trusted. Prints the findings of severity LOW and above and exits 1 on any HIGH or CRITICAL.
# Usage: bash tests/testssl/run.sh   (SHARDGATE_BIN overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/ensure-packages.sh --no-install-recommends testssl.sh bsdextrautils openssl
bin="${SHARDGATE_BIN:-target/debug/shardgate}"
[ -x "$bin" ] || cargo build --bins --quiet
work=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj "/CN=shardgate test CA" -days 365 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj /CN=edge.example.test 2>/dev/null
printf "subjectAltName=DNS:edge.example.test\ncrlDistributionPoints=URI:http://crl.example.test/ca.crl\nextendedKeyUsage=serverAuth\n" > ext.cnf
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 90 -extfile ext.cnf 2>/dev/null
cat leaf.pem ca.pem > chain.pem
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > edge.toml <<TOML
[runtime]
data_dir = "$work/data"
[proxy]
listen = ["127.0.0.1"]
[[certificates]]
name = "edge"
cert = "$work/chain.pem"
key = "$work/leaf.key"
default = true
[[routes]]
name = "secure"
match = { ports = $port }
action = { type = "forward", targets = [{ host = "127.0.0.1", port = 9 }], tls = { mode = "terminate" } }
TOML
"$OLDPWD/$bin" run --config edge.toml --log-level warn 2> shardgate.log & pid=$!
sleep 1
testssl --quiet --color 0 --add-ca ca.pem --ip 127.0.0.1 --jsonfile out.json "edge.example.test:$port" > testssl.txt 2>&1 || true
python3 - <<'PY'
import json, sys
from collections import Counter
findings = json.load(open("out.json"))
print("testssl.sh severities:", dict(Counter(f["severity"] for f in findings)))
bad = 0
for f in findings:
    if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN"):
        print(f'  {f["severity"]:8} {f["id"]}: {f["finding"]}')
    bad += f["severity"] in ("HIGH", "CRITICAL")
print("PASS: no HIGH or CRITICAL finding" if not bad else f"FAIL: {bad} HIGH/CRITICAL findings")
sys.exit(1 if bad else 0)
PY
