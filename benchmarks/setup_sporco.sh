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

SETUP_NAME=setup_sporco
VENV_NAME=.venv-sporco
# shellcheck source=benchmarks/_setup_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup_common.sh"

make_venv
if "$VENV/bin/python" -c "import sporco" >/dev/null 2>&1; then
    log "sporco already importable: $("$VENV/bin/python" -c 'import sporco; print(sporco.__version__)')"
    exit 0
fi
upgrade_pip
log "pip install sporco pyfftw numpy scipy threadpoolctl"
if "$VENV/bin/python" -m pip install sporco pyfftw numpy scipy threadpoolctl >>"$LOG" 2>&1 \
    && "$VENV/bin/python" -c "import sporco" >>"$LOG" 2>&1; then
    log "sporco $("$VENV/bin/python" -c 'import sporco; print(sporco.__version__)') installed"
    exit 0
fi
log "SPORCO is NOT available; see $LOG. B3/B4 then run without the SPORCO contenders."
exit 1
