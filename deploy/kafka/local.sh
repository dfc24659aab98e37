#!/usr/bin/env bash
# Run a real, single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on 127.0.0.1 for baton's integration tests.
#
# Needs only Java 17+, Maven and python3: the broker jars come from Maven
# Central (deploy/kafka/pom.xml) and are cached, so no Kafka tarball, no docker.
#
#   deploy/kafka/local.sh start   # prints exactly one line: bootstrap=127.0.0.1:PORT
#   deploy/kafka/local.sh status  # same line if running (exit 0), else exit 1
#   deploy/kafka/local.sh secure  # the TLS + SASL listener of the running broker:
#                                 #   bootstrap=127.0.0.1:PORT ca=PEM user=NAME password=SECRET
#                                 #   (SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or
#                                 #   OAUTHBEARER with unsigned test tokens; a certificate for
#                                 #   127.0.0.1 made by keytool at each start)
#   deploy/kafka/local.sh stop    # idempotent
#   deploy/kafka/local.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server ... --list
#
# Only the bootstrap line goes to stdout; everything else goes to stderr, so
# callers can do: eval "$(deploy/kafka/local.sh start)" or parse the line.
#
# Environment knobs:
#   BATON_KAFKA_CACHE          jar cache (default ~/.cache/baton-kafka/<version>)
#   BATON_KAFKA_STATE          state file (default ${TMPDIR:-/tmp}/baton-kafka.state);
#                              use distinct ones to run several brokers in parallel
#   BATON_KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   BATON_KAFKA_STOP_TIMEOUT   seconds between TERM and KILL (default 30)
#   BATON_KAFKA_HEAP           JVM -Xmx (default 512m)
#   JAVA_HOME / JAVA           which java to run
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"

# The pom is the single source of truth for the version; the cache is keyed
# on it so bumping the pom never reuses stale jars.
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
CACHE_DIR="${BATON_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/baton-kafka/$KAFKA_VERSION}"
LIBS="$CACHE_DIR/libs"
STATE="${BATON_KAFKA_STATE:-${TMPDIR:-/tmp}/baton-kafka.state}"
START_TIMEOUT="${BATON_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${BATON_KAFKA_STOP_TIMEOUT:-30}"
HEAP="${BATON_KAFKA_HEAP:-512m}"
if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java
fi
# Pin the plugin: Maven 3.8's default maven-dependency-plugin is the ancient 2.8.
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

