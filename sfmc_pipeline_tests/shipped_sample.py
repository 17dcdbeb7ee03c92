"""The shipped sample days as the tests read them: written afresh by ``scripts/generate_sample_data.py``
into a temporary folder once per test process, never read from the working tree's ``data/sample``.

A user who tries their own extract by editing ``data/sample`` therefore cannot break the suite; only
``test_the_generator_reproduces_both_days`` compares the working tree's files with these, on purpose.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sfmc_pipeline.settings import REPO_ROOT


def _write_shipped_sample() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="sfmc-shipped-sample-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / "sample"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "generate_sample_data.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


SHIPPED_SAMPLE = _write_shipped_sample()  # the first day; its next_day/ holds the next day
SHIPPED_SAMPLE_DAYS = {"first_day": SHIPPED_SAMPLE, "next_day": SHIPPED_SAMPLE / "next_day"}
