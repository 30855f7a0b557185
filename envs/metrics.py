"""Exploration measures a suite reads from its envs' step infos, such as Montezuma's rooms.

A suite declares them (`EnvSuite.info_metrics`); a trainer feeds every step's info to `observe`
and logs `value()` as `exploration/<name>`, without knowing what the measure reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class DistinctIds:
    """How many distinct small integer ids the envs have shown, e.g. rooms from a RAM byte.

    The ids seen are a boolean table on the device, so `observe` needs no host sync. Several
    processes merge their tables by summing `table_as_counts()` (one all-reduce) and passing the
    sum to `merge_counts`.
    """

    def __init__(self, name: str, num_ids: int, read: Callable[[dict[str, Any]], Any], device: torch.device):
        self.name = name  # logged as exploration/<name>
        self.read = read  # a step's info -> (num_envs,) integer ids in [0, num_ids)
        self.seen = torch.zeros(num_ids, dtype=torch.bool, device=device)

    def observe(self, info: dict[str, Any]) -> None:
        self.seen[torch.as_tensor(self.read(info), device=self.seen.device).long()] = True

    def table_as_counts(self) -> Tensor:
        return self.seen.float()

    def merge_counts(self, summed: Tensor) -> None:
        """Take the union with the tables whose `table_as_counts()` add up to `summed`."""
        self.seen |= summed > 0

    def value(self) -> int:
        """The number of distinct ids seen (one host sync)."""
        return int(self.seen.sum())

    def state_dict(self) -> Tensor:
        return self.seen.cpu()

    def load_state_dict(self, seen: Tensor) -> None:
        self.seen.copy_(seen)