log() { echo "local-kafka: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- jars

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# Populate $LIBS once. The marker holds the pom's hash, so a half-finished
# download (no marker) or an edited pom (other hash) triggers a refetch.
fetch_jars() {
  local want; want="$(pom_hash)"
  if [[ -f "$CACHE_DIR/.complete" && "$(cat "$CACHE_DIR/.complete")" == "$want" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION jars)"
  mkdir -p "$CACHE_DIR"
  # Download into a private dir and swap it in, so a concurrent start never
  # sees a partially filled libs/ directory.
  local tmp; tmp="$(mktemp -d "$CACHE_DIR/libs.tmp.XXXXXX")"
  log "fetching Kafka $KAFKA_VERSION jars with maven into $LIBS (first run only)"
  local t0=$SECONDS
  # Maven's output is only shown on failure (Debian's Maven 3.8 prints stray
  # ANSI resets even with -q -B).
  if ! mvn -B -q -f "$POM" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "maven failed to fetch the Kafka jars"
  fi
  rm -f "$tmp.log"
  rm -rf "$LIBS"
  mv -T "$tmp" "$LIBS" 2>/dev/null || rm -rf "$tmp"   # lost a race: theirs is as good
  echo "$want" > "$CACHE_DIR/.complete"
  log "jars ready in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- state

# State file: plain key=value lines (PID, DATA_DIR, PORT, CONTROLLER_PORT, SECURE_PORT).
state_get() {
  [[ -f "$STATE" ]] || return 1
  sed -n "s/^$1=//p" "$STATE" | head -n1
}

# A killed process whose parent never reaps it stays a zombie; treat as gone.
is_alive() {
  [[ -n "$1" && -r "/proc/$1/stat" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]]
}

# Is $1 a live (non-zombie) broker process started by us for data dir $2?
# Checking the command line guards against the pid having been reused.
is_our_broker() {
  local pid="$1" dir="$2"
  is_alive "$pid" || return 1
  local cmd; cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline")"
  [[ "$cmd" == *kafka.Kafka* && "$cmd" == *"$dir"* ]]
}

running_bootstrap() {
  local pid dir port
  pid="$(state_get PID)" || return 1
  dir="$(state_get DATA_DIR)" || return 1
  port="$(state_get PORT)" || return 1
  is_our_broker "$pid" "$dir" || return 1
  echo "bootstrap=127.0.0.1:$port"
}

# Remove a data dir only if it is one this script made (mktemp prefix and
# our server.properties inside), so a corrupt state file can't rm -rf junk.
remove_data_dir() {
  local dir="$1"
  [[ -n "$dir" && -d "$dir" ]] || return 0
  if [[ "$(basename "$dir")" == baton-kafka.* && -f "$dir/server.properties" ]]; then
    rm -rf "$dir"
  else
    log "not removing unexpected data dir '$dir'"
  fi
}

# Written before the broker exists too, so a failed start still knows which
# data dir to clean up.
write_state() {
  printf 'PID=%s\nDATA_DIR=%s\nPORT=%s\nCONTROLLER_PORT=%s\nSECURE_PORT=%s\n' \
    "$PID" "$DATA_DIR" "$PORT" "$1" "$SECURE_PORT" > "$STATE"
}

# ---------------------------------------------------------------- start

# Three distinct free ports on 127.0.0.1. All sockets are held open until both
# are chosen so they can't collide with each other; the small window before the
# broker binds them is covered by the retry in cmd_start.
free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# KRaft cluster ids are 16 random bytes, base64url without padding. One in 64 of those starts
# with '-', which the storage tool's argument parser takes for an option ("--cluster-id: expected
# one argument"); Kafka's own Uuid.randomUuid draws again in that case, and so do we.
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    [[ "$id" == -* ]] || break
  done
  printf '%s\n' "$id"
}

# The SASL user of the secure listener; its password is made at each start.
SASL_USER=baton

# A self-signed certificate for 127.0.0.1 (keytool, from the JDK that runs the broker): the
# broker's keystore, and the certificate as PEM for clients to trust (ssl.ca.location).
make_certificate() {
  local dir="$1" pass="$2" keytool
  keytool="$(dirname "$(readlink -f "$(command -v "$JAVA")")")/keytool"
  [[ -x "$keytool" ]] || keytool=keytool
  "$keytool" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 30 \
      -dname "CN=localhost" -ext "SAN=IP:127.0.0.1,DNS:localhost" \
      -keystore "$dir/broker.p12" -storetype PKCS12 -storepass "$pass" -keypass "$pass" \
      >"$dir/keytool.log" 2>&1 || { cat "$dir/keytool.log" >&2; return 1; }
  "$keytool" -exportcert -rfc -alias broker -keystore "$dir/broker.p12" -storetype PKCS12 \
      -storepass "$pass" -file "$dir/ca.pem" >>"$dir/keytool.log" 2>&1 \
    || { cat "$dir/keytool.log" >&2; return 1; }
}

write_config() {
  local dir="$1" port="$2" cport="$3" sport="$4" pass="$5"
  cat > "$dir/server.properties" <<EOF
# Single combined broker+controller KRaft node, loopback only.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SECURE://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SECURE://127.0.0.1:$sport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SECURE:SASL_SSL
# The secure listener, as a managed cluster has it: TLS, then SASL (SCRAM users are made when
# the storage is formatted; PLAIN checks the JAAS line below; OAUTHBEARER takes Kafka's own
# unsigned test tokens, where a managed cluster checks signed ones from its identity provider).
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.secure.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.secure.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.secure.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$pass";
listener.name.secure.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
listener.name.secure.ssl.keystore.location=$dir/broker.p12
listener.name.secure.ssl.keystore.type=PKCS12
listener.name.secure.ssl.keystore.password=$pass
listener.name.secure.ssl.key.password=$pass
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
# Dynamic quorum (KIP-853), formatted with --standalone below.
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$dir/data
# One node: every internal topic must make do with one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# Tests create their topics explicitly; a typo must fail, not auto-create.
auto.create.topics.enable=false
# Don't make the first consumer group wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# Consumer group protocol (KIP-848), which the workers use: a dead member's partitions move
# after 10 s (45 s by default) and assignments reach members within a second (5 s heartbeats by
# default), so crash and scale-out tests finish in seconds.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
EOF
  # log4j2 config: everything to stdout, which start redirects to broker.log.
  # log4j2's own shutdown hook would otherwise stop logging while Kafka's hook
  # is still shutting down, hiding the end of the shutdown from the log.
  cat > "$dir/log4j2.properties" <<'EOF'
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
EOF
}

# Start one broker attempt; sets globals PID, DATA_DIR, PORT. Returns 2 if the
# broker died because a port was taken meanwhile (caller retries), 1 on other
# failure, 0 once the broker is serving.
launch() {
  # (set -e is off inside a function called as `launch || ...`, hence the
  # explicit `|| return 1`s.)
  DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/baton-kafka.XXXXXX")" || return 1
  PID=""
  local ports cport pass
  ports="$(free_ports)" || return 1
  read -r PORT cport SECURE_PORT <<<"$ports"
  pass="$(python3 -c 'import secrets;print(secrets.token_hex(16))')"
  printf '%s\n' "$pass" > "$DATA_DIR/sasl.password"
  write_config "$DATA_DIR" "$PORT" "$cport" "$SECURE_PORT" "$pass" || return 1
  write_state "$cport" || return 1
  make_certificate "$DATA_DIR" "$pass" || return 1
  local log4j="-Dlog4j2.configurationFile=file:$DATA_DIR/log4j2.properties"
  local blog="$DATA_DIR/broker.log"

  "$JAVA" -cp "$LIBS/*" "$log4j" kafka.tools.StorageTool format \
      --config "$DATA_DIR/server.properties" --cluster-id "$(random_cluster_id)" \
      --standalone \
      --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$pass]" \
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$pass]" \
      >"$DATA_DIR/format.log" 2>&1 \
    || { cat "$DATA_DIR/format.log" >&2; return 1; }

  # setsid: own session, so Ctrl-C or a test harness killing our process group
  # doesn't take the broker down with it. All fds (incl. the flock fd 9) are
  # redirected/closed, otherwise a caller reading our stdout (e.g. Rust's
  # Command::output()) would block until the broker exits.
  setsid nohup "$JAVA" -Xms128m -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "$log4j" \
      -cp "$LIBS/*" kafka.Kafka "$DATA_DIR/server.properties" \
      </dev/null >"$blog" 2>&1 9>&- &
  PID=$!
  write_state "$cport" || return 1
  log "broker pid $PID, data dir $DATA_DIR, log $blog"

  # Ready = the server logged that startup finished (listeners up, metadata
  # published) AND the port accepts connections. An open port alone is not
  # enough: the socket server binds before the broker can answer metadata.
  local deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! is_alive "$PID"; then
      if grep -q 'BindException\|Address already in use' "$blog"; then return 2; fi
      log "broker exited during startup; last lines of $blog:"
      tail -n 40 "$blog" >&2
      return 1
    fi
    if grep -q 'Kafka Server started' "$blog" \
       && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  log "broker not ready after ${START_TIMEOUT}s; last lines of $blog:"
  tail -n 40 "$blog" >&2
  return 1
}

cmd_start() {
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA_HOME)"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$(dirname "$STATE")"
  # Serialize start/stop on the same state file (parallel `start`s would
  # otherwise both launch a broker).
  exec 9>"$STATE.lock"
  flock 9

  if running_bootstrap; then
    log "already running (state $STATE)"
    return 0
  fi
  # Stale state from a crashed/killed broker: clean its leftovers.
  if [[ -f "$STATE" ]]; then
    stop_locked
  fi

  fetch_jars
  local t0=$SECONDS rc attempt
  for attempt in 1 2 3; do
    rc=0; launch || rc=$?
    if (( rc == 0 )); then
      log "ready in $((SECONDS - t0))s"
      echo "bootstrap=127.0.0.1:$PORT"
      return 0
    fi
    stop_locked
    (( rc == 2 )) || exit 1
    log "port taken before the broker could bind it; retrying ($attempt)"
  done
  die "could not start broker"
}

