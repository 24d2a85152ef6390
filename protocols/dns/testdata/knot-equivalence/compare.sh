#!/bin/bash
# usage: compare.sh < queries.txt   (shardgate on 127.0.0.1:15353, Knot on 127.0.0.1:15354)
norm() { grep -vE "^;; (Query time|SERVER|WHEN|MSG SIZE|global options|Got answer)|^; <<>>|^; \(1 server|^$|COOKIE" | sed -E 's/id: [0-9]+/id: X/'; }
fail=0
while read -r name type opts; do
  [ -z "$name" ] && continue
  a=$(dig @127.0.0.1 -p 15353 $name $type +norec +nocookie $opts 2>&1 | norm)
  b=$(dig @127.0.0.1 -p 15354 $name $type +norec +nocookie $opts 2>&1 | norm)
  if [ "$a" != "$b" ]; then fail=$((fail+1)); echo "=== $name $type $opts"; diff <(echo "$b") <(echo "$a") | head -30; fi
done
echo "differences: $fail"
