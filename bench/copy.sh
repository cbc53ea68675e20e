#!/usr/bin/env bash
# Why this exists: issue 5's speed and memory goals are measured here, not in timed tests. On the
# RDS-like test bed it builds one source database (pgbench at scale $SCALE with foreign keys, a
# wide table with TOASTed text and bytea, a table without a key) and, in the same run, copies it
# into fresh target databases with
#   1. pgferry run                          (local state machine, maxConcurrency = $JOBS)
#   2. pgcopydb clone                       (--table-jobs/--index-jobs $JOBS)
#   3. pg_dump -Fd -j $JOBS | pg_restore -j $JOBS
#   4. the machine's limit: per table `COPY TO STDOUT | COPY FROM STDIN`, $JOBS at a time, plus
#      the post-data DDL (index and constraint builds), no planning, no ledger, no verify
# then checks that every copy equals the source (count and an md5 over each table's rows) and
# prints wall time, MB/s and ratios, with pgferry's peak RSS. Last, it changes about 1% of the
# source's rows (updates, inserts and deletes spread over every table), vacuums both databases
# (as autovacuum will have by the next nightly run), runs `pgferry run` in mode refresh into
# pgferry's copy and prints its wall time beside the full copy's (issue 6's goal: ≤ 0.2×), then
# the same refresh of the now unchanged database. It runs on demand, never in CI.
#
#   bench/copy.sh                 # scale 50, 4 jobs
#   SCALE=10 JOBS=2 bench/copy.sh
#   BENCH_ONLY=pgferry bench/copy.sh   # pgferry's copy, verify and refresh only
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE=${SCALE:-50}
JOBS=${JOBS:-4}
WORK=${BENCH_DIR:-/tmp/pgferry-bench}
cd "$REPO"

"$REPO/scripts/bootstrap" >/dev/null
eval "$("$REPO/scripts/testbed" up)"
command -v pgcopydb >/dev/null || {
  echo "bench: installing pgcopydb" >&2
  ${SUDO:-$([ "$(id -u)" = 0 ] || echo sudo)} apt-get install -y -q pgcopydb >/dev/null
}
if [[ -z ${PGFERRY_BIN:-} ]]; then
  echo "bench: building pgferry (release)" >&2
  cargo build --quiet --release --locked -p pgferry-cli
  PGFERRY_BIN="$REPO/target/release/pgferry"
fi
BIN="$PGFERRY_TEST_PG_BIN"
# pgferry runs the server's pg_dump directly, as the peers below do (not Debian's perl wrapper).
export PGFERRY_PG_BIN="$BIN"
export PGOPTIONS="-c client_min_messages=warning"
rm -rf "$WORK" && mkdir -p "$WORK"

with_db() { printf '%s' "${1/\/postgres\?//$2?}"; }
src_url() { with_db "$PGFERRY_TEST_SOURCE_URL" "$1"; }
dst_url() { with_db "$PGFERRY_TEST_TARGET_URL" "$1"; }
psql_q() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
fresh_db() { # server-admin-url master-url name
  psql_q "$(with_db "$1" postgres)" -c "DROP DATABASE IF EXISTS $3 WITH (FORCE)"
  psql_q "$(with_db "$2" postgres)" -c "CREATE DATABASE $3"
}
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

SRC=bench_src
echo "bench: building the source (pgbench scale $SCALE, wide TOASTed table, keyless table)" >&2
fresh_db "$PGFERRY_TEST_SOURCE_ADMIN_URL" "$PGFERRY_TEST_SOURCE_URL" $SRC
"$BIN/pgbench" -q -i -s "$SCALE" --foreign-keys "$(src_url $SRC)" 2>/dev/null
psql_q "$(src_url $SRC)" <<SQL
CREATE TABLE wide (id bigint PRIMARY KEY, doc text NOT NULL, blob bytea NOT NULL, created timestamptz NOT NULL);
INSERT INTO wide
SELECT g, (SELECT string_agg(md5((g * 1000 + i)::text), ' ') FROM generate_series(1, 120) i),
       (SELECT decode(string_agg(md5((g * 7919 + i)::text), ''), 'hex') FROM generate_series(1, 64) i),
       timestamptz '2025-01-01' + g * interval '1 s'
