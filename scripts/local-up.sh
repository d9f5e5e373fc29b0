#!/usr/bin/env bash
# Starts the local environment's servers for `kombiform plan/apply --env local`:
# PostgreSQL on 127.0.0.1:5432 (database kombify_platform, user postgres, trust auth on
# loopback) and PocketBase on 127.0.0.1:8090 (automigrate off, superuser
# admin@kombify.localhost). Their data stays inside this checkout, under .kombiform/local/
# (git-ignored): pg/ for PostgreSQL, pb_data/ for PocketBase; two checkouts never share it.
# `scripts/local-up.sh stop` stops them. Installs what is missing first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
data=$root/.kombiform/local
pg_data=$data/pg
pb_password=${POCKETBASE_SUPERUSER_PASSWORD:-kombify-local-dev}

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() {
    for d in /usr/local/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return; }
    done
    echo "$1"
}
say() { printf 'local-up: %s\n' "$*"; }

if [ "${1:-}" = stop ]; then
    if [ -f "$data/pocketbase.pid" ]; then
        pid=$(cat "$data/pocketbase.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$data/pocketbase.pid"
    if [ -f "$pg_data/PG_VERSION" ]; then
        as_postgres "$(pg_bin pg_ctl)" -D "$pg_data" stop -m fast >/dev/null 2>&1 || true
    fi
    echo "stopped (data kept in $data; remove it for a fresh start)"
    exit 0
fi

bash scripts/install-test-deps.sh >/dev/null
mkdir -p "$data"

# PostgreSQL refuses to run as root: as root, its data belongs to the postgres user, who must
# be able to reach it inside the checkout.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$pg_data"
    chown postgres "$pg_data"
    chmod 700 "$pg_data"
    if ! runuser -u postgres -- test -w "$pg_data"; then
        say "ERROR: PostgreSQL runs as user postgres, which cannot reach $pg_data."
        say "Let it through the parent directories (e.g. chmod o+x on each), or run this script"
        say "as a user other than root."
        exit 1
    fi
fi

if ! as_postgres "$(pg_bin pg_ctl)" -D "$pg_data" status >/dev/null 2>&1; then
    if [ ! -f "$pg_data/PG_VERSION" ]; then
        mkdir -p "$pg_data"
        as_postgres "$(pg_bin initdb)" -D "$pg_data" -U postgres --auth=trust --no-sync >/dev/null
    fi
    if ! as_postgres "$(pg_bin pg_ctl)" -D "$pg_data" -l "$pg_data/server.log" -w \
        -o "-p 5432 -k $pg_data -c listen_addresses=127.0.0.1" start >/dev/null; then
        tail -n 5 "$pg_data/server.log" >&2 || true
        say "ERROR: PostgreSQL did not start. Is port 5432 taken (another checkout's local"
        say "environment? stop it with its scripts/local-up.sh stop)?"
        exit 1
    fi
fi
"$(pg_bin psql)" -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'kombify_platform'" \
    | grep -q 1 || "$(pg_bin createdb)" -h 127.0.0.1 -U postgres kombify_platform
echo "PostgreSQL: 127.0.0.1:5432, database kombify_platform (data in $pg_data)"

pb=$(command -v pocketbase)
if ! { [ -f "$data/pocketbase.pid" ] && kill -0 "$(cat "$data/pocketbase.pid")" 2>/dev/null; }; then
    (cd "$data" && "$pb" superuser upsert admin@kombify.localhost "$pb_password" --dir "$data/pb_data" >/dev/null)
    # Started from the data dir (this PocketBase build resolves pb_* relative to the cwd), as a
    # direct child so that the recorded pid is PocketBase's own.
    pushd "$data" >/dev/null
    nohup "$pb" serve --http 127.0.0.1:8090 --dir "$data/pb_data" --automigrate=false \
        > "$data/pocketbase.log" 2>&1 &
    echo $! > "$data/pocketbase.pid"
    popd >/dev/null
    up=
    for _ in $(seq 50); do
        curl -fs http://127.0.0.1:8090/api/health >/dev/null && { up=1; break; }
        sleep 0.2
    done
    if [ -z "$up" ]; then
        tail -n 5 "$data/pocketbase.log" >&2 || true
        say "ERROR: PocketBase did not answer on 127.0.0.1:8090. Is the port taken (another"
        say "checkout's local environment? stop it with its scripts/local-up.sh stop)?"
        exit 1
    fi
fi
echo "PocketBase: http://127.0.0.1:8090 (superuser admin@kombify.localhost; data in $data/pb_data)"

if command -v kombiform >/dev/null 2>&1; then
    k=kombiform
else
    k="cargo run --release --"
fi
echo
echo "Now:  export POCKETBASE_SUPERUSER_PASSWORD=$pb_password PGPASSWORD= PG_KOMBIFY_SSO_PASSWORD=local-sso PG_KOMBIFY_HEALTH_PASSWORD=local-health"
echo "      $k plan --env local     # exit 2 means changes to apply, not an error"
echo "      $k apply --env local    # shows the plan again and asks for yes"
if [ "$k" != kombiform ]; then
    echo "(put kombiform on PATH with: cargo install --path crates/cli)"
fi
echo "Stop: scripts/local-up.sh stop"
