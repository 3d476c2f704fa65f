"""``amc fidelity``: does the score a search climbs predict the accuracy users get after fine-tuning?

A search is only as good as its score. This study samples policies at one budget, scores each with
every evaluation proxy (:mod:`amc.proxies`), fine-tunes each policy with one schedule and seed, and
reports how well each proxy's score ranks the policies by their fine-tuned val accuracy:

1. **Sample** ``policies`` policies at the budget: the uniform policy (largest equal keep ratio that
   meets the budget), random env episodes (uniform random actions, the env's budget clip, an
   optional budget band), and the best policies of given search run dirs.
2. **Score** each with every proxy (fp32, and the extra ``eval_precisions``), on the val split,
   timing the build (prune, reconstruction, proxy) and the evaluation. Per-image correctness is kept,
   so the same run also tells how fidelity moves with the number of val images; the ``bn`` proxy is
   also scored with each of ``calibration_sizes`` train images.
3. **Fine-tune** each policy for ``epochs`` with KD from the uncompressed model, starting from the
   plainly pruned weights (the same start for every proxy), resumable per policy and per epoch.
4. **Report** Spearman, Kendall and Pearson per proxy against the fine-tuned val top-1, over all
   policies and over those within 10 % of the budget, the top-3 overlap, and the seconds per policy:
   ``fidelity.json``, ``fidelity.md`` and one scatter plot per proxy.

Several processes may work on one study (``--resume`` with the same settings, e.g. one per core): the
first samples and scores while the others wait for it, then each fine-tunes the policies that no other
process holds (a lock per policy's run dir), and each writes the same report when every policy is done.

``mode`` picks the space: channel pruning (``prune``, the default), bit widths (``quant``) or both (``joint``).
With bits the scores are post-training quantization accuracies (activation ranges from two train batches, as
the search calibrates them) and the fine-tune is quantization-aware training with KD: the study then asks
whether the search's score predicts the accuracy after a short QAT, which HAQ's reward assumes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from amc.config.fidelity import DEFAULT_PROXIES, FidelityOptions
from amc.config.flat import flat_config
from amc.errors import AmcError
from amc.policy import Policy
from amc.proxies import parse_proxy
from amc.rundir import RunDirLock
from amc.training import PRECISIONS
from amc.utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from benchmarks.harness import changed_keys, fmt, loadavg, machine_info, md_table, read_result, safe_name

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PROXIES", "FidelityConfig", "run_fidelity", "rank_stats", "rank_cells", "render_markdown"]

#: policies within this fraction under the budget count as "near the budget"
NEAR = 0.10
#: config keys added since the first studies, with the value those studies had (their folders still resume)
ADDED_KEYS = {"mode": "prune", "w_bits": [2, 8], "a_bits": [2, 8]}


#: The study's settings, flat: one attribute per leaf of :class:`amc.config.fidelity.FidelityOptions` (the
#: checkpoint and data as ``amc search``, the budget and pruning space as its env, the sample, the
#: proxies and their images, one KD fine-tuning schedule as ``amc bench``'s ``ft_`` options, seed,
#: device and threads), which owns their defaults, descriptions and checks; a bad value raises
#: ``AmcError``. ``to_dict()`` is what ``config.json`` holds and is compared on resume.
FidelityConfig = flat_config("FidelityConfig", FidelityOptions, module=__name__, what="fidelity config",
                             doc="A fidelity study: the flat fields of amc.config.fidelity.FidelityOptions.")


# --------------------------------------------------------------------------------------------------
# statistics


def rank_stats(score: Sequence[float], truth: Sequence[float]) -> dict[str, float | int | None]:
    """Spearman, Kendall (tau-b) and Pearson of ``score`` against ``truth``, the top-3 overlap (how
    many of the 3 best by score are among the 3 best by truth) and ``n``. ``None`` where undefined
    (fewer than 3 points, or a constant series)."""
    from scipy.stats import kendalltau, pearsonr, spearmanr

    s, t = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
    if len(s) < 3 or np.ptp(s) == 0 or np.ptp(t) == 0:
        return {"n": len(s), "spearman": None, "kendall": None, "pearson": None, "top3": None}
    return {"n": len(s), "spearman": float(spearmanr(s, t).statistic),
            "kendall": float(kendalltau(s, t).statistic), "pearson": float(pearsonr(s, t).statistic),
            "top3": len(set(np.argsort(-s, kind="stable")[:3]) & set(np.argsort(-t, kind="stable")[:3]))}


def rank_cells(p: Mapping[str, Any]) -> list[str]:
    """Table cells of one proxy's :func:`analyse` entry: Spearman, Kendall, Pearson and the top-3 overlap
    over all policies, and Spearman near the budget."""
    st = p["all"]
    return [fmt(st["spearman"]), fmt(st["kendall"]), fmt(st["pearson"]), f"{fmt(st['top3'], 'd')}/3",
            fmt(p["near_budget"]["spearman"])]


# --------------------------------------------------------------------------------------------------
# the study


class _Study:
    def __init__(self, cfg: FidelityConfig, out: Path) -> None:
        from amc.data import get_dataset
        from amc.pruning import Pruner
        from amc.training import load_checkpoint
        from amc.utils import resolve_device

        self.cfg, self.out = cfg, out
        self.device = resolve_device(cfg.device)
        if cfg.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        if not Path(cfg.checkpoint).is_file():
            raise AmcError(f"checkpoint {cfg.checkpoint!r} does not exist (an `amc train` checkpoint)")
        self.base, ckpt = load_checkpoint(cfg.checkpoint, device=self.device)
        self.base.eval()
        self.spec = ckpt.get("model_spec")
        self.splits = get_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.data_seed)
        if len(self.splits.val) == 0:
            raise AmcError("the val split is empty: pass --val-size (the scores are val accuracies)")
        self.val = self.splits.tensors("val", device=self.device)
        self.pruner = Pruner(self.base, self.val[0][:1], seed=cfg.calibration_seed)

    # ------------------------------------------------------------- 1. sample
    def _env(self, band: float) -> Any:
        from envs import CompressionEnv, EnvConfig

        cfg = self.cfg
        ecfg = EnvConfig(mode=cfg.mode, target=cfg.target, lbound=cfg.lbound, round_to=cfg.round_to,
                         importance=cfg.importance, w_bits=cfg.w_bits, a_bits=cfg.a_bits, proxy="vanilla",
                         budget_band=band, device=str(self.device), seed=cfg.seed, calibration_seed=cfg.calibration_seed)
        x, y = self.val
        return CompressionEnv(self.base, self.splits, ecfg, model_spec=self.spec, val_data=(x[:8], y[:8]))

    def _uniform(self, env: Any) -> Policy:
        """The largest equal action the env applies unclipped (bisection; feasibility is monotone)."""
        from agents._base import play_episode

        n = env.n_decisions
        lo, hi = 0.0, 1.0
        best = play_episode(env, [0.0] * n)["policy"]
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            info = play_episode(env, [mid] * n)
            if all(abs(a - mid) < 1e-6 for a in info["actions"]):
                lo, best = mid, info["policy"]
            else:
                hi = mid
        return best

    def sample(self) -> list[dict[str, Any]]:
        from agents._base import play_episode
        from amc.compress import check_policy_matches

        path = self.out / "policies.json"
        if path.is_file():
            return json.loads(path.read_text())["policies"]
        cfg = self.cfg
        rows: list[dict[str, Any]] = []

        def add(source: str, pol: Policy) -> None:
            rows.append({"id": f"p{len(rows):02d}", "source": source, "policy": pol.to_dict(),
                         "achieved": dict(pol.achieved)})

        env = self._env(0.0)
        add("uniform", self._uniform(env))
        renv = self._env(cfg.budget_band) if cfg.budget_band > 0 else env
        rng = np.random.default_rng(cfg.seed)
        for _ in range(1, max(1, cfg.policies - len(cfg.runs))):
            add("random", play_episode(renv, rng.random(renv.n_decisions))["policy"])
        for run in cfg.runs:
            pol = Policy.load(Path(run) / "best_policy.json")
            check_policy_matches(pol, self.pruner)
            add(str(run), pol)
        atomic_write_json(path, {"policies": rows})
        return rows

    # ------------------------------------------------------------- 2. score
    def _policy_for(self, doc: dict[str, Any], proxy: str, cal: int) -> Policy:
        pol = Policy.from_dict(copy.deepcopy(doc))
        pol.scoring = dataclasses.replace(pol.scoring, proxy=parse_proxy(proxy).name, calibration_size=int(cal),
                                          calibration_seed=self.cfg.calibration_seed)
        return pol

    @torch.inference_mode()
    def _correct(self, model: nn.Module, precision: str) -> np.ndarray:
        x_all, y_all = self.val
        dtype = PRECISIONS[precision]
        if dtype is not None and x_all.dim() == 4:
            model = model.to(memory_format=torch.channels_last)
            x_all = x_all.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = [(model(x_all[i:i + 500]).argmax(1) == y_all[i:i + 500]).cpu()
                   for i in range(0, len(y_all), 500)]
        return torch.cat(out).numpy()

    def scorers(self) -> list[tuple[str, str, int, str]]:
        """``(key, proxy, calibration images, precision)`` of every score to compute."""
        cfg = self.cfg
        out = [(p, p, cfg.calibration_size, "fp32") for p in cfg.proxies]
        out += [(f"{p}@{prec}", p, cfg.calibration_size, prec) for prec in cfg.eval_precisions if prec != "fp32"
                for p in cfg.proxies]
        out += [(f"{proxy}#cal{n}", proxy, int(n), "fp32") for proxy in ("bn", "reconstruct")
                if proxy in cfg.proxies for n in cfg.calibration_sizes if int(n) != cfg.calibration_size]
        return out

    def score(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from amc.compress import apply_policy, draw_inputs

        path = self.out / "scores.json"
        doc = json.loads(path.read_text()) if path.is_file() else {}
        cdir = self.out / "correct"
        cdir.mkdir(exist_ok=True)
        for key, proxy, cal, prec in self.scorers():
            if key in doc and (cdir / f"{safe_name(key, '_')}.npy").is_file():
                continue
            # the same calibration images for every policy (ft:K: a few batches and the teacher's logits)
            inputs = draw_inputs(self.splits, proxy=parse_proxy(proxy), calibration_size=cal,
                                 calibration_seed=self.cfg.calibration_seed, quantizes=self.cfg.mode != "prune",
                                 device=self.device, teacher=self.base)
            correct, build_s, eval_s = [], [], []
            for r in rows:
                pol = self._policy_for(r["policy"], proxy, cal)
                t0 = time.perf_counter()
                model = apply_policy(self.base, pol, pruner=self.pruner, check=False, **inputs.kwargs())
                t1 = time.perf_counter()
                correct.append(self._correct(model.eval(), prec))
                eval_s.append(time.perf_counter() - t1)
                build_s.append(t1 - t0)
            arr = np.stack(correct)
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(cdir / f"{safe_name(key, '_')}.npy", buf.getvalue())
            doc[key] = {"proxy": proxy, "calibration_size": cal, "precision": prec,
                        "scores": [float(100.0 * c.mean()) for c in arr],
                        "build_s": float(np.median(build_s)), "eval_s": float(np.median(eval_s)),
                        "val_images": int(arr.shape[1])}
            atomic_write_json(path, doc)
            log.info("scored %d policies with %s: %.2f-%.2f %% (build %.3f s, eval %.3f s per policy)", len(rows), key,
                     min(doc[key]["scores"]), max(doc[key]["scores"]), doc[key]["build_s"], doc[key]["eval_s"])
        return doc

    # ------------------------------------------------------------- 3. fine-tune
    def finetune(self, rows: list[dict[str, Any]], *, progress: bool = False) -> list[dict[str, Any]]:
        from amc.compress import apply_policy, draw_inputs
        from amc.finetune import FinetuneConfig, finetune

        cfg = self.cfg
        fcfg = FinetuneConfig(epochs=cfg.epochs, lr=cfg.ft_lr, batch_size=cfg.ft_batch_size, kd=True,
                              kd_temperature=cfg.kd_temperature, kd_alpha=cfg.kd_alpha, seed=cfg.seed,
                              device=str(self.device), num_threads=cfg.threads, precision=cfg.ft_precision,
                              channels_last=cfg.ft_channels_last, eval_test=cfg.ft_test)
        # activation ranges of the fake-quantized students (QAT starts from them), as the scores calibrate them
        inputs = draw_inputs(self.splits, proxy=parse_proxy("vanilla"), calibration_size=cfg.calibration_size,
                             calibration_seed=cfg.calibration_seed, quantizes=cfg.mode != "prune", device=self.device)
        results: dict[str, dict[str, Any]] = {}
        pending = list(enumerate(rows))
        while pending:
            busy = []  # fine-tuned by another process of this study right now
            for i, r in pending:
                run_dir = self.out / "finetune" / r["id"]
                m = read_result(run_dir / "metrics.json")
                if m is None:
                    lock = RunDirLock(run_dir, command="amc fidelity")
                    try:
                        lock.acquire()
                    except AmcError:
                        busy.append((i, r))
                        continue
                    try:
                        m = read_result(run_dir / "metrics.json")  # another process may have just finished it
                        if m is None:
                            pol = self._policy_for(r["policy"], "vanilla", cfg.calibration_size)
                            student = apply_policy(self.base, pol, pruner=self.pruner, check=False,
                                                   **inputs.kwargs())
                            t0 = time.perf_counter()
                            m = finetune(student, self.splits, fcfg, run_dir=run_dir, teacher=self.base,
                                         resume=(run_dir / "last.pt").is_file(), model_spec=None,
                                         progress=progress, meta={"policy": r["policy"], "study": "amc fidelity"})
                            log.info("fine-tuned %s (%d/%d): val top-1 %.2f %% (%.0f s)", r["id"], i + 1,
                                     len(rows), m["val_top1"], time.perf_counter() - t0)
                            (run_dir / "last.pt").unlink(missing_ok=True)  # final.pt holds the result
                    finally:
                        lock.release()
                results[r["id"]] = {"id": r["id"], "val_top1": m["val_top1"], "test_top1": m.get("test_top1"),
                                    "train_time_s": m.get("train_time_s")}
            if busy and len(busy) == len(pending):
                log.info("waiting for %d fine-tune(s) of other processes: %s", len(busy), [r["id"] for _, r in busy])
                time.sleep(POLL_S)
            pending = busy
        return [results[r["id"]] for r in rows]


# --------------------------------------------------------------------------------------------------
# analysis


def analyse(cfg: FidelityConfig, rows: list[dict[str, Any]], scores: dict[str, Any], ft: list[dict[str, Any]],
            correct: dict[str, np.ndarray]) -> dict[str, Any]:
    """The report's numbers from the raw results (pure: tests call it on made-up data)."""
    from amc.policy import parse_target

    metric, ratio = parse_target(cfg.target)
    truth = np.array([f["val_top1"] for f in ft], dtype=float)
    achieved = np.array([r["achieved"].get(f"{metric}_ratio", float("nan")) for r in rows], dtype=float)
    near = achieved >= ratio * (1 - NEAR)
    out: dict[str, Any] = {"proxies": {}, "val_sizes": {}, "calibration_sizes": {}}
    for key, s in scores.items():
        sc = np.array(s["scores"], dtype=float)
        out["proxies"][key] = {
            "all": rank_stats(sc, truth), "near_budget": rank_stats(sc[near], truth[near]),
            "score_range": [float(sc.min()), float(sc.max())], "build_s": s["build_s"], "eval_s": s["eval_s"],
            "seconds_per_policy": s["build_s"] + s["eval_s"], "precision": s["precision"],
            "calibration_size": s["calibration_size"], "top_pick": rows[int(np.argmax(sc))]["id"],
        }
    params = np.array([r["achieved"].get("params_ratio", float("nan")) for r in rows], dtype=float)
    out["params_ratio"] = {"all": rank_stats(params, truth), "near_budget": rank_stats(params[near], truth[near])}
    n_val = len(next(iter(correct.values()))[0]) if correct else 0
    sizes = sorted({v for v in cfg.val_sizes if v <= n_val} | {n_val})
    for key in (k for k in scores if k in correct):
        out["val_sizes"][key] = {str(n): rank_stats(100.0 * correct[key][:, :n].mean(1), truth)["spearman"]
                                 for n in sizes}
    for proxy in [p for p in ("bn", "reconstruct") if p in scores]:
        rows_ = {scores[proxy]["calibration_size"]: proxy,
                 **{s["calibration_size"]: k for k, s in scores.items() if k.startswith(f"{proxy}#cal")}}
        if len(rows_) > 1:
            out["calibration_sizes"][proxy] = {
                str(n): {"spearman": out["proxies"][k]["all"]["spearman"],
                         "spearman_near": out["proxies"][k]["near_budget"]["spearman"], "build_s": scores[k]["build_s"]}
                for n, k in sorted(rows_.items())}
    out["policies"] = [{"id": r["id"], "source": r["source"], "achieved": r["achieved"].get(f"{metric}_ratio"),
                        "params_ratio": r["achieved"].get("params_ratio"), "ft_val_top1": f["val_top1"],
                        "ft_test_top1": f.get("test_top1"),
                        **{f"score_{k}": scores[k]["scores"][i] for k in scores if "#" not in k and "@" not in k}}
                       for i, (r, f) in enumerate(zip(rows, ft))]
    out["best_after_finetune"] = rows[int(np.argmax(truth))]["id"]
    uni = [i for i, r in enumerate(rows) if r["source"] == "uniform"]
    if uni:
        out["uniform_rank_after_finetune"] = int((truth > truth[uni[0]]).sum()) + 1
    out["near_budget_count"] = int(near.sum())
    return out


