"""Hyperparameter search: ``edgesent finetune --search N`` and ``edgesent search-report``.

Optuna drives the search directly (a study with a seeded ``TPESampler`` and a ``MedianPruner``) and every
trial is one call of ``edgesent.train.fit_candidate``, the same Trainer set-up as ``edgesent finetune``.
``Trainer.hyperparameter_search`` was not used because, in the transformers this project pins, it
(1) reports to the pruner at the global step, so trials with different batch sizes or epochs never share a
step and the median pruner compares nothing; (2) scores a trial by its last evaluation, while training keeps
the best epoch (early stopping, ``load_best_model_at_end``); and (3) can only set ``TrainingArguments``
fields, so ``class_weights`` (a loss, not an argument) could not be searched.

A trial's score is the metric training selects its best epoch by (macro-F1 for classification), reported
after every evaluation (epoch), so the pruner stops a hopeless trial after its first. Trials may train on a
stratified subset (``SearchConfig.subset``); the best configuration is then retrained on the full training
data by ``edgesent.train.train``, which writes the usual atomic model directory; its manifest records the
search under ``search`` (every trial's parameters, score, state and duration, the space, sampler and seed).

This module imports torch, transformers and optuna only inside :func:`search_hyperparameters`, so
``edgesent search-report`` reads a manifest without them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgesent.artifacts import atomic_output_dir, check_output_dir, read_manifest, scratch_dir, write_manifest
from edgesent.config.search import SearchConfig
from edgesent.errors import MissingDependencyError, ModelError, TrainingError


if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

__all__ = ["SearchConfig", "read_search", "search_hyperparameters", "trial_table", "write_search_report"]

DIRECTION: Literal["maximize"] = "maximize"  # the selection metrics (macro-F1, span F1) grow with quality
REPORT_KIND = "search-report"
REPORT_MD = "trials.md"
REPORT_JSON = "trials.json"
PLOT_NAME = "score_vs_lr.png"


def search_hyperparameters(cfg: SearchConfig) -> dict[str, Any]:
    """Search hyperparameters, then retrain the best configuration on all the training data and save it.

    Args:
        cfg: the search; ``cfg.train`` holds the data, base, output and the settings not searched.

    Returns:
        The saved model's manifest (as :func:`edgesent.train.train` returns it), whose ``search`` key
        records the trials, the space, the sampler, the pruner and the seed.

    Raises:
        MissingDependencyError: optuna is not installed (``pip install 'edgesent[search]'``).
        ConfigError, DataError, ModelError: as ``edgesent finetune``, before the first trial.
        TrainingError: no trial completed (all failed or pruned), or the retrained model is not finite.
    """
    from edgesent._imports import require_search_extra

    require_search_extra("finetune --search")
    import optuna

    from edgesent import train as training  # torch tier: imported here so search-report stays light
    from edgesent.ddp import process_group, rank0_says

    started = time.perf_counter()
    base = cfg.train
    sources = [p for p in (base.data, base.eval_data, Path(training.resolve_base(base.base))) if p and p.exists()]
    check_output_dir(Path(base.out or training.default_out_dir(base)), base.overwrite, sources)  # before the hours
    base, inputs = training.prepare_run(base, cfg.subset)
    if inputs.subset is not None:
        logger.info("trials train on a seeded subset of %d rows", inputs.subset["rows"])
    sampler = optuna.samplers.TPESampler(seed=base.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=0)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours (_log_trial)
    # The deadline is read on rank 0's clock and broadcast after every trial (not Optuna's timeout, which each
    # rank of a torchrun search would check on its own clock: one would start a trial the other never joins).
    deadline = time.perf_counter() + cfg.timeout_minutes * 60 if cfg.timeout_minutes else None
    _, world = process_group(inputs.device)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _log_trial(study, trial, cfg.trials)
        if deadline is not None and rank0_says(time.perf_counter() >= deadline, world):
            study.stop()

    try:
        study = optuna.create_study(direction=DIRECTION, sampler=sampler, pruner=pruner)
        with scratch_dir("search") as root:
            study.optimize(
                lambda trial: _run_trial(trial, cfg, inputs, root, training.fit_candidate),
                n_trials=cfg.trials,
                callbacks=[after_trial],
            )
    finally:
        optuna.logging.set_verbosity(verbosity)
    trials = [_trial_record(t) for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        states = ", ".join(f"{t['number']}: {t['state']}" for t in trials)
        raise TrainingError(f"no search trial completed ({states}); nothing was saved; widen or lower the space")
    best = study.best_trial
    record = {
        "objective": best.user_attrs["metric"],
        "direction": DIRECTION,
        "trials_requested": cfg.trials,
        "timeout_minutes": cfg.timeout_minutes,
        "space": cfg.space,
        "space_file": str(cfg.space_file) if cfg.space_file else None,
        "fixed": list(cfg.fixed),
        "sampler": {"name": type(sampler).__name__, "seed": base.seed},
        "pruner": {"name": type(pruner).__name__, "n_startup_trials": cfg.startup_trials, "n_warmup_steps": 0},
        "subset": inputs.subset,
        "trials": trials,
        "best": {"number": best.number, "params": dict(best.params), "score": best.value},
        "search_time_s": round(time.perf_counter() - started, 2),
        "optuna": optuna.__version__,
    }
    best_cfg = dataclasses.replace(base, **best.params)
    logger.info("retraining the best configuration (trial %d) on all the training data", best.number)
    return training.train(best_cfg, manifest_extra={"search": record})


def _suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's parameters, drawn from the (validated) space."""
    params: dict[str, Any] = {}
    for name, entry in space.items():
        kind = entry["type"]
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, entry["choices"])
        elif kind == "int":
            params[name] = trial.suggest_int(name, entry["low"], entry["high"])
        else:
            params[name] = trial.suggest_float(name, entry["low"], entry["high"], log=kind == "log_float")
    return params


