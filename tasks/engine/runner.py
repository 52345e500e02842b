"""Run one composed config: build datamodule, task and trainer; fit, test or predict."""

from __future__ import annotations

import inspect
import logging
import platform
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks import fused
from tasks._files import (
    ensure_folder,
    not_finite,
    other_rank,
    refuse_previous_run,
    write_csv,
    write_json,
    write_text_atomic,
)
from tasks._plots import save_history_plot
from tasks.batches import unshard
from tasks.callbacks import ResumeState
from tasks.engine import registry as _registry
from tasks.errors import ConfigError, DataError, RunInterrupted, did_you_mean

log = logging.getLogger(__name__)
MODES = ("train", "test", "predict", "generate", "export", "cv")


def _container(node: Any) -> Any:
    """Plain Python values (no OmegaConf nodes) so that hparams pickle cleanly."""
    if not OmegaConf.is_config(node):
        return node
    return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)


def accepted_arguments(cls: type) -> set[str] | None:
    """Constructor arguments along the chain of ``__init__``s that forward ``**kwargs``.

    None means some constructor accepts arbitrary keywords without forwarding them.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(
            p.name
            for p in params
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        )
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def _check_arguments(cls: type, kwargs: dict[str, Any], option: str) -> set[str] | None:
    accepted = accepted_arguments(cls)
    if accepted is None:
        return None
    for key in kwargs:
        if key not in accepted:
            hint = did_you_mean(key, sorted(accepted), render=lambda c: f"{option}.{c}")
            raise ConfigError(
                f"{option}.{key} is not an argument of {cls.__module__}.{cls.__qualname__}.{hint} "
                f"Its arguments: {', '.join(sorted(accepted))}"
            )
    return accepted


def _section(cfg: DictConfig, key: str) -> tuple[str, dict[str, Any]]:
    node = cfg.get(key)
    if node is None:
        if key == "task":
            names = ", ".join(sorted(_registry.presets()))
            raise ConfigError(f"no task selected: pass +task=PRESET (available presets: {names})")
        raise ConfigError(f"the config has no '{key}' section; the preset must define {key}._name_")
    if key == "datamodule" and cfg.get("mode") == "predict":
        # predicting reads only predict_path (the preprocessing comes from the checkpoint),
        # so training inputs left as ??? (path, target) are left out, not demanded
        kwargs = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        kwargs = {k: v for k, v in kwargs.items() if not OmegaConf.is_missing(node, k)}
    else:
        kwargs = _container(node)
    name = kwargs.pop("_name_", None)
    if not name:
        raise ConfigError(
            f"{key}._name_ is missing: set it to a registered {key} name or an "
            "import path such as my_package.module:MyClass"
        )
    return str(name), kwargs


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    name, kwargs = _section(cfg, "datamodule")
    cls = _registry.load("datamodule", name)
    _check_arguments(cls, kwargs, "datamodule")
    return cls(**kwargs)


def build_task(cfg: DictConfig, facts: dict[str, Any]) -> L.LightningModule:
    name, kwargs = _section(cfg, "task")
    cls = _registry.load("task", name)
    accepted = _check_arguments(cls, kwargs, "task")
    for key, value in facts.items():
        if accepted is not None and key not in accepted:
            continue
        if key in kwargs and kwargs[key] is not None and kwargs[key] != value:
            raise ConfigError(
                f"task.{key}={kwargs[key]!r} contradicts the data, which has "
                f"{key}={value!r}; drop the override"
            )
        kwargs[key] = value
    _refuse_ignored_options(cls, kwargs)
    return cls(**kwargs)


def _refuse_ignored_options(cls: type, kwargs: dict[str, Any]) -> None:
    """``task.loss=huber`` on a subclass with a loss of its own would be silently ignored.

    Raises:
        ConfigError: a setting (from the preset or the command line) differs from its default
            but nothing reads it.
    """
    from tasks._contract import ignored_options

    for option, (hook, base) in ignored_options(cls).items():
        if option not in kwargs:
            continue
        default = inspect.signature(base.__init__).parameters[option].default
        if kwargs[option] != default:
            raise ConfigError(
                f"task.{option}={kwargs[option]!r} has no effect: {cls.__qualname__}.{hook} "
                f"replaces {base.__qualname__}'s, which is what reads it. Drop the setting "
                f"(task.{option}={default!r} if the preset sets it), or call "
                f"super().{hook}() in the override"
            )


def _preset_name(cfg: DictConfig) -> str | None:
    if cfg.get("preset"):
        return str(cfg.preset)
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("task") if HydraConfig.initialized() else None


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # the Python API: a dated folder of its own, as the CLI's (never the current folder,
    # where two runs would mix their files)
    from tasks.engine.hydra_config import claim_new_dir

    wanted = Path("outputs") / str(_preset_name(cfg) or "run") / time.strftime("%Y-%m-%d_%H-%M-%S")
    if other_rank():  # rank 0 claimed it; later ranks write no run files
        return wanted
    return Path(claim_new_dir(str(wanted), remember=False))


def _plain_types(annotation: Any) -> tuple[set[type], set[Any]]:
    """The plain types (int, float, str, bool...) and literal values a type hint admits."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return set(), set(typing.get_args(annotation))
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        types: set[type] = set()
        literals: set[Any] = set()
        for arg in typing.get_args(annotation):
            more, values = _plain_types(arg)
            types |= more
            literals |= values
        return types, literals
    if isinstance(annotation, type):
        return {annotation}, set()
    return {object}, set()  # anything else (containers, timedeltas...): not checked here


