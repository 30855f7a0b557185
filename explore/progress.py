"""What a trainer's progress bar shows: speed, the latest return, and the suite's own exploration measure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

NO_EPISODE = "-"  # shown for the return before any episode has finished (not 'nan')


def progress_fields(
    sps: float, latest_return: float, logged: Mapping[str, Any], successes: Sequence[float] = ()
) -> dict[str, Any]:
    """The progress-bar fields of one update.

    Every `exploration/*` scalar logged this update is shown under its short name (Montezuma's
    rooms_visited, Go-Explore's cells, counts' unique_states, whatever the suite logs), and the
    success rate of the goal episodes that finished this update (`charts/success_rate`) when any
    did, so a grid task shows its success instead of a placeholder.
    """
    fields: dict[str, Any] = {
        "SPS": sps,
        "ret": latest_return if math.isfinite(latest_return) else NO_EPISODE,
    }
    for key, value in logged.items():
        if key.startswith("exploration/"):
            fields[key.split("/", 1)[1]] = value
    if successes:
        fields["success"] = sum(successes) / len(successes)
    return fields
