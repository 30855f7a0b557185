"""TensorBoard logging of a run: rank 0 writes, the other ranks' calls do nothing.

On resume the writer drops what the killed run logged AFTER its checkpoint (the resumed run logs
those steps again) and keeps everything up to the checkpoint's step: the checkpoint's step itself
was logged, and flushed, before the checkpoint was written (see `Checkpointer.save`), and is not
logged again. SummaryWriter's purge_step drops events at steps >= purge_step, hence step + 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from explore.distributed import DistContext


class Logger:
    """Scalars and text of a run under `run_dir`; `resumed_step` is the step of the checkpoint a
    resumed run starts from (None: a new run)."""

    def __init__(
        self,
        run_dir: str | Path,
        dist: DistContext | None = None,
        resumed_step: int | None = None,
        flush_secs: int = 20,
    ):
        self.writer = (
            SummaryWriter(
                str(run_dir),
                purge_step=None if resumed_step is None else resumed_step + 1,
                flush_secs=flush_secs,
            )
            if dist is None or dist.is_main
            else None
        )

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def episodes(self, episodes: Iterable[tuple[float, float, float]], step: int) -> None:
        """charts/episodic_return and charts/episodic_length of each finished (return, length,
        success) episode, and charts/success_rate over those whose success is known (not NaN)."""
        episodes = list(episodes)
        successes = [success for _, _, success in episodes if success == success]  # not NaN
        if self.writer is None:
            return
        if successes:
            self.writer.add_scalar("charts/success_rate", sum(successes) / len(successes), step)
        for episode_return, length, _ in episodes:
            self.writer.add_scalar("charts/episodic_return", episode_return, step)
            self.writer.add_scalar("charts/episodic_length", length, step)

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
