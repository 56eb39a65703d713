#!/usr/bin/env bash
# `just bench`: release build, a private PostgreSQL and the service, then BENCHMARKS.md with each
# figure next to the reference it is measured against in the same run.
# Needs: the PostgreSQL server binaries (with pgbench), wrk (installed here with apt when run as
# root), curl, python3. Takes about two minutes plus the release build. The server is the test
# kit's (hold-cluster): the one way this project starts a private PostgreSQL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v wrk >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]]; then
        say "installing wrk"
        apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
    else
        die "wrk is needed: sudo apt-get install wrk"
    fi
fi

say "building release binaries"
cargo build --release --locked -q -p counseling-http -p migration
cargo build --release --locked -q -p counseling-testkit --bin hold-cluster
cargo bench --locked -q -p counseling-persistence --bench find_by_username --no-run 2>/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until the counseling-api PID answers PATH on PORT; dies with its LOG if it exits first.
await_api() { # PORT PATH PID LOG
    until curl -fs -o /dev/null "http://127.0.0.1:$1$2"; do
        kill -0 "$3" 2>/dev/null || die "counseling-api exited: $(cat "$4")"
        sleep 0.002
    done
}

# --- a private PostgreSQL ---------------------------------------------------------------------
# The test kit's cluster: on tmpfs, TCP on 127.0.0.1 only, SCRAM with a random superuser password
# (handed over in a 0600 file, then the environment: never a command line), TLS from a CA made
# for this run next to plaintext. Durability as PostgreSQL ships it, not the kit's test settings.
WORK=$(mktemp -d)   # random name, created exclusively, 0700
API_PID=
TLS_API_PID=
API_OFF_PID=
CLUSTER_PID=
stop_cluster() {
    [[ -n $CLUSTER_PID ]] || return 0
    kill -TERM "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
    CLUSTER_PID=
}
cleanup() {
    [[ -n $API_PID ]] && kill "$API_PID" 2>/dev/null || true
    [[ -n $TLS_API_PID ]] && kill "$TLS_API_PID" 2>/dev/null || true
    [[ -n $API_OFF_PID ]] && kill "$API_OFF_PID" 2>/dev/null || true
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

target/release/hold-cluster --env-file "$WORK/cluster.env" --tls \
    --set fsync=on --set synchronous_commit=on --set full_page_writes=on \
    --set max_connections=200 --set shared_buffers=256MB >"$WORK/cluster.out" 2>&1 &
CLUSTER_PID=$!
# hold-cluster prints "<pid> <port>" once the env file is complete.
for _ in $(seq 1 600); do
    grep -qE '^[0-9]+ [0-9]+$' "$WORK/cluster.out" 2>/dev/null && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || die "hold-cluster exited: $(cat "$WORK/cluster.out")"
    sleep 0.1
done
grep -qE '^[0-9]+ [0-9]+$' "$WORK/cluster.out" || die "hold-cluster did not start a server within 60 s"
# PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, CLUSTER_BIN_DIR, CLUSTER_CA_FILE.
set -a; . "$WORK/cluster.env"; set +a
unset DATABASE_URL_TEST
PG_BIN=$CLUSTER_BIN_DIR
PG_PORT=$PGPORT
[[ -x "$PG_BIN/pgbench" ]] || die "pgbench is not in $PG_BIN (apt-get install postgresql)"
# Plaintext explicitly (pgbench and psql too): the server offers TLS, and `prefer` would take it.
export PGSSLMODE=disable
"$PG_BIN/createdb" bench
export PGDATABASE=bench
URL="postgres://postgres:$PGPASSWORD@127.0.0.1:$PG_PORT/bench?sslmode=disable"
TLS_URL="postgres://postgres:$PGPASSWORD@127.0.0.1:$PG_PORT/bench?sslmode=verify-full&sslrootcert=$CLUSTER_CA_FILE"
DATABASE_URL=$URL target/release/migration up >/dev/null

# --- cold start ---------------------------------------------------------------------------------
API_PORT=$(free_port)
now_ms() { date +%s%3N; }
started=$(now_ms)
DATABASE_URL=$URL APP_PORT=$API_PORT LOG_FORMAT=json RUST_LOG=warn target/release/counseling-api \
    >"$WORK/api.log" 2>&1 &
API_PID=$!
await_api "$API_PORT" /health "$API_PID" "$WORK/api.log"
cold_start_ms=$(( $(now_ms) - started ))
sleep 1
rss_kb() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$API_PID/status"; }
idle_rss_kb=$(rss_kb VmRSS)
idle_peak_kb=$(rss_kb VmHWM)

# --- the database's own ceiling: pgbench SELECT 1 with as many clients as the pool -----------
POOL=15
echo 'SELECT 1;' > "$WORK/select1.sql"
say "pgbench: SELECT 1, $POOL clients, 10 s"
pgbench_out=$("$PG_BIN/pgbench" -n -c "$POOL" -j 2 -T 10 -f "$WORK/select1.sql" 2>&1)
pgbench_tps=$(echo "$pgbench_out" | awk '/^tps = / { printf "%.0f", $3; exit }')
pgbench_latency=$(echo "$pgbench_out" | awk '/^latency average/ { print $4 " " $5; exit }')

# --- GET /health, 32 connections, 10 s --------------------------------------------------------
to_ms() { # wrk prints 412.00us, 2.10ms or 1.02s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
# From wrk's output (with --latency): requests per second, a percentile in ms, non-2xx answers.
wrk_rps() { echo "$1" | awk '/^Requests\/sec:/ { print $2 }'; }
wrk_ms() { to_ms "$(echo "$1" | awk -v p="$2" '$1 == p { print $2 }')"; } # OUTPUT 50%|99%
wrk_non2xx() { local n; n=$(echo "$1" | awk '/Non-2xx/ { print $5 }'); echo "${n:-0}"; }
say "wrk: GET /health, 32 connections, 10 s"
wrk_out=$(wrk -t2 -c32 -d10s --latency "http://127.0.0.1:$API_PORT/health")
health_rps=$(wrk_rps "$wrk_out")
health_p50=$(wrk_ms "$wrk_out" 50%)
health_p99=$(wrk_ms "$wrk_out" 99%)
health_non2xx=$(wrk_non2xx "$wrk_out")
health_errors=$(echo "$wrk_out" | awk '/Socket errors/ { print }'); health_errors=${health_errors:-none}
say "wrk: GET /health, 1 connection, 5 s (the cost of one uncontended probe)"
single_out=$(wrk -t1 -c1 -d5s --latency "http://127.0.0.1:$API_PORT/health")
single_rps=$(wrk_rps "$single_out")
single_p50=$(wrk_ms "$single_out" 50%)
single_p99=$(wrk_ms "$single_out" 99%)
ratio=$(awk -v a="$health_rps" -v b="$pgbench_tps" 'BEGIN { printf "%.2f", a / b }')
load_rss_kb=$(rss_kb VmRSS)
load_peak_kb=$(rss_kb VmHWM)

# --- the cost of metrics: the same service with METRICS_ENABLED=false, alternated --------------
API_OFF_PORT=$(free_port)
DATABASE_URL=$URL APP_PORT=$API_OFF_PORT METRICS_ENABLED=false LOG_FORMAT=json RUST_LOG=warn \
    target/release/counseling-api >"$WORK/api-off.log" 2>&1 &
API_OFF_PID=$!
await_api "$API_OFF_PORT" /health "$API_OFF_PID" "$WORK/api-off.log"
rps_of() { wrk_rps "$(wrk -t2 -c32 -d5s "http://127.0.0.1:$1/health")"; }
# This machine's throughput drifts by 10-20 % from one 5 s run to the next (shared cores), more
# than the costs being measured. So every comparison below runs in paired rounds, each pair in
# alternating order to cancel drift, and reports the median of the pairs' ratios.
in_round_order() { if (( $1 % 2 )); then "$2"; "$3"; else "$3"; "$2"; fi; } # ROUND FIRST SECOND
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
mean_step() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", a + b / n }'; } # MEAN VALUE ROUNDS
median() { printf '%s\n' "$@" | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }'; }
joined() { local IFS=,; echo "$*" | sed 's/,/, /g'; }
METRICS_ROUNDS=5
metrics_on_rps=0; metrics_off_rps=0; metrics_ratios=()
metrics_off_round() { off=$(rps_of "$API_OFF_PORT"); }
metrics_on_round() { on=$(rps_of "$API_PORT"); }
for round in $(seq 1 $METRICS_ROUNDS); do
    say "wrk: GET /health, metrics off and on, 32 connections, 5 s each (round $round of $METRICS_ROUNDS)"
    in_round_order "$round" metrics_off_round metrics_on_round
    metrics_off_rps=$(mean_step "$metrics_off_rps" "$off" $METRICS_ROUNDS)
    metrics_on_rps=$(mean_step "$metrics_on_rps" "$on" $METRICS_ROUNDS)
    metrics_ratios+=("$(ratio "$on" "$off")")
done
kill -TERM "$API_OFF_PID"; wait "$API_OFF_PID" 2>/dev/null || true; API_OFF_PID=
metrics_ratio=$(median "${metrics_ratios[@]}")
metrics_ratio_list=$(joined "${metrics_ratios[@]}")

say "GET /metrics, 1000 sequential scrapes"
read -r scrape_p50 scrape_p99 scrape_max scrape_bytes < <(python3 - "$API_PORT" <<'PY'
import http.client, sys, time
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
timings, size = [], 0
for _ in range(1000):
    started = time.perf_counter()
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    size = len(response.read())
    timings.append((time.perf_counter() - started) * 1000)
timings.sort()
print(f"{timings[499]:.3f} {timings[989]:.3f} {timings[-1]:.3f} {size}")
PY
)

# --- overload: 500 concurrent connections on a pool of 15 ------------------------------------
say "wrk: GET /health, 500 connections, 5 s"
over_out=$(wrk -t2 -c500 -d5s --timeout 10s --latency "http://127.0.0.1:$API_PORT/health")
over_requests=$(echo "$over_out" | awk '/requests in/ { print $1 }')
over_non2xx=$(wrk_non2xx "$over_out")
over_errors=$(echo "$over_out" | awk '/Socket errors/ { print }'); over_errors=${over_errors:-none}
over_max=$(to_ms "$(echo "$over_out" | awk '$1 == "Latency" { print $4; exit }')")
over_p99=$(wrk_ms "$over_out" 99%)
final_peak_kb=$(rss_kb VmHWM)

kill -TERM "$API_PID"; wait "$API_PID" 2>/dev/null || true; API_PID=

# --- GET /health over verify-full TLS, next to the plaintext figures above ------------------------
# Alone on the server, so that pg_stat_ssl counts only this service's connections.
TLS_API_PORT=$(free_port)
DATABASE_URL=$TLS_URL APP_PORT=$TLS_API_PORT LOG_FORMAT=json RUST_LOG=warn \
    target/release/counseling-api >"$WORK/api-tls.log" 2>&1 &
TLS_API_PID=$!
await_api "$TLS_API_PORT" /health "$TLS_API_PID" "$WORK/api-tls.log"
tls_connections=$("$PG_BIN/psql" -Atc \
    "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'counseling-api' AND a.backend_type = 'client backend'")
say "wrk: GET /health over verify-full TLS, 32 connections, 10 s"
tls_out=$(wrk -t2 -c32 -d10s --latency "http://127.0.0.1:$TLS_API_PORT/health")
tls_rps=$(wrk_rps "$tls_out")
tls_p50=$(wrk_ms "$tls_out" 50%)
tls_p99=$(wrk_ms "$tls_out" 99%)
tls_non2xx=$(wrk_non2xx "$tls_out")
# The ratio: a plaintext instance next to the TLS one, in paired rounds (see rps_of).
DATABASE_URL=$URL APP_PORT=$API_PORT LOG_FORMAT=json RUST_LOG=warn target/release/counseling-api \
    >"$WORK/api-plain.log" 2>&1 &
API_PID=$!
await_api "$API_PORT" /health "$API_PID" "$WORK/api-plain.log"
TLS_ROUNDS=3
tls_ratios=()
plain_round() { plain=$(rps_of "$API_PORT"); }
tls_round() { tls=$(rps_of "$TLS_API_PORT"); }
for round in $(seq 1 $TLS_ROUNDS); do
    say "wrk: GET /health, plaintext and verify-full TLS, 32 connections, 5 s each (round $round of $TLS_ROUNDS)"
    in_round_order "$round" plain_round tls_round
    tls_ratios+=("$(ratio "$tls" "$plain")")
done
tls_ratio=$(median "${tls_ratios[@]}")
tls_ratio_list=$(joined "${tls_ratios[@]}")
kill -TERM "$API_PID"; wait "$API_PID" 2>/dev/null || true; API_PID=
kill -TERM "$TLS_API_PID"; wait "$TLS_API_PID" 2>/dev/null || true; TLS_API_PID=

# --- find_by_username among 1,000,000 users ---------------------------------------------------
say "find_by_username: loading users and timing lookups"
bench_lookups() { cargo bench --locked -q -p counseling-persistence --bench find_by_username 2>/dev/null; }
lookup_table=$(BENCH_DATABASE_URL=$URL BENCH_PHASE=load bench_lookups)
# The repository's query, with the name built on the server from a random number, as a prepared
# statement: the same SQL shape, plan and result rows the repository gets.
cat > "$WORK/lookup.sql" <<'SQL'
\set i random(1, 1000000)
SELECT "users"."id", "users"."username", "users"."password_hash", "users"."is_blocked", "users"."created_at", "users"."updated_at" FROM "users" WHERE username_identity("users"."username") COLLATE "C" = username_identity(format('\DOM%s\User%s', :i::int % 100, :i::int)) LIMIT 1;
SQL
# Paired rounds (see rps_of): the repository's 15 tasks (5 s on the pool's runtime, then 5 s
# from another runtime) and pgbench's 15 clients (5 s).
LOOKUP_ROUNDS=5
lookup_ratios=(); lookup_hop_ratios=()
repository_rate=0; repository_hop_rate=0; lookup_pgbench_tps=0
repository_round() {
    BENCH_DATABASE_URL=$URL BENCH_PHASE=lookups BENCH_SECONDS=5 BENCH_RATE_FILE="$WORK/rate" \
        bench_lookups >/dev/null
    read -r direct hop < "$WORK/rate"
}
pgbench_round() {
    tps=$("$PG_BIN/pgbench" -n -M prepared -c "$POOL" -j 2 -T 5 -f "$WORK/lookup.sql" 2>&1 \
        | awk '/^tps = / { printf "%.0f", $3; exit }')
}
for round in $(seq 1 $LOOKUP_ROUNDS); do
    say "find_by_username: repository and pgbench, 15 each, paired (round $round of $LOOKUP_ROUNDS)"
    in_round_order "$round" repository_round pgbench_round
    lookup_ratios+=("$(ratio "$direct" "$tps")")
    lookup_hop_ratios+=("$(ratio "$hop" "$tps")")
    repository_rate=$(mean_step "$repository_rate" "$direct" $LOOKUP_ROUNDS)
    repository_hop_rate=$(mean_step "$repository_hop_rate" "$hop" $LOOKUP_ROUNDS)
    lookup_pgbench_tps=$(mean_step "$lookup_pgbench_tps" "$tps" $LOOKUP_ROUNDS)
done
lookup_ratio=$(median "${lookup_ratios[@]}")
lookup_hop_ratio=$(median "${lookup_hop_ratios[@]}")
lookup_ratio_list=$(joined "${lookup_ratios[@]}")
lookup_hop_ratio_list=$(joined "${lookup_hop_ratios[@]}")

# --- a stopped database: how fast does /health say so? -----------------------------------------
say "GET /health with PostgreSQL stopped, 100 sequential probes"
stop_cluster
DATABASE_URL=$URL APP_PORT=$API_PORT LOG_FORMAT=json RUST_LOG=error target/release/counseling-api \
    >"$WORK/api-stopped.log" 2>&1 &
API_PID=$!
await_api "$API_PORT" /health/live "$API_PID" "$WORK/api-stopped.log"
read -r refused_p50 refused_p99 refused_max refused_reasons < <(python3 - "$API_PORT" <<'PY'
import http.client, json, sys, time
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
timings, reasons = [], set()
for _ in range(100):
    started = time.perf_counter()
    connection.request("GET", "/health")
    response = connection.getresponse()
    body = json.loads(response.read())
    timings.append((time.perf_counter() - started) * 1000)
    reasons.add(f"{response.status}:{body.get('error')}")
timings.sort()
print(f"{timings[49]:.2f} {timings[98]:.2f} {timings[-1]:.2f} {','.join(sorted(reasons)).replace(' ', '_')}")
PY
)
kill -TERM "$API_PID"; wait "$API_PID" 2>/dev/null || true; API_PID=

verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == ">=") ? (a >= b) : (a <= b); print ok ? "met" : "missed" }'; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f MB", kb / 1024 }'; }

