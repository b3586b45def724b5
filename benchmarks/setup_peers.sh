#!/usr/bin/env bash
# Install the peer libraries the benchmarks compare against, idempotently.
#
#   bash benchmarks/setup_peers.sh            # apt packages + benchmarks/.venv-spams
#
# scikit-learn is a dependency of latentebm, so it lives in the main venv (.venv). SPAMS needs
# an older toolchain (numpy<2, setuptools<74, a BLAS/LAPACK to link against), so it gets its own
# venv, benchmarks/.venv-spams, and its contenders run in a subprocess with that venv's python.
# A log of the last attempt is kept in benchmarks/results/raw/setup_peers.log.
set -euo pipefail

SETUP_NAME=setup_peers
VENV_NAME=.venv-spams
# shellcheck source=benchmarks/_setup_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup_common.sh"

# 1. Debian packages: BLAS/LAPACK headers and libraries for SPAMS' C++ extension.
APT_PACKAGES=(libopenblas-dev liblapack-dev g++ make)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update >>"$LOG" 2>&1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        "${missing[@]}" >>"$LOG" 2>&1
else
    log "apt packages present: ${APT_PACKAGES[*]}"
fi

# 2. The venv.
make_venv
upgrade_pip

# 3. SPAMS (build from the sdist against numpy<2; fall back to the spams-bin wheels).
if "$VENV/bin/python" -c "import spams" >/dev/null 2>&1; then
    log "spams already importable: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("spams"))' 2>/dev/null || echo '?')"
    exit 0
fi
log "pip install 'numpy<2' 'setuptools<74' wheel"
"$VENV/bin/python" -m pip install "numpy<2" "setuptools<74" wheel >>"$LOG" 2>&1
log "pip install spams (building from source, no build isolation)"
if "$VENV/bin/python" -m pip install --no-build-isolation spams >>"$LOG" 2>&1 \
    && "$VENV/bin/python" -c "import spams" >>"$LOG" 2>&1; then
    log "spams installed"
    exit 0
fi
log "spams failed to build or import; trying spams-bin"
if "$VENV/bin/python" -m pip install spams-bin >>"$LOG" 2>&1 \
    && "$VENV/bin/python" -c "import spams" >>"$LOG" 2>&1; then
    log "spams-bin installed"
    exit 0
fi
log "SPAMS is NOT available; see $LOG. The benchmarks run without the SPAMS contenders."
exit 1
