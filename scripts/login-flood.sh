#!/usr/bin/env bash
# Does a flood of wrong-password logins (Argon2id work) slow down forwarding?
#
# Starts nginx as a fast upstream and the release gateway on loopback, measures the p99 of
# forwarded calls with wrk alone, then again while a second wrk floods POST /auth/login with
# unknown users (each costs a full Argon2id verify against the dummy hash, U4), and prints both
# p99s and their ratio. Passes (exit 0) when the ratio is at most LIMIT (default 2.0).
#
# Usage: scripts/login-flood.sh            (DURATION=15s CONNS=16 FLOOD_CONNS=32 LIMIT=2.0)
# Needs: wrk, nginx, curl, python3 (wrk and nginx are installed with apt-get when missing).
set -euo pipefail

DURATION=${DURATION:-15s}
CONNS=${CONNS:-16}
FLOOD_CONNS=${FLOOD_CONNS:-32}
LIMIT=${LIMIT:-2.0}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

install_missing() {
    local missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "installing ${missing[*]} (Debian packages)" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "need root to apt-get install ${missing[*]}; install them and rerun" >&2
            exit 2
        fi
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
install_missing wrk nginx curl python3
# nginx lives in /usr/sbin, which is not always on PATH.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "building the release gateway" >&2
(cd "$root" && cargo build --release --quiet)
bin="$target/release/tollgate"

# --- upstream: nginx answering 200 to everything ---
up_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$up_port;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
EOF
"$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

# --- gateway: the shipped config, on loopback, every service on nginx ---
gw_port=$(free_port)
sed -e "s|^listen = .*|listen = \"127.0.0.1:$gw_port\"|" \
    -e "s|^data_dir = .*|data_dir = \"$work/data\"|" \
    -e "s|^dir = \"policies\"|dir = \"$root/policies\"|" \
    -e "s|^watch = true|watch = false|" \
    -e "s|http://127.0.0.1:910[0-9]|http://127.0.0.1:$up_port|" \
    "$root/config/tollgate.toml" >"$work/tollgate.toml"
TOLLGATE_LOG=warn "$bin" serve --config "$work/tollgate.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$gw_port"
for _ in $(seq 1 100); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { cat "$work/gateway.log" >&2; exit 1; }

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
account=$(curl -fsS -X POST "$base/accounts" -H 'content-type: application/json' \
    -d '{"name":"flood","email":"f@example.com","owner_user":"owner","owner_password":"Owner-pass-1!"}' |
    json_field account_id)
token=$(curl -fsS -X POST "$base/auth/login" -H 'content-type: application/json' \
    -d "{\"account_id\":\"$account\",\"user\":\"owner\",\"password\":\"Owner-pass-1!\"}" |
    json_field token)
curl -fsS -H "authorization: Bearer $token" "$base/svc/storage/objects/a" >/dev/null

cat >"$work/flood.lua" <<EOF
-- Wrong-password logins of users that do not exist: each one is a full Argon2id verify.
math.randomseed(os.time())
request = function()
    local body = '{"account_id":"$account","user":"flood' .. math.random(1, 1000000000) ..
        '","password":"Wrong-pass-1!"}'
    return wrk.format("POST", "/auth/login", { ["Content-Type"] = "application/json" }, body)
end
EOF

# wrk prints "99%  1.23ms" (or us, s); convert to milliseconds.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
        printf "%.3f\n", v }' "$1"
}

forward() {
    wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $token" \
        "$base/svc/storage/objects/a" >"$1"
}

echo "warm-up" >&2
wrk -t1 -c"$CONNS" -d3s -H "Authorization: Bearer $token" "$base/svc/storage/objects/a" >/dev/null

echo "forwarding alone ($DURATION, $CONNS connections)" >&2
forward "$work/alone.txt"

echo "forwarding during a login flood ($FLOOD_CONNS connections of wrong-password logins)" >&2
wrk -t1 -c"$FLOOD_CONNS" -d"$DURATION" -s "$work/flood.lua" "$base/auth/login" >"$work/flood.txt" &
flood=$!
forward "$work/during.txt"
wait "$flood"

alone=$(p99_ms "$work/alone.txt")
during=$(p99_ms "$work/during.txt")
ratio=$(python3 -c "print(f'{$during / $alone:.2f}')")
rps_alone=$(awk '/^Requests\/sec/ {print $2}' "$work/alone.txt")
rps_during=$(awk '/^Requests\/sec/ {print $2}' "$work/during.txt")
logins=$(awk '/^Requests\/sec/ {print $2}' "$work/flood.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/during.txt")

echo
echo "forwarding p99 alone:        ${alone} ms  (${rps_alone} req/s)"
echo "forwarding p99 during flood: ${during} ms  (${rps_during} req/s, non-2xx: ${non2xx:-0})"
echo "login flood:                 ${logins} logins/s (all refused)"
echo "ratio:                       ${ratio}  (limit ${LIMIT})"
if python3 -c "import sys; sys.exit(0 if $ratio <= $LIMIT else 1)"; then
    echo "PASS"
else
    echo "FAIL: a login flood raises the forwarding p99 by more than ${LIMIT}x"
    exit 1
fi
