#!/usr/bin/env bash
# End-to-end throughput and latency of the full tollgate pipeline against direct and nginx
# (docs/benchmarks.md). Everything runs on loopback:
#
#   wrk -> upstream                       (direct: the ceiling)
#   wrk -> nginx proxy_pass -> upstream    (the reference proxy, upstream keepalive)
#   wrk -> tollgate /svc/storage/... -> upstream  (full pipeline: token, principal, Cedar,
#                                           decision log, ledger record durable, forward)
#   wrk -> tollgate-pg (the same, stored on PostgreSQL: a fleet's store, SPEC O3)
#   wrk -> nginx-tls / tollgate-tls: the same two over HTTPS on one certificate (SPEC O4), so
#          the TLS cost is on record beside nginx's `ssl`
#
# Usage: scripts/bench.sh [ROUNDS] [SECONDS]      (default 3 rounds of 10 s per target)
# Env:   BENCH_LOGIN_FLOOD=0 skips the login-flood round; BENCH_KEEP=1 keeps the temp dir;
#        TOLLGATE_BIN=path measures that binary instead of building this tree's.
#        CARGO_TARGET_DIR is honoured (default: target/).
#        BENCH_PG_URL names the PostgreSQL server for tollgate-pg (default the local one,
#        postgres://postgres@127.0.0.1:5432/test; a database of its own is created and dropped);
#        BENCH_PG=0 skips it. BENCH_TLS=0 skips the HTTPS pair.
#
# Rounds alternate the targets (direct, nginx, tollgate, direct, ...) so a neighbour's
# compile hurts them all alike; the report gives medians. Gateway CPU per request comes from
# /proc/<pid>/stat (utime + stime) deltas over each round.
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${BENCH_CONNS:-32}
UP_PORT=18081
NGINX_PORT=18082
GW_PORT=18080
PG_PORT=18083
NGINX_TLS_PORT=18084
TLS_PORT=18085
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=tollgate_bench_$$
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
    echo "installing nginx-light and wrk" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
NGINX=$(command -v nginx)

# TOLLGATE_BIN=/path/to/tollgate measures a prebuilt binary (e.g. a baseline) instead.
if [ -n "${TOLLGATE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --example bench_upstream)
    TOLLGATE=$TOLLGATE_BIN
else
    (cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream)
    TOLLGATE=$TARGET/release/tollgate
fi
UPSTREAM=$TARGET/release/examples/bench_upstream

WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "${WITH_PG:-0}" = 1 ]; then
        psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_http() { # url [curl args]
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$@" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "not answering: $1" >&2
    return 1
}

# --- upstream -----------------------------------------------------------------------------
"$UPSTREAM" "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/"

# --- one certificate for both HTTPS targets (P-256, as a typical edge certificate) -------------
WITH_TLS=0
if [ "${BENCH_TLS:-1}" = 1 ] && need openssl; then
    WITH_TLS=1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
fi

# --- nginx: plain proxy_pass with upstream keepalive ---------------------------------------
mkdir -p "$WORK/nginx"
NGINX_TLS_SERVER=""
if [ "$WITH_TLS" = 1 ]; then
    NGINX_TLS_SERVER="server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
fi
cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    $NGINX_TLS_SERVER
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK/nginx"
wait_http "http://127.0.0.1:$NGINX_PORT/"
[ "$WITH_TLS" = 1 ] && wait_http "https://127.0.0.1:$NGINX_TLS_PORT/" --cacert "$WORK/tls.crt"

# --- tollgate with a temp data dir and the shipped policies --------------------------------
cp -r "$ROOT/policies" "$WORK/policies"
cat >"$WORK/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
[store]
kind = "sqlite"
data_dir = "$WORK/data"
[auth]
token_ttl = "1h"
[accounts]
open_signup = true
[policies]
dir = "$WORK/policies"
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
TOLLGATE_LOG=warn "$TOLLGATE" serve --config "$WORK/tollgate.toml" >"$WORK/tollgate.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
wait_http "http://127.0.0.1:$GW_PORT/healthz"

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
PASSWORD='Bench-pass-1!'
ACCOUNT=$(curl -fsS -X POST -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"email\":\"bench@example.com\",\"owner_user\":\"owner\",\"owner_password\":\"$PASSWORD\"}" \
    "http://127.0.0.1:$GW_PORT/accounts" | json_field account_id)
