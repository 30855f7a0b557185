"""Where a study writes its tables, CSVs and plots.

By default under results/<study>/ (git-ignored, relative to the working directory like runs/), so a
trial run with small settings never rewrites the published figures; with `--publish` into
benchmarks/, next to the study scripts, where the tracked copies live.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = Path("results")


def output_folder(study: str, publish: bool) -> Path:
    """The folder of a study's outputs (created): results/<study>/, or benchmarks/ when publishing."""
    folder = BENCHMARKS if publish else RESULTS / study
    folder.mkdir(parents=True, exist_ok=True)
    return folder
