#!/usr/bin/env bash
# The whole test suite N times in a row (default 3) while two busy processes keep both cores
# loaded: the stability check for tests that must not depend on machine speed.
#   bash scripts/loaded_suite.sh [N]     (after .ci/run or the README's set-up)
set -u
cd "$(dirname "$0")/.."
runs=${1:-3}
python3 -c "while True: pass" & busy1=$!
python3 -c "while True: pass" & busy2=$!
trap 'kill $busy1 $busy2 2>/dev/null' EXIT
status=0
for run in $(seq "$runs"); do
  start=$(date +%s)
  .venv/bin/python -m pytest -q -p no:cacheprovider > "loaded-run-$run.log" 2>&1 || status=1
  echo "run $run: $(( $(date +%s) - start )) s, $(tail -1 "loaded-run-$run.log")"
done
exit $status
