#!/usr/bin/env bash
# Resident memory of a serving gateway with issue 9's data set loaded (docs/benchmarks-rss.md):
# 10,000 accounts, 100,000 users (10 per account), 20,000 groups and 1,000 account policy files.
#
#   1. builds the release binary, the bench upstream and the generator (benches/rss_dataset.rs);
#   2. generates the data dir and policy tree in a temp dir;
#   3. starts the upstream and `tollgate serve` on loopback, waits for /readyz;
#   4. logs users in through POST /auth/login and makes service calls with their tokens:
#      owners and `readers` of accounts with a policy folder must get 200 (the folder's
#      `readers-read-storage` is what allows a reader), readers of accounts without one 403;
#   5. prints VmRSS / VmHWM of the gateway (idle after start, and after the calls) with the
#      counts the store and the archived policy tree really hold.
#
# Usage: scripts/rss.sh
# Env:   RSS_ACCOUNTS (10000), RSS_USERS_PER_ACCOUNT (10), RSS_POLICY_FILES (1000): the data set;
#        RSS_LOGINS (20, half in accounts with a folder), RSS_CALLS (300, spread over the tokens),
#        RSS_LOGIN_CONCURRENCY (4); RSS_ARGON2_CONCURRENCY (1: `auth.argon2_concurrency`);
#        RSS_GW_PORT (18280), RSS_UP_PORT (18281);
#        RSS_KEEP=1 keeps the temp dir; TOLLGATE_BIN=path measures that binary instead of
#        building this tree's; RSS_WRAP="valgrind --tool=massif --massif-out-file=/tmp/m.out"
#        runs the gateway under that prefix (its RSS is then the tool's, not the gateway's);
#        RSS_SMAPS=path saves the gateway's /proc/<pid>/smaps there after the calls.
#        CARGO_TARGET_DIR is honoured (default: target/).
# Every wait and every request has a deadline; the gateway and the upstream are stopped on exit.
set -euo pipefail

ACCOUNTS=${RSS_ACCOUNTS:-10000}
USERS_PER_ACCOUNT=${RSS_USERS_PER_ACCOUNT:-10}
POLICY_FILES=${RSS_POLICY_FILES:-1000}
LOGINS=${RSS_LOGINS:-20}
CALLS=${RSS_CALLS:-300}
LOGIN_CONCURRENCY=${RSS_LOGIN_CONCURRENCY:-4}
ARGON2_CONCURRENCY=${RSS_ARGON2_CONCURRENCY:-1}
GW_PORT=${RSS_GW_PORT:-18280}
UP_PORT=${RSS_UP_PORT:-18281}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GW=http://127.0.0.1:$GW_PORT

for tool in curl python3 sqlite3; do
    command -v "$tool" >/dev/null || { echo "rss.sh needs $tool" >&2; exit 1; }
done

