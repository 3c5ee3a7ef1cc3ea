"""The CPU recipes run with $PYTHON replaced by a recorder of its command lines, for the recipe tests.

The recorder answers the recipes' inline ``$PYTHON -c`` path lookups with /models/smollm2 and writes every other
call's argv to ``$ARGV_DIR/<ns>-<pid>``. Called as ``tools/wait_for_server.py PORT PID`` it waits, as the real script
waits for the server, until process PID's call is recorded: the recipes start the reward server in the background
and kill it on exit, which could otherwise come before its call is written.
"""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDER = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo /models/smollm2; exit 0; fi   # the inline path lookups
case "$1" in */wait_for_server.py)
   for _ in $(seq 300); do compgen -G "$ARGV_DIR/*-$3" > /dev/null && exit 0; sleep 0.1; done
   echo "recorder: process $3 recorded no call in 30 s" >&2; exit 1;;
esac
f="$ARGV_DIR/$(date +%s%N)-$$"
printf "%s\\n" "$@" > "$f.tmp" && mv "$f.tmp" "$f"
"""


def recorded_modules(tmp_path, recipe, out=None, **variables):
    """[(module, argv)] of the recipe's python -m calls, in call order (OUT: ``out``, default tmp_path/out; more
    recipe variables in ``variables``)."""
    recorder, argv_dir = tmp_path / "python", tmp_path / "argv"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    argv_dir.mkdir()
    env = dict(os.environ, PYTHON=str(recorder), ARGV_DIR=str(argv_dir), PORT="5999", OUT=str(out or tmp_path / "out"))
    env.update(variables)
    result = subprocess.run(["bash", os.path.join(REPO, "recipes", recipe)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [p.read_text().splitlines() for p in sorted(argv_dir.iterdir(), key=lambda p: int(p.name.split("-")[0]))]
    return [(c[1], c[2:]) for c in calls if c[0] == "-m"]