def check_trainer_arguments(kwargs: dict[str, Any]) -> None:
    """``trainer.*`` keys are Trainer arguments (a misspelt one gets the closest real one), and
    numbers are numbers: ``trainer.max_epochs=abc`` fails here, in one line, before any data
    is read, not as a bare assertion deep in Lightning.

    Raises:
        ConfigError: an unknown argument, or a value of the wrong kind.
    """
    _check_arguments(L.Trainer, kwargs, "trainer")
    accelerator = str(kwargs.get("accelerator") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no usable GPU (torch sees "
            "no CUDA device); use the default trainer (trainer=default, which picks the CPU "
            "here) or trainer=cpu"
        )
    parameters = inspect.signature(L.Trainer.__init__).parameters
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    for key, value in kwargs.items():
        types, literals = _plain_types(parameters[key].annotation)
        if value is None or object in types or value in literals:
            continue
        kind = type(value)
        ok = kind in types or (kind is int and float in types) or (kind is bool and bool in types)
        if kind is bool and bool not in types:  # True is an int to Python, not to us
            ok = False
        if not ok:
            expected = [words.get(t, t.__name__) for t in sorted(types, key=str) if t in words]
            expected += sorted({str(v) for v in literals})  # 16 and '16' are one choice
            raise ConfigError(
                f"trainer.{key}={value!r} is not valid: expected {' or '.join(expected)}"
            )


def _build(node: Any, option: str, **overrides: Any) -> Any:
    """``instantiate`` a callback or logger; a config mistake (a ``_target_`` that does not
    import, arguments its constructor does not take or values it rejects) is one line,
    anything else raised inside the constructor is a bug and keeps its traceback.

    Raises:
        ConfigError: the node names something that cannot be built as configured.
    """
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **overrides)
    except InstantiationException as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, (ImportError, TypeError, ValueError)):
            message = " ".join(str(exc).split())
            raise ConfigError(f"{option} could not be built: {message}") from exc
        raise cause from None  # the constructor's own error and traceback, not one line


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    trainer_kwargs = _container(cfg.trainer)
    check_trainer_arguments(trainer_kwargs)
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        overrides = {}
        if node.get("_target_", "").endswith("ModelCheckpoint") and not node.get("dirpath"):
            overrides["dirpath"] = str(output_dir / "checkpoints")
        callback = _build(node, f"callbacks.{name}", **overrides)
        if isinstance(callback, ProgressBar) and not trainer_kwargs.get(
            "enable_progress_bar", True
        ):
            continue
        if isinstance(callback, ModelSummary) and not trainer_kwargs.get(
            "enable_model_summary", True
        ):
            continue
        callbacks.append(callback)
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        extra = {} if node.get("save_dir") else {"save_dir": str(output_dir)}
        loggers.append(_build(node, f"logger.{name}", **extra))
    if trainer_kwargs.get("fast_dev_run"):  # a check that everything runs writes no files
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        # without a configured checkpoint callback (callbacks=none, debug=fdr) Lightning
        # would add its own and write epoch=N-step=M.ckpt files nobody asked for
        trainer_kwargs["enable_checkpointing"] = False
    callbacks.append(ResumeState())  # resumed runs draw the numbers the uninterrupted one would
    strategy = str(trainer_kwargs.get("strategy", "auto"))
    if not trainer_kwargs.get("plugins") and not strategy.startswith(("fsdp", "deepspeed")):
        from tasks.engine.checkpoint_io import AtomicCheckpointIO

        trainer_kwargs["plugins"] = [AtomicCheckpointIO()]
    return L.Trainer(
        **trainer_kwargs,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(output_dir),
    )


