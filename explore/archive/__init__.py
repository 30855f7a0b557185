"""Go-Explore: cells, the archive, returning to cells (ALE restore or replay), the runner and a bonus.

    from explore.archive import Archive, atari_cell, text_cell
"""

from explore.archive.archive import Archive, CellRecord
from explore.archive.cells import (
    Downscale,
    DynamicDownscale,
    atari_cell,
    cell_levels,
    make_cell_fn,
    minihack_cell,
    text_cell,
    text_cells,
    text_key,
)

__all__ = [
    "Archive",
    "CellRecord",
    "Downscale",
    "DynamicDownscale",
    "atari_cell",
    "cell_levels",
    "make_cell_fn",
    "minihack_cell",
    "text_cell",
    "text_cells",
    "text_key",
]