login() {
    curl -fsS -X POST -H 'content-type: application/json' \
        -d "{\"account_id\":\"$ACCOUNT\",\"user\":\"owner\",\"password\":\"$PASSWORD\"}" \
        "http://127.0.0.1:$GW_PORT/auth/login" | json_field token
}
TOKEN=$(login)
SVC_PATH=/svc/storage/objects/bench
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT$SVC_PATH")
[ "$code" = 200 ] || { echo "tollgate answered $code on $SVC_PATH" >&2; cat "$WORK/tollgate.log" >&2; exit 1; }

# --- the same gateway on PostgreSQL (a fleet's store), in a database of its own ------------
WITH_PG=0
if [ "${BENCH_PG:-1}" = 1 ] && need psql && psql -q "$PG_URL" -c "CREATE DATABASE $PG_DB" >/dev/null 2>&1; then
    WITH_PG=1
    sed -e "s|^listen = .*|listen = \"127.0.0.1:$PG_PORT\"|" \
        -e "s|^kind = \"sqlite\"|kind = \"postgres\"\nurl = \"${PG_URL%/*}/$PG_DB\"|" \
        -e "s|^data_dir = .*|data_dir = \"$WORK/data-pg\"|" \
        "$WORK/tollgate.toml" >"$WORK/tollgate-pg.toml"
    TOLLGATE_LOG=warn "$TOLLGATE" serve --config "$WORK/tollgate-pg.toml" >"$WORK/tollgate-pg.log" 2>&1 &
    PG_PID=$!
    PIDS+=($PG_PID)
    wait_http "http://127.0.0.1:$PG_PORT/healthz"
    PG_ACCOUNT=$(curl -fsS -X POST -H 'content-type: application/json' \
        -d "{\"name\":\"bench\",\"email\":\"bench@example.com\",\"owner_user\":\"owner\",\"owner_password\":\"$PASSWORD\"}" \
        "http://127.0.0.1:$PG_PORT/accounts" | json_field account_id)
    TOKEN_PG=$(curl -fsS -X POST -H 'content-type: application/json' \
        -d "{\"account_id\":\"$PG_ACCOUNT\",\"user\":\"owner\",\"password\":\"$PASSWORD\"}" \
        "http://127.0.0.1:$PG_PORT/auth/login" | json_field token)
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN_PG" "http://127.0.0.1:$PG_PORT$SVC_PATH")
    [ "$code" = 200 ] || { echo "tollgate-pg answered $code on $SVC_PATH" >&2; cat "$WORK/tollgate-pg.log" >&2; exit 1; }
else
    echo "# tollgate-pg skipped (BENCH_PG=0, no psql, or no PostgreSQL at $PG_URL)" >&2
fi

