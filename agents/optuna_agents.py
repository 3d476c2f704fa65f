"""Optuna baselines on the very same environment: TPE, CMA-ES, GP, random, and NSGA-II / MOTPE fronts.

One Optuna *trial* is one env episode. The trial samples the whole action vector at once, one value
in [0, 1] per decision, through the decision's search space
(``env.spaces[kind].suggest(trial, f"d{i:03d}_{kind}")``, see :mod:`search_spaces`); the agent then
resets the env and steps it with those actions, so the env clips them to the budget, compresses the
model and measures the accuracy exactly as it does for DDPG. What the env really applied (the clipped
actions, accuracy, cost ratios, the policy) is stored on the trial as the user attribute ``amc`` and
recorded through :class:`agents.SearchRecorder` with ``episode = trial number + 1``, so a baseline
run has the same outputs and TensorBoard keys as a DDPG run.

=========  ======================================  ==============================================
agent      sampler                                  objective(s)
=========  ======================================  ==============================================
tpe        ``TPESampler`` (multivariate)            maximise the env's reward (budget enforced)
cmaes      ``CmaEsSampler`` (needs ``cmaes``)       same
gp         ``GPSampler`` (needs scipy + torch)      same
random     ``RandomSampler``                        same
nsga2      ``NSGAIISampler``                        maximise accuracy, minimise the budget metric's
motpe      ``TPESampler`` (multi-objective)         cost ratio (a Pareto front, ``pareto.json``)
=========  ======================================  ==============================================

The multi-objective agents step the same env. For a front that is not cut by a budget pass a target
of ratio 1 (``--target macs=1.0``: the env then never clips); with a smaller ratio the env enforces it
and the front covers only the budget-feasible policies.

**Storage and distributed trials.** The study lives in an Optuna storage, by default a journal file
in the run dir (``run_dir/optuna.journal``, safe for several local processes). ``storage`` may be:

- a file path or ``journal:PATH``: a shared journal file (a local disk or NFS);
- an SQLAlchemy URL, ``postgresql://user@host/db``, ``mysql+pymysql://user@host/db``,
  ``sqlite:///file.db``: Optuna's RDB storage, for workers on many machines (give the password through
  ``PGPASSWORD``/``~/.pgpass`` rather than in the URL: the URL is saved with the run's config);
- ``grpc://host:port``: an ``optuna.storages.run_grpc_proxy_server`` in front of any storage.

``episodes`` is the size of the *study*: every worker stops once the study holds that many finished
or running trials, so N workers started with ``--episodes 300`` finish 300 trials together (a trial
that a race pushes past the count is marked FAIL with ``surplus: true`` and not evaluated). Give each
worker its own run dir and seed. Re-running a run dir with ``resume`` continues the study; trials that
its previous session left RUNNING (a kill) are closed first: COMPLETE if they were recorded, else FAIL.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import Field

from agents._base import AGENTS, Agent, env_decisions, play_episode
from agents._recorder import read_episodes
from amc.config.agents import AgentKwargs
from amc.config.search import Options
from amc.config.train import Count
from amc.errors import AmcError
from amc.policy import parse_target
from amc.utils import atomic_write_json

__all__ = [
    "OptunaConfig",
    "OptunaAgent",
    "TPEAgent",
    "CmaEsAgent",
    "GPAgent",
    "RandomAgent",
    "NSGA2Agent",
    "MOTPEAgent",
    "make_storage",
    "redact_storage",
    "default_study_name",
    "LOCAL_JOURNAL",
    "PARETO_FILE",
    "STATE_FILE",
]

logger = logging.getLogger(__name__)

#: the default storage: a journal file in the run dir
LOCAL_JOURNAL = "optuna.journal"
#: this run's id, study name and storage (written on start, read on resume)
STATE_FILE = "optuna.json"
#: the Pareto front of a multi-objective run
PARETO_FILE = "pareto.json"
#: user attribute holding what the env applied and measured
ATTR = "amc"
#: user attribute naming the worker that evaluates a trial (run id, seed, host, pid)
WORKER_ATTR = "worker"
#: study user attribute holding the search it belongs to (workers must agree on it)
STUDY_ATTR = "amc_search"
#: SearchConfig fields that define the search a study belongs to (machine-specific paths excluded)
_STUDY_KEYS = ("agent", "model", "model_kwargs", "dataset", "val_size", "data_seed", "mode", "target", "reward",
               "lbound", "round_to", "granularity", "importance", "reconstruct", "proxy", "calibration_size", "budget_band",
               "w_bits", "a_bits", "env_kwargs")
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
#: SQLAlchemy driver names and their modules, in order of preference, for URLs that name none
_DRIVERS = {"postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg")),
            "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"))}
_DRIVER_HINT = {"postgresql": "pip install 'amc[postgres]' (psycopg2-binary) or 'psycopg[binary]'",
                "mysql": "pip install pymysql"}
_METRIC_KEYS = ("accuracy", "reward", "macs_ratio", "params_ratio", "size_ratio", "bitops_ratio", "latency_ms")


# --------------------------------------------------------------------------------------------------
# config


class OptunaConfig(AgentKwargs):
    """Options of the Optuna agents, set through ``SearchConfig.agent_kwargs`` (``--agent-opt K=V``)."""

    storage: str | None = Field(None, pattern=r"\S", description="where the study lives (module docstring): "
                                "a journal file or a URL such as postgresql://user@host/db; null: "
                                "run_dir/optuna.journal")
    study_name: str | None = Field(None, pattern=r"\S", description="the study's name (not blank); null: "
                                   "default_study_name (agent, model, data, budget)")
    n_startup_trials: Count | None = Field(None, ge=0, description="random trials before the model-based samplers "
                                                                   "(TPE/GP: 10, CMA-ES: 1)")
    population_size: Count | None = Field(None, ge=2, description="NSGA-II population (Optuna: 50; about episodes / 5 "
                                                                  "suits small budgets)")
    sampler_kwargs: Options = Field(default_factory=dict, description="further keyword arguments of the Optuna "
                                    "sampler, e.g. {multivariate: false}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["storage"] = None if self.storage is None else redact_storage(self.storage)
        return out


# --------------------------------------------------------------------------------------------------
# storage


def redact_storage(storage: str) -> str:
    """``storage`` with a URL's password replaced by ``***`` (for logs and summaries)."""
    parts = urlsplit(storage)
    if parts.password is None:
        return storage
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"))