def render_markdown(doc: dict[str, Any]) -> str:
    """``fidelity.md``: the proxy table, the val-size and calibration-size curves, the policies."""
    cfg, a = doc["config"], doc["analysis"]
    lines = [
        "# Fidelity of the evaluation proxies",
        "",
        f"`{cfg['checkpoint']}` on {cfg['dataset']}, mode {cfg.get('mode', 'prune')}, budget `{cfg['target']}`, "
        f"{len(a['policies'])} policies "
        f"(uniform + random episodes{', band ' + str(cfg['budget_band']) if cfg['budget_band'] else ''}"
        f"{' + search runs' if cfg['runs'] else ''}), each fine-tuned {cfg['epochs']} epoch(s) with KD "
        f"(lr {cfg['ft_lr']}, batch {cfg['ft_batch_size']}, seed {cfg['seed']}, {cfg['ft_precision']}). Scores on "
        f"{doc['val_images']} val images; {cfg['calibration_size']} calibration train images (seed "
        f"{cfg['calibration_seed']}). Rank correlations against the fine-tuned val top-1; 'near' = the "
        f"{a['near_budget_count']} policies within {int(NEAR * 100)} % under the budget. Load average "
        f"{doc['loadavg_start']} at the start, {doc['loadavg_end']} at the end; threads: {doc['machine']['threads']}.",
        "",
    ]
    rows = [[key, *rank_cells(p), "{:.1f}-{:.1f}".format(*p["score_range"]),
             f"{p['seconds_per_policy']:.2f} ({p['build_s']:.2f} + {p['eval_s']:.2f})", p["top_pick"]]
            for key, p in a["proxies"].items()]
    if a.get("params_ratio"):
        rows.append(["params ratio (no model: a reference)", *rank_cells(a["params_ratio"]), "-", "0", "-"])
    lines += md_table(["proxy", "Spearman", "Kendall", "Pearson", "top-3 overlap", "Spearman near",
                       "scores (%)", "s / policy (build + eval)", "top pick"], rows)
    if a["val_sizes"]:
        sizes = sorted({int(n) for c in a["val_sizes"].values() for n in c})
        curves = [[key, *(fmt(c.get(str(n))) for n in sizes)] for key, c in a["val_sizes"].items()]
        lines += ["", "Spearman by number of val images (prefixes of the val split):", "",
                  *md_table(["proxy", *map(str, sizes)], curves)]
    for proxy, cs in (a.get("calibration_sizes") or {}).items():
        lines += ["", f"`{proxy}` by number of calibration images:", "",
                  *md_table(["calibration images", *cs], [
                      ["Spearman", *(fmt(v["spearman"]) for v in cs.values())],
                      ["Spearman near", *(fmt(v["spearman_near"]) for v in cs.values())],
                      ["build s / policy", *(fmt(v["build_s"], ".3f") for v in cs.values())]])]
    keys = [k for k in a["policies"][0] if k.startswith("score_")] if a["policies"] else []
    rows = [[p["id"], p["source"] if p["source"] in ("uniform", "random") else "run",
             fmt(p["achieved"], ".3f"), fmt(p["params_ratio"], ".3f"), fmt(p["ft_val_top1"]),
             fmt(p["ft_test_top1"]), *(fmt(p[k]) for k in keys)] for p in a["policies"]]
    head = ["policy", "source", "achieved", "params", "FT val", "FT test", *(k[6:] for k in keys)]
    lines += ["", *md_table(head, rows), "",
              f"Best after fine-tuning: {a['best_after_finetune']}; uniform ranks "
              f"{a.get('uniform_rank_after_finetune', '-')} of {len(a['policies'])}.", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], out: Path) -> list[str]:
    """One scatter plot per proxy (fp32, default calibration): score vs fine-tuned val top-1."""
    from matplotlib.figure import Figure

    a = doc["analysis"]
    truth = [p["ft_val_top1"] for p in a["policies"]]
    colors = ["tab:red" if q["source"] == "uniform" else "tab:blue" for q in a["policies"]]
    files = []
    for key, p in a["proxies"].items():
        if "#" in key or "@" in key:
            continue
        ax = Figure(figsize=(4.5, 3.6), layout="constrained").add_subplot()
        ax.scatter([q[f"score_{key}"] for q in a["policies"]], truth, c=colors, s=22)
        ax.set(xlabel=f"score: val top-1 with proxy {key} (%)", ylabel="val top-1 after fine-tuning (%)")
        ax.set_title(f"{key}: Spearman {fmt(p['all']['spearman'])}, Kendall {fmt(p['all']['kendall'])}",
                     fontsize=10)
        ax.grid(alpha=0.3)
        path = out / f"scatter-{safe_name(key, '_')}.png"
        ax.figure.savefig(path, dpi=110)
        os.chmod(path, 0o644)
        files.append(path.name)
    return files


