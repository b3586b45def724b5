# The shared start of the peer-library installers (setup_peers.sh, setup_sporco.sh), sourced
# by them with SETUP_NAME (the log's name and its lines' prefix) and VENV_NAME (the venv's
# folder under benchmarks/) set. A log of the last attempt goes to results/raw/$SETUP_NAME.log.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/$VENV_NAME"
PYTHON="${PYTHON:-python3.11}"
LOG_DIR="$HERE/results/raw"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/$SETUP_NAME.log"
: >"$LOG"

log() { echo "[$SETUP_NAME] $*" | tee -a "$LOG"; }

# Create the venv with $PYTHON unless it exists.
make_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
}

upgrade_pip() {
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >>"$LOG" 2>&1
}
