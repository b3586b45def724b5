#!/usr/bin/env bash
# Install SPORCO (the B3/B4 peer) in its own venv, idempotently.
#
#   bash benchmarks/setup_sporco.sh           # creates benchmarks/.venv-sporco
#
# SPORCO is pure Python over NumPy/SciPy; it gets a venv of its own (git-ignored by the
# pattern benchmarks/.venv-*/) so that its pins never touch the main environment. The B3/B4
# scripts run SPORCO in a subprocess with this venv's python. pyfftw (a SPORCO dependency) is
# SPORCO's fastest FFT back end; the benchmarks set its thread count (sporco.fft.pyfftw_threads).
# A log of the last attempt is kept in benchmarks/results/raw/setup_sporco.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-sporco"
PYTHON="${PYTHON:-python3.11}"
LOG_DIR="$HERE/results/raw"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/setup_sporco.log"
: >"$LOG"

log() { echo "[setup_sporco] $*" | tee -a "$LOG"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
if "$VENV/bin/python" -c "import sporco" >/dev/null 2>&1; then
    log "sporco already importable: $("$VENV/bin/python" -c 'import sporco; print(sporco.__version__)')"
    exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >>"$LOG" 2>&1
log "pip install sporco pyfftw numpy scipy threadpoolctl"
if "$VENV/bin/python" -m pip install sporco pyfftw numpy scipy threadpoolctl >>"$LOG" 2>&1 \
    && "$VENV/bin/python" -c "import sporco" >>"$LOG" 2>&1; then
    log "sporco $("$VENV/bin/python" -c 'import sporco; print(sporco.__version__)') installed"
    exit 0
fi
log "SPORCO is NOT available; see $LOG. B3/B4 then run without the SPORCO contenders."
exit 1
