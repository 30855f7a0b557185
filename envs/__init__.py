"""Environment suites behind one vector-env protocol, registered under the `Explore/` namespace."""

from envs.core import StepResult, VecEnv
from envs.registration import NAMESPACE, available_ids, find_suite, make, register_gymnasium_ids

register_gymnasium_ids()

__all__ = [
    "NAMESPACE",
    "StepResult",
    "VecEnv",
    "available_ids",
    "find_suite",
    "make",
    "register_gymnasium_ids",
]
