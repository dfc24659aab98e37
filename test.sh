#!/usr/bin/env bash
# The whole test suite: starts a real Apache Kafka broker (deploy/kafka/local.sh), runs every
# test against it, and stops it. Extra arguments go to the test harness (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")"

# A state file of our own, so a developer's broker and this run never collide.
export BATON_KAFKA_STATE="${BATON_KAFKA_STATE:-/tmp/baton-test-kafka.$$.state}"
trap 'deploy/kafka/local.sh stop >/dev/null 2>&1 || true' EXIT

line=$(deploy/kafka/local.sh start)
export BATON_TEST_BOOTSTRAP="${line#bootstrap=}"
echo "kafka broker at $BATON_TEST_BOOTSTRAP" >&2

# Integration tests wait on the network, not the CPU: run more of them at once than cores.
cargo test --release --no-fail-fast -- --test-threads 8 "$@"
