#!/usr/bin/env bash
# Builds everything and runs every test (unit and integration). Tests that compare against the
# reference data expect ../shared beside the checkout (DPINFER_SHARED_DIR overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
ctest --output-on-failure -j 2 --timeout 900