FROM generate_series(1, $((SCALE * 600))) g;
CREATE TABLE log_lines (at timestamptz NOT NULL, level text NOT NULL, line text NOT NULL);
INSERT INTO log_lines SELECT timestamptz '2025-01-01' + g * interval '10 ms', (ARRAY['info','warn','error'])[1 + g % 3],
       'request ' || g || ' served in ' || (g % 997) || ' ms'
FROM generate_series(1, $((SCALE * 20000))) g;
CREATE INDEX wide_created_idx ON wide (created);
CREATE INDEX log_lines_at_idx ON log_lines (at);
ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, wide, log_lines;
SQL
TABLES=$(psql_q -At "$(src_url $SRC)" -c "SELECT string_agg(format('%I.%I', schemaname, relname), ' ' ORDER BY relname) FROM pg_stat_user_tables")
BYTES=$(psql_q -At "$(src_url $SRC)" -c "SELECT sum(pg_table_size(relid)) FROM pg_stat_user_tables")
MB=$(echo "$BYTES / 1048576" | bc -l)
printf 'bench: source holds %.0f MB of table data (heap + TOAST) in: %s\n' "$MB" "$TABLES" >&2

fingerprint() { # url → one line per table: name count md5
  local t
  for t in $TABLES; do
    psql_q -At "$1" -c "SELECT '$t', count(*), coalesce(md5(string_agg(h::text, ',' ORDER BY h)), '') FROM (SELECT hashtextextended(x::text, 0) h FROM $t x) s"
  done
}
fingerprint "$(src_url $SRC)" >"$WORK/source.fp"

declare -A WALL EQUAL
check() { # name db [source fingerprint file]
  if fingerprint "$(dst_url "$2")" | diff -q - "${3:-$WORK/source.fp}" >/dev/null; then EQUAL[$1]=yes; else EQUAL[$1]=NO; fi
}

# 1. pgferry
DST=bench_pgferry
psql_q "$(with_db "$PGFERRY_TEST_TARGET_ADMIN_URL" postgres)" -c "DROP DATABASE IF EXISTS $DST WITH (FORCE)"
cat >"$WORK/job.json" <<JSON
{"source": {"url": "$(src_url $SRC)"}, "target": {"url": "$(dst_url $DST)"}, "maxConcurrency": $JOBS}
JSON
echo "bench: pgferry run" >&2
t0=$(now)
/usr/bin/time -v -o "$WORK/pgferry.time" "$PGFERRY_BIN" run "$WORK/job.json" --store "$WORK/artifacts" \
  --report "$WORK/pgferry-report.json" >"$WORK/pgferry.out" 2>"$WORK/pgferry.err"
WALL[pgferry]=$(elapsed "$t0")
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/pgferry.time")
# pgferry also verifies; the others do not. Its time without the verify phases, for a like-for-like row.
WALL[pgferry_copy]=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(p["durationMs"] for p in r["phases"] if p["phase"] not in ("VerifyChunks","Report"))/1000)' "$WORK/pgferry-report.json")
VERIFY_S=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(p["durationMs"] for p in r["phases"] if p["phase"] in ("VerifyChunks","Report"))/1000)' "$WORK/pgferry-report.json")
EQUAL[pgferry_copy]=-
check pgferry $DST

if [[ ${BENCH_ONLY:-} != pgferry ]]; then
# 2. pgcopydb clone
DST=bench_pgcopydb
fresh_db "$PGFERRY_TEST_TARGET_ADMIN_URL" "$PGFERRY_TEST_TARGET_URL" $DST
echo "bench: pgcopydb clone" >&2
t0=$(now)
# pgcopydb signals its whole process group on failure: give it its own.
PATH="$BIN:$PATH" setsid -w pgcopydb clone --source "$(src_url $SRC)" --target "$(dst_url $DST)" \
  --dir "$WORK/pgcopydb" --table-jobs "$JOBS" --index-jobs "$JOBS" --no-owner --no-acl \
  --skip-extensions --not-consistent >"$WORK/pgcopydb.log" 2>&1 || echo "bench: pgcopydb failed, see $WORK/pgcopydb.log" >&2