def make_storage(storage: str | None, run_dir: str | Path) -> tuple[optuna.storages.BaseStorage, bool]:
    """The Optuna storage for ``storage`` (see the module docstring) and whether it is the run's own
    default journal (``run_dir/optuna.journal``, which a fresh run may delete)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        path = Path(run_dir) / LOCAL_JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), True
    text = storage.strip()
    if "://" not in text or text.lower().startswith("journal:"):
        path = Path(text[len("journal:"):] if text.lower().startswith("journal:") else text).expanduser()
        if not path.parent.is_dir():
            raise AmcError(f"journal storage {str(path)!r}: directory {str(path.parent)!r} does not exist")
        return JournalStorage(JournalFileBackend(str(path))), False
    scheme = text.split("://", 1)[0].lower()
    if scheme == "grpc":
        parts = urlsplit(text)
        if not parts.hostname or not parts.port:
            raise AmcError(f"storage {text!r}: give grpc://HOST:PORT of an optuna gRPC proxy server")
        from optuna.storages import GrpcStorageProxy

        return GrpcStorageProxy(host=parts.hostname, port=parts.port), False
    base = scheme.split("+", 1)[0]
    if base not in _RDB_SCHEMES:
        raise AmcError(f"storage {redact_storage(text)!r}: unknown scheme {scheme!r}; give a journal file path, "
                       "postgresql://user@host/db, mysql+pymysql://user@host/db, sqlite:///file.db or grpc://host:port")
    rest = text.split("://", 1)[1]
    if base == "postgres":  # SQLAlchemy 2 only knows "postgresql"
        base, scheme = "postgresql", "postgresql" + scheme[len("postgres"):]
    if "+" not in scheme and base in _DRIVERS:  # no driver named: the one installed (SQLAlchemy's default may not be)
        driver = next((d for d, module in _DRIVERS[base] if importlib.util.find_spec(module)), None)
        if driver is None:
            raise AmcError(f"storage {redact_storage(text)!r} needs a {base} driver: {_DRIVER_HINT[base]}")
        scheme = f"{base}+{driver}"
    text = f"{scheme}://{rest}"
    for attempt in range(1, RDB_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(text), False
        except ImportError as e:
            raise AmcError(f"storage {redact_storage(text)!r}: the database driver is missing ({e}); "
                           f"{_DRIVER_HINT.get(base, 'install the driver named in the URL')}") from None
        except Exception as e:  # sqlalchemy.exc.OperationalError etc.: the database cannot be reached
            if _creation_race(e) and attempt < RDB_ATTEMPTS:
                # workers started together on a fresh database race to create Optuna's tables; the loser
                # finds them created on a second look (PostgreSQL: IntegrityError on pg_type_typname_nsp_index)
                logger.info("storage %s: tables being created by another worker (%s); retrying",
                            redact_storage(text), type(e).__name__)
                time.sleep(0.2 * attempt + 0.3 * os.urandom(1)[0] / 255)  # not `random`: the search seeds it
                continue
            raise AmcError(f"cannot open storage {redact_storage(text)!r}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    raise AssertionError("unreachable")  # the last attempt returns or raises


#: tries at opening an RDB storage while another worker creates its tables
RDB_ATTEMPTS = 8


def _creation_race(e: BaseException) -> bool:
    """Whether ``e`` is a worker losing the race to create Optuna's tables (they exist by now)."""
    from sqlalchemy import exc  # Optuna's own dependency

    text = str(e).lower()
    return isinstance(e, exc.IntegrityError) or (isinstance(e, (exc.ProgrammingError, exc.OperationalError))
                                                 and ("already exists" in text or "duplicate" in text))


