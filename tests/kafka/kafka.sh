#!/usr/bin/env bash
# Apache Kafka brokers (KRaft, each node both broker and controller) on 127.0.0.1, for the
# test rig, the benchmarks and a developer's shell. The broker's jars come from Maven Central
# (pom.xml beside this script) into a cache; the JVM is the machine's (Java 17 or newer).
#
#   kafka.sh fetch                      fetch the jars (once; cached), print their folder
#   kafka.sh start DIR [--nodes N] [--owner PID] [--security]
#                                       start a cluster of N nodes (default 1) whose config,
#                                       logs and data live in DIR, wait until every node is
#                                       up, print bootstrap.servers. DIR new: ports are chosen
#                                       and storage is formatted. DIR used before: the nodes
#                                       that are not running start again on the same ports,
#                                       with their data (--nodes and --security are then
#                                       ignored). --owner: the nodes started are killed when
#                                       process PID exits (a test binary that dies early).
#                                       --security: each node also listens for SASL_PLAINTEXT
#                                       and SASL_SSL (mechanisms SCRAM-SHA-512 and PLAIN) and
#                                       for SSL with a required client certificate; see
#                                       `security` below.
#   kafka.sh security DIR               print what a client of a --security cluster needs, one
#                                       KEY=VALUE a line: the bootstrap.servers of each
#                                       listener (SASL_PLAINTEXT, SASL_SSL, SSL), the SASL user
#                                       and password (random, made at creation), and the PEM
#                                       files made at creation in DIR/security: the CA that
#                                       signed the brokers' and the client's certificates
#                                       (CA), the client's certificate and key (CLIENT_CERT,
#                                       CLIENT_KEY), another CA that the brokers do not trust
#                                       and that signed neither of their certificates
#                                       (UNTRUSTED_CA), and a client certificate and key it
#                                       signed (UNTRUSTED_CERT, UNTRUSTED_KEY).
#   kafka.sh stop DIR [NODE]            clean shutdown (SIGTERM) of every node, or of one
#   kafka.sh kill DIR [NODE]            SIGKILL every node, or one (a crash: data stays)
#   kafka.sh restart DIR                stop, then start again with the same data
#   kafka.sh bootstrap DIR              print bootstrap.servers
#   kafka.sh version                    print the Apache Kafka version it runs
#
# The --security listeners need `openssl` (the certificates are made at creation).
#
# Environment: TRIBUTARY_TOOLS_DIR (cache root, default ~/.cache/tributary),
# TRIBUTARY_KAFKA_VERSION (default 4.1.1), TRIBUTARY_KAFKA_HEAP (default 512m), JAVA_HOME.
# Every command is idempotent: starting a running node, or stopping a stopped one, is a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${TRIBUTARY_KAFKA_VERSION:-4.1.1}"
cache="${TRIBUTARY_TOOLS_DIR:-$HOME/.cache/tributary}/kafka/$version"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() {
  printf 'kafka.sh: %s\n' "$*" >&2
  exit 1
}

# The Java the broker runs on: Kafka 4 brokers need Java 17 or newer.
check_java() {
  command -v "$java" >/dev/null 2>&1 ||
    die "Java not found (\`$java\`): Apache Kafka $version needs Java 17 or newer; install a JDK (Debian: \`apt-get install openjdk-17-jdk-headless\`) or set JAVA_HOME"
  local spec
  spec="$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${spec%%.*}" =~ ^[0-9]+$ && "${spec%%.*}" -ge 17 ]] ||
    die "\`$java\` is Java ${spec:-of unknown version}: Apache Kafka $version needs Java 17 or newer; set JAVA_HOME to a newer JDK"
}

# Copies Kafka and its runtime dependencies into "$cache/libs" once. A lock keeps test
# processes that start together from fetching twice; the folder appears only when complete.
fetch() {
  [[ -f "$cache/libs/.complete" ]] && return
  command -v mvn >/dev/null 2>&1 ||
    die "Maven not found: it fetches Apache Kafka $version from Maven Central into $cache; install it (Debian: \`apt-get install maven\`)"
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$cache/libs/.complete" ]]; then
    rm -rf "$cache/libs.partial"
    printf 'kafka.sh: fetching Apache Kafka %s from Maven Central into %s\n' "$version" "$cache" >&2
    mvn -B -Dstyle.color=never -f "$here/pom.xml" -Dkafka.version="$version" \
      dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$cache/libs.partial" >"$cache/fetch.log" 2>&1 ||
      die "Maven could not fetch org.apache.kafka:kafka_2.13:$version and its dependencies; the end of $cache/fetch.log:
$(grep -E 'ERROR|BUILD' "$cache/fetch.log" | tail -n 20)"
    touch "$cache/libs.partial/.complete"
    rm -rf "$cache/libs"
    mv "$cache/libs.partial" "$cache/libs"
  fi
  exec 9>&-
}