#: Datamodule settings that name what data a model was trained on: a checkpoint used with
#: other values was trained for another preset.
DATA_IDENTITY = ("dataset", "target")


def check_checkpoint_data(
    path: str, checkpoint: dict[str, Any], datamodule: L.LightningDataModule
) -> None:
    """A checkpoint (``checkpoint``, read from ``path``) used with the datamodule of another
    preset fails here in one line, not later with a list of missing columns.

    Raises:
        ConfigError: the checkpoint was trained with another datamodule or data set.
    """
    trained = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(trained, dict):
        return  # written without datamodule settings: nothing to compare
    config = Path(path).resolve().parent.parent / "config.yaml"
    preset = OmegaConf.load(config).get("preset") if config.is_file() else None
    fix = f"use it with +task={preset}" if preset else "use it with the preset it was trained with"
    name = type(datamodule).__qualname__
    if name not in checkpoint:
        others = [k for k in checkpoint if k.endswith("DataModule")]
        raise ConfigError(
            f"ckpt_path={path} was trained with {', '.join(others) or 'another datamodule'}, "
            f"not {name}: {fix}"
        )
    current = getattr(datamodule, "hparams", {})
    for key in DATA_IDENTITY:
        before, now = trained.get(key), current.get(key)
        if before is not None and now is not None and before != now:
            raise ConfigError(
                f"ckpt_path={path} was trained on datamodule.{key}={before!r}, but this run "
                f"has datamodule.{key}={now!r}: {fix}"
            )


def _restore_datamodule_state(
    datamodule: L.LightningDataModule, checkpoint: dict[str, Any]
) -> None:
    state = checkpoint.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)


