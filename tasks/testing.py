"""Conformance kit: the checks every task, datamodule and preset must pass.

Plugin authors call these from their own tests (built-in tasks are checked the same way)::

    from tasks.testing import check_preset

    def test_my_preset(tmp_path):
        check_preset("my_preset", tmp_path)

Each check runs a tiny CPU training (one epoch of two batches) and raises
``AssertionError`` with a message that says what broke.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tasks.errors import UserError

__all__ = [
    "check_api_declaration",
    "check_bundle",
    "check_preset",
    "check_step_groups",
    "check_task",
]


def _quiet_trainer(**options: Any) -> L.Trainer:
    """A one-epoch CPU trainer that writes and prints nothing (``options`` added)."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def _tiny_trainer(root: Path) -> L.Trainer:
    return _quiet_trainer(
        limit_train_batches=2,
        limit_val_batches=2,
        limit_test_batches=2,
        limit_predict_batches=2,
        default_root_dir=str(root),
    )


class _InputsOnly:
    """A test loader without its targets: batches follow the ``(*inputs, target)`` contract."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for batch in self.loader:
            yield tuple(batch[:-1])

    def __len__(self) -> int:
        return len(self.loader)


def _predict_loader(datamodule: L.LightningDataModule) -> Any:
    try:
        datamodule.setup("predict")
        return datamodule.predict_dataloader()
    except UserError:  # no predict file configured: predict the test inputs instead
        return _InputsOnly(datamodule.test_dataloader())


def _flatten(outputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    assert outputs, "predict produced no batches"
    for batch in outputs:
        assert isinstance(batch, dict) and batch, (
            f"predict_step must return a non-empty dict of tensors, got {type(batch).__name__}"
        )
    return {key: torch.cat([b[key] for b in outputs]) for key in outputs[0]}


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN == NaN here


def _nudged(state: Any) -> Any:
    """``state`` with every float that is not a whole number moved by a millionth of itself.

    What preprocessing learns from the training split (means, scales, fill values, idf) is
    such a float; class labels, counts and sizes are whole numbers or text and stay as they
    are, so the nudged state still fits the data. A datamodule that recomputes its state in
    ``setup`` instead of keeping the restored one puts the original values back.
    """
    if isinstance(state, Tensor):
        if not state.is_floating_point():
            return state
        fractional = torch.isfinite(state) & (state != state.round())
        return torch.where(fractional, state * (1 + 1e-6), state)
    if isinstance(state, float):
        fractional = math.isfinite(state) and not state.is_integer()
        return state * (1 + 1e-6) if fractional else state
    if isinstance(state, dict):
        return {key: _nudged(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_nudged(value) for value in state)
    return state


def _rebuilt(datamodule: L.LightningDataModule) -> L.LightningDataModule | None:
    """A new datamodule of the same class from the live one's hyperparameters; None when it
    was given its data from Python (a ``not_hyperparameters`` argument such as a DataFrame),
    which the hyperparameters cannot rebuild."""
    try:
        return type(datamodule)(**dict(datamodule.hparams))
    except UserError:
        if getattr(datamodule, "not_hyperparameters", ()):
            return None
        raise


def check_task(
    task: L.LightningModule, datamodule: L.LightningDataModule, tmp_path: Path
) -> dict[str, Any]:
    """Fit, validate, test and predict on a tiny run, then check both round trips.

    Checks that: the datamodule has what the task reads from it (``datamodule_needs``);
    logged metrics are finite and named ``val/*`` and ``test/*``; predict
    returns a dict of tensors with one row per input row; a checkpoint loads with
    ``weights_only=True`` (hyperparameters and preprocessing state are plain data);
    ``type(task).load_from_checkpoint(path)`` alone gives identical predictions; the
    datamodule state stored in the checkpoint equals the live one and, rebuilt from its
    hyperparameters, reproduces the same validation inputs; a restored state that differs
    from what the data would give (its fractional numbers nudged) is kept by ``setup``,
    not refitted.

    Returns:
        What was measured: validation and test metrics, prediction keys and row count.
    """
    from tasks._contract import missing_datamodule_needs

    missing = missing_datamodule_needs(task, datamodule)
    assert not missing, (
        f"{type(task).__name__} reads {missing} from its datamodule (datamodule_needs), "
        f"which {type(datamodule).__name__} does not have after setup('fit')"
    )
    tmp_path = Path(tmp_path)
    report: dict[str, Any] = {"step_groups": check_step_groups(task, datamodule)}
    trainer = _tiny_trainer(tmp_path)
    trainer.fit(task, datamodule=datamodule)
    for stage, run in (("val", trainer.validate), ("test", trainer.test)):
        (metrics,) = run(task, datamodule=datamodule, verbose=False)
        assert any(k.startswith(f"{stage}/") for k in metrics), (
            f"{stage} logged no '{stage}/...' metric: {sorted(metrics)}"
        )
        bad = {k: v for k, v in metrics.items() if not torch.isfinite(torch.tensor(v))}
        assert not bad, f"non-finite {stage} metrics after one epoch: {bad}"
        report[stage] = metrics

    loader = _predict_loader(datamodule)
    # a fresh trainer: the fitted one would call datamodule.setup("predict") again
    first = _flatten(_tiny_trainer(tmp_path).predict(task, dataloaders=loader))
    rows = {key: len(value) for key, value in first.items()}
    assert len(set(rows.values())) == 1, f"predict outputs disagree on the row count: {rows}"
    report["predictions"] = {"keys": sorted(first), "rows": next(iter(rows.values()))}

    ckpt = tmp_path / "conformance.ckpt"
    trainer.save_checkpoint(ckpt)
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects in hparams or state
        raise AssertionError(
            "the checkpoint does not load with weights_only=True: keep hyperparameters and "
            f"datamodule state to plain data (numbers, strings, lists, dicts, tensors): {exc}"
        ) from exc
    restored = type(task).load_from_checkpoint(ckpt, map_location="cpu")
    assert dict(restored.hparams) == dict(task.hparams), "hyperparameters changed in the round trip"
    second = _flatten(_tiny_trainer(tmp_path).predict(restored, dataloaders=loader))
    for key, value in first.items():
        assert torch.allclose(value.float(), second[key].float(), atol=1e-6), (
            f"load_from_checkpoint gave different predictions for {key!r}"
        )

    live_state = datamodule.state_dict()
    stored = checkpoint.get(type(datamodule).__qualname__, {})
    assert _same_state(stored, live_state), (
        "the checkpoint's datamodule state differs from the live one"
    )
    fresh = _rebuilt(datamodule) if live_state else None
    if fresh is not None:
        fresh.load_state_dict(stored)
        fresh.setup("fit")
        assert _same_state(fresh.state_dict(), live_state), (
            "restored preprocessing state was refitted"
        )
        restored_batch = _tensors(next(iter(fresh.val_dataloader())))
        live_batch = _tensors(next(iter(datamodule.val_dataloader())))
        assert len(restored_batch) == len(live_batch)
        for a, b in zip(restored_batch, live_batch):
            assert torch.equal(a, b), "restored preprocessing transforms the data differently"
        # On the data it was fitted on, a refit gives the stored state back, so the check
        # above cannot see one: restore a state that the data would not give (as a
        # checkpoint's is for new data) and see that setup keeps it.
        nudged = _nudged(stored)
        if not _same_state(nudged, stored):
            probe = _rebuilt(datamodule)
            probe.load_state_dict(nudged)
            probe.setup("fit")
            assert _same_state(probe.state_dict(), nudged), (
                "setup('fit') refitted the preprocessing state restored with load_state_dict: "
                "a checkpoint's statistics must be kept, not recomputed from the data at hand, "
                "or new data (mode=test, predict) is processed unlike the training data"
            )
    report["bundle"] = check_bundle(task, datamodule, tmp_path)
    return report


def check_step_groups(
    task: L.LightningModule, datamodule: L.LightningDataModule, steps: int = 4, batches: int = 9
) -> dict[str, Any]:
    """Train copies of the untrained ``task`` for one epoch on the first ``batches`` training
    batches, one optimizer step per Lightning step and in groups of ``steps``
    (``steps_per_execution``, the default fast path), and check that the weights agree.

    A task or datamodule the fast path does not take (:func:`tasks.fused.why_not`: own
    per-batch hooks, own loaders...) trains one step at a time anyway; the report says why.

    Returns:
        ``{"grouped": bool, "reason": str | None, "max_weight_diff": float | None}``.
    """
    import copy

    from tasks import fused

    def trainer() -> L.Trainer:
        return _quiet_trainer(num_sanity_val_steps=0)

    start = copy.deepcopy(task)
    data = copy.deepcopy(datamodule)
    reason = fused.why_not(start, trainer(), data)
    if reason is not None:
        return {"grouped": False, "reason": reason, "max_weight_diff": None}
    size = int(data.hparams.batch_size) * batches
    for split in ("train_data", "val_data"):
        tensors = getattr(data, split)
        if tensors is not None:  # the first rows only: a check, not a training
            setattr(data, split, tuple(t[:size] for t in tensors))
    weights = []
    for k in (1, steps):
        copy_task, copy_data, fitting = copy.deepcopy(start), copy.deepcopy(data), trainer()
        used = fused.configure(copy_task, fitting, copy_data, k)
        assert used == k, f"steps_per_execution={k} was not used ({used})"
        L.seed_everything(0, verbose=False)  # the same shuffle and dropout for both
        fitting.fit(copy_task, datamodule=copy_data)
        weights.append({n: v.detach().float().clone() for n, v in copy_task.state_dict().items()})
    worst = 0.0
    for name, value in weights[0].items():
        diff = float((value - weights[1][name]).abs().max()) if value.numel() else 0.0
        worst = max(worst, diff)
        assert torch.allclose(value, weights[1][name], rtol=1e-4, atol=1e-5), (
            f"{type(task).__name__} trains differently in step groups: weight {name!r} differs "
            f"by {diff:.3g} after one epoch with steps_per_execution={steps} vs 1 (a per-batch "
            "hook or random draw that assumes one optimizer step per Lightning step?)"
        )
    return {"grouped": True, "reason": None, "max_weight_diff": worst}


def check_bundle(
    task: L.LightningModule, datamodule: L.LightningDataModule, tmp_path: Path, onnx: bool = False
) -> dict[str, Any]:
    """The bundle contract (docs/deploy.md): the task and its set-up datamodule export to a
    bundle that loads from its files alone and predicts its example inputs as the live
    objects did (``onnx``: also through the ONNX graph, parity-gated).

    A datamodule that does not implement ``example_inputs`` cannot be bundled: reported as
    ``{"supported": False}``, not failed (bundles are opt-in for plugins).
    """
    from tasks.bundle import load_bundle, write_bundle

    base = next(c for c in reversed(type(datamodule).__mro__) if "example_inputs" in vars(c))
    if type(datamodule).example_inputs is vars(base)["example_inputs"]:
        return {"supported": False}
    folder = write_bundle(task, datamodule, Path(tmp_path) / "bundle", onnx=onnx)
    predictor = load_bundle(folder, backend="onnx" if onnx else "torch")  # replays examples
    assert predictor.input_kind in ("record", "image", "text", "sequence", "series", "prompt"), (
        f"{type(datamodule).__name__}.input_kind={predictor.input_kind!r} is not a known kind"
    )
    return {"supported": True, "folder": str(folder), "input_kind": predictor.input_kind}


def _tensors(batch: Any) -> list[Tensor]:
    """The tensors of a batch that is a tensor, a tuple/list or a dict (in key order)."""
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, dict):
        return [t for key in sorted(batch) for t in _tensors(batch[key])]
    return [t for item in batch for t in _tensors(item)]


def check_api_declaration(cls: type) -> None:
    """A plugin's class comes from a package that declares the plugin API it targets.

    ``LIGHTNING_TASKS_API`` in the class's module or the nearest package above it must equal
    ``tasks.API_VERSION``; lightning-tasks' own classes are exempt.

    Args:
        cls: A task or datamodule class a plugin registers.
    """
    from tasks import API_VERSION
    from tasks.engine.registry import API_ATTRIBUTE, declared_api

    top = cls.__module__.split(".")[0]
    if top in ("tasks", "datamodules"):
        return
    where, declared = declared_api(cls.__module__)  # the class's module is imported already
    assert declared is not None, (
        f"{cls.__module__} (and the packages above it) declare no {API_ATTRIBUTE}: add "
        f"'{API_ATTRIBUTE} = {API_VERSION}' to {top}/__init__.py, so that a later "
        "lightning-tasks can warn users when the plugin targets another API"
    )
    assert declared == API_VERSION, (
        f"{where} declares {API_ATTRIBUTE} = {declared!r}, but this lightning-tasks provides "
        f"plugin API {API_VERSION}"
    )


def check_preset(preset: str, tmp_path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose a preset as the CLI would, build its datamodule and task, run :func:`check_task`;
    a plugin's preset also has its classes' :func:`check_api_declaration` and no task
    argument that shadows a base task's (:func:`tasks._contract.shadowed_arguments`)."""
    from tasks._contract import shadowed_arguments
    from tasks.api import compose
    from tasks.engine import registry as _registry
    from tasks.engine.runner import build_datamodule, build_task

    cfg = compose(preset, list(overrides))
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg, datamodule.data_facts())
    if not _registry.get_preset(preset).source.builtin:
        for cls in (type(task), type(datamodule)):
            check_api_declaration(cls)
        for klass in type(task).__mro__:
            shadowed = shadowed_arguments(klass)
            assert not shadowed, (
                f"{klass.__qualname__} takes {sorted(shadowed)}, which a base task already "
                "takes for its own purpose: rename them, or pass them on to super().__init__"
            )
    return check_task(task, datamodule, tmp_path)
