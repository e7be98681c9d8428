#!/usr/bin/env bash
# Real-terminal smoke test of `arena tui` (CI runs it through tests/test_tui.py when tmux exists).
#
# Starts the TUI in a detached tmux session on a fresh database, opens the new-match form with
# keys, types a budget of 60, starts the match, waits for the live view to report it done,
# returns to the leaderboard, checks the match is listed, and quits. Every captured pane is
# printed; the final captures are also written to $SMOKE_OUT (if set).
#
#   scripts/tui_smoke.sh                 # uses `python` on PATH
#   PYTHON=.venv/bin/python scripts/tui_smoke.sh
#   ARENA_SMOKE_CACHE=/tmp/ac scripts/tui_smoke.sh   # reuse an artifact cache (victim trained once)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/arena-tui-smoke.XXXXXX")
CACHE=${ARENA_SMOKE_CACHE:-$WORK/cache}
DB=$WORK/smoke.db
SESSION=arena-smoke-$$
TIMEOUT=${SMOKE_TIMEOUT:-300}  # seconds for the match to play (victim training included)

cat >"$WORK/tiny.toml" <<'EOF'
# A tiny match: a 3-epoch victim, 3 checkpoints, short clone training.
checkpoints = 3
attacker_params = { epochs = 1, min_steps = 40 }
[victim]
train = { epochs = 3, batch_size = 64, lr = 0.05 }
EOF

worker_pids() {
  "$PYTHON" - "$DB" <<'EOF' 2>/dev/null || true
import sqlite3, sys
try:
    rows = sqlite3.connect(sys.argv[1]).execute("select pid from matches where status in ('queued','running') and pid is not null")
    print(" ".join(str(r[0]) for r in rows))
except sqlite3.Error:
    pass
EOF
}

cleanup() {
  status=$?
  tmux kill-session -t "$SESSION" 2>/dev/null || true
  for pid in $(worker_pids); do kill "$pid" 2>/dev/null || true; done  # only on failure: the match is done otherwise
  if [ "$status" -ne 0 ]; then
    echo "--- worker logs ---" >&2
    cat "$CACHE"/tui-logs/*.log >&2 2>/dev/null || true
  fi
  [ -n "${SMOKE_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

capture() { tmux capture-pane -p -t "$SESSION"; }

wait_for() {  # wait_for PATTERN SECONDS: poll the pane until grep -E finds PATTERN
  local pattern=$1 limit=$2 start=$SECONDS
  while ! capture | grep -Eq -- "$pattern"; do
    if (( SECONDS - start > limit )); then
      echo "smoke: timed out after ${limit}s waiting for /$pattern/; the pane shows:" >&2
      capture >&2
      exit 1
    fi
    sleep 0.5
  done
}

tmux new-session -d -s "$SESSION" -x 100 -y 30 \
  "ARENA_TUI_CONFIG='$WORK/tiny.toml' '$PYTHON' -m arena.cli tui --db '$DB' --cache-dir '$CACHE'; echo TUI-EXITED rc=\$?; sleep 60"

wait_for "n New match" 60
echo "--- leaderboard (empty) ---"; capture
tmux send-keys -t "$SESSION" n
wait_for "Start: ctrl\+s" 180  # the form is filled once the registries are read
tmux send-keys -t "$SESSION" Tab Tab Tab Tab Tab  # defender > attacker > data set > pool > label > budget
# Textual moves focus in a later step than it reads keys: digits sent in the same instant as
# the tabs can reach the field the tabs are leaving. A person never types that fast.
sleep 0.5
tmux send-keys -t "$SESSION" 6 0
wait_for "budget +60" 10
echo "--- new-match form ---"; capture
tmux send-keys -t "$SESSION" Enter
wait_for "match #1" 120
wait_for "phase: done" "$TIMEOUT"
sleep 1  # one more poll so the last checkpoint is drawn
LIVE=$(capture)
echo "--- live view, finished ---"; echo "$LIVE"
grep -Eq "queries 60/60 · checkpoints 3" <<<"$LIVE" || { echo "smoke: live view lacks the final numbers" >&2; exit 1; }
grep -Eq "clone acc" <<<"$LIVE" || { echo "smoke: live view lacks the plot legend" >&2; exit 1; }
tmux send-keys -t "$SESSION" Escape
wait_for " 1 +done +undefended +knockoff" 10
BOARD=$(capture)
echo "--- leaderboard ---"; echo "$BOARD"
tmux send-keys -t "$SESSION" q
wait_for "TUI-EXITED rc=0" 20
if [ -n "${SMOKE_OUT:-}" ]; then printf '%s\n\n%s\n' "$LIVE" "$BOARD" >"$SMOKE_OUT"; fi
echo "smoke: ok"
