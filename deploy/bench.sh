#!/usr/bin/env bash
# Throughput benchmark of one baton worker against a real Kafka broker.
#
# Starts a private single-node broker (deploy/kafka/local.sh, its own state file), builds the
# release binary, runs `baton bench` against the broker and stops the broker on exit, also when
# the benchmark fails or is interrupted. Arguments go to `baton bench`, e.g.:
#
#   deploy/bench.sh                                  # 20000 jobs at 256, 1024 and 4096 in flight
#   deploy/bench.sh --jobs 5000 --in-flight 1024 --json
#
# Environment: BATON_BENCH_KAFKA_STATE (default /tmp/baton-bench-kafka.state) and the knobs of
# deploy/kafka/local.sh (BATON_KAFKA_HEAP...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BATON_KAFKA_STATE="${BATON_BENCH_KAFKA_STATE:-/tmp/baton-bench-kafka.state}"

stop_broker() { "$ROOT/deploy/kafka/local.sh" stop || true; }
trap stop_broker EXIT

# Build first: the broker need not idle (and use memory) during a slow build.
(cd "$ROOT" && cargo build --release)

line="$("$ROOT/deploy/kafka/local.sh" start)"
bootstrap="${line#bootstrap=}"
[[ "$line" == bootstrap=* && -n "$bootstrap" ]] || { echo "bench: unexpected broker output: $line" >&2; exit 1; }

"$ROOT/target/release/baton" bench --bootstrap "$bootstrap" "$@"