def _check_ckpt(cfg: DictConfig) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        if cfg.mode in ("test", "predict", "generate", "export"):
            raise ConfigError(
                f"mode={cfg.mode} needs a trained model: pass ckpt_path=PATH/TO/best.ckpt"
            )
        return None
    if not Path(ckpt).is_file():
        raise DataError(f"ckpt_path: no such checkpoint file {ckpt!r}")
    return str(ckpt)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded safely (tensors and plain values only), or one
    clear line on what is wrong with the file. A run reads it once, for every check and for
    the datamodule's state.

    Raises:
        DataError: not a checkpoint, truncated, or holding code that loading would run.
    """
    import pickle
    import re

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))  # torch's wording varies
        what = f" ({found.group(1)})" if found else ""
        raise DataError(
            f"ckpt_path={path} holds Python objects beyond tensors and plain values{what}; "
            "loading it could run code, so it is not loaded. Use a checkpoint written by "
            "lightning-tasks (checkpoints/best.ckpt or last.ckpt of a run)"
        ) from None
    except Exception as exc:  # truncated, a text file, a zip of something else...
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DataError(
            f"ckpt_path={path} is not a readable checkpoint (truncated, or not a checkpoint "
            f"file: {reason}); pass checkpoints/best.ckpt or last.ckpt of a run"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DataError(
            f"ckpt_path={path} is a PyTorch file but not a Lightning checkpoint (no "
            "state_dict); pass checkpoints/best.ckpt or last.ckpt of a run"
        )
    return checkpoint


def check_checkpoint_task(path: str, checkpoint: dict[str, Any], task_cls: type) -> None:
    """A checkpoint (``checkpoint``, read from ``path``) whose saved settings are not
    arguments of ``task_cls`` was trained by another task.

    Raises:
        ConfigError: the checkpoint belongs to another task.
    """
    settings = checkpoint.get("hyper_parameters") or {}
    accepted = accepted_arguments(task_cls)
    foreign = sorted(k for k in settings if accepted is not None and k not in accepted)
    if foreign:
        raise ConfigError(
            f"ckpt_path={path} was trained by another task: its settings "
            f"{', '.join(foreign[:5])} are not arguments of {task_cls.__name__}. Use it with "
            "the preset it was trained with (its run folder's config.yaml names it)"
        )


def _versions(entries: list[_registry.Entry]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("lightning-tasks", "torch", "lightning", "torchmetrics", "hydra-core"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    for entry in entries:
        versions.setdefault(entry.distribution, entry.version)
    return versions


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if (
            isinstance(value, torch.Tensor)
            and value.numel() == 1
            or isinstance(value, (int, float))
        ):
            out[key] = float(value)
    return dict(sorted(out.items()))


@rank_zero_only
def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data)


@rank_zero_only
def _write_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def _collate_predictions(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not batches:
        raise DataError("datamodule.predict_path produced no rows to predict")
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def _gather_in_input_order(outputs: dict[str, torch.Tensor], rows: int | None) -> dict[str, Any]:
    """Every rank's predictions (each rank has its DDP share), back in input order."""
    import torch.distributed as dist

    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, {k: v.detach().cpu() for k, v in outputs.items()})
    return {key: unshard(torch.stack([share[key] for share in shares]), rows) for key in outputs}


def execute(
    cfg: DictConfig, datamodule: L.LightningDataModule | None = None, *, console: bool = False
) -> dict[str, Any]:
    """Run ``cfg`` (a composed config) and return the summary that is also saved as JSON.

    ``console``: the CLI prints its own closing block, so Lightning's test table is skipped.
    """
    with warnings.catch_warnings():
        # The run directory is ours and fresh (Hydra's .hydra/ is already in it), and tasks
        # log per epoch, so these two Lightning warnings would only alarm users for nothing.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists")
        warnings.filterwarnings(
            "ignore",
            message=r"The number of training batches .* is smaller "
            r"than the logging interval",
        )
        # tasks augment (and split step groups) in BaseTask.on_after_batch_transfer on purpose
        warnings.filterwarnings("ignore", message=r"You have overridden `on_after_batch_transfer`")
        return _execute(cfg, datamodule, console)


def _prepend_earlier_epochs(metrics_csv: Path, earlier_run: Path) -> None:
    """A resumed run's ``metrics.csv`` (and so ``history.png``) covers the whole training:
    the epochs before the resume come from the run folder the checkpoint is in (its training
    rows only; its own test rows belong to that run)."""
    import pandas as pd

    earlier = earlier_run / "metrics.csv"
    if not earlier.is_file() or earlier.resolve() == metrics_csv.resolve():
        return
    new, old = pd.read_csv(metrics_csv), pd.read_csv(earlier)
    if "epoch" not in new or "epoch" not in old or new["epoch"].isna().all():
        return
    scored = [c for c in old.columns if c.startswith(("test/", "baseline/"))]
    old = old[old[scored].isna().all(axis=1)] if scored else old
    old = old[old["epoch"] < new["epoch"].min()]
    if len(old):
        merged = pd.concat([old, new], ignore_index=True)[list(dict.fromkeys([*new, *old]))]
        write_csv(merged, metrics_csv, index=False)


