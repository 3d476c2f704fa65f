"""AMC's DDPG agent, built from stable-baselines3 and extended only through its extension points.

What AMC (He et al., ECCV 2018; ``mit-han-lab/amc``) specifies, and where it lives here:

=====================================  =========================================================
AMC                                     here
=====================================  =========================================================
actor and critic MLPs 300-300           ``policy_kwargs["net_arch"] = {"pi": [300, 300], "qf": [300, 300]}``
actor lr 1e-4, critic lr 1e-3 (Adam)    :class:`AMCPolicy` (custom policy class): its critic optimizer is
                                        :class:`LRScaledAdam` stepping with ``lr * critic_lr / actor_lr``
tau 0.01, gamma 1, batch 64             ``DDPG(tau=, gamma=, batch_size=)``
replay of 100 episodes                  ``buffer_size = 100 * steps_per_episode``
warm-up: uniform random actions         ``learning_starts = warmup * steps_per_episode`` (SB3 samples the
                                        action space uniformly before ``learning_starts``)
(amc) warm start from a policy          :class:`WarmStartDDPG` (``_sample_action``): with ``--warm-start``
                                        the first episodes replay that policy's actions and
                                        ``warm_start_neighbours`` noisy copies; they fill the replay buffer
truncated normal noise, sigma 0.5,      :class:`agents.noise.TruncatedNormalNoise` (``ActionNoise``),
x0.95 per episode after warm-up         decayed in ``reset()`` at each episode end
final reward given to every transition  :class:`EpisodeReplayBuffer` (replay-buffer class), switch
                                        ``final_reward_to_all`` (False: SB3's sparse reward)
moving-average reward baseline (0.5)    :class:`EpisodeReplayBuffer.sample` (see below)
one update per transition at the end    ``train_freq=(1, "episode")``, ``gradient_steps=-1``
of each episode
=====================================  =========================================================

Two lrs. SB3 has a single ``learning_rate``, and ``TD3.train`` calls ``_update_learning_rate`` on the
actor *and* critic optimizers at the start of every ``train()``, overwriting each param group's lr with
that one value. So neither building the critic optimizer with its own lr nor setting param-group lrs
from a callback survives the first update. The critic's optimizer therefore stores the *ratio*
(``lr_scale`` in its param groups, saved with its state dict) and applies ``lr * lr_scale`` inside
``step()``; SB3's schedule keeps writing the actor's lr (1e-4) and the critic steps at 1e-3. A schedule
on ``learning_rate`` would scale both, keeping the ratio.

Reward baseline. AMC's ``update_policy`` keeps ``moving_average += alpha * (mean(batch rewards) -
moving_average)`` (initialised with the first batch mean) and trains on ``reward - moving_average``.
We do the same when a batch is *sampled* (the replay buffer stores raw rewards), so old and new
transitions in one batch are centred by the same baseline; ``baseline_alpha=None`` turns it off.

One ``learn()`` per episode. The agent calls ``model.learn(..., reset_num_timesteps=False)`` once per
episode. At its return every piece of state is at an episode boundary: the transitions are stored,
the noise has advanced, this episode's gradient updates are done and the env has been reset for the
next one. That is where episodes are recorded (with this episode's actor/critic losses), checkpoints
are written and a Ctrl-C/SIGTERM stop takes effect, so a resumed run continues exactly where an
uninterrupted one would (same seed -> same episodes).
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from stable_baselines3.td3.policies import TD3Policy

from agents._base import AGENTS, Agent, env_decisions
from agents.noise import TruncatedNormalNoise
from amc.config.agents import AgentKwargs
from amc.errors import AmcError
from amc.utils import atomic_torch_save, seed_everything

__all__ = ["DDPGAgent", "DDPGConfig", "WarmStartDDPG", "AMCPolicy", "LRScaledAdam", "EpisodeReplayBuffer", "CHECKPOINT_DIR"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
_CKPT_FORMAT = "amc-search-checkpoint"
_CKPT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# config


class DDPGConfig(AgentKwargs):
    """DDPG hyper-parameters (AMC's defaults); set through ``SearchConfig.agent_kwargs`` (``--agent-opt K=V``)."""

    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (300, 300), min_length=1, description="hidden layer widths of actor and critic, e.g. [300, 300]")
    actor_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the actor (AMC: 1e-4)")
    critic_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the critic (AMC: 1e-3)")
    tau: float = Field(0.01, gt=0, le=1, description="soft target update coefficient (AMC: 0.01)")
    gamma: float = Field(1.0, ge=0, le=1, description="discount (1: the episode has a fixed length and one final "
                                                      "reward)")
    batch_size: int = Field(64, ge=1, description="transitions per gradient step (AMC: 64)")
    replay_episodes: int = Field(100, ge=1, description="replay capacity in episodes (x steps per episode)")
    baseline_alpha: float | None = Field(0.5, gt=0, le=1, description="rate of the moving-average reward baseline in "
                                                                      "(0, 1]; null disables it (AMC: 0.5)")
    device: str = Field("cpu", description="where the actor/critic live; 300-300 MLPs with batch 64 are fastest on "
                                           "the CPU")
    train_threads: int | None = Field(1, ge=1, description="torch CPU threads of the gradient updates (null: as set); "
                                                           "the env's evaluation keeps the process's setting")
    warm_start_neighbours: int = Field(4, ge=0, description="with SearchConfig.warm_start, the noisy neighbours run "
                                                            "after the given policy's episode")
    warm_start_sigma: float = Field(0.1, ge=0, description="their Gaussian noise (action units)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, *, agent: str = "ddpg") -> DDPGConfig:
        return super().from_dict(d, agent=agent)


# --------------------------------------------------------------------------------------------------
# SB3 extension points: optimizer, policy, replay buffer


class LRScaledAdam(torch.optim.Adam):
    """Adam whose param groups step with ``lr * lr_scale``.

    SB3 rewrites every param group's ``lr`` before each ``train()`` (one lr for all networks); the
    scale survives that and is saved in the optimizer's state dict.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, *, lr_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, **kwargs)
        self.defaults["lr_scale"] = float(lr_scale)
        for group in self.param_groups:
            group.setdefault("lr_scale", float(lr_scale))

    def step(self, closure: Any = None) -> Any:
        base = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * g["lr_scale"]
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, base):
                g["lr"] = lr


class AMCPolicy(TD3Policy):
    """SB3's TD3/DDPG policy with a critic that learns ``critic_lr_scale`` times faster than the actor.

    Pass as ``DDPG(AMCPolicy, ..., learning_rate=actor_lr, policy_kwargs={"critic_lr_scale": c/a})``.
    """

    def __init__(self, *args: Any, critic_lr_scale: float = 10.0, **kwargs: Any) -> None:
        self.critic_lr_scale = float(critic_lr_scale)  # read by _build, which TD3Policy.__init__ calls
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.critic.optimizer = LRScaledAdam(self.critic.parameters(), lr=lr_schedule(1),
                                             lr_scale=self.critic_lr_scale, **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["critic_lr_scale"] = self.critic_lr_scale
        return data


class EpisodeReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` with AMC's final-reward propagation and moving-average reward baseline.

    :param final_reward_to_all: hold an episode's transitions until it ends, then store every one with
        the episode's final reward (AMC). False stores SB3's per-step (sparse) reward.
    :param baseline_alpha: rate of the moving-average baseline subtracted from sampled rewards
        (AMC: 0.5, per sampled batch); None: no baseline.
    """

    def __init__(self, *args: Any, final_reward_to_all: bool = True, baseline_alpha: float | None = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # SB3's ReplayBuffer arguments
        if final_reward_to_all and self.n_envs != 1:
            raise ValueError("final_reward_to_all needs a single environment (episodes must not interleave)")
        self.final_reward_to_all = bool(final_reward_to_all)
        self.baseline_alpha = None if baseline_alpha is None else float(baseline_alpha)
        self.reward_baseline: float | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []

    @property
    def pending(self) -> int:
        """Transitions of the running episode not yet written (final-reward mode)."""
        return len(self._pending)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if not self.final_reward_to_all:
            super().add(obs, next_obs, action, reward, done, infos)
            return
        self._pending.append((np.array(obs), np.array(next_obs), np.array(action), np.array(done), infos))
        if np.any(done):
            final = np.array(reward, dtype=np.float32)
            for o, no, a, d, inf in self._pending:
                super().add(o, no, a, final, d, inf)
            self._pending.clear()

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        data = super().sample(batch_size, env=env)
        if self.baseline_alpha is None:
            return data
        mean = float(data.rewards.mean())
        if self.reward_baseline is None:
            self.reward_baseline = mean
        else:
            self.reward_baseline += self.baseline_alpha * (mean - self.reward_baseline)
        return data._replace(rewards=data.rewards - self.reward_baseline)


class WarmStartDDPG(DDPG):
    """SB3's DDPG whose first episodes replay given action vectors (``warm_actions``, one row per
    episode) instead of sampling; their transitions enter the replay buffer like any other.

    Only ``_sample_action`` (SB3's exploration hook) is overridden: episode ``e`` and step ``t`` come
    from ``num_timesteps`` (every episode has ``steps_per_episode`` steps), so a resumed run knows
    where it is. Neither the warm-up sampler nor the noise is drawn for these steps.
    """

    warm_actions: np.ndarray | None = None
    steps_per_episode: int = 1

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "warm_actions"]

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
                       ) -> tuple[np.ndarray, np.ndarray]:
        warm = self.warm_actions
        if warm is not None and n_envs == 1:
            episode, t = divmod(int(self.num_timesteps), int(self.steps_per_episode))
            if episode < len(warm):
                action = np.full((1, *self.action_space.shape), warm[episode, t], dtype=np.float32)
                return action, self.policy.scale_action(action)
        return super()._sample_action(learning_starts, action_noise, n_envs)