classpath() { printf '%s' "$cache/libs/*"; }

# The SASL user of a --security cluster (its password is random, made at creation).
sasl_username=tributary

# A TCP port on 127.0.0.1 for the cluster in DIR ($1): nothing listens on it, no other
# cluster of this script holds it, and it lies in 10000-19999, below Linux's ephemeral range
# (so that the kernel does not hand it to a client socket meanwhile) and below the ports the
# test rig picks for daemons and servers (20000 and up). A cluster holds its ports for as long
# as its DIR exists, by a symlink to DIR named after the port in $port_claims (created
# atomically; one whose DIR is gone is stale and taken over): several test binaries that
# start clusters side by side, or restart a killed node on its ports, never collide.
port_claims="${TMPDIR:-/tmp}/tributary-kafka-ports"
free_port() {
  local dir=$1 port claim
  mkdir -p "$port_claims"
  while :; do
    port=$((10000 + RANDOM % 10000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    claim="$port_claims/$port"
    ln -s "$dir" "$claim" 2>/dev/null && break
    # Held: by a cluster that is gone, the claim is stale; remove it and draw again.
    [[ -d "$(readlink "$claim" 2>/dev/null)" ]] || rm -f "$claim"
  done
  printf '%s' "$port"
}

# Makes the PEM files of a --security cluster in DIR/security ($1): a CA; the brokers'
# certificate (one for every node: SAN IP 127.0.0.1 and DNS localhost, so that clients that
# check the host name accept it) and key in one file, Kafka's PEM key store; a client
# certificate from the same CA; and a client certificate from a second CA that the brokers do
# not trust. EC P-256 keys in PKCS#8 (quick to make; what Kafka's PEM key store reads),
# unencrypted, valid for two days.
make_certificates() {
  local dir=$1/security
  command -v openssl >/dev/null 2>&1 ||
    die "openssl not found: --security makes the listeners' certificates with it; install it (Debian: \`apt-get install openssl\`)"
  mkdir -p "$dir"
  local name
  for name in ca untrusted-ca broker client untrusted-client; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>>"$dir/openssl.log" ||
      die "openssl could not make a key: $(cat "$dir/openssl.log")"
  done
  for name in ca untrusted-ca; do
    openssl req -x509 -new -key "$dir/$name.key" -subj "/CN=tributary test $name" -days 2 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$dir/$name.pem" 2>>"$dir/openssl.log" ||
      die "openssl could not make the CA \`$name\`: $(cat "$dir/openssl.log")"
  done
  # sign NAME CA EXTENSIONS
  sign() {
    openssl req -new -key "$dir/$1.key" -subj "/CN=tributary test $1" -out "$dir/$1.csr" 2>>"$dir/openssl.log" &&
      openssl x509 -req -in "$dir/$1.csr" -CA "$dir/$2.pem" -CAkey "$dir/$2.key" -CAcreateserial \
        -days 2 -extfile <(printf '%s\n' "basicConstraints=CA:FALSE" "$3") \
        -out "$dir/$1.pem" 2>>"$dir/openssl.log" ||
      die "openssl could not sign the certificate \`$1\`: $(cat "$dir/openssl.log")"
  }
  sign broker ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
  sign client ca "extendedKeyUsage=clientAuth"
  sign untrusted-client untrusted-ca "extendedKeyUsage=clientAuth"
  cat "$dir/broker.key" "$dir/broker.pem" >"$dir/broker-keystore.pem"
}

# Writes DIR/cluster.env (node count, ports) and each node's server.properties, then formats
# every node's storage with one cluster id. With security ($3 = 1), each node also gets the
# SASL and SSL listeners (see the usage above) and the SCRAM user is added at formatting.
create() {
  local dir=$1 nodes=$2 security=${3:-0} ports=() voters="" id
  local sasl_plaintext_ports=() sasl_ssl_ports=() ssl_ports=() sasl_password="" format_args=()
  for ((id = 1; id <= nodes; id++)); do
    ports+=("$(free_port "$dir")")
    ports+=("$(free_port "$dir")")
    if ((security)); then
      sasl_plaintext_ports+=("$(free_port "$dir")")
      sasl_ssl_ports+=("$(free_port "$dir")")
      ssl_ports+=("$(free_port "$dir")")
    fi
  done
  if ((security)); then
    make_certificates "$dir"
    # Letters and digits only: it is written unquoted into JAAS and SCRAM arguments.
    sasl_password="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c 1-24)"
    format_args=(--add-scram "SCRAM-SHA-512=[name=$sasl_username,password=$sasl_password]")
  fi
  for ((id = 1; id <= nodes; id++)); do
    voters+="${voters:+,}$id@127.0.0.1:${ports[2 * id - 1]}"
  done
  local replicas=$((nodes < 3 ? nodes : 3))
  local min_isr=$((replicas > 1 ? 2 : 1))
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '_A' | cut -c 1-22)"
  mkdir -p "$dir"
  for ((id = 1; id <= nodes; id++)); do
    local node="$dir/node-$id"
    mkdir -p "$node"
    local plaintext="PLAINTEXT://127.0.0.1:${ports[2 * id - 2]}" secured="" protocols=""
    if ((security)); then
      secured=",SASL_PLAINTEXT://127.0.0.1:${sasl_plaintext_ports[id - 1]}"
      secured+=",SASL_SSL://127.0.0.1:${sasl_ssl_ports[id - 1]},SSL://127.0.0.1:${ssl_ports[id - 1]}"
      protocols=",SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
    fi
    cat >"$node/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=$plaintext,CONTROLLER://127.0.0.1:${ports[2 * id - 1]}$secured
advertised.listeners=$plaintext$secured
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$protocols
log.dirs=$node/data
# As in production: topics exist only when created (Tributary never creates them).
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
# A node killed with SIGKILL is re-registered only once its old session has expired: 3 s
# instead of 9 s keeps kill-and-restart tests short.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
    if ((security)); then
      local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
      local plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_username=\"$sasl_password\";"
      cat >>"$node/server.properties" <<EOF
# Clients authenticate with SASL (SCRAM-SHA-512: the user added at formatting; PLAIN: the
# same user and password in the JAAS config) on SASL_PLAINTEXT and SASL_SSL, and with a
# certificate from the CA on SSL. PLAINTEXT stays open for the tests' own admin clients.
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram
listener.name.sasl_plaintext.plain.sasl.jaas.config=$plain
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram
listener.name.sasl_ssl.plain.sasl.jaas.config=$plain
ssl.keystore.type=PEM
ssl.keystore.location=$dir/security/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/security/ca.pem
listener.name.ssl.ssl.client.auth=required
EOF
    fi
  done
  {
    printf 'nodes=%s\nports=(%s)\nsecurity=%s\n' "$nodes" "${ports[*]}" "$security"
    if ((security)); then
      printf 'sasl_plaintext_ports=(%s)\nsasl_ssl_ports=(%s)\nssl_ports=(%s)\nsasl_password=%s\n' \
        "${sasl_plaintext_ports[*]}" "${sasl_ssl_ports[*]}" "${ssl_ports[*]}" "$sasl_password"
    fi
  } >"$dir/cluster.env"
  local pids=()
  for ((id = 1; id <= nodes; id++)); do
    "$java" -cp "$(classpath)" -Dlog4j2.configurationFile="$here/log4j2.properties" \
      -Dkafka.logs.file="$dir/node-$id/format.log" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/node-$id/server.properties" "${format_args[@]}" >"$dir/node-$id/format.out" 2>&1 &
    pids+=($!)
  done
  for ((id = 1; id <= nodes; id++)); do
    wait "${pids[id - 1]}" ||
      die "formatting node $id's storage failed: $(cat "$dir/node-$id/format.out")"
  done
}

load() {
  [[ -f "$1/cluster.env" ]] || die "\`$1\` holds no cluster: start one with \`kafka.sh start $1\`"
  # shellcheck source=/dev/null
  source "$1/cluster.env"
}

# Whether process $1 runs. A zombie does not: where no init reaps the orphaned JVM, its
# entry stays after it died.
alive() {
  local state
  state="$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

running() {
  local pid_file="$1/node-$2/pid"
  [[ -f "$pid_file" ]] && alive "$(cat "$pid_file")"
}

bootstrap() {
  local dir=$1 servers="" id
  load "$dir"
  for ((id = 1; id <= nodes; id++)); do
    servers+="${servers:+,}127.0.0.1:${ports[2 * id - 2]}"
  done
  printf '%s\n' "$servers"
}

# What a client of the --security cluster in DIR ($1) needs (see the usage above).
security() {
  local dir=$1 id
  load "$dir"
  ((${security:-0})) || die "\`$dir\` was not started with --security"
  local listener list
  for listener in SASL_PLAINTEXT SASL_SSL SSL; do
    local -n listener_ports="${listener,,}_ports"
    list=""
    for ((id = 1; id <= nodes; id++)); do
      list+="${list:+,}127.0.0.1:${listener_ports[id - 1]}"
    done
    printf '%s=%s\n' "$listener" "$list"
  done
  printf 'SASL_USERNAME=%s\nSASL_PASSWORD=%s\n' "$sasl_username" "$sasl_password"
  printf 'CA=%s\n' "$dir/security/ca.pem"
  printf 'CLIENT_CERT=%s\nCLIENT_KEY=%s\n' "$dir/security/client.pem" "$dir/security/client.key"
  printf 'UNTRUSTED_CA=%s\n' "$dir/security/untrusted-ca.pem"
  printf 'UNTRUSTED_CERT=%s\nUNTRUSTED_KEY=%s\n' "$dir/security/untrusted-client.pem" \
    "$dir/security/untrusted-client.key"
}

start() {
  local dir=$1 nodes=1 owner="" secure=0
  shift
  while (($#)); do
    case $1 in
      --nodes) nodes=$2 && shift 2 ;;
      --owner) owner=$2 && shift 2 ;;
      --security) secure=1 && shift ;;
      *) die "start: unknown argument \`$1\`" ;;
    esac
  done
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "start: --nodes must be a positive number, not \`$nodes\`"
  check_java
  fetch
  dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
  [[ -f "$dir/cluster.env" ]] || create "$dir" "$nodes" "$secure"
  load "$dir"
  local id offsets=() started=()
  for ((id = 1; id <= nodes; id++)); do
    local node="$dir/node-$id"
    running "$dir" "$id" && continue
    started+=("$id")
    offsets[id]=$(stat -c %s "$node/broker.log" 2>/dev/null || echo 0)
    # setsid: a Ctrl-C in the shell that started the node (or the test's process group) does
    # not stop it; `stop`, `kill` or the owner watchdog do.
    setsid "$java" -Xms256m -Xmx"${TRIBUTARY_KAFKA_HEAP:-512m}" -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.properties" \
      -Dkafka.logs.file="$node/broker.log" -cp "$(classpath)" \
      kafka.Kafka "$node/server.properties" >>"$node/console.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$node/pid"
    if [[ -n "$owner" ]]; then
      (while alive "$owner" && alive "$pid"; do sleep 1; done
        kill -9 "$pid" 2>/dev/null) >/dev/null 2>&1 </dev/null &
    fi
  done
  # Up = the node logged that its server started (after it joined the quorum and the broker
  # was unfenced), not merely that its port accepts connections.
  local deadline=$((SECONDS + ${TRIBUTARY_KAFKA_START_TIMEOUT:-120}))
  for id in "${started[@]}"; do
    local node="$dir/node-$id"
    until tail -c +$((offsets[id] + 1)) "$node/broker.log" 2>/dev/null | grep -q "Kafka Server started"; do
      running "$dir" "$id" ||
        die "node $id exited before it was up; the end of $node/broker.log:
$(tail -n 30 "$node/broker.log" 2>/dev/null; tail -n 10 "$node/console.log")"
      ((SECONDS < deadline)) || die "node $id was not up within ${TRIBUTARY_KAFKA_START_TIMEOUT:-120} s; see $node/broker.log"
      sleep 0.1
    done
  done
  bootstrap "$dir"
}