def _fit(
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt: str | None,
    summary: dict[str, Any],
    output_dir: Path,
    started: float,
) -> None:
    """``trainer.fit``; on SIGINT or SIGTERM, a partial ``summary.json`` (status
    ``interrupted``, the last checkpoint) and :class:`RunInterrupted` instead of Lightning's
    exit (code 1 for Ctrl-C, and 0 for SIGTERM, which a scheduler would take for success)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt)
    except (KeyboardInterrupt, SystemExit) as exc:
        if not trainer.interrupted:
            raise
        signal_name = "SIGTERM" if isinstance(exc, SIGTERMException) else "SIGINT"
        callback = trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") or None
        summary.update(
            {
                "status": "interrupted",
                "signal": signal_name,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "last_checkpoint": last if last and Path(last).is_file() else None,
                "best_checkpoint": getattr(callback, "best_model_path", "") or None,
                "output_dir": str(output_dir),
                "wall_time_s": round(time.time() - started, 3),
            }
        )
        _write_json(output_dir / "summary.json", summary)
        if trainer.is_global_zero:
            from tasks.report import write_report

            write_report(output_dir)  # the page says the run was interrupted
        raise RunInterrupted(signal_name, summary) from None


def describe_device(trainer: L.Trainer, steps: int = 1) -> str:
    """Where and how the run computes, in one line (instead of Lightning's availability
    lines)."""
    device = trainer.strategy.root_device
    count = trainer.num_devices * trainer.num_nodes
    where = f"{count} x {device.type}" if count > 1 else device.type
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    text = f"device: {where}, precision {trainer.precision}"
    if count > 1:
        text += f", strategy {type(trainer.strategy).__name__}"
    if steps > 1:
        text += f", {steps} optimizer steps per Lightning step"
    return text


def _best_epoch(path: str | None) -> int | None:
    """Epochs trained when the checkpoint at ``path`` was written (1-based; 0 for one taken
    before the first step, as a forecaster's fitted linear part is)."""
    if not path or not Path(path).is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    epoch = checkpoint.get("epoch")
    if checkpoint.get("global_step") == 0:
        return 0
    return None if epoch is None else int(epoch) + 1


@dataclass
class _Run:
    """What one run's modes share: the built pieces, where files go, what it has written."""

    cfg: DictConfig
    mode: str
    task_name: str
    dm_name: str
    ckpt: str | None
    output_dir: Path
    datamodule: L.LightningDataModule
    task: L.LightningModule
    trainer: L.Trainer
    console: bool
    started: float
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


def _prepare(cfg: DictConfig, datamodule: L.LightningDataModule | None, console: bool) -> _Run:
    """Check everything that can be checked before data is read, then build the datamodule,
    the task (fresh, or from ``ckpt_path``) and the trainer."""
    started = time.time()
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    task_name, _ = _section(cfg, "task")
    check_trainer_arguments(_container(cfg.trainer))  # before any data is read
    dm_name = (
        type(datamodule).__name__ if datamodule is not None else _section(cfg, "datamodule")[0]
    )
    ckpt = _check_ckpt(cfg)
    checkpoint = read_checkpoint(ckpt) if ckpt is not None else None
    if checkpoint is not None:  # before the data is read
        check_checkpoint_task(str(ckpt), checkpoint, _registry.load("task", task_name))
    output_dir = _output_dir(cfg)
    if cfg.get("output_dir") and not other_rank():
        refuse_previous_run(output_dir, "output_dir", mode, ckpt)
        ensure_folder(output_dir, "output_dir")
    if not cfg.get("preset") and _preset_name(cfg):
        with open_dict(cfg):  # config.yaml names its preset, wherever the run started from
            cfg.preset = _preset_name(cfg)
    _write_config(cfg, output_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    if datamodule is None:
        datamodule = build_datamodule(cfg)
    if checkpoint is not None:  # preprocessing comes from the checkpoint, never refitted
        check_checkpoint_data(str(ckpt), checkpoint, datamodule)
        _restore_datamodule_state(datamodule, checkpoint)
    findings = None
    if mode == "train":
        datamodule.prepare_data()
        datamodule.setup("fit")
        if not other_rank():  # the data doctor's findings on the data as read: doctor.md/json
            from tasks.doctor import diagnose_datamodule
            from tasks.doctor import write as write_doctor

            doctor = diagnose_datamodule(datamodule, cfg)
            write_doctor(doctor, output_dir)
            log.info("data doctor: %s (%s)", doctor.summary_line(), output_dir / "doctor.md")
            findings = {
                "summary": doctor.summary_line(),
                "warnings": len(doctor.of("warning")),
                "path": str(output_dir / "doctor.md"),
            }
        task = build_task(cfg, datamodule.data_facts())
    else:
        task_cls = _registry.load("task", task_name)
        task = task_cls.load_from_checkpoint(ckpt, map_location="cpu")
    trainer = build_trainer(cfg, output_dir)
    steps = 1
    if mode == "train":
        steps = fused.configure(task, trainer, datamodule, cfg.get("steps_per_execution", "auto"))
        _reach_min_steps(trainer, datamodule)
    device = describe_device(trainer, steps)
    if trainer.is_global_zero:
        log.info(device)
    if trainer.world_size > 1:  # each process says it joined (instead of Lightning's line)
        log.info(
            "process %d of %d (node %d)",
            trainer.global_rank + 1,
            trainer.world_size,
            trainer.node_rank,
        )
    run = _Run(
        cfg, mode, task_name, dm_name, ckpt, output_dir, datamodule, task, trainer, console, started
    )
    run.summary.update(
        {"preset": _preset_name(cfg), "mode": mode, "status": "running", "device": device}
    )
    if findings is not None:
        run.summary["doctor"] = findings
    return run


def _reach_min_steps(trainer: L.Trainer, datamodule: Any) -> None:
    """Raise ``max_epochs`` so that ``trainer.min_steps`` optimizer steps fit in it.

    On small data an epoch is a step or two, and a preset's epoch count (right for
    thousands of rows) would stop training after a few dozen steps. ``min_steps`` is
    Lightning's own setting (early stopping waits for it); Lightning itself stops at
    ``max_epochs`` first, so the epochs are raised here, with one line saying so.
    """
    min_steps, max_epochs = trainer.fit_loop.min_steps, trainer.fit_loop.max_epochs
    if not min_steps or max_epochs is None or max_epochs < 0 or trainer.fast_dev_run:
        return
    try:
        loader = datamodule.train_dataloader()
        per_epoch = int(loader.num_batches if hasattr(loader, "num_batches") else len(loader))
    except TypeError:  # a loader of unknown length: nothing to compute
        return
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        per_epoch = min(per_epoch, limit)
    elif isinstance(limit, float):
        per_epoch = int(per_epoch * limit)
    per_epoch //= max(1, trainer.accumulate_grad_batches)
    needed = -(-int(min_steps) // max(per_epoch, 1))
    if needed > max_epochs:
        trainer.fit_loop.max_epochs = needed
        log.info(
            "small data: %d optimizer step(s) an epoch, so max_epochs is raised from %d to "
            "%d to reach trainer.min_steps=%d (set trainer.min_steps=null to keep %d)",
            per_epoch,
            max_epochs,
            needed,
            min_steps,
            max_epochs,
        )


def _train(run: _Run) -> None:
    """Fit (resuming from ``ckpt_path`` if given), then test the best checkpoint."""
    trainer, summary = run.trainer, run.summary
    _fit(trainer, run.task, run.datamodule, run.ckpt, summary, run.output_dir, run.started)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    # read before testing: testing best.ckpt reloads the callback's state saved with it,
    # from before last.ckpt was written
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
    fit_metrics = _scalar_metrics(trainer.callback_metrics)
    trainer.test(run.task, datamodule=run.datamodule, ckpt_path=best, verbose=not run.console)
    summary["best_checkpoint"] = best
    summary["best_epoch"] = _best_epoch(best)
    if isinstance(trainer.checkpoint_callback, ModelCheckpoint):
        summary["last_checkpoint"] = last if last and Path(last).is_file() else None
        score = trainer.checkpoint_callback.best_model_score
        summary["best_score"] = {
            "monitor": run.cfg.monitor,
            "value": float(score) if score is not None else None,
        }
    summary["epochs"] = trainer.current_epoch
    summary["max_epochs"] = trainer.max_epochs
    summary["stopped_early"] = bool(
        trainer.max_epochs and 0 < trainer.current_epoch < trainer.max_epochs
    )
    summary["global_step"] = trainer.global_step
    summary["fit_metrics"] = fit_metrics
    _record_scores(run)


def _test(run: _Run) -> None:
    """Test the checkpoint's model on the datamodule's test split."""
    run.trainer.test(run.task, datamodule=run.datamodule, verbose=not run.console)
    run.summary["checkpoint"] = run.ckpt
    _record_scores(run)


def _generate(run: _Run) -> None:
    """Sample from a language model checkpoint into ``samples.txt``."""
    run.summary["checkpoint"] = run.ckpt
    if not hasattr(run.task, "generate_report"):
        raise ConfigError(f"mode=generate: task {run.task_name!r} does not generate samples")
    sample = _container(run.cfg.sample)
    report = run.task.generate_report(run.datamodule, seed=int(run.cfg.seed), **sample)
    run.summary.update(report)
    if run.trainer.is_global_zero:
        path = run.output_dir / "samples.txt"
        write_text_atomic(path, run.task.format_samples(report["samples"]))
        run.artifacts.append(path)
        for line in report["samples"]:
            print(line)


def _predict(run: _Run) -> None:
    """Predict ``datamodule.predict_path`` into ``predictions.csv``, in input order."""
    batches = run.trainer.predict(run.task, datamodule=run.datamodule)
    run.summary["checkpoint"] = run.ckpt
    outputs = _collate_predictions(batches)
    if run.trainer.world_size > 1:
        data = getattr(run.datamodule, "predict_data", None)
        outputs = _gather_in_input_order(outputs, len(data[0]) if data else None)
    if run.trainer.is_global_zero:
        frame = run.datamodule.predictions_frame(outputs)
        path = run.output_dir / "predictions.csv"
        write_csv(frame, path, index_label="row")
        run.artifacts.append(path)
        run.summary["predictions"] = {"path": str(path), "rows": len(frame)}


#: What each mode does once the run is prepared.
MODE_STEPS = {"train": _train, "test": _test, "generate": _generate, "predict": _predict}


def _record_scores(run: _Run) -> None:
    """Test and baseline metrics (non-finite ones named), notes, data warnings, artefacts."""
    summary, trainer = run.summary, run.trainer
    logged = trainer.callback_metrics
    summary["metrics"] = _scalar_metrics({k: v for k, v in logged.items() if k.startswith("test/")})
    baseline = _scalar_metrics({k: v for k, v in logged.items() if k.startswith("baseline/")})
    if baseline:
        summary["baseline"] = baseline
    undefined = not_finite({**summary["metrics"], **baseline})
    if undefined:  # e.g. a skill score against a baseline with zero error
        summary["undefined_metrics"] = undefined
        log.warning(
            "%s came out NaN or infinite (undefined on this data): written as null in summary.json",
            ", ".join(undefined),
        )
    notes = run.task.summary_notes()
    if notes:
        summary["notes"] = notes
        for note in notes:
            log.info(note)
    if _on(run.cfg.get("peers", True)) and trainer.is_global_zero:
        from tasks.peers import peer_scores

        peers = peer_scores(run.task, run.datamodule, test_metrics=summary.get("metrics") or {})
        if peers["metrics"]:  # apart from the metrics: those are the network's test/* only
            summary["peers"] = peers["metrics"]
            summary["best_peer"] = peers["best"]
            if peers["best"]:
                summary["peer_check"] = peers["notes"][0]
                summary["peer_metric"] = peers["metric"]  # what the check compares
        for note in peers["notes"]:
            summary.setdefault("notes", []).append(note)
            log.info(note)
    data_warnings = getattr(run.datamodule, "data_warnings", None)
    if data_warnings:
        summary["data_warnings"] = list(data_warnings)
    if trainer.is_global_zero:
        run.artifacts += run.task.save_artifacts(run.output_dir, run.datamodule)


def _on(value: Any) -> bool:
    """A switch from the config: YAML reads ``on``/``off`` as booleans, a CLI override may
    give the words."""
    return str(value).lower() in ("on", "true", "1", "yes")


def _record_history(run: _Run) -> None:
    """``metrics.csv`` (the whole training when resumed) and ``history.png``."""
    for logger in run.trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        logger.save()
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        if metrics_csv.is_file():
            if run.mode == "train" and run.ckpt is not None:
                _prepend_earlier_epochs(metrics_csv, Path(run.ckpt).parent.parent)
            run.artifacts.append(metrics_csv)
            main_metric = getattr(run.task, "main_metric", "loss")
            plot = save_history_plot(metrics_csv, run.output_dir / "history.png", main_metric)
            if plot is not None:
                run.artifacts.append(plot)
        return


def _finish(run: _Run) -> dict[str, Any]:
    """The summary's common fields, written to ``summary.json``."""
    entries = (
        [_registry.get("task", run.task_name)] if run.task_name in _registry.entries("task") else []
    )
    if run.dm_name in _registry.entries("datamodule"):
        entries.append(_registry.get("datamodule", run.dm_name))
    run.summary.update(
        {
            "task": run.task_name,
            "task_class": f"{type(run.task).__module__}.{type(run.task).__qualname__}",
            "datamodule": run.dm_name,
            "seed": int(run.cfg.seed),
            "status": "completed",
            "wall_time_s": round(time.time() - run.started, 3),
            "output_dir": str(run.output_dir),
            "artifacts": sorted(str(p) for p in run.artifacts),
            "versions": _versions(entries),
        }
    )
    _write_json(run.output_dir / "summary.json", run.summary)
    if run.trainer.is_global_zero:
        from tasks.report import write_report

        report = write_report(run.output_dir)  # reads the summary above; never fails the run
        if report.is_file():
            run.summary["report"] = str(report)
        from tasks.tracking import record_run

        record_run(run.trainer.loggers, run.output_dir, run.summary)  # logger=mlflow
    return run.summary


def _export(cfg: DictConfig) -> dict[str, Any]:
    """``mode=export``: the bundle of ``ckpt_path`` (what ``python -m tasks export`` does)."""
    from tasks.bundle import export_bundle

    started = time.time()
    ckpt = _check_ckpt(cfg)
    options = _container(cfg.get("export") or {})
    folder = export_bundle(
        ckpt,
        out=options.get("out"),
        onnx=bool(options.get("onnx", False)),
        name=options.get("name"),
        version=options.get("version"),
    )
    log.info("bundle written to %s", folder)
    return {
        "preset": _preset_name(cfg),
        "mode": "export",
        "status": "finished",
        "checkpoint": ckpt,
        "bundle": str(folder),
        "wall_time_s": round(time.time() - started, 2),
    }


def _execute(
    cfg: DictConfig, datamodule: L.LightningDataModule | None, console: bool = False
) -> dict[str, Any]:
    if cfg.get("mode") == "export":
        return _export(cfg)
    if cfg.get("mode") == "cv":  # k-fold cross-validation: a train run per fold (tasks/cv.py)
        from tasks.cv import run_cv

        return run_cv(cfg, datamodule, console)
    run = _prepare(cfg, datamodule, console)
    MODE_STEPS[run.mode](run)
    if run.trainer.is_global_zero:
        _record_history(run)
    return _finish(run)