if [ -n "${TOLLGATE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --example bench_upstream --example rss_dataset)
    TOLLGATE=$TOLLGATE_BIN
else
    (cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream --example rss_dataset)
    TOLLGATE=$TARGET/release/tollgate
fi
UPSTREAM=$TARGET/release/examples/bench_upstream
GENERATE=$TARGET/release/examples/rss_dataset

WORK=$(mktemp -d /tmp/tollgate-rss.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${RSS_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url seconds
    local deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "not answering after $2 s: $1" >&2
    return 1
}
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --- data set -----------------------------------------------------------------------------
gen_start=$SECONDS
timeout 600 "$GENERATE" --out "$WORK/set" --accounts "$ACCOUNTS" \
    --users-per-account "$USERS_PER_ACCOUNT" --policy-files "$POLICY_FILES" \
    --policies-from "$ROOT/policies" >&2
GEN_SECS=$((SECONDS - gen_start))
# shellcheck source=/dev/null
. "$WORK/set/dataset.env"
DB=$WORK/set/data/tollgate.db

# --- upstream and gateway -----------------------------------------------------------------
"$UPSTREAM" "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/" 20

cat >"$WORK/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
[store]
kind = "sqlite"
data_dir = "$WORK/set/data"
[auth]
token_ttl = "1h"
argon2_concurrency = $ARGON2_CONCURRENCY
[accounts]
open_signup = false
[policies]
dir = "$WORK/set/policies"
watch = false
[[services]]
name = "storage"
upstream = "http://127.0.0.1:$UP_PORT"
timeout = "30s"
  [[services.routes]]
  method = "GET"
  path = "/objects/*"
  action = "storage:GetObject"
  per_request = "0.0004"
  per_gb_out = "0.09"
EOF
start=$SECONDS
read -ra WRAP <<<"${RSS_WRAP:-}"
TOLLGATE_LOG=info "${WRAP[@]}" "$TOLLGATE" serve --config "$WORK/tollgate.toml" >"$WORK/tollgate.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "$GW/readyz" 180 || { tail -20 "$WORK/tollgate.log" >&2; exit 1; }
READY_SECS=$((SECONDS - start))
sleep 1
IDLE_RSS=$(status_kib "$GW_PID" VmRSS)
IDLE_HWM=$(status_kib "$GW_PID" VmHWM)

# What is really loaded: the store's rows, and the tree the gateway archived at start (the
# active version, as /readyz names it).
VERSION=$(curl -fsS --max-time 5 "$GW/readyz" | python3 -c "import json,sys; print(json.load(sys.stdin)['checks']['policies'].split()[-1])")
q() { sqlite3 -readonly "$DB" "$1"; }
DB_ACCOUNTS=$(q "SELECT count(*) FROM accounts")
DB_USERS=$(q "SELECT count(*) FROM users")
DB_GROUPS=$(q "SELECT count(*) FROM groups")
DB_MEMBERS=$(q "SELECT count(*) FROM group_members")
TREE_FILES=$(q "SELECT count(*) FROM policy_versions, json_each(sources_json) WHERE version = '$VERSION' AND key LIKE '%.cedar'")
TREE_FOLDERS=$(q "SELECT count(DISTINCT substr(key, 1, 22)) FROM policy_versions, json_each(sources_json) WHERE version = '$VERSION' AND key LIKE 'accounts/%.cedar'")

# --- logins and calls ---------------------------------------------------------------------
# Half the logins in accounts with a folder, half in accounts without; in each, alternately the
# owner (allowed by default-account/owner.cedar) and user1, a member of `readers` (allowed only
# by the account's own folder). Expected status of a GET on storage per login, in the plan.
read -ra FOLDER <<<"$RSS_FOLDER_ACCOUNTS"
read -ra PLAIN <<<"$RSS_PLAIN_ACCOUNTS"
: >"$WORK/plan.txt"
for i in $(seq 0 $((LOGINS - 1))); do
    half=$((i / 2))
    if [ $((i % 2)) = 0 ]; then user=owner; else user=user1; fi
    if [ $((half % 2)) = 0 ] && [ ${#FOLDER[@]} -gt 0 ]; then
        account=${FOLDER[$((half / 2 % ${#FOLDER[@]}))]}
        expect=200
    elif [ ${#PLAIN[@]} -gt 0 ]; then
        account=${PLAIN[$((half / 2 % ${#PLAIN[@]}))]}
        if [ "$user" = owner ]; then expect=200; else expect=403; fi
    else
        continue
    fi
    echo "$i $account $user $expect" >>"$WORK/plan.txt"
done
export GW WORK RSS_PASSWORD
# shellcheck disable=SC2016
xargs -r -P "$LOGIN_CONCURRENCY" -L 1 bash -c '
    curl -fsS --max-time 60 -X POST -H "content-type: application/json" \
        -d "{\"account_id\":\"$1\",\"user\":\"$2\",\"password\":\"$RSS_PASSWORD\"}" \
        "$GW/auth/login" >"$WORK/login.$0.json"' <"$WORK/plan.txt" ||
    { echo "a login failed" >&2; tail -20 "$WORK/tollgate.log" >&2; exit 1; }
LOGGED_IN=0
PER_TOKEN=$(((CALLS + LOGINS - 1) / (LOGINS > 0 ? LOGINS : 1)))
: >"$WORK/codes.txt"
while read -r i account user expect; do
    token=$(python3 -c "import json,sys; print(json.load(sys.stdin)['token'])" <"$WORK/login.$i.json")
    LOGGED_IN=$((LOGGED_IN + 1))
    [ "$PER_TOKEN" -gt 0 ] || continue
    args=()
    for k in $(seq 1 "$PER_TOKEN"); do
        args+=(-o /dev/null "$GW/svc/storage/objects/rss-$i-$k")
    done
    curl -s --max-time 120 -H "Authorization: Bearer $token" -w "$expect %{http_code}\n" "${args[@]}" >>"$WORK/codes.txt"
done <"$WORK/plan.txt"
TOTAL_CALLS=$(wc -l <"$WORK/codes.txt")
WRONG=$(awk '$1 != $2' "$WORK/codes.txt" | wc -l)
OK_200=$(awk '$2 == 200' "$WORK/codes.txt" | wc -l)
DENIED_403=$(awk '$2 == 403' "$WORK/codes.txt" | wc -l)
sleep 1
RSS=$(status_kib "$GW_PID" VmRSS)
HWM=$(status_kib "$GW_PID" VmHWM)
ANON=$(status_kib "$GW_PID" RssAnon)
FILE=$(status_kib "$GW_PID" RssFile)
THREADS=$(status_kib "$GW_PID" Threads)
[ -z "${RSS_SMAPS:-}" ] || cp "/proc/$GW_PID/smaps" "$RSS_SMAPS"
LEDGER=$(curl -fsS --max-time 5 "$GW/metrics" | awk '/^tollgate_ledger_records_total/ {s += $2} END {print s + 0}')

# --- report -------------------------------------------------------------------------------
cat <<EOF

## tollgate RSS: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)
data set: $DB_ACCOUNTS accounts, $DB_USERS users, $DB_GROUPS groups, $DB_MEMBERS group members (store rows)
policies: $TREE_FILES .cedar files active (version ${VERSION:0:12}), $TREE_FOLDERS account folders ($RSS_POLICY_FILES_GENERATED generated)
generated in ${GEN_SECS} s; gateway ready ${READY_SECS} s after start; store $(du -k "$DB" | cut -f1) KiB on disk
after start (idle): VmRSS $(mib "$IDLE_RSS") MiB, VmHWM $(mib "$IDLE_HWM") MiB
after $LOGGED_IN logins (concurrency $LOGIN_CONCURRENCY, argon2_concurrency $ARGON2_CONCURRENCY) and $TOTAL_CALLS calls ($OK_200 x 200, $DENIED_403 x 403, $WRONG unexpected; ledger records $LEDGER):
  VmRSS $(mib "$RSS") MiB (anon $(mib "$ANON"), file $(mib "$FILE")), VmHWM $(mib "$HWM") MiB, $THREADS threads
goal: RSS <= 200 MiB -> $(awk -v h="$HWM" 'BEGIN { print (h <= 200 * 1024) ? "met (peak)" : "NOT met (peak)" }')
EOF
if [ "$WRONG" != 0 ]; then
    echo "unexpected status codes (expected got):" >&2
    awk '$1 != $2' "$WORK/codes.txt" | sort | uniq -c >&2
    exit 1
fi