# Sections written by other runs (just ha-bench) are kept as they are.
kept_sections=$(sed -n '/^## High availability/,$p' BENCHMARKS.md 2>/dev/null || true)
cat > BENCHMARKS.md <<REPORT
# Benchmarks

Written by \`just bench\` on $(date -u +%Y-%m-%dT%H:%M:%SZ). Everything ran on one machine at
once (load generator, service and PostgreSQL share the cores), so each figure stands next to a
reference measured in the same run.

- Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)
- PostgreSQL: $("$PG_BIN/postgres" --version | awk '{ print $3 }'), the test kit's private cluster (\`hold-cluster\`) on tmpfs, default durability settings
- Service: \`counseling-api\` release build, pool of $POOL connections, \`RUST_LOG=warn\`, JSON logs
- Command: \`just bench\` (scripts/bench.sh)

## GET /health against the database's ceiling

| measure | value | target |
|---|---|---|
| \`pgbench\` SELECT 1, $POOL clients, 10 s | $pgbench_tps tps (latency avg $pgbench_latency) | reference |
| \`wrk\` GET /health, 32 connections, 10 s | $health_rps req/s | |
| ratio health / pgbench | **$ratio×** | ≥ 0.5×: $(verdict "$ratio" ">=" 0.5) |
| p50 latency | $health_p50 ms | |
| p99 latency | $health_p99 ms | ≤ 5 ms: $(verdict "$health_p99" "<=" 5) |
| non-2xx responses | $health_non2xx | 0 |
| socket errors | $health_errors | none |
| \`wrk\` GET /health, 1 connection, 5 s | $single_rps req/s, p50 $single_p50 ms, p99 $single_p99 ms | |

Every healthy answer comes from a database round trip that started after the request arrived,
but concurrent probes share those round trips (\`CoalescedPing\`: one check in flight at a time,
each answering every request that arrived before it started). That is why 32 connections can
approach pgbench's rate while using one pooled connection, and why a probe storm cannot exhaust
the pool. A single probe costs one round trip, the ping: its connection goes back to the pool
as it is (see README, "One round trip per call").

## The cost of metrics

Two instances of the service against the same database, one with \`METRICS_ENABLED=false\`;
\`wrk\` GET /health with 32 connections for 5 s on each, $METRICS_ROUNDS rounds, each round's
pair in alternating order. Throughput here drifts by 10-20 % between runs, more than the cost
measured, so the figure is the median of the rounds' on/off ratios.

| measure | value | target |
|---|---|---|
| metrics off (mean of rounds) | $metrics_off_rps req/s | reference |
| metrics on (mean of rounds) | $metrics_on_rps req/s | |
| on / off ratio of each round | $metrics_ratio_list | |
| ratio on / off (median of rounds) | **$metrics_ratio×** | ≥ 0.95×: $(verdict "$metrics_ratio" ">=" 0.95) |
| \`GET /metrics\` p50, 1000 sequential scrapes after the load | $scrape_p50 ms | |
| \`GET /metrics\` p99 | $scrape_p99 ms | ≤ 5 ms: $(verdict "$scrape_p99" "<=" 5) |
| \`GET /metrics\` slowest | $scrape_max ms | |
| scrape size | $scrape_bytes bytes | |

## Overload: 500 concurrent connections, pool of $POOL

| measure | value |
|---|---|
| requests answered in 5 s | $over_requests |
| non-2xx responses | $over_non2xx |
| socket errors | $over_errors |
| p99 latency | $over_p99 ms |
| slowest request | $over_max ms |

## Memory (peak RSS of counseling-api)

| when | RSS | peak RSS (VmHWM) | target |
|---|---|---|---|
| idle, after the first /health | $(mb "$idle_rss_kb") | $(mb "$idle_peak_kb") | idle ≤ 20 MB: $(verdict "$idle_rss_kb" "<=" 20480) |
| after the 32-connection load | $(mb "$load_rss_kb") | $(mb "$load_peak_kb") | |
| after the 500-connection load | | $(mb "$final_peak_kb") | |

## Cold start

| measure | value |
|---|---|
| process start to the first 200 on /health | $cold_start_ms ms |

## find_by_username (case-insensitive, through PgUserRepository)

| measure | value |
|---|---|
$lookup_table

### Concurrent lookups against pgbench (same run, same database, same query)

$LOOKUP_ROUNDS paired rounds in alternating order (5 s each side); rates are means of the rounds,
ratios the median of the rounds' ratios.

| measure | value | target |
|---|---|---|
| \`pgbench -M prepared\`, the repository's SELECT, $POOL clients | $lookup_pgbench_tps tps | reference |
| \`find_by_username\` through \`PgUserRepository\`, 15 tasks on the pool's runtime | $repository_rate per second | |
| ratio of each round | $lookup_ratio_list | |
| ratio repository / pgbench (median) | **$lookup_ratio×** | ≥ 0.8×: $(verdict "$lookup_ratio" ">=" 0.8) |
| the same, 15 tasks on another runtime (each call hops to the pool's runtime, as from an HTTP handler) | $repository_hop_rate per second | |
| ratio with the hop, each round | $lookup_hop_ratio_list | |
| ratio with the hop / pgbench (median) | $lookup_hop_ratio× | |

## GET /health over verify-full TLS next to plaintext

The same service and server; the pool's connections use \`sslmode=verify-full\` with a CA made
in this run (rustls on ring). TLS costs the handshake when a connection opens, not the steady
state.

| measured | plaintext | verify-full TLS | target |
|---|---|---|---|
| \`wrk\` GET /health, 32 connections, 10 s | $health_rps req/s | $tls_rps req/s | |
| TLS / plaintext ratio of each paired round (5 s each, alternating order) | | $tls_ratio_list | |
| ratio TLS / plaintext (median of rounds) | | **$tls_ratio×** | ≥ 0.9×: $(verdict "$tls_ratio" ">=" 0.9) |
| p50 / p99 latency | $health_p50 / $health_p99 ms | $tls_p50 / $tls_p99 ms | |
| non-2xx responses | $health_non2xx | $tls_non2xx | 0 |
| service connections encrypted (\`pg_stat_ssl\`, encrypted/all) | | $tls_connections | all |

## GET /health with PostgreSQL stopped (connection refused)

100 sequential probes on one keep-alive connection, timed by the client.

| measure | value | target |
|---|---|---|
| p50 | $refused_p50 ms | |
| p99 | $refused_p99 ms | ≤ 50 ms: $(verdict "$refused_p99" "<=" 50) |
| slowest | $refused_max ms | |
| answers (status:reason) | $refused_reasons | 503:connection_refused |
REPORT
[[ -z $kept_sections ]] || printf '\n%s\n' "$kept_sections" >> BENCHMARKS.md
say "wrote BENCHMARKS.md"
cat BENCHMARKS.md