# ---------------------------------------------------------------- stop

stop_locked() {
  [[ -f "$STATE" ]] || return 0
  local pid dir
  pid="$(state_get PID || true)"
  dir="$(state_get DATA_DIR || true)"
  if is_our_broker "$pid" "$dir"; then
    log "stopping broker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    # A clean KRaft shutdown takes a few seconds; don't wait forever.
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while is_our_broker "$pid" "$dir" && (( SECONDS < deadline )); do sleep 0.2; done
    if is_our_broker "$pid" "$dir"; then
      log "broker ignored TERM for ${STOP_TIMEOUT}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      while is_our_broker "$pid" "$dir"; do sleep 0.1; done
    fi
  fi
  remove_data_dir "$dir"
  rm -f "$STATE"
}

cmd_stop() {
  [[ -f "$STATE" ]] || return 0
  exec 9>"$STATE.lock"
  flock 9
  stop_locked
  rm -f "$STATE.lock"
}

cmd_status() {
  if running_bootstrap; then return 0; fi
  log "not running (state $STATE)"
  return 1
}

# Run a Kafka CLI class with the cached jars, logging only warnings (to
# stderr), e.g.:
#   local.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:PORT --list
cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: $0 tool MAIN_CLASS [ARGS...]"
  fetch_jars
  local cfg="$CACHE_DIR/log4j2-tools.properties"
  if [[ ! -f "$cfg" ]]; then
    printf '%s\n' 'status = warn' 'appender.err.type = Console' 'appender.err.name = err' \
      'appender.err.target = SYSTEM_ERR' 'appender.err.layout.type = PatternLayout' \
      'appender.err.layout.pattern = [%d] %p %m (%c)%n' 'rootLogger.level = warn' \
      'rootLogger.appenderRef.err.ref = err' > "$cfg.$$" && mv "$cfg.$$" "$cfg"
  fi
  exec "$JAVA" -Dlog4j2.configurationFile="file:$cfg" -cp "$LIBS/*" "$@"
}

# The secure listener of the running broker, as one line.
cmd_secure() {
  running_bootstrap >/dev/null || { log "not running (state $STATE)"; return 1; }
  local dir port pass
  dir="$(state_get DATA_DIR)"
  port="$(state_get SECURE_PORT || true)"
  pass="$(cat "$dir/sasl.password" 2>/dev/null || true)"
  [[ -n "$port" && -n "$pass" && -f "$dir/ca.pem" ]] \
    || die "the running broker has no secure listener (started by an older local.sh?); stop it and start again"
  echo "bootstrap=127.0.0.1:$port ca=$dir/ca.pem user=$SASL_USER password=$pass"
}

# Sourced (by a test checking one of the functions above): the settings at the top have run
# and the functions are defined; no command runs.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "${1:-}" in
  start)  cmd_start ;;
  secure) cmd_secure ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  tool)   shift; cmd_tool "$@" ;;
  *) echo "usage: $0 start|stop|status|secure|tool MAIN_CLASS [ARGS...]" >&2; exit 2 ;;
esac