# --- the same gateway over HTTPS ([server.tls], SPEC O4), with a data dir of its own ---------
if [ "$WITH_TLS" = 1 ]; then
    sed -e "s|^listen = .*|listen = \"127.0.0.1:$TLS_PORT\"|" \
        -e "s|^data_dir = .*|data_dir = \"$WORK/data-tls\"|" \
        -e "s|^\\[store\\]|[server.tls]\ncert = \"$WORK/tls.crt\"\nkey = \"$WORK/tls.key\"\n[store]|" \
        "$WORK/tollgate.toml" >"$WORK/tollgate-tls.toml"
    TOLLGATE_LOG=warn "$TOLLGATE" serve --config "$WORK/tollgate-tls.toml" >"$WORK/tollgate-tls.log" 2>&1 &
    TLS_PID=$!
    PIDS+=($TLS_PID)
    TLS_GW=https://localhost:$TLS_PORT
    wait_http "$TLS_GW/healthz" --cacert "$WORK/tls.crt"
    TLS_ACCOUNT=$(curl -fsS --cacert "$WORK/tls.crt" -X POST -H 'content-type: application/json' \
        -d "{\"name\":\"bench\",\"email\":\"bench@example.com\",\"owner_user\":\"owner\",\"owner_password\":\"$PASSWORD\"}" \
        "$TLS_GW/accounts" | json_field account_id)
    TOKEN_TLS=$(curl -fsS --cacert "$WORK/tls.crt" -X POST -H 'content-type: application/json' \
        -d "{\"account_id\":\"$TLS_ACCOUNT\",\"user\":\"owner\",\"password\":\"$PASSWORD\"}" \
        "$TLS_GW/auth/login" | json_field token)
    code=$(curl -s --cacert "$WORK/tls.crt" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN_TLS" "$TLS_GW$SVC_PATH")
    [ "$code" = 200 ] || { echo "tollgate-tls answered $code on $SVC_PATH" >&2; cat "$WORK/tollgate-tls.log" >&2; exit 1; }
else
    echo "# HTTPS pair skipped (BENCH_TLS=0 or no openssl)" >&2
fi

# --- helpers ------------------------------------------------------------------------------
cat >"$WORK/paced.lua" <<'EOF'
-- Each connection waits PACE_MS after every response: a fixed, moderate offered rate.
local pace = tonumber(os.getenv("PACE_MS") or "1")
function delay() return pace end
EOF
cat >"$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"account_id":"$ACCOUNT","user":"owner","password":"$PASSWORD"}'
EOF

ticks() { # pids... -> utime+stime in clock ticks, summed
    local t=0 pid
    for pid in "$@"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
nginx_pids() { pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' '; }

to_us() { # "123.45us" | "1.23ms" | "1.02s" -> microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

# run_wrk NAME URL PIDS -- extra wrk args; appends "name rps p50us p99us cpu_us_per_req" to results
RESULTS=$WORK/results.txt
: >"$RESULTS"
run_wrk() {
    local name=$1 url=$2 pids=$3
    shift 3
    local before after out rps p50 p99 reqs cpu
    before=$(ticks $pids)
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" "$@" "$url")
    after=$(ticks $pids)
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    echo "$name $rps $p50 $p99 $cpu ${errors:-0}" | tee -a "$RESULTS" >&2
}

median() { sort -n | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$RESULTS" | median; }

DIRECT=http://127.0.0.1:$UP_PORT/objects/bench
VIA_NGINX=http://127.0.0.1:$NGINX_PORT/objects/bench
VIA_GW=http://127.0.0.1:$GW_PORT$SVC_PATH
VIA_PG=http://127.0.0.1:$PG_PORT$SVC_PATH
VIA_NGINX_TLS=https://127.0.0.1:$NGINX_TLS_PORT/objects/bench
VIA_TLS=https://127.0.0.1:$TLS_PORT$SVC_PATH

echo "# max rate: $ROUNDS alternating rounds of ${SECS}s, wrk -t1 -c$CONNS" >&2
echo "# name req/s p50us p99us proxyCPUus/req non2xx" >&2
metrics() { curl -fsS "http://127.0.0.1:$GW_PORT/metrics"; }
: >"$WORK/ledger_before.txt"
: >"$WORK/ledger_after.txt"
for r in $(seq 1 "$ROUNDS"); do
    run_wrk direct "$DIRECT" ""
    run_wrk nginx "$VIA_NGINX" "$(nginx_pids)"
    metrics | grep '^tollgate_ledger_write_duration_seconds_bucket' >>"$WORK/ledger_before.txt"
    run_wrk tollgate "$VIA_GW" "$GW_PID"
    metrics | grep '^tollgate_ledger_write_duration_seconds_bucket' >>"$WORK/ledger_after.txt"
    if [ "$WITH_PG" = 1 ]; then
        TOKEN=$TOKEN_PG run_wrk tollgate-pg "$VIA_PG" "$PG_PID $(pgrep -d' ' -x postgres || true)"
    fi
    if [ "$WITH_TLS" = 1 ]; then
        run_wrk nginx-tls "$VIA_NGINX_TLS" "$(nginx_pids)"
        TOKEN=$TOKEN_TLS run_wrk tollgate-tls "$VIA_TLS" "$TLS_PID"
    fi
done
# Ledger ack p99 during the max-rate tollgate rounds: the histogram's delta over those rounds,
# read as the upper bound of the bucket holding the 99th percentile (buckets double: coarse).
LEDGER_P99=$(awk '
    FNR == NR { split($1, a, "\""); before[a[2]] += $2; next }
    { split($1, a, "\""); if (!(a[2] in after)) order[++n] = a[2]; after[a[2]] += $2 }
    END {
        total = after["+Inf"] - before["+Inf"]
        for (i = 1; i <= n; i++) {
            le = order[i]
            if (le != "+Inf" && after[le] - before[le] >= 0.99 * total) { printf "%.0f", le * 1e6; exit }
        }
        print "inf"
    }' "$WORK/ledger_before.txt" "$WORK/ledger_after.txt")
NGINX_RPS=$(col nginx 2)

# Fixed, moderate rate: about 20% of nginx's max, the same offered load for each target.
PACE_MS=1
PACED_CONNS=$(awk -v r="$NGINX_RPS" 'BEGIN { c = int(r * 0.2 / 900 + 0.5); if (c < 1) c = 1; print c }')
echo "# fixed rate: $PACED_CONNS connections, each pausing ${PACE_MS}ms after a response" >&2
for r in $(seq 1 "$ROUNDS"); do
    CONNS=$PACED_CONNS PACE_MS=$PACE_MS run_wrk paced-nginx "$VIA_NGINX" "$(nginx_pids)" -s "$WORK/paced.lua"
    CONNS=$PACED_CONNS PACE_MS=$PACE_MS run_wrk paced-tollgate "$VIA_GW" "$GW_PID" -s "$WORK/paced.lua"
done

if [ "${BENCH_LOGIN_FLOOD:-1}" = 1 ]; then
    echo "# login flood: wrk -c4 POST /auth/login alongside the fixed-rate tollgate round" >&2
    for r in $(seq 1 "$ROUNDS"); do
        wrk -t1 -c4 -d"$((SECS + 2))s" -s "$WORK/login.lua" "http://127.0.0.1:$GW_PORT/auth/login" >"$WORK/flood.txt" &
        flood=$!
        sleep 1
        CONNS=$PACED_CONNS PACE_MS=$PACE_MS run_wrk flood-tollgate "$VIA_GW" "$GW_PID" -s "$WORK/paced.lua"
        wait "$flood"
        awk '/^Requests\/sec/ {print "#   logins/s " $2}' "$WORK/flood.txt" >&2
    done
fi

RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$GW_PID/status")
# Where the gateway's CPU went, per thread name (whole run): runtime workers, the blocking
# pool, the journal writer.
THREADS=$(for t in /proc/$GW_PID/task/*; do
    echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat")"
done | awk -v hz="$HZ" '{u[$1] += $2; s[$1] += $3} END { for (n in u) printf "%s user %.1fs sys %.1fs; ", n, u[n] / hz, s[n] / hz }')

# --- report -------------------------------------------------------------------------------
{
    echo
    echo "## tollgate bench: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rounds=$ROUNDS x ${SECS}s, wrk -t1 -c$CONNS (fixed rate: -c$PACED_CONNS, ${PACE_MS}ms pause); medians"
    echo
    echo "| target | req/s | x nginx | p50 us | p99 us | proxy CPU us/req | non-2xx |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for n in direct nginx tollgate tollgate-pg nginx-tls tollgate-tls paced-nginx paced-tollgate flood-tollgate; do
        grep -q "^$n " "$RESULTS" || continue
        rps=$(col "$n" 2)
        printf "| %s | %.0f | %.2f | %s | %s | %s | %s |\n" "$n" "$rps" \
            "$(awk -v a="$rps" -v b="$NGINX_RPS" 'BEGIN { print a / b }')" \
            "$(col "$n" 3)" "$(col "$n" 4)" "$(col "$n" 5)" "$(col "$n" 6)"
    done
    echo
    p99n=$(col paced-nginx 4)
    p99t=$(col paced-tollgate 4)
    echo "- full pipeline / nginx max rate: $(awk -v a="$(col tollgate 2)" -v b="$NGINX_RPS" 'BEGIN { printf "%.2f", a / b }')x (goal >= 0.6x)"
    echo "- fixed-rate p99 added over nginx: $(awk -v a="$p99t" -v b="$p99n" 'BEGIN { printf "%.0f", a - b }') us (goal <= 500 us)"
    if grep -q '^flood-tollgate ' "$RESULTS"; then
        echo "- login flood: fixed-rate p99 $(col flood-tollgate 4) us vs $p99t us without: $(awk -v a="$(col flood-tollgate 4)" -v b="$p99t" 'BEGIN { printf "%.2f", a / b }')x (goal <= 2x)"
    fi
    if grep -q '^tollgate-tls ' "$RESULTS"; then
        echo "- HTTPS: tollgate-tls / nginx-tls $(awk -v a="$(col tollgate-tls 2)" -v b="$(col nginx-tls 2)" 'BEGIN { printf "%.2f", a / b }')x; TLS adds $(awk -v a="$(col tollgate-tls 5)" -v b="$(col tollgate 5)" 'BEGIN { printf "%.1f", a - b }') us of gateway CPU per call (nginx: $(awk -v a="$(col nginx-tls 5)" -v b="$(col nginx 5)" 'BEGIN { printf "%.1f", a - b }') us)"
    fi
    echo "- gateway peak RSS: $((RSS_KB / 1024)) MiB"
    echo "- gateway CPU by thread: $THREADS"
    echo "- ledger ack p99 at the full-pipeline max rate: <= $LEDGER_P99 us (histogram bucket bound; goal <= 2000 us)"
    echo "- journal: $(metrics | awk '/^tollgate_(ledger|decision)_records_total/ {printf "%s=%s ", $1, $2}')"
}
