#!/usr/bin/env bash
# Configures and builds into build/ (the CPU build; CUDA parts join where nvcc is found).
# Extra arguments are ninja targets (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} >/dev/null
jobs=$(nproc)
# Each compile of gRPC-heavy code takes ~1 GB; stay within memory on small machines.
mem_jobs=$(( $(awk '/MemAvailable/{print $2}' /proc/meminfo) / 1500000 ))
(( mem_jobs >= 1 && mem_jobs < jobs )) && jobs=$mem_jobs
ninja -C build -j "$jobs" "$@"