def default_study_name(config: Any) -> str:
    """``amc-<agent>-<model>-<dataset>-<mode>-<target>`` (workers of one search agree on it)."""
    model = config.model or Path(str(config.checkpoint or "model")).stem
    return "-".join(str(p) for p in ("amc", config.agent, model, config.dataset, config.mode, config.target))


def _study_identity(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps({key: getattr(config, key) for key in _STUDY_KEYS}, default=str))


@contextmanager
def _quiet_optuna() -> Any:
    """Optuna logs every trial at INFO; the recorder already reports them."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _derived_seed(seed: int, n: int) -> int:
    """A sampler seed for a study that already holds ``n`` trials: a resumed run must not replay the
    random start-up draws of the first session."""
    return int(seed) if n == 0 else int(np.random.SeedSequence([int(seed), int(n)]).generate_state(1)[0])


def _worker(t: FrozenTrial) -> dict[str, Any]:
    return dict(t.user_attrs.get(WORKER_ATTR) or {})


def _float_dict(d: Mapping[str, Any]) -> dict[str, float]:
    """The finite metrics of ``d`` as floats (those the env left ``None``, NaN or infinite are dropped)."""
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(v)}


# --------------------------------------------------------------------------------------------------
# the agents


class OptunaAgent(Agent):
    """Base of the Optuna agents: one trial = one env episode (see the module docstring).

    Subclasses set :attr:`sampler` (or override :meth:`make_sampler`) and :attr:`multi_objective`.
    """

    multi_objective: ClassVar[bool] = False
    #: the Optuna sampler class that :meth:`make_sampler` builds
    sampler: ClassVar[type[BaseSampler]]
    #: random start-up trials of the sampler when ``n_startup_trials`` is not given (phase labels); None:
    #: the sampler takes no ``n_startup_trials``
    default_startup: ClassVar[int | None] = None
    options = OptunaConfig

    def __init__(self, env: Any, config: Any, recorder: Any) -> None:
        super().__init__(env, config, recorder)
        self.decision_kinds, self.spaces = env_decisions(env)
        metric = getattr(env.unwrapped, "metric", None) or parse_target(config.target)[0]
        self.cost_key = "latency_ms" if metric == "latency" else f"{metric}_ratio"
        self.directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        self.objectives = ["accuracy", self.cost_key] if self.multi_objective else ["reward"]
        self.run_dir = Path(recorder.run_dir)
        self.state_path = self.run_dir / STATE_FILE
        self.study: optuna.Study | None = None
        self.study_name = self.params.study_name or default_study_name(config)
        self.run_id: str | None = None
        self.sampler_seed: int | None = None

    # ----------------------------------------------------------------- what subclasses provide
    def make_sampler(self, seed: int, **kw: Any) -> BaseSampler:
        """The Optuna sampler, seeded; ``sampler_kwargs`` win over ``kw`` and the start-up count."""
        if self.default_startup is not None:
            kw = {"n_startup_trials": self._startup(), **kw}
        return self.sampler(seed=seed, **{**kw, **self.params.sampler_kwargs})

    def _startup(self) -> int | None:
        return self.params.n_startup_trials if self.params.n_startup_trials is not None else self.default_startup

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Open (or create) the study, reconcile a resumed run with it and build the sampler."""
        if self.study is not None:
            return
        resume = self.config.resume
        state = json.loads(self.state_path.read_text()) if resume and self.state_path.is_file() else {}
        if not resume:  # a fresh run: the run's own journal (if any) is left over from a discarded run
            (self.run_dir / PARETO_FILE).unlink(missing_ok=True)
            if self.params.storage is None:
                (self.run_dir / LOCAL_JOURNAL).unlink(missing_ok=True)
        elif self.params.storage is None and not (self.run_dir / LOCAL_JOURNAL).is_file() and self.recorder.episode:
            logger.warning("no study journal in %s: restarting the search from trial 0", self.run_dir)
            self.recorder.restore(None)
        self.run_id = str(state.get("run_id") or uuid.uuid4().hex)
        storage, _ = make_storage(self.params.storage, self.run_dir)
        with _quiet_optuna():
            self.study = optuna.create_study(storage=storage, study_name=self.study_name, directions=self.directions,
                                             load_if_exists=True, sampler=optuna.samplers.RandomSampler(0))
        self._check_study()
        self._close_stale_trials()
        if resume:
            self._restore_log()
        trials = self.study.get_trials(deepcopy=False)
        self.sampler_seed = _derived_seed(int(self.config.seed), len(trials))
        self.study.sampler = self.make_sampler(self.sampler_seed)
        self.evaluations = len(read_episodes(self.recorder.csv_path))  # this run dir's trials (all sessions)
        self._warn_shared_seed(trials)
        atomic_write_json(self.state_path, {
            "run_id": self.run_id, "study_name": self.study_name,
            "storage": None if self.params.storage is None else redact_storage(self.params.storage),
            "agent": self.name, "directions": self.directions, "objectives": self.objectives,
        })
        logger.info("%s: study %r in %s (%d trials so far), sampler seed %d", self.name, self.study_name,
                    "the run dir" if self.params.storage is None else redact_storage(self.params.storage),
                    len(trials), self.sampler_seed)

    def _check_study(self) -> None:
        mine = _study_identity(self.config)
        theirs = self.study.user_attrs.get(STUDY_ATTR)
        if theirs is None:
            self.study.set_user_attr(STUDY_ATTR, mine)
            return
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            shown = ", ".join(f"{k}: {theirs.get(k)!r} (study) vs {mine.get(k)!r}" for k in diff[:5])
            raise AmcError(f"study {self.study_name!r} belongs to another search ({shown}); pass another "
                           "--study-name or the same search options")
        got = [d.name.lower() for d in self.study.directions]
        if got != self.directions:
            raise AmcError(f"study {self.study_name!r} optimises {got}, agent {self.name} needs {self.directions}; "
                           "pass another --study-name")

    def _close_stale_trials(self) -> None:
        """Trials of this run dir left RUNNING by a killed session: COMPLETE if recorded, else FAIL."""
        recorded = {r["episode"] for r in read_episodes(self.recorder.csv_path)}
        for t in self._mine(TrialState.RUNNING):
            values = (t.user_attrs.get(ATTR) or {}).get("values")
            if values is not None and t.number + 1 in recorded:
                self.study.tell(t.number, values)
                logger.info("trial %d was recorded before the last session stopped: marked COMPLETE", t.number)
            else:
                self.study.tell(t.number, state=TrialState.FAIL)
                logger.info("trial %d was cut short by the last session: marked FAIL", t.number)

    def _restore_log(self) -> None:
        """Put this run's finished trials that ``episodes.csv`` lacks (truncated, deleted) back into it."""
        rows = {r["episode"]: r for r in read_episodes(self.recorder.csv_path)}
        missing = []
        for t in self._mine(TrialState.COMPLETE):
            attrs = t.user_attrs.get(ATTR) or {}
            if not attrs or t.number + 1 in rows:
                continue
            metrics = attrs.get("metrics") or {}
            missing.append(t.number + 1)
            rows[t.number + 1] = {
                "episode": t.number + 1, "phase": self._phase(t.number), **{k: metrics.get(k) for k in _METRIC_KEYS},
                "episode_time_s": None if t.duration is None else t.duration.total_seconds(),
            }
        if not missing:
            return
        logger.warning("%s lacked %d of this run's finished trials (episodes %s...): restored from the study",
                       self.recorder.csv_path, len(missing), ", ".join(map(str, sorted(missing)[:5])))
        self.recorder.rewrite_log([rows[k] for k in sorted(rows)])

    def _warn_shared_seed(self, trials: Sequence[FrozenTrial]) -> None:
        seed, ours = int(self.config.seed), (None, self.run_id)
        if any(w.get("seed") == seed and w.get("run_id") not in ours for w in map(_worker, trials)):
            logger.warning("another worker of study %r used seed %d too: give each worker its own --seed, or their "
                           "random draws repeat each other", self.study_name, int(self.config.seed))

    def _mine(self, state: TrialState) -> list[FrozenTrial]:
        """The study's trials in ``state`` that this run dir evaluated (in any of its sessions)."""
        trials = self.study.get_trials(deepcopy=False, states=(state,))
        return [t for t in trials if _worker(t).get("run_id") == self.run_id]

    # ----------------------------------------------------------------- the loop
    def _live(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))

    def run(self, episodes: int) -> None:
        self.setup()
        every = self.config.checkpoint_every
        self.interrupted = False
        with _quiet_optuna():
            while not self.stop_requested and len(self._live()) < episodes:
                trial = self.study.ask()
                # numbers are handed out atomically by the storage: the trials ahead of this one decide
                ahead = sum(1 for t in self._live() if t.number < trial.number)
                if ahead >= episodes:
                    trial.set_user_attr("surplus", True)
                    self.study.tell(trial, state=TrialState.FAIL)
                    logger.debug("trial %d: the study is full (%d trials), not evaluated", trial.number, episodes)
                    break
                self._evaluate(trial)
                if self.evaluations % every == 0:
                    self._checkpoint()
            self._checkpoint()
            done = sum(1 for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        self.interrupted = self.stop_requested and done < episodes

    def _evaluate(self, trial: Trial) -> None:
        """Sample the whole action vector, step the env with it, record and tell the trial."""
        try:
            trial.set_user_attr(WORKER_ATTR, {"run_id": self.run_id, "seed": int(self.config.seed),
                                              "host": socket.gethostname(), "pid": os.getpid()})
            actions = [self.spaces[k].suggest(trial, f"d{i:03d}_{k}")
                       for i, k in enumerate(self.decision_kinds)]
            info = play_episode(self.env, actions, seed=int(self.config.seed) + trial.number)
            metrics = dict(info["metrics"])
            values = self._values(metrics)
            policy = info.get("policy")
            trial.set_user_attr(ATTR, {
                "episode": trial.number + 1, "values": values,
                "metrics": _float_dict({k: metrics.get(k) for k in _METRIC_KEYS}),
                "actions": [float(a) for a in info.get("actions") or []],
                "policy": None if policy is None else policy.to_dict(),
            })
            # the trial number is the episode (record_episode counts on from recorder.episode)
            self.recorder.episode = trial.number
            self.recorder.record_episode(info, phase=self._phase(trial.number))
            self.evaluations += 1
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        self.study.tell(trial, values)

    def _values(self, metrics: Mapping[str, Any]) -> list[float]:
        if not self.multi_objective:
            return [float(metrics["reward"])]
        if metrics.get(self.cost_key) is None:
            raise AmcError(f"the env reports no {self.cost_key!r}; the multi-objective agents need it")
        return [float(metrics["accuracy"]), float(metrics[self.cost_key])]

    def _phase(self, number: int) -> str:
        startup = self._startup()
        return self.name if startup is None else "startup" if number < startup else "search"

    # ----------------------------------------------------------------- outputs
    def _checkpoint(self) -> None:
        """The state lives in the study; here the summary (and the front) are refreshed."""
        if self.multi_objective:
            self.write_pareto()
        self.recorder.write_summary(extra=self.summary_extra())

    def pareto_front(self) -> list[FrozenTrial]:
        """The study's non-dominated COMPLETE trials, cheapest first (multi-objective agents)."""
        front = [t for t in self.study.best_trials if t.state == TrialState.COMPLETE]
        return sorted(front, key=lambda t: (t.values[1], -t.values[0]))

    def write_pareto(self) -> Path | None:
        """Write ``pareto.json``: the front (with policies) and every finished trial's objectives."""
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return None
        front = self.pareto_front()

        def point(t: FrozenTrial, *, full: bool) -> dict[str, Any]:
            a = t.user_attrs.get(ATTR) or {}
            p: dict[str, Any] = {"trial": t.number, "episode": t.number + 1, "accuracy": t.values[0],
                                 self.cost_key: t.values[1]}
            if full:
                p.update({"metrics": a.get("metrics", {}), "actions": a.get("actions", []),
                          "params": dict(t.params), "policy": a.get("policy")})
            return p

        doc = {
            "format": "amc-pareto", "version": 1, "agent": self.name, "study_name": self.study_name,
            "target": self.config.target, "metric": self.cost_key,
            "base_accuracy": self.recorder.base_accuracy,
            "objectives": [{"name": "accuracy", "direction": "maximize"},
                           {"name": self.cost_key, "direction": "minimize"}],
            "n_trials": len(complete),
            "front": [point(t, full=True) for t in front],
            "trials": [point(t, full=False) for t in complete],
        }
        return atomic_write_json(self.run_dir / PARETO_FILE, doc)

    def summary_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "evaluations": self.evaluations,
            "sampler": type(self.study.sampler).__name__,
            "sampler_seed": self.sampler_seed,
            "study_name": self.study_name,
            "storage": "run_dir/" + LOCAL_JOURNAL if self.params.storage is None else redact_storage(self.params.storage),
            "objectives": self.objectives,
            "optuna": self.params.to_dict(),
        }
        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        study: dict[str, Any] = {"n_trials": len(trials), "n_complete": len(complete),
                                 "n_failed": sum(1 for t in trials if t.state == TrialState.FAIL),
                                 "n_running": sum(1 for t in trials if t.state == TrialState.RUNNING)}
        if complete and not self.multi_objective:
            best = max(complete, key=lambda t: t.values[0])
            attrs = best.user_attrs.get(ATTR) or {}
            study["best"] = {"trial": best.number, "reward": best.values[0], "metrics": attrs.get("metrics", {}),
                             "found_by_this_run": _worker(best).get("run_id") == self.run_id}
        out["study"] = study
        if self.multi_objective and complete:
            out["pareto"] = {"path": str(self.run_dir / PARETO_FILE), "size": len(self.pareto_front())}
        return out