class TorchThreadsCallback(BaseCallback):
    """Runs the gradient updates with ``train_threads`` torch CPU threads and the rollouts with the
    threads that were set before.

    The actor/critic updates are tiny (300-300 MLPs, batch 64): on a small or busy CPU, intra-op
    threading makes them tens of times slower, while the env's model evaluation in the rollout does
    profit from every core. SB3 calls ``on_rollout_end`` right before ``train()`` and
    ``on_rollout_start`` after it, which is where the thread count is switched.
    """

    def __init__(self, train_threads: int = 1) -> None:
        super().__init__()
        self.train_threads = int(train_threads)
        self._rollout_threads: int | None = None

    def _on_rollout_start(self) -> None:
        if self._rollout_threads is not None:
            torch.set_num_threads(self._rollout_threads)
            self._rollout_threads = None

    def _on_rollout_end(self) -> None:
        self._rollout_threads = torch.get_num_threads()
        torch.set_num_threads(self.train_threads)

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def _on_step(self) -> bool:
        return True


class _ResetTracker(gym.Wrapper):
    """Keeps the last step's ``info`` of each finished episode (the policy, its metrics, the applied
    actions) and remembers the env's RNG state just before each reset, so that a resumed run can redo
    the reset SB3 made after the last checkpointed episode and land in the very same state."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.reset_seed: int | None = None
        self.rng_before_reset: dict[str, Any] | None = None
        self.finished: list[dict[str, Any]] = []

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        if out[2] or out[3]:  # terminated or truncated
            self.finished.append(out[4])
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.reset_seed = seed
        self.rng_before_reset = None if seed is not None else self.env.unwrapped.np_random.bit_generator.state
        return self.env.reset(seed=seed, options=options)


def _corrupt(path: Path, e: BaseException | None) -> AmcError:
    why = "" if e is None else f" ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return AmcError(f"search checkpoint file {str(path)!r} is corrupt or truncated{why}; the search cannot continue "
                    "from it: pass --overwrite instead of --resume to start it again, or choose a new --run-dir")


def _readable_zip(path: Path) -> bool:
    """Whether ``path`` is a complete zip archive (SB3's ``model.zip``); a truncated one is not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError):
        return False


# --------------------------------------------------------------------------------------------------
# the agent


@AGENTS.register("ddpg")
class DDPGAgent(Agent):
    """AMC's DDPG search (see the module docstring); checkpoints into ``run_dir/checkpoint/``.

    Hyper-parameters come from ``config.agent_kwargs`` (:class:`DDPGConfig`); warm-up, noise, the
    final-reward switch, the seed and the checkpoint interval from the :class:`SearchConfig` itself.
    """

    name = "ddpg"
    options = DDPGConfig

    def __init__(self, env: gym.Env, config: Any, recorder: Any) -> None:
        super().__init__(env, config, recorder)
        self.steps_per_episode = len(env_decisions(env)[0])
        box = env.action_space
        if not isinstance(box, gym.spaces.Box):
            raise AmcError(f"DDPG needs a Box action space, the env has {box}")
        self.ckpt_dir = Path(recorder.run_dir) / CHECKPOINT_DIR
        self.model: DDPG | None = None
        self.noise: TruncatedNormalNoise | None = None
        self._tracker: _ResetTracker | None = None
        threads = self.params.train_threads
        self._callbacks = [] if threads is None else [TorchThreadsCallback(threads)]
        self.warm_actions = self._warm_start_actions()

    def _warm_start_actions(self) -> np.ndarray:
        """(episodes, steps) actions of the warm start: the given policy's, then its noisy neighbours."""
        src = self.config.warm_start
        if not src:
            return np.zeros((0, self.steps_per_episode))
        from amc.policy import Policy

        base = self.env.unwrapped
        if src == "uniform":
            from agents.uniform import uniform_actions

            path: Any = "the uniform policy"
            first = np.asarray(uniform_actions(self.env), dtype=np.float64)
        else:
            path = Path(src) / "best_policy.json" if Path(src).is_dir() else Path(src)  # checked by SearchConfig
            if not hasattr(base, "actions_for"):
                raise AmcError("warm start needs an amc CompressionEnv (the env cannot map a policy to actions)")
            first = np.asarray(base.actions_for(Policy.load(path)), dtype=np.float64)
        rng = np.random.default_rng(int(self.config.seed))
        noisy = [np.clip(first + rng.normal(0.0, self.params.warm_start_sigma, first.shape), 0.0, 1.0)
                 for _ in range(int(self.params.warm_start_neighbours))]
        logger.info("warm start from %s: its policy and %d neighbour(s) are the first episodes", path, len(noisy))
        return np.stack([first, *noisy])

    def _attach(self, model: WarmStartDDPG) -> None:
        """Make ``model`` the agent's: SB3's logger silenced, the warm start's actions armed."""
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.warm_actions = self.warm_actions if len(self.warm_actions) else None
        model.steps_per_episode = self.steps_per_episode
        self.model = model

    # ----------------------------------------------------------------- construction
    def _make_vec_env(self) -> DummyVecEnv:
        tracker = self._tracker = _ResetTracker(self.env)
        return DummyVecEnv([lambda: tracker])

    def _make_noise(self) -> TruncatedNormalNoise:
        box = self.env.action_space
        width = float(np.max(box.high - box.low))
        return TruncatedNormalNoise(
            int(np.prod(box.shape)), sigma=self.config.noise_sigma, decay=self.config.noise_decay,
            warmup=self.config.warmup, unit_scale=2.0 / width, mean_fn=self._mean_action, seed=self.config.seed,
        )

    def _mean_action(self) -> np.ndarray:
        """The actor's deterministic action for the current observation, in SB3's [-1, 1] units."""
        action, _ = self.model.predict(self.model._last_obs, deterministic=True)  # (n_envs, action_dim)
        return self.model.policy.scale_action(action)

    def _build_model(self) -> None:
        cfg, p, n = self.config, self.params, self.steps_per_episode
        seed_everything(cfg.seed)  # network init does not depend on what ran before (e.g. pretraining)
        venv = self._make_vec_env()
        self.noise = self._make_noise()
        model = WarmStartDDPG(
            AMCPolicy, venv,
            learning_rate=p.actor_lr,
            buffer_size=p.replay_episodes * n,
            learning_starts=cfg.warmup * n,
            batch_size=p.batch_size,
            tau=p.tau,
            gamma=p.gamma,
            train_freq=(1, "episode"),
            gradient_steps=-1,
            action_noise=self.noise,
            replay_buffer_class=EpisodeReplayBuffer,
            replay_buffer_kwargs={"final_reward_to_all": cfg.final_reward_to_all, "baseline_alpha": p.baseline_alpha},
            policy_kwargs={"net_arch": {"pi": list(p.hidden), "qf": list(p.hidden)},
                           "critic_lr_scale": p.critic_lr / p.actor_lr},
            seed=None,  # seeded here, in one place, so that a resume can restore every generator
            device=p.device,
            verbose=0,
        )
        self._attach(model)
        model.action_space.seed(cfg.seed)  # warm-up actions
        venv.seed(cfg.seed)  # first reset(seed=...) of the env

    # ----------------------------------------------------------------- checkpoints
    def _find_checkpoint(self) -> Path | None:
        dirs = (self.ckpt_dir, self.ckpt_dir.with_name(CHECKPOINT_DIR + ".old"))
        return next((d for d in dirs if (d / "state.pt").is_file() and (d / "model.zip").is_file()), None)

    def save_checkpoint(self) -> Path:
        """Write model, replay buffer, counters, noise, recorder state and RNG states atomically."""
        tmp = self.ckpt_dir.with_name(CHECKPOINT_DIR + ".tmp")
        old = self.ckpt_dir.with_name(CHECKPOINT_DIR + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save(tmp / "model.zip")
        self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
        state = {
            "format": _CKPT_FORMAT,
            "version": _CKPT_VERSION,
            "agent": self.name,
            "episode": self.recorder.episode,
            "num_timesteps": self.model.num_timesteps,
            "noise": self.noise.state_dict(),
            "recorder": self.recorder.state_dict(),
            "env_reset": {"seed": self._tracker.reset_seed, "rng": self._tracker.rng_before_reset},
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "action_space": self.model.action_space.np_random.bit_generator.state,
            },
            "params": self.params.to_dict(),
        }
        atomic_torch_save(state, tmp / "state.pt")
        # swap: checkpoint -> checkpoint.old, tmp -> checkpoint; a crash in between leaves .old usable
        shutil.rmtree(old, ignore_errors=True)
        if self.ckpt_dir.exists():
            self.ckpt_dir.rename(old)
        tmp.rename(self.ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)
        self.recorder.write_summary(extra=self.summary_extra())
        logger.debug("checkpoint at episode %d -> %s", self.recorder.episode, self.ckpt_dir)
        return self.ckpt_dir

    def _load_checkpoint(self, ckpt: Path) -> None:
        try:
            state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)  # our own file
        except Exception as e:  # truncated or overwritten: pickle, zip and EOF errors alike
            raise _corrupt(ckpt / "state.pt", e) from None
        if not isinstance(state, dict) or state.get("format") != _CKPT_FORMAT or state.get("agent") != self.name:
            raise AmcError(f"{ckpt} is not a ddpg search checkpoint; start a new run dir or drop --resume")
        venv = self._make_vec_env()
        if not _readable_zip(ckpt / "model.zip"):
            raise _corrupt(ckpt / "model.zip", None)
        try:
            model = WarmStartDDPG.load(ckpt / "model.zip", env=venv, device=self.params.device)
        except ValueError as e:
            raise AmcError(f"the checkpoint in {ckpt} does not fit this env ({e}); was the model or mode "
                           "changed? Start a new run dir") from None
        except Exception as e:
            raise _corrupt(ckpt / "model.zip", e) from None
        try:
            model.load_replay_buffer(ckpt / "replay_buffer.pkl")
        except Exception as e:
            raise _corrupt(ckpt / "replay_buffer.pkl", e) from None
        self._attach(model)
        self.noise = self._make_noise()
        self.noise.load_state_dict(state["noise"])
        model.action_noise = self.noise
        # SB3 reset the env after the last checkpointed episode; redo that reset from the same RNG state
        model._last_obs = None
        env_reset = state["env_reset"]
        if env_reset["seed"] is not None:
            venv.seed(env_reset["seed"])
        elif env_reset["rng"] is not None:
            self.env.unwrapped.np_random.bit_generator.state = env_reset["rng"]
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        model.action_space.np_random.bit_generator.state = rng["action_space"]
        self.recorder.restore(state["recorder"])
        logger.info("resumed ddpg search from %s at episode %d", ckpt, self.recorder.episode)

    # ----------------------------------------------------------------- the loop
    def setup(self) -> None:
        """Build the model, or load the checkpoint when resuming (called by :meth:`run`)."""
        if self.model is not None:
            return
        ckpt = self._find_checkpoint() if self.config.resume else None
        if ckpt is not None:
            self._load_checkpoint(ckpt)
            return
        if self.config.resume:
            if self.recorder.episode > 0:
                logger.warning("no checkpoint in %s: restarting the search from episode 1", self.ckpt_dir)
            self.recorder.restore(None)
        self._build_model()

    def run(self, episodes: int) -> None:
        self.setup()
        every = self.config.checkpoint_every
        self.interrupted = False
        while self.recorder.episode < episodes and not self.stop_requested:
            index = self.recorder.episode  # 0-based index of the episode about to run
            sigma = self.noise.sigma
            phase = ("warmstart" if index < len(self.warm_actions) else
                     "warmup" if index < self.config.warmup else "explore")
            self.model.learn(total_timesteps=1, callback=self._callbacks, reset_num_timesteps=False,
                             log_interval=None)  # type: ignore[arg-type]
            infos, self._tracker.finished = self._tracker.finished, []
            if len(infos) != 1:
                raise RuntimeError(f"expected one finished episode per learn() call, got {len(infos)}")
            values = self.model.logger.name_to_value
            losses = {k: values[f"train/{k}"] for k in ("actor_loss", "critic_loss") if f"train/{k}" in values}
            self.model.logger.dump()  # clears the values: the next episode reports its own losses
            self.recorder.record_episode(infos[0], noise_sigma=sigma, phase=phase, extra=losses)
            ep = self.recorder.episode
            if ep % every == 0 or ep >= episodes or self.stop_requested:
                self.save_checkpoint()
        self.interrupted = self.recorder.episode < episodes

    def summary_extra(self) -> dict[str, Any]:
        return {  # after setup(): the model and the noise exist
            "final_reward_to_all": bool(self.config.final_reward_to_all),
            "warmup": int(self.config.warmup),
            "noise_sigma": self.noise.sigma,
            "reward_baseline": self.model.replay_buffer.reward_baseline,
            "ddpg": self.params.to_dict(),
            "warm_start_episodes": int(len(self.warm_actions)),
        }
