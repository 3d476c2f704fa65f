"""The sensitivity agent (table + exact knapsack) and DDPG's warm start, on LeNet-5 / digits."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from agents import AGENTS, SearchConfig, SearchRecorder, read_episodes
from agents.sensitivity import solve_mckp
from amc.errors import AmcError
from amc.policy import Policy
from amc.training import load_checkpoint
from envs import CompressionEnv, EnvConfig
from tests._paths import LENET_DIGITS
from tests._toy_env import ToyCompressionEnv

REF = LENET_DIGITS


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(REF)[0]


def _brute(scores, costs, cap):
    best = None
    for ch in itertools.product(*(range(len(s)) for s in scores)):
        if sum(c[j] for c, j in zip(costs, ch)) <= cap + 1e-12:
            tot = sum(s[j] for s, j in zip(scores, ch))
            best = tot if best is None else max(best, tot)
    return best


def test_knapsack_hand_checked_optimum():
    # three decisions; the greedy pick (best score per cost) is not optimal here
    scores = [[-5.0, -1.0, 0.0], [-4.0, -3.0, 0.0], [-0.5, 0.0]]
    costs = [[0.0, 2.0, 4.0], [0.0, 1.0, 3.0], [0.0, 2.0]]
    ch, total = solve_mckp(scores, costs, 5.0)
    # hand check: (1, 2, 0): cost 2 + 3 + 0 = 5, score -1.5; (2, 0, 0): -4.5; (0, 2, 1): -5; (1, 1, 1): -4
    assert ch == [1, 2, 0] and total == pytest.approx(-1.5)
    assert total == pytest.approx(_brute(scores, costs, 5.0))
    assert solve_mckp(scores, costs, 100.0)[0] == [2, 2, 1]
    assert solve_mckp(scores, costs, 0.0)[0] == [0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(20):  # against brute force on random small tables
        sc = [list(rng.normal(size=rng.integers(1, 4))) for _ in range(4)]
        co = [list(rng.uniform(0, 1, size=len(s))) for s in sc]
        cap = float(rng.uniform(0.5, 3.0))
        ref = _brute(sc, co, cap)
        if ref is None:
            with pytest.raises(AmcError):
                solve_mckp(sc, co, cap)
        else:
            assert solve_mckp(sc, co, cap)[1] == pytest.approx(ref)


def test_knapsack_infeasible_is_a_clear_error():
    with pytest.raises(AmcError, match="cannot be met"):
        solve_mckp([[0.0, 1.0], [0.0]], [[2.0, 3.0], [1.0]], 2.5)
    with pytest.raises(AmcError):
        solve_mckp([[0.0]], [[1.0, 2.0]], 5.0)


def _agent(tmp_path, model, digits, *, mode="prune", target="macs=0.5", grid=3, resume=False, **kwargs):
    env = CompressionEnv(model, digits, EnvConfig(mode=mode, target=target, w_bits=(4, 8), a_bits=(6, 8)))
    cfg = SearchConfig(checkpoint=str(REF), agent="sensitivity", mode=mode, target=target, episodes=5,
                       run_dir=str(tmp_path), agent_kwargs={"grid": grid, **kwargs}, resume=resume)
    rec = SearchRecorder(tmp_path, agent="sensitivity", episodes=5, seed=0, base_accuracy=env.base_accuracy,
                         target=target, config=cfg.to_dict(), tensorboard=False, plot=False, resume=resume)
    return AGENTS.get("sensitivity")(env, cfg, rec), env, rec


@pytest.mark.parametrize(("mode", "target", "metric"), [("prune", "macs=0.5", "macs_ratio"),
                                                        ("joint", "bitops=0.04", "bitops_ratio")])
def test_sensitivity_meets_the_budget_and_resumes(tmp_path, model, digits, mode, target, metric):
    agent, env, rec = _agent(tmp_path, model, digits, mode=mode, target=target)
    agent.run(5)
    summary = rec.close(extra=agent.summary_extra())
    ratio = float(target.split("=")[1])
    n_probes = 1 + sum(len(agent.choices(i)) - 1 for i in range(env.n_decisions))
    assert summary["probes_run"] == n_probes and summary["evaluations"] == n_probes + 1
    pol = Policy.load(tmp_path / "best_policy.json")
    assert pol.achieved[metric] <= ratio + 1e-9
    assert summary["solver"]["exact_cost_ratio"] <= ratio + 1e-9 and summary["clipped"] is False
    rows = read_episodes(tmp_path / "episodes.csv")
    assert len(rows) == 1 and rows[0]["phase"] == "solver" and rows[0][metric] <= ratio + 1e-9
    table = (tmp_path / "sensitivity.csv").read_text()
    assert len(table.splitlines()) == n_probes + 1 and (tmp_path / "sensitivity.png").stat().st_size > 0
    # every probe changed one decision only: its cost is that of the all-1.0 policy with that one choice
    scores, costs, c0 = agent.matrices()
    assert all(c[-1] == 0.0 and s[-1] == 0.0 for s, c in zip(scores, costs))
    # the solver's choice is the knapsack's optimum at the capacity it settled on
    chosen_score = sum(s[j] for s, j in zip(scores, agent.chosen))
    assert chosen_score == pytest.approx(_brute_or_skip(scores, costs, summary["solver"]["capacity"] - c0))

    # resume: the table is read back, nothing is probed again, the same policy comes out
    agent2, _, rec2 = _agent(tmp_path, model, digits, mode=mode, target=target, resume=True)
    agent2.run(5)
    s2 = rec2.close(extra=agent2.summary_extra())
    assert s2["probes_run"] == 0 and s2["evaluations"] == 1
    assert agent2.chosen == agent.chosen and s2["best_reward"] == pytest.approx(summary["best_reward"])
    assert len(read_episodes(tmp_path / "episodes.csv")) == 1
    assert (tmp_path / "sensitivity.csv").read_text() == table


@pytest.mark.parametrize(("mode", "target"), [("joint", "bitops=0.3"), ("prune", "macs=0.5")])
def test_sensitivity_probes_around_the_uniform_policy(tmp_path, model, digits, mode, target):
    from agents.uniform import uniform_actions

    agent, env, rec = _agent(tmp_path, model, digits, mode=mode, target=target, around="uniform")
    start = uniform_actions(env)
    assert agent.start == pytest.approx(start)
    agent.run(5)
    summary = rec.close(extra=agent.summary_extra())
    metric = target.split("=")[0] + "_ratio"
    ratio = float(target.split("=")[1])
    assert Policy.load(tmp_path / "best_policy.json").achieved[metric] <= ratio + 1e-9 and summary["clipped"] is False
    assert summary["around"] == "uniform"
    rows = (tmp_path / "sensitivity.csv").read_text().splitlines()
    assert rows[1].split(",")[:5] == ["-1", "base", "", "0", "1.0"] and rows[1].split(",")[5] == "uniform"
    n_probes = 1 + sum(len(agent.choices(i)) - 1 for i in range(env.n_decisions))
    assert summary["probes_run"] == n_probes == len(rows) - 1
    # each probe is the uniform policy with one decision changed; the start's own choice costs and scores 0
    scores, costs, c0 = agent.matrices()
    assert c0 == pytest.approx(env.cost_of(start) / env.base_cost)
    for i, j in [(0, 0), (env.n_decisions - 1, 0)]:
        probe = [agent.choices(i)[j][0] if k == i else a for k, a in enumerate(start)]
        assert costs[i][j] == pytest.approx(env.cost_of(probe) / env.base_cost - c0)
    assert all(s[k] == 0.0 and c[k] == 0.0 for s, c, k in zip(scores, costs, agent.start_choice))
    # the uniform policy meets the budget, so the solver never settles for less than its (zero) score
    assert summary["solver"]["score"] >= 0.0
    if mode == "joint":  # W bits alone meet this budget: the start keeps every channel
        assert [agent.choices(i)[k][1] for i, k in enumerate(agent.start_choice)
                if agent.decisions[i].kind == "prune"] == [1.0] * sum(d.kind == "prune" for d in agent.decisions)

    # a table made around the uniform policy is not reused for probes around float
    agent2, _, _ = _agent(tmp_path, model, digits, mode=mode, target=target, resume=True)
    with pytest.raises(AmcError, match="another start"):
        agent2.build_table()


def test_sensitivity_never_buys_what_the_budget_does_not_price(tmp_path, model, digits):
    """Under ``size=`` activation bits cost nothing: every a_bits choice ties on cost, and the solver keeps
    the widest however the noisy probes score the others."""
    from agents.sensitivity import _undominated

    assert _undominated([[0.2, 0.1, 0.0], [-1.0, 0.0]], [[0.0, 0.0, 0.0], [-0.5, 0.0]]) == [[-2.0, -2.0, 0.0],
                                                                                            [-1.0, 0.0]]
    agent, env, rec = _agent(tmp_path, model, digits, mode="joint", target="size=0.2")
    agent.run(5)
    rec.close(extra=agent.summary_extra())
    pol = Policy.load(tmp_path / "best_policy.json")
    assert {ly.a_bits for ly in pol.layers} == {8} and pol.achieved["size_ratio"] <= 0.2 + 1e-9
    scores, costs, _ = agent.matrices()
    a_rows = [i for i, d in enumerate(agent.decisions) if d.kind == "a_bits"]
    assert a_rows and all(c == [0.0] * len(c) for c in (costs[i] for i in a_rows))


def _brute_or_skip(scores, costs, cap):
    if np.prod([len(s) for s in scores]) > 200_000:
        return solve_mckp(scores, costs, cap)[1]
    return _brute(scores, costs, cap)


def test_sensitivity_partial_table_is_completed(tmp_path, model, digits):
    agent, env, rec = _agent(tmp_path, model, digits)
    agent.run(5)
    rec.close(extra=agent.summary_extra())
    lines = (tmp_path / "sensitivity.csv").read_text().splitlines()
    (tmp_path / "sensitivity.csv").write_text("\n".join(lines[:-2]) + "\n")  # the last two probes are missing
    agent2, _, rec2 = _agent(tmp_path, model, digits, resume=True)
    agent2.run(5)
    assert agent2.probes_run == 2 and agent2.chosen == agent.chosen


def test_sensitivity_options_are_checked(tmp_path, model, digits):
    env = CompressionEnv(model, digits, EnvConfig())
    cfg = SearchConfig(checkpoint=str(REF), agent="sensitivity", run_dir=str(tmp_path))
    for kw, match in (({"grid": 1}, "grid=1: Input should be greater than or equal to 2"),
                      ({"nope": 1}, r"unknown sensitivity option\(s\) nope .*valid: grid, repair_steps")):
        with pytest.raises(AmcError, match=match):  # with the search config, before any work
            SearchConfig(checkpoint=str(REF), agent="sensitivity", run_dir=str(tmp_path), agent_kwargs=kw)
        cfg.agent_kwargs = kw  # set after the config's check: the agent checks again
        with pytest.raises(AmcError, match=match):
            AGENTS.get("sensitivity")(env, cfg, None)


def test_sensitivity_cli(tmp_path):
    from amc.cli import main

    run = tmp_path / "run"
    rc = main(["search", "--checkpoint", str(REF), "--dataset", "digits", "--agent", "sensitivity", "--target",
               "macs=0.6", "--agent-opt", "grid=3", "--run-dir", str(run), "--device", "cpu", "--no-progress"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["agent"] == "sensitivity" and summary["achieved"]["macs_ratio"] <= 0.6 + 1e-9
    assert (run / "sensitivity.csv").is_file() and (run / "sensitivity.png").is_file()
    from amc.cli import build_parser
    from amc.cli.search import config_from_args

    args = build_parser().parse_args(["search", "--checkpoint", str(REF), "--warm-start", str(run), "--run-dir",
                                      str(tmp_path / "ddpg")])
    assert config_from_args(args).warm_start == str(run)


def test_ddpg_warm_start_runs_the_policy_first(tmp_path, model, digits):
    sens_dir = tmp_path / "sens"
    agent, env, rec = _agent(sens_dir, model, digits, grid=3)
    agent.run(5)
    rec.close(extra=agent.summary_extra())
    pol = Policy.load(sens_dir / "best_policy.json")
    first = env.actions_for(pol)
    assert env.cost_of(first) == pytest.approx(env.cost_of(agent.solve()))  # the mapping gives the same policy

    run = tmp_path / "ddpg"
    cfg = SearchConfig(checkpoint=str(REF), agent="ddpg", target="macs=0.5", episodes=3, warmup=3, run_dir=str(run),
                       warm_start=str(sens_dir), agent_kwargs={"warm_start_neighbours": 1, "hidden": [16]})
    rec2 = SearchRecorder(run, agent="ddpg", episodes=3, seed=0, base_accuracy=env.base_accuracy, target="macs=0.5",
                          config=cfg.to_dict(), tensorboard=False, plot=False)
    ddpg = AGENTS.get("ddpg")(env, cfg, rec2)
    ddpg.run(3)
    rows = read_episodes(run / "episodes.csv")
    assert [r["phase"] for r in rows] == ["warmstart", "warmstart", "warmup"]
    assert rows[0]["accuracy"] == pytest.approx(pol.accuracy["val_top1"])
    assert rows[0]["macs_ratio"] == pytest.approx(pol.achieved["macs_ratio"])
    n = env.n_decisions
    stored = (ddpg.model.replay_buffer.actions[:2 * n, 0, 0] + 1.0) / 2.0  # SB3 stores [-1, 1] actions
    assert np.allclose(stored[:n], first, atol=1e-6)
    assert not np.allclose(stored[n:], first, atol=1e-3)  # the neighbour is a different episode
    with pytest.raises(AmcError, match="warm_start"):
        SearchConfig(checkpoint=str(REF), agent="ddpg", warm_start=str(tmp_path / "nothing"), run_dir=str(run))
    with pytest.raises(AmcError, match="ddpg"):
        SearchConfig(checkpoint=str(REF), agent="uniform", warm_start=str(sens_dir), run_dir=str(run))


def test_sensitivity_finds_the_toy_optimum(tmp_path):
    """The toy env's accuracy is separable and its cost additive, so table + knapsack is exact there
    up to the grid: the continuous optimum (water-filling) is 91.74, uniform keep gives 85."""
    env = ToyCompressionEnv(noise=0.0)
    cfg = SearchConfig(model="lenet5", agent="sensitivity", episodes=1, run_dir=str(tmp_path), agent_kwargs={"grid": 9})
    rec = SearchRecorder(tmp_path, agent="sensitivity", episodes=1, seed=0, base_accuracy=env.base_accuracy,
                         config=cfg.to_dict(), tensorboard=False, plot=False)
    agent = AGENTS.get("sensitivity")(env, cfg, rec)
    agent.run(1)
    optimum = env.accuracy(env.optimal_keep())
    assert optimum - 0.05 <= rec.best.accuracy <= optimum + 1e-9
    assert rec.best.metrics["macs_ratio"] <= env.target + 1e-9 and agent.clipped is False


def test_ddpg_warm_start_from_the_uniform_policy(tmp_path, model, digits):
    space = dict(w_bits=(2, 8), a_bits=(2, 8))
    w4a4 = CompressionEnv(model, digits, EnvConfig(mode="joint", target="bitops=0.5", **space)).uniform_bits_ratio(4)
    target = f"bitops={w4a4}"
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target=target, **space))
    cfg = SearchConfig(checkpoint=str(REF), agent="ddpg", mode="joint", target=target, episodes=2, warmup=2,
                       run_dir=str(tmp_path), warm_start="uniform",
                       agent_kwargs={"warm_start_neighbours": 0, "hidden": [16]})
    rec = SearchRecorder(tmp_path, agent="ddpg", episodes=2, seed=0, base_accuracy=env.base_accuracy, target=target,
                         config=cfg.to_dict(), tensorboard=False, plot=False)
    ddpg = AGENTS.get("ddpg")(env, cfg, rec)
    ddpg.run(2)
    rows = read_episodes(tmp_path / "episodes.csv")
    assert [r["phase"] for r in rows] == ["warmstart", "warmup"]
    assert rows[0]["bitops_ratio"] == pytest.approx(w4a4) and rows[0]["macs_ratio"] == pytest.approx(1.0)