@AGENTS.register("tpe")
class TPEAgent(OptunaAgent):
    """Tree-structured Parzen estimator (Bergstra et al. 2011), Optuna's multivariate TPE."""

    name = "tpe"
    sampler = optuna.samplers.TPESampler
    default_startup = 10


@AGENTS.register("cmaes")
class CmaEsAgent(OptunaAgent):
    """CMA-ES (Hansen 2016) through Optuna's ``CmaEsSampler`` (the ``cmaes`` package)."""

    name = "cmaes"
    sampler = optuna.samplers.CmaEsSampler
    default_startup = 1

    def make_sampler(self, seed: int, **kw: Any) -> BaseSampler:
        if importlib.util.find_spec("cmaes") is None:
            raise AmcError("agent cmaes needs the 'cmaes' package: pip install cmaes")
        return super().make_sampler(seed, warn_independent_sampling=False, **kw)


@AGENTS.register("gp")
class GPAgent(OptunaAgent):
    """Gaussian-process Bayesian optimisation (Optuna's ``GPSampler``, log EI; needs scipy and torch)."""

    name = "gp"
    sampler = optuna.samplers.GPSampler
    default_startup = 10


@AGENTS.register("random")
class RandomAgent(OptunaAgent):
    """Uniform random actions in [0, 1] per decision (the env clips them to the budget)."""

    name = "random"
    sampler = optuna.samplers.RandomSampler


@AGENTS.register("nsga2")
class NSGA2Agent(OptunaAgent):
    """NSGA-II (Deb et al. 2002): an accuracy-vs-cost Pareto front (``pareto.json``)."""

    name = "nsga2"
    multi_objective = True

    def _startup(self) -> int | None:
        return self.params.population_size or 50

    def make_sampler(self, seed: int, **kw: Any) -> BaseSampler:
        kw = dict(self.params.sampler_kwargs)
        if self.params.population_size is not None:
            kw["population_size"] = self.params.population_size
        return optuna.samplers.NSGAIISampler(seed=seed, **kw)


@AGENTS.register("motpe")
class MOTPEAgent(OptunaAgent):
    """Multi-objective TPE (Ozaki et al. 2020): an accuracy-vs-cost Pareto front (``pareto.json``)."""

    name = "motpe"
    sampler = optuna.samplers.TPESampler
    multi_objective = True
    default_startup = 10