def _run_trial(trial: optuna.Trial, cfg: SearchConfig, inputs: Any, root: Path, fit: Any) -> float:
    """One trial: train the suggested configuration, report every evaluation to the pruner, return the score."""
    import optuna

    params = _suggest(trial, cfg.space or {})
    trial_cfg = dataclasses.replace(cfg.train, **params)

    def report(evaluation: int, value: float, final: bool) -> None:
        trial.report(value, evaluation)
        if not final and trial.should_prune():  # a finished trial is complete, whatever its score
            raise optuna.TrialPruned(f"pruned after evaluation {evaluation}")

    work_dir = root / f"trial-{trial.number}"
    try:
        result = fit(trial_cfg, inputs, work_dir, report)
    except TrainingError as err:  # a diverged trial (too high a learning rate) is recorded, not fatal
        trial.set_user_attr("error", str(err))
        return math.nan  # optuna marks the trial failed and goes on
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # one trial's checkpoints on disk at a time
    trial.set_user_attr("metric", result["metric"])
    trial.set_user_attr("best_epoch", result["best_epoch"])
    return float(result["score"])


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What the manifest keeps of a trial: a pruned trial's score is its last reported value."""
    state = trial.state.name.lower()
    steps = trial.intermediate_values
    score = trial.value if state == "complete" else (steps[max(steps)] if steps else None)
    record = {
        "number": trial.number,
        "params": dict(trial.params),
        "score": score,
        "state": state,
        "seconds": round(trial.duration.total_seconds(), 2) if trial.duration else None,
        "scores_by_epoch": [steps[step] for step in sorted(steps)],
        "best_epoch": trial.user_attrs.get("best_epoch"),
    }
    if "error" in trial.user_attrs:
        record["error"] = trial.user_attrs["error"]
    return record


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(
        f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
    )


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, total: int) -> None:
    """The progress line of a finished trial: number, parameters, score, pruned or not, time, best so far."""
    record = _trial_record(trial)
    score = "n/a" if record["score"] is None else f"{record['score']:.4f}"
    if record["state"] == "pruned":
        outcome = f"pruned after epoch {len(record['scores_by_epoch'])} at {score}"
    elif record["state"] == "complete":
        outcome = f"score {score} (best epoch {record['best_epoch']:g})"
    else:
        outcome = f"failed: {record.get('error', 'see the log')}"
    completed = [t for t in study.trials if t.value is not None and not math.isnan(t.value)]
    best = max(completed, key=lambda t: t.value or 0.0) if completed else None
    lead = f"; best {best.value:.4f} (trial {best.number})" if best is not None else ""
    logger.info(
        "trial %d/%d %s: %s [%.1f s]%s",
        trial.number + 1,
        total,
        outcome,
        _format_params(record["params"]),
        record["seconds"] or 0.0,
        lead,
    )


# --- search-report: light, reads the manifest only ------------------------------------------------------------