WALL[pgcopydb]=$(elapsed "$t0")
check pgcopydb $DST

# 3. pg_dump -Fd | pg_restore
DST=bench_dump
fresh_db "$PGFERRY_TEST_TARGET_ADMIN_URL" "$PGFERRY_TEST_TARGET_URL" $DST
echo "bench: pg_dump -Fd -j $JOBS + pg_restore -j $JOBS" >&2
t0=$(now)
"$BIN/pg_dump" -Fd -j "$JOBS" --no-owner --no-privileges -f "$WORK/dump" "$(src_url $SRC)"
"$BIN/pg_restore" -j "$JOBS" --no-owner --no-privileges -d "$(dst_url $DST)" "$WORK/dump"
WALL[dump_restore]=$(elapsed "$t0")
check dump_restore $DST

# 4. the limit: streamed COPY per table, JOBS at a time, then post-data
DST=bench_limit
fresh_db "$PGFERRY_TEST_TARGET_ADMIN_URL" "$PGFERRY_TEST_TARGET_URL" $DST
echo "bench: limit (COPY | COPY per table, then post-data)" >&2
"$BIN/pg_dump" --schema-only --section=pre-data --no-owner --no-privileges "$(src_url $SRC)" | grep -v '^\\' >"$WORK/pre.sql"
"$BIN/pg_dump" --schema-only --section=post-data --no-owner --no-privileges "$(src_url $SRC)" | grep -v '^\\' >"$WORK/post.sql"
export SRC_URL="$(src_url $SRC)" DST_URL="$(dst_url $DST)" BIN
t0=$(now)
psql_q "$DST_URL" -o /dev/null -f "$WORK/pre.sql"
# shellcheck disable=SC2016
printf '%s\n' $TABLES | xargs -P "$JOBS" -I{} sh -c \
  '"$BIN/psql" -X -q "$SRC_URL" -c "COPY {} TO STDOUT (FORMAT binary)" | "$BIN/psql" -X -q "$DST_URL" -c "COPY {} FROM STDIN (FORMAT binary)"'
psql_q "$DST_URL" -o /dev/null -f "$WORK/post.sql"
WALL[limit]=$(elapsed "$t0")
check limit $DST
fi

# 5. pgferry refresh of pgferry's copy after ~1% of the source's rows changed
echo "bench: changing ~1% of the source's rows, then pgferry run in mode refresh" >&2
ACCOUNTS=$((SCALE * 100000)) WIDE=$((SCALE * 600)) LINES=$((SCALE * 20000))
psql_q "$(src_url $SRC)" <<SQL
UPDATE pgbench_accounts SET abalance = abalance + 1, filler = 'refreshed' WHERE aid % 200 = 1;
DELETE FROM pgbench_accounts WHERE aid % 1000 = 5;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
  SELECT $ACCOUNTS + g, 1 + g % $SCALE, 0, 'new' FROM generate_series(1, $ACCOUNTS / 250) g;
UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid % 100 = 1;
UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  SELECT 1 + g % ($SCALE * 10), 1 + g % $SCALE, 1 + (g * 97 % $ACCOUNTS) / 1000 * 1000, g, now() FROM generate_series(1, $ACCOUNTS / 100) g;
UPDATE wide SET doc = doc || ' refreshed' WHERE id % 200 = 2;
DELETE FROM wide WHERE id % 1000 = 3;
INSERT INTO wide SELECT $WIDE + g, md5(g::text), '\x00', now() FROM generate_series(1, $WIDE / 250) g;
UPDATE log_lines SET level = 'debug' WHERE extract(epoch FROM at)::bigint % 200 = 7;
ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, wide, log_lines;
SQL
fingerprint "$(src_url $SRC)" >"$WORK/source-changed.fp"
# A nightly refresh meets databases autovacuum has long settled; here autovacuum would still be
# working through the fresh copy and the changes while the refresh runs, on the same two cores.
settle() {
  psql_q "$(with_db "$PGFERRY_TEST_SOURCE_ADMIN_URL" $SRC)" -c "VACUUM (ANALYZE)"
  psql_q "$(with_db "$PGFERRY_TEST_TARGET_ADMIN_URL" bench_pgferry)" -c "VACUUM (ANALYZE)"
}
settle
cat >"$WORK/refresh-job.json" <<JSON
{"source": {"url": "$(src_url $SRC)"}, "target": {"url": "$(dst_url bench_pgferry)"}, "maxConcurrency": $JOBS, "mode": "refresh"}
JSON
t0=$(now)
/usr/bin/time -v -o "$WORK/refresh.time" "$PGFERRY_BIN" run "$WORK/refresh-job.json" --store "$WORK/artifacts" \
  --report "$WORK/refresh-report.json" >"$WORK/refresh.out" 2>"$WORK/refresh.err" ||
  echo "bench: pgferry refresh failed, see $WORK/refresh.err" >&2
