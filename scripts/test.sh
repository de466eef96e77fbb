#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, then runs every check CI runs:
# formatting, clippy with warnings as errors, and the whole test suite (unit tests
# plus end-to-end tests against a real S3-compatible server, moto_server, on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "== installing moto[server] (the S3-compatible server the tests run against)"
    python3 -m pip install --quiet 'moto[server]>=5,<6'
fi
command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
