"""``benchmarks/gpu.py`` runs end to end on the CPU with tiny sizes and writes its table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu(tmp_path):
    out = tmp_path / "GPU.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
         "--no-tests", "--n-signals", "200", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "## B1 at scale" in text and "scikit-learn" in text
    assert "codes/s" in text and "images/s" in text
    assert "gram_cd" in text and "B3: ADMM" in text and "B4: " in text
    assert "nan" not in text.lower()