#: seconds between looks at a lock that another process of the same study holds
POLL_S = 10.0


@contextlib.contextmanager
def _wait_for_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s run-dir lock for the block, waiting while another process holds it."""
    lock = RunDirLock(directory, command="amc fidelity")
    while True:
        try:
            lock.acquire()
            break
        except AmcError as e:
            log.info("%s; waiting", e)
            time.sleep(POLL_S)
    try:
        yield
    finally:
        lock.release()


def run_fidelity(cfg: FidelityConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the study in ``out_dir`` and write its report; returns ``fidelity.json``'s content.
    ``progress`` shows each fine-tune's progress bar (``amc fidelity`` turns it on)."""
    out = Path(out_dir)
    saved = out / "config.json"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise AmcError(f"{out} already holds a fidelity study: pass --resume to continue it or --overwrite to "
                           "start again")
        elif saved.is_file():
            diff = changed_keys({**ADDED_KEYS, **json.loads(saved.read_text())}, cfg.to_dict(),
                                ignore={"threads", "device"})
            if diff:
                raise AmcError(f"{out} holds a study with other settings ({', '.join(diff)}); use another --out "
                               "or --overwrite")
    load0 = loadavg()
    study = _Study(cfg, out)  # validates checkpoint and data before writing anything
    out.mkdir(parents=True, exist_ok=True)
    with _wait_for_lock(out):  # one process samples and scores; the others wait, then share the fine-tunes
        atomic_write_json(saved, cfg.to_dict())
        rows = study.sample()
        scores = study.score(rows)
    ft = study.finetune(rows, progress=progress)
    correct = {k: np.load(out / "correct" / f"{safe_name(k, '_')}.npy") for k in scores}
    scores = {k: scores[k] for k, *_ in study.scorers() if k in scores}
    doc = {"format": "amc-fidelity", "version": 1, "config": cfg.to_dict(), "val_images": int(len(study.val[1])),
           "loadavg_start": load0, "loadavg_end": loadavg(), "machine": machine_info(),
           "finetune": ft, "scores": scores}
    doc["analysis"] = analyse(cfg, rows, scores, ft, correct)
    doc["figures"] = plot(doc, out)
    atomic_write_json(out / "fidelity.json", doc)
    atomic_write_text(out / "fidelity.md", render_markdown(doc))
    return doc
