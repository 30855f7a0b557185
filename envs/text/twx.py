"""TextWorldExpress games (Jansen & Cote 2022) as TextEnvs: `TWX-CoinCollector-v0`, `TWX-Cooking-v0`, ...

TextWorldExpress simulates its games in Java, reached from Python over py4j. Its own Python class
(`textworld_express.TextWorldExpressEnv`) starts one JVM per env (about 0.3 s and 100+ MB each);
here one JVM per process serves every TWX env of that process: each env owns one
`textworldexpress.runtime.PythonInterface` object in the shared JVM (checked: interleaving two
interfaces gives the same games as running them alone). The JVM stops when the last env of the
process is closed (and with the process: py4j's die_on_exit).

Checked against textworld-express 1.1.0:
- `score` is TWX's normalized score (1.0 = solved; negative after some failures), so
  `max_score` is 1.0 and the reward is the change of the normalized score.
- TWX keeps running after a game is won or lost; here the episode terminates on
  `tasksuccess` (won, `success`) or `taskfailure` (lost).
- Game seeds: TWX splits its games into folds by seed (train 0-999, dev 10000-10999, test
  20000-20999, for every game). Game seed g plays the fold's seed number g mod 1000 (so train
  game seed 5 is TWX seed 5, dev game seed 5 is TWX seed 10005).
- Game parameters are TWX's gameParams, passed as keyword arguments under TWX's own names
  (numLocations=3, includeDoors=False) or their snake_case forms (num_locations=3); an unknown
  or out-of-range value raises ConfigError with TWX's message. Unset parameters keep TWX's
  defaults (coin collector: 11 locations with doors, so its gold path can run to 30+ steps).
- Admissible commands are TWX's `validActions`, sorted.
- The gold path comes from TWX's generator (`generateGoldPath`), except for the coin collector:
  TWX 1.1.0 plans it with an unseeded random walk, so the same game gets a different (often
  long) path each time; here a deterministic breadth-first search gives the shortest one instead
  (`TWXEnv._coin_gold_path`, 2-40 ms per new game, cached). TWC's gold path has the same TWX bug
  (its generator also uses `new Random()`): it is TWX's, valid but not reproducible. Every other
  game's gold path was checked to be the same on every call. `gold_path=False` skips it.
- Some parameter combinations fail only when a game is generated (mapreader with numLocations=3
  and its default maxDistanceApart=4 fails for some seeds): that raises ConfigError at reset.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

from envs.text.core import GameState, TextEnv
from explore.errors import ConfigError, require

try:
    import orjson as _json

    _loads = _json.loads
except ImportError:  # pragma: no cover - orjson comes with textworld-express
    import json as _json

    _loads = _json.loads

EXTRA = "text"
FOLDS = ("train", "dev", "test")
# JVM options: the serial collector keeps the JVM to one GC thread (workers share the cores)
JAVA_OPTS = ("-XX:+UseSerialGC", "-Xss4m")


@dataclass(frozen=True)
class TWXGame:
    name: str  # TWX's game name
    params: tuple[str, ...]  # TWX's gameParams keys
    max_episode_steps: int


TWX_GAMES: dict[str, TWXGame] = {
    "TWX-CoinCollector-v0": TWXGame(
        "coin", ("numLocations", "numDistractorItems", "includeDoors", "limitInventorySize"), 100
    ),
    "TWX-Cooking-v0": TWXGame(
        "cookingworld",
        ("numLocations", "numIngredients", "numDistractorItems", "includeDoors", "limitInventorySize"),
        100,
    ),
    "TWX-TWC-v0": TWXGame("twc", ("numLocations", "numItemsToPutAway", "includeDoors", "limitInventorySize"), 100),
    "TWX-MapReader-v0": TWXGame(
        "mapreader",
        ("numLocations", "maxDistanceApart", "maxDistractorItemsPerLocation", "includeDoors", "limitInventorySize"),
        100,
    ),
    "TWX-Arithmetic-v0": TWXGame("arithmetic", (), 50),
    "TWX-Sorting-v0": TWXGame("sorting", (), 50),
    "TWX-SimonSays-v0": TWXGame("simonsays", ("gameLength", "numDistractors", "memorization"), 50),
    "TWX-PeckingOrder-v0": TWXGame("peckingorder", (), 50),
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def game_params(env_id: str, params: dict[str, Any]) -> str:
    """TWX's gameParams string ('numLocations=3,includeDoors=0') from keyword arguments."""
    game = TWX_GAMES[env_id]
    by_name = {p: p for p in game.params} | {_snake(p): p for p in game.params}
    pieces = []
    for key, value in params.items():
        if key not in by_name:
            valid = ", ".join(game.params) or "none"
            raise ConfigError(f"{env_id} has no game parameter {key!r}; valid: {valid} (or their snake_case forms)")
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{env_id}: game parameter {key} must be an int or bool, got {value!r}")
        pieces.append(f"{by_name[key]}={value}")
    return ",".join(pieces)


