"""Running the command line as a user does (a real subprocess in a folder of their own),
and the German credit applicants as the CSV a model team would bring."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

CLI = [sys.executable, "-m", "xai_sandbox.cli"]


def run_cli(*args: str, cwd: Path, program: list[str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """``xai-sandbox ARGS`` in ``cwd``, its store in ``cwd/data``, on a wide terminal."""
    env = {**os.environ, "COLUMNS": "200", "XAI_SANDBOX_DATA_DIR": str(cwd / "data")}
    return subprocess.run([*(program or CLI), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def german_frame() -> Any:
    """German credit's raw features as a data frame, with the target as a column
    ``class`` of ``good`` and ``bad``."""
    import pandas as pd

    from xai_sandbox.datasets import load_german_credit

    data = load_german_credit()
    frame = pd.DataFrame(list(data.rows))
    frame["class"] = np.where(data.y == 1, "bad", "good")
    return frame
