"""The one pipeline: a validated recipe runs through its method's hooks on the one Trainer into
a run folder; a run folder of any method is loaded back the same way.

``run(cfg, out_dir=...)`` validates the recipe (:mod:`spikequant.train.recipe`), checks the run
folder (:mod:`spikequant.runfolder`: writable, not holding another run, not locked), trains,
and writes ``metrics.json``. ``load_run_model(path)`` rebuilds the model of any run from the
method named in its metadata.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import runfolder
from .checkpoint import load_checkpoint
from .devices import model_device
from .errors import CheckpointError, ConfigError, ConversionError, RunFolderError
from .io import log_to_stderr as log
from .io import write_json
from .train import distributed
from .train.recipe import validate_recipe
from .train.trainer import Trainer


def create_method(cfg: dict):
    """The training method named in ``cfg["method"]["name"]``, built for the validated recipe
    ``cfg``."""
    from .methods import get_method

    return get_method(cfg["method"]["name"])(cfg)


def run(
    cfg: dict,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train recipe ``cfg`` into the run folder ``out_dir``; returns the final metrics.

    ``resume`` continues the run in ``out_dir`` from its newest good epoch (refused if it was
    made with other settings, unless ``force``); ``overwrite`` replaces a run there.
    ``stop_after`` stops after that many epochs of this call, as if killed (tests).
    """
    cfg = validate_recipe(cfg)
    method = create_method(cfg)
    out_dir = Path(out_dir)
    here = distributed.setup(cfg["train"]["device"])
    distributed.resolve_device(cfg["train"]["device"])  # an unusable device fails before work
    lock = runfolder.RunLock(out_dir) if here.main else contextlib.nullcontext()
    problem = None
    if here.main:  # rank 0 owns the run folder; the others stop with its error, if any
        try:
            runfolder.check_writable(out_dir)
            lock.__enter__()  # before prepare: --overwrite must not delete a running run's files
            runfolder.prepare(out_dir, resume=resume, overwrite=overwrite)
            if resume:
                refuse_changed_settings(out_dir, cfg, force)
        except RunFolderError as exc:
            problem = str(exc)
            lock.__exit__(None, None, None)
    problem = distributed.broadcast_error(problem)
    if problem is not None:
        raise RunFolderError(problem)
    try:
        with _threads(cfg["train"]["threads"]):
            return _train(cfg, method, out_dir, resume, progress and here.main, stop_after)
    finally:
        lock.__exit__(None, None, None)


def _train(cfg, method, out_dir: Path, resume: bool, progress: bool, stop_after) -> dict:
    train_set, test_set = method.datasets()
    torch.manual_seed(cfg["seed"])  # the initial weights depend on the seed only
    model = method.build_model()
    method.prepare_model(model, train_set)
    check_model_fits_data(model, method.scores, train_set, cfg["model"]["name"])
    main = distributed.world().main
    if main and not (resume and (out_dir / runfolder.RUN_FILE).is_file()):
        runfolder.write_run_file(out_dir, {"method": method.name, "recipe": cfg})
    meta = {
        "method": method.name,
        "model": method.model_spec(),
        "recipe": cfg,
        "dataset": cfg["data"]["name"],
    }
    trainer = Trainer(
        model,
        cfg,
        train_set,
        test_set,
        out_dir=out_dir,
        meta=meta,
        hooks=method,
        augment=method.augment(),
        epochs=method.total_epochs(),
        progress=progress,
        log=log if progress else None,
    )
    resumed_from = None
    if resume:
        if trainer.resume():
            resumed_from = trainer.epoch
            log(f"resumed {out_dir} after epoch {trainer.epoch}")
        else:
            log(f"no checkpoint in {out_dir} yet: starting from epoch 1")
    final = trainer.fit(stop_after=stop_after)
    if "stopped_after_epoch" in final:
        return final
    if not main:  # rank 0 reports; the others only trained
        return {"rank": distributed.world().rank, "epochs": trainer.epoch}
    final = {f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in final.items()}
    result = {
        "name": cfg["name"],
        "method": method.name,
        "dataset": cfg["data"]["name"],
        "model": trainer.hooks.checkpoint_meta(trainer)["model"],
        "epochs": trainer.epoch,
        "resumed_from_epoch": resumed_from,
        "processes": distributed.world().size,
        "device": str(trainer.device),
        "precision": trainer.precision,
        "train_seconds": sum(r["seconds"] for r in trainer.history),
        **final,
    }
    result.update(method.final_metrics(trainer, final))
    result["history"] = trainer.history
    result["checkpoint"] = str(out_dir / runfolder.LATEST)
    write_json(out_dir / runfolder.METRICS, result)
    return result