# Sends $2 to node $3 (or every node) and waits up to $4 seconds for each to exit.
signal() {
  local dir=$1 sig=$2 only=${3:-} wait_seconds=$4 id
  load "$dir"
  for ((id = 1; id <= nodes; id++)); do
    [[ -z "$only" || "$only" == "$id" ]] || continue
    running "$dir" "$id" || continue
    local pid
    pid="$(cat "$dir/node-$id/pid")"
    kill -"$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + wait_seconds)) killed=""
    while alive "$pid"; do
      if ((SECONDS >= deadline)); then
        [[ -z "$killed" ]] || die "node $id (pid $pid) still runs 10 s after SIGKILL"
        printf 'kafka.sh: node %s did not stop within %s s; killing it\n' "$id" "$wait_seconds" >&2
        kill -KILL "$pid" 2>/dev/null || true
        killed=1
        deadline=$((SECONDS + 10))
      fi
      sleep 0.05
    done
    rm -f "$dir/node-$id/pid"
  done
}

command=${1:-}
shift || true
case $command in
  fetch) fetch && printf '%s\n' "$cache/libs" ;;
  start) (($#)) || die "usage: kafka.sh start DIR [--nodes N] [--owner PID] [--security]" && start "$@" ;;
  stop) (($#)) || die "usage: kafka.sh stop DIR [NODE]" && signal "$1" TERM "${2:-}" 60 ;;
  kill) (($#)) || die "usage: kafka.sh kill DIR [NODE]" && signal "$1" KILL "${2:-}" 10 ;;
  restart) (($#)) || die "usage: kafka.sh restart DIR" && signal "$1" TERM "" 60 && start "$1" ;;
  version) printf '%s\n' "$version" ;;
  bootstrap) (($#)) || die "usage: kafka.sh bootstrap DIR" && bootstrap "$1" ;;
  security) (($#)) || die "usage: kafka.sh security DIR" && security "$1" ;;
  *) die "usage: kafka.sh fetch | start DIR [--nodes N] [--owner PID] [--security] | security DIR | stop DIR [NODE] | kill DIR [NODE] | restart DIR | bootstrap DIR | version" ;;
esac
