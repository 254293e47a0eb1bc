#!/bin/sh
# Run shellcheck over every tracked shell script (first line a sh/bash/dash shebang, *.sh or
# not). `make lint` and tests/test_shell_scripts.py run it; exit 1 on any finding.
#
#   scripts/lint-shell.sh          check them all
#   scripts/lint-shell.sh --list   print the scripts it checks
set -eu
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null 2>&1 || { echo "lint-shell.sh: shellcheck not found (apt-get install shellcheck)" >&2; exit 2; }
list=$(git ls-files | while IFS= read -r f; do
    if [ -f "$f" ] && head -n1 "$f" | grep -qE '^#!.*(/|env )(ba|da)?sh( |$)'; then
        printf '%s\n' "$f"
    fi
done)
if [ "${1:-}" = --list ]; then printf '%s\n' "$list"; exit 0; fi
# one script per line (no spaces in tracked script names), split on purpose
# shellcheck disable=SC2086
shellcheck -x $list
