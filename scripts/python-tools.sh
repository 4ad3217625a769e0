#!/usr/bin/env bash
# Creates one Python venv per third-party P4Runtime client, for the interop
# tests of switch-agent:
#
#   .cache/venv/p4runtime-shell   p4runtime-shell (run as `python -m p4runtime_sh`)
#   .cache/venv/finsy             finsy
#
# Each tool gets its own venv because their protobuf pins conflict (3.20 vs
# 6.x). Idempotent and fast: a venv whose stamp file matches the wanted
# version, or that already imports the wanted version, is left alone;
# anything else is recreated from PyPI. Needs python3-venv (scripts/setup.sh installs it) and
# PyPI. Usage: scripts/python-tools.sh [p4runtime-shell|finsy]...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venvs="$root/.cache/venv"

log() { printf '[python-tools] %s\n' "$*" >&2; }

# tool name -> pip requirement
declare -A want=(
    [p4runtime-shell]="p4runtime-shell==0.0.6"
    [finsy]="finsy==0.30.0"
)
# tool name -> a module import that proves the install works
declare -A probe=(
    [p4runtime-shell]="p4runtime_sh.shell"
    [finsy]="finsy"
)

install_tool() {
    local tool="$1" req="${want[$1]}" dir="$venvs/$1"
    if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$req" && -x "$dir/bin/python" ]]; then
        return 0
    fi
    # A venv made some other way (or by an older version of this script)
    # that already holds the wanted version is kept: only the stamp is new.
    local name="${req%%==*}" version="${req##*==}"
    if [[ -x "$dir/bin/python" ]] &&
        [[ "$("$dir/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" == "$version" ]] &&
        "$dir/bin/python" -c "import ${probe[$tool]}" 2>/dev/null; then
        log "$dir already has $req"
        printf '%s' "$req" >"$dir/.stamp"
        return 0
    fi
    log "creating $dir ($req)"
    rm -rf "$dir"
    mkdir -p "$venvs"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade pip >/dev/null
    "$dir/bin/python" -m pip install --quiet "$req"
    "$dir/bin/python" -c "import ${probe[$tool]}"
    printf '%s' "$req" >"$dir/.stamp"
}

tools=("$@")
((${#tools[@]})) || tools=(p4runtime-shell finsy)
for tool in "${tools[@]}"; do
    [[ -n "${want[$tool]:-}" ]] || { log "unknown tool: $tool"; exit 2; }
    install_tool "$tool"
done