WALL[refresh]=$(elapsed "$t0")
REFRESH_RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/refresh.time")
check refresh bench_pgferry "$WORK/source-changed.fp"

# 6. the same refresh again, nothing having changed: the cost of finding that out
settle
t0=$(now)
"$PGFERRY_BIN" run "$WORK/refresh-job.json" --store "$WORK/artifacts" --report "$WORK/unchanged-report.json" \
  >"$WORK/unchanged.out" 2>"$WORK/unchanged.err" || echo "bench: pgferry refresh (unchanged) failed, see $WORK/unchanged.err" >&2
WALL[unchanged]=$(elapsed "$t0")

printf '\n%-14s %10s %10s %14s  %s\n' "method" "wall s" "MB/s" "pgferry/this" "equal"
for m in pgferry pgferry_copy pgcopydb dump_restore limit; do
  [[ -n ${WALL[$m]:-} ]] || continue
  printf '%-14s %10.1f %10.1f %14.2f  %s\n' "$m" "${WALL[$m]}" "$(echo "$MB / ${WALL[$m]}" | bc -l)" \
    "$(echo "${WALL[pgferry]} / ${WALL[$m]}" | bc -l)" "${EQUAL[$m]}"
done
printf '\npgferry peak RSS: %.1f MB (scale %s, %s jobs, %.0f MB of table data)\n' "$(echo "$RSS_KB / 1024" | bc -l)" "$SCALE" "$JOBS" "$MB"
grep -E '^(CopyChunks|VerifyChunks|SchemaPostData|total)' "$WORK/pgferry.out" || true
printf '\nverify of the whole database (VerifyChunks + Report): %.1f s vs copy phase %.1f s = %.2f× (goal ≤ 0.5×)\n' \
  "$VERIFY_S" "${WALL[pgferry_copy]}" "$(echo "$VERIFY_S / ${WALL[pgferry_copy]}" | bc -l)"
printf 'refresh after ~1%% of rows changed: %.1f s vs full pgferry run %.1f s = %.2f× (goal ≤ 0.2×), vs copy phase %.1f s = %.2f×, equal: %s\n' \
  "${WALL[refresh]}" "${WALL[pgferry]}" "$(echo "${WALL[refresh]} / ${WALL[pgferry]}" | bc -l)" \
  "${WALL[pgferry_copy]}" "$(echo "${WALL[refresh]} / ${WALL[pgferry_copy]}" | bc -l)" "${EQUAL[refresh]}"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])).get("verification") or {}; print("  " + (r.get("refresh") or {}).get("summary", "no refresh summary"))' \
  "$WORK/refresh-report.json" || true
grep -E '^(CopyChunks|VerifyChunks|total)' "$WORK/refresh.out" || true
printf '  peak RSS %.1f MB (the keyless table'"'"'s rows matched in memory)\n' "$(echo "${REFRESH_RSS_KB:-0} / 1024" | bc -l)"
printf 'refresh of the unchanged database: %.1f s = %.2f× the full run\n' \
  "${WALL[unchanged]}" "$(echo "${WALL[unchanged]} / ${WALL[pgferry]}" | bc -l)"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])).get("verification") or {}; print("  " + (r.get("refresh") or {}).get("summary", "no refresh summary"))' \
  "$WORK/unchanged-report.json" || true