def check_model_fits_data(model: nn.Module, scores, dataset, name: str) -> None:
    """One sample through the model before training: a shape mismatch between recipe and data
    (input size, channels, classes) is a one-line ConfigError now, not a traceback later."""
    from .neurons import reset_state

    if len(dataset) == 0:
        raise ConfigError("the training set is empty (check data.train_subset and the dataset)")
    x, y = dataset[0]
    # on the model's device: a model moved to a GPU must not look like a shape mismatch
    device = model_device(model)
    x = torch.as_tensor(x).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reset_state(model)
            out = scores(model(x))
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model {name!r} does not fit the data (sample shape {list(x.shape[1:])}): {reason}"
        ) from None
    finally:
        reset_state(model)
        model.train(was_training)
    classes = out.shape[-1]
    label = int(torch.as_tensor(y).max())
    if label >= classes:
        raise ConfigError(
            f"model {name!r} has {classes} outputs but the data has label "
            f"{label}; set model.kwargs.num_classes to the dataset's class count"
        )


def refuse_changed_settings(out_dir: Path, cfg: dict, force: bool) -> None:
    """``--resume`` continues a run only with the settings it was made with (its description,
    which configures nothing, may differ)."""
    record = runfolder.read_run_file(out_dir)
    if record is None:
        return
    stored, now = record.get("recipe"), json.loads(json.dumps(cfg))
    if isinstance(stored, dict):
        stored = {k: v for k, v in stored.items() if k != "description"}
    now.pop("description", None)
    differing = sorted(_differing_keys(stored, now))
    if differing and not force:
        raise RunFolderError(
            f"{out_dir} was made with other settings ({', '.join(differing[:6])}"
            f"{' ...' if len(differing) > 6 else ''}); resume with the same recipe and --set "
            "values, or add --force to continue with the new ones"
        )
    if differing:
        log(f"--force: continuing {out_dir} with changed {', '.join(differing)}")
        runfolder.write_run_file(out_dir, {**record, "recipe": cfg})


def _differing_keys(stored: Any, now: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ. A key the stored recipe lacks is not a difference: the run
    was made before that option existed and so ran with its default."""
    if isinstance(stored, dict) and isinstance(now, dict):
        keys = []
        for key in sorted(set(stored) | set(now)):
            if key not in stored and prefix:
                continue
            path = f"{prefix}.{key}" if prefix else key
            keys += _differing_keys(stored.get(key), now.get(key), path)
        return keys
    return [] if stored == now else [prefix or "(recipe)"]


@contextlib.contextmanager
def _threads(threads: int):
    """``train.threads``: torch's intra-op threads for the run, restored afterwards."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- loading


def run_method_name(meta: dict) -> str:
    """The training method that wrote a checkpoint (older checkpoints say ``kind``); for a
    checkpoint that names none, the method of its model's family."""
    from .registry import model_family

    named = meta.get("method") or meta.get("kind")
    if named:
        return str(named)
    model = meta.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    try:
        family = model_family(name) if isinstance(name, str) else None
    except ConfigError:
        family = None
    return {"ann": "qat", "ttfs": "ttfs"}.get(family, "direct")


def load_run_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a run folder or checkpoint folder of any method, rebuilt by that method
    (quantizers, gates, folded BN included) with its weights, and the checkpoint metadata."""
    from .methods import get_method

    folder = runfolder.resolve(path)
    state, meta = load_checkpoint(folder)
    spec = meta.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"checkpoint {folder} does not name its model in meta.json")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise CheckpointError(f"checkpoint {folder}: model kwargs must be a mapping")
    if run_method_name(meta) == "conversion":
        from .convert.saved import load_converted

        try:
            model = load_converted(state, meta)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {folder}: {exc}") from None
        check_finite_weights(model, str(folder))
        return model, meta
    try:
        method = get_method(run_method_name(meta))
        model = method.rebuild(meta)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {folder} cannot be rebuilt: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"weights in {folder} do not fit model {spec['name']!r}: "
            f"{first[1].strip() if len(first) > 1 else first[0]}"
        ) from None
    check_finite_weights(model, str(folder))
    return model, meta


def run_data_root(meta: dict) -> str | None:
    """The data folder a run was trained from (its recipe's ``data.root``; None: the default)."""
    recipe = meta.get("recipe")
    data = recipe.get("data") if isinstance(recipe, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    return root if isinstance(root, str) else None


def run_scores(meta: dict):
    """The class-score function of a run's method (argmax = prediction)."""
    from .methods import get_method

    if run_method_name(meta) == "conversion":
        return _logits  # a converted network returns [B, classes] logits
    return get_method(run_method_name(meta)).scores


def _logits(out: torch.Tensor) -> torch.Tensor:
    return out


def require_ann(meta: dict, path) -> None:
    """Conversion starts from an ANN: refuse a spiking run with one line naming its method."""
    from .registry import model_family

    if run_method_name(meta) == "conversion":
        conversion = meta.get("conversion") or {}
        raise ConversionError(
            f"{path} is already a spiking network ({conversion.get('method')} conversion at "
            f"T = {conversion.get('timesteps')}); convert its source ANN run instead"
        )
    family = model_family(meta["model"]["name"])
    if family != "ann":
        raise ConversionError(
            f"convert needs an ANN run (method qat); {path} is a {family} run of method "
            f"{run_method_name(meta)}"
        )


def check_finite_weights(model: nn.Module, where: str) -> None:
    """Refuse a model whose weights hold NaN or infinity (evaluating it would report chance)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: weight {name} holds NaN or infinity")
