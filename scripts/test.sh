#!/usr/bin/env bash
# The project's test command: installs what the tests need, then checks formatting, lints, and
# runs every test target (unit tests, the `it` integration binary with its real servers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh

echo "== cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace --all-targets"
cargo test --workspace --all-targets