# ---------------------------------------------------------------------------------------------
# One JVM per process, shared by its TWX envs


class _JavaServer:
    """The process's TWX JVM (py4j gateway), reference-counted by the envs that use it."""

    _lock = threading.Lock()
    _instance: _JavaServer | None = None

    def __init__(self) -> None:
        require("textworld_express", extra=EXTRA, purpose="TextWorldExpress games")
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from textworld_express.constants import BASEPATH, JAR_PATH

        port, proc = launch_gateway(
            classpath=JAR_PATH,
            die_on_exit=True,
            cwd=BASEPATH,
            javaopts=list(JAVA_OPTS),
            return_proc=True,
        )
        self.proc = proc
        self.gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=proc)
        self.users = 0
        self.dead = False
        atexit.register(self.kill)  # before interpreter teardown, where py4j and waits can hang

    @classmethod
    def acquire(cls) -> _JavaServer:
        with cls._lock:
            if cls._instance is None or cls._instance.dead or cls._instance.proc.poll() is not None:
                cls._instance = cls()
            cls._instance.users += 1
            return cls._instance

    def interface(self) -> Any:
        return self.gateway.jvm.textworldexpress.runtime.PythonInterface()

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            if _JavaServer._instance is self:
                _JavaServer._instance = None
        self.shutdown()

    def kill(self) -> None:
        """Stop the JVM without talking to it (at exit, and from envs closed during teardown)."""
        if self.dead:
            return
        self.dead = True
        with contextlib.suppress(Exception):
            # proxies collected later must not try to reach the dead JVM (py4j logs each try)
            self.gateway.close()
            self.gateway._gateway_client.is_connected = False
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=1.0)

    def shutdown(self) -> None:
        if self.dead:
            return
        if sys.is_finalizing():
            self.kill()
            return
        self.dead = True
        atexit.unregister(self.kill)
        with contextlib.suppress(Exception):  # py4j raises various errors on a dead gateway
            self.gateway.shutdown()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):  # die_on_exit: the JVM exits on a line
                self.proc.stdin.write(b"\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# The env

_COIN_GOLD_CACHE: dict[tuple[str, str, int], tuple[str, ...]] = {}
_ROOM = re.compile(r"You are in the ([^.]+)\.")


def _room(response: dict[str, Any]) -> str:
    match = _ROOM.search(response["look"])
    return match.group(1) if match else response["look"]


class TWXEnv(TextEnv):
    """One TextWorldExpress game (see the module docstring).

    Args:
        env_id: one of TWX_GAMES ('TWX-CoinCollector-v0', ...).
        seed: the seed stream (see envs.text.core).
        max_episode_steps: the time limit (default per game: 100, 50 for arithmetic, sorting,
            simon says and pecking order).
        fold: 'train', 'dev' or 'test': which of TWX's disjoint game sets the seeds index.
        gold_path: ask TWX's generator for the walkthrough at each reset.
        **params: TWX gameParams, e.g. numLocations=3, numDistractorItems=0, includeDoors=False.
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        max_episode_steps: int | None = None,
        fold: str = "train",
        gold_path: bool = True,
        **params: Any,
    ):
        game = TWX_GAMES[env_id]
        self.default_max_episode_steps = game.max_episode_steps
        super().__init__(env_id, seed=seed, max_episode_steps=max_episode_steps)
        if fold not in FOLDS:
            raise ConfigError(f"{env_id}: fold must be one of {FOLDS}, got {fold!r}")
        self.fold = fold
        self.game_name = game.name
        self.params = game_params(env_id, params)
        self.want_gold_path = bool(gold_path)
        self._server: _JavaServer | None = _JavaServer.acquire()
        try:
            self._iface = self._server.interface()
            message = self._iface.load(game.name, self.params)
            if message:
                raise ConfigError(f"{env_id}: TextWorldExpress rejected the game parameters {self.params!r}: {message.strip()}")
            getter = {"train": "getSeedsTrain", "dev": "getSeedsDev", "test": "getSeedsTest"}[fold]
            self._fold_seeds = [int(s) for s in getattr(self._iface, getter)()]
            self._goal = ""
            self._scratch: Any = None  # a second game for planning gold paths (coin collector)
        except BaseException:
            self.close()
            raise

    def _parse(self, response: bytes | str, gold: list[str] | None = None) -> GameState:
        r = _loads(response)
        return GameState(
            obs=r["observation"],
            score=float(r["score"]),
            max_score=1.0,
            admissible_commands=sorted(r["validActions"]),
            won=bool(r["tasksuccess"]),
            lost=bool(r["taskfailure"]),
            gold_path=gold or [],
            goal=self._goal,
        )

    def _generate(self, iface: Any, twx_seed: int, gold: bool) -> Any:
        from py4j.protocol import Py4JJavaError

        try:
            return iface.generateNewGameJSON(twx_seed, self.fold, gold)
        except Py4JJavaError as exc:  # e.g. mapreader: "No locations could be found that distance apart"
            message = str(exc.java_exception.getMessage()).strip()
            raise ConfigError(
                f"{self.env_id}: TextWorldExpress cannot generate {self.fold} game {twx_seed} with "
                f"parameters {self.params!r}: {message}"
            ) from exc

    def _start(self, game_seed: int) -> GameState:
        twx_seed = self._fold_seeds[game_seed % len(self._fold_seeds)]
        twx_gold = self.want_gold_path and self.game_name != "coin"
        response = self._generate(self._iface, twx_seed, twx_gold)
        gold: list[str] = []
        if self.want_gold_path:
            if self.game_name == "coin":
                gold = self._coin_gold_path(twx_seed)
            else:
                gold = [str(c) for c in self._iface.getGoldActionSequence()]
        self._goal = str(self._iface.getTaskDescription())
        return self._parse(response, gold)

    def _coin_gold_path(self, twx_seed: int) -> list[str]:
        """A shortest solution of a coin-collector game, found deterministically.

        TWX 1.1.0 plans coin-collector gold paths with an unseeded random walk (`new Random()` in
        CoinGameGenerator.mkGameWithGoldPath): the same game gets a different, often long, path on
        every call. Here a breadth-first search over rooms (moves, opening a closed door first when
        needed; directions in sorted order) on a scratch copy of the game gives the shortest one,
        the same every time, in TWX's style ("look around", ..., "take coin"). Cached per game.
        """
        key = (self.params, self.fold, twx_seed)
        if key in _COIN_GOLD_CACHE:
            return list(_COIN_GOLD_CACHE[key])
        if self._scratch is None:
            self._scratch = self._server.interface()
            self._scratch.load(self.game_name, self.params)

        def replay(path: list[str]) -> dict[str, Any]:
            r = _loads(self._generate(self._scratch, twx_seed, False))
            for command in path:
                r = _loads(self._scratch.stepJSON(command))
            return r

        start = replay([])
        frontier, seen = [([], start)], {_room(start)}
        path: list[str] | None = None
        while frontier and path is None:
            next_frontier = []
            for moves, r in frontier:
                if "take coin" in r["validActions"]:
                    path = moves
                    break
                valid = set(r["validActions"])
                directions = sorted({c.split()[-1] for c in valid if c.startswith(("move ", "open door to "))})
                for d in directions:
                    # TWX lists "move d" even behind a closed door: open it first when it can be opened
                    step = [f"open door to {d}", f"move {d}"] if f"open door to {d}" in valid else [f"move {d}"]
                    after = replay(moves + step)
                    room = _room(after)
                    if room not in seen:
                        seen.add(room)
                        next_frontier.append((moves + step, after))
            frontier = next_frontier
        gold = ["look around", *path, "take coin"] if path is not None else []
        if len(_COIN_GOLD_CACHE) > 4096:
            _COIN_GOLD_CACHE.clear()
        _COIN_GOLD_CACHE[key] = tuple(gold)
        return gold

    def _play(self, command: str) -> GameState:
        return self._parse(self._iface.stepJSON(command))

    def close(self) -> None:
        server, self._server = getattr(self, "_server", None), None
        if server is not None:
            server.release()