def read_search(model_dir: Path) -> dict[str, Any]:
    """The ``search`` record of a model directory's manifest.

    Raises:
        ModelError: no manifest, or a model not made by ``edgesent finetune --search``.
    """
    manifest = read_manifest(Path(model_dir))
    search = manifest.get("search")
    if not isinstance(search, dict) or not isinstance(search.get("trials"), list):
        raise ModelError(
            f"{model_dir}: its manifest records no hyperparameter search; make one with finetune --search"
        )
    return search


def trial_table(search: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the trials table: number (``*`` marks the best), parameters, score, state, seconds."""
    names = list(search.get("space") or {})
    best = search.get("best", {}).get("number")
    rows = []
    for trial in search["trials"]:
        params = trial.get("params", {})
        cells = [f"{params[n]:.3g}" if isinstance(params.get(n), float) else params.get(n) for n in names]
        mark = "*" if trial["number"] == best else ""
        seconds = trial.get("seconds")
        took = f"{seconds:.1f}" if isinstance(seconds, (int, float)) else None
        rows.append([f"{trial['number']}{mark}", *cells, trial.get("score"), trial["state"], took])
    return ["trial", *names, search.get("objective", "score"), "state", "seconds"], rows


def write_search_report(model_dir: Path, report_dir: Path, overwrite: bool = False) -> Path:
    """Write ``trials.md``, ``trials.json`` and ``score_vs_lr.png`` for a searched model, atomically with a manifest.

    Args:
        model_dir: a model directory made by ``edgesent finetune --search``.
        report_dir: the report directory to create.
        overwrite: replace an existing report directory (default False).

    Returns:
        ``report_dir``.

    Raises:
        ModelError: ``model_dir`` records no search.
        MissingDependencyError: matplotlib is missing (``pip install 'edgesent[bench]'``).
        ConfigError: ``report_dir`` exists without ``overwrite``, or cannot be written.
    """
    search = read_search(model_dir)
    manifest = read_manifest(Path(model_dir))
    try:
        import matplotlib
    except ModuleNotFoundError as err:
        raise MissingDependencyError(
            "the score plot needs matplotlib; install it with: pip install 'edgesent[bench]'"
        ) from err
    matplotlib.use("Agg")
    fixed_lr = manifest.get("hyperparameters", {}).get("lr")
    with atomic_output_dir(Path(report_dir), overwrite=overwrite, sources=[model_dir], kind=REPORT_KIND) as tmp:
        payload = {"model_dir": str(model_dir), "metrics": manifest.get("metrics"), "search": search}
        (tmp / REPORT_JSON).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        _plot_score_vs_lr(search, fixed_lr, tmp / PLOT_NAME)
        (tmp / REPORT_MD).write_text(_markdown(search, model_dir), encoding="utf-8")
        write_manifest(tmp, REPORT_KIND, {"source": str(model_dir), "trials": len(search["trials"])})
    return Path(report_dir)


def _markdown(search: dict[str, Any], model_dir: Path) -> str:
    headers, rows = trial_table(search)

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)

    table = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    table += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    best = search["best"]
    sampler, pruner = search["sampler"], search["pruner"]
    lines = [
        f"# Hyperparameter search of `{model_dir}`",
        "",
        (
            f"{len(rows)} trial(s) maximising {search['objective']}; {sampler['name']} (seed {sampler['seed']}), "
            f"{pruner['name']} after {pruner['n_startup_trials']} completed trial(s). Best: trial {best['number']} "
            f"({search['objective']} {best['score']:.4f}): {_format_params(best['params'])}. `*` marks it."
        ),
        "",
        *table,
        "",
        f"![{search['objective']} against learning rate]({PLOT_NAME})",
        "",
        "Space: `" + json.dumps(search["space"]) + "`",
        "",
    ]
    return "\n".join(lines)


def _plot_score_vs_lr(search: dict[str, Any], fixed_lr: float | None, path: Path) -> None:
    """Score against learning rate (log axis): completed trials as dots, pruned as crosses, the best ringed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(6, 4))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        points = [
            (t["params"].get("lr", fixed_lr), t["score"])
            for t in search["trials"]
            if t["state"] == state and t.get("score") is not None
        ]
        if points:
            ax.scatter(*zip(*points), marker=marker, label=state)
    best = search["best"]
    ax.scatter(
        [best["params"].get("lr", fixed_lr)], [best["score"]], s=160, facecolors="none", edgecolors="red", label="best"
    )
    ax.set(
        xscale="log", xlabel="learning rate", ylabel=search["objective"], title="trials: score against learning rate"
    )
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log ticks' labels overlap on a narrow range
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
