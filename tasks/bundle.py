"""Self-contained model bundles: a trained run exported to one folder that loads and predicts
with the library alone (no checkpoint, run folder, preset or plugin config).

A bundle folder holds:

- ``manifest.json``: the bundle format, library/torch/lightning versions, task and preset,
  training metrics, creation time, the ONNX parity figures, and the SHA-256 of every other
  file (a changed file is refused on load);
- ``model.json``: the task and datamodule (registry names, classes, constructor arguments);
- ``weights.safetensors``: the network's tensors (no pickle: loading runs no code);
- ``preprocessing.json``: the datamodule's fitted state (scalers, category maps, labels,
  tokenizer, thresholds...) as plain JSON;
- ``signature.json``: what goes in (``input_kind`` and its fields) and what comes out;
- ``example_input.json`` / ``expected_output.json``: real test inputs and what the model
  predicted for them, replayed by every load;
- ``config.yaml``: the resolved configuration of the run, for reference;
- ``model.onnx`` (with ``--onnx``): the predict step as an ONNX graph.

The task side of the contract is :meth:`predict_step` (what an ONNX graph holds); the
datamodule side is ``input_kind``, ``input_signature``, ``example_inputs`` and
``predict_inputs`` (``datamodules.base.BaseDataModule``), documented in docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from tasks._files import to_json, write_text_atomic
from tasks.engine import registry as _registry
from tasks.errors import ConfigError, DataError

#: The bundle layout this library writes; a newer one is refused on load.
BUNDLE_FORMAT = 1
#: Real test inputs stored with a bundle and replayed on every load.
EXAMPLES = 8
#: How close a replayed or ONNX prediction must be to the reference: |a - b| <= ATOL + RTOL |b|.
ATOL, RTOL = 1e-4, 1e-3
#: Test rows the ONNX parity gate compares, at most.
PARITY_ROWS = 1000

FILES = (
    "model.json",
    "weights.safetensors",
    "preprocessing.json",
    "signature.json",
    "example_input.json",
    "expected_output.json",
    "config.yaml",
)


# -- JSON that keeps what the fitted state holds ------------------------------------------
def _encode_state(value: Any, where: str) -> Any:
    """Plain JSON for a fitted state: non-finite floats, tuples, arrays and tensors are
    tagged so that :func:`_decode_state` gives back what ``load_state_dict`` saw."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _encode_state(value.item(), where)
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise DataError(f"{where}: key {bad[0]!r} is not a string; JSON needs string keys")
        return {k: _encode_state(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_state(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode_state(v, where) for v in value]
    if isinstance(value, (np.ndarray, Tensor)):
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
        return {
            "__array__": _encode_state(array.tolist(), where),
            "dtype": str(array.dtype),
            "tensor": isinstance(value, Tensor),
        }
    raise DataError(
        f"{where} is a {type(value).__name__}: a datamodule's fitted state must be plain data "
        "(numbers, strings, lists, dicts, arrays) to go into a bundle"
    )


def _decode_state(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_state(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_decode_state(v) for v in value["__tuple__"])
    if "__array__" in value:
        array = np.asarray(_decode_state(value["__array__"]), dtype=value["dtype"])
        return torch.from_numpy(array) if value.get("tensor") else array
    return {k: _decode_state(v) for k, v in value.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A prediction table as JSON-ready records: numpy scalars made plain, NaN/inf as None."""
    rows = frame.to_dict(orient="records")
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


# -- locating what to export ---------------------------------------------------------------
def _locate(source: str | Path) -> tuple[Path, Path]:
    """The checkpoint and run folder of ``source`` (a run folder or a checkpoint in one)."""
    path = Path(source).expanduser()
    if path.is_dir():
        run_dir = path
        summary = path / "summary.json"
        named = None
        if summary.is_file():
            try:
                named = json.loads(summary.read_text()).get("best_checkpoint")
            except (OSError, ValueError):
                named = None
        candidates = [Path(named)] if named else []
        candidates += [path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"]
        ckpt = next((c for c in candidates if c.is_file()), None)
        if ckpt is None:
            raise DataError(
                f"{path}: no checkpoint in this run folder (checkpoints/best.ckpt); export a "
                "run that trained with checkpoints, or pass the .ckpt file"
            )
    elif path.is_file():
        ckpt, run_dir = path, path.resolve().parent.parent
    else:
        raise DataError(f"{path}: no such run folder or checkpoint file")
    if not (run_dir / "config.yaml").is_file():
        raise DataError(
            f"{ckpt}: no config.yaml in its run folder {run_dir}; export from the run folder "
            "the library wrote (it names the task and the datamodule)"
        )
    return ckpt, run_dir


def _build(kind: str, name: str, kwargs: dict[str, Any]) -> Any:
    cls = _registry.load(kind, name)
    return cls(**kwargs)


def _task_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The task's tensors as safetensors wants them: on the CPU, contiguous, unshared, and
    without the ``_orig_mod`` level that ``torch.compile`` adds to names."""
    return {
        key.replace("._orig_mod", ""): value.detach().cpu().contiguous().clone()
        for key, value in state.items()
    }


# -- the predictor -------------------------------------------------------------------------
class PredictGraph(nn.Module):
    """A task's predict step as a module of tensors in, tensors out (what ONNX holds):
    ``predict_step`` on a batch of inputs, its outputs in ``keys`` order."""

    def __init__(self, task: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.task = task
        self.keys = list(keys)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.task.predict_step(tuple(inputs), 0)
        return tuple(out[key] for key in self.keys)


def batch_inputs(batch: Any) -> tuple[Tensor, ...]:
    """The predict-step inputs of a loader batch: a tuple as it is, a labelled test batch
    without its target (``drop_target``), or a dict batch's ``x``."""
    if isinstance(batch, dict):
        return (batch["x"],)
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


class Predictor:
    """Predictions of a loaded bundle (:func:`load_bundle`), with the training-time
    preprocessing. Thread-safe: calls are served one at a time.

    Attributes:
        manifest: The bundle's ``manifest.json``.
        signature: The bundle's ``signature.json``.
        task: The task (a LightningModule in eval mode, on the CPU).
        datamodule: The datamodule with the fitted state restored (reads no data).
        backend: ``torch`` or ``onnx``.
    """

    def __init__(
        self,
        task: nn.Module,
        datamodule: Any,
        manifest: dict[str, Any] | None = None,
        signature: dict[str, Any] | None = None,
        graph: Any = None,
        backend: str = "torch",
    ) -> None:
        self.task = task.eval()
        self.datamodule = datamodule
        self.manifest = manifest or {}
        self.signature = signature or {}
        self.backend = backend
        self._graph = graph  # an OnnxGraph for backend="onnx"
        self._lock = threading.Lock()

    @property
    def input_kind(self) -> str:
        return str(getattr(self.datamodule, "input_kind", "record"))

    def _step(self, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
        if self._graph is not None:
            return self._graph(*inputs)
        with torch.inference_mode():
            return self.task.predict_step(inputs, 0)

    def outputs(self, batches: Any) -> dict[str, Tensor]:
        """The predict step over loader ``batches``, concatenated: name -> tensor."""
        parts = [self._step(batch_inputs(batch)) for batch in batches]
        if not parts:
            raise DataError("no inputs to predict")
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def predict(self, inputs: Any) -> pd.DataFrame:
        """Predict ``inputs`` (see the datamodule's ``predict_inputs`` for the forms it
        takes: records or a DataFrame for tables and series, strings for texts, image files,
        arrays, PIL images or base64 PNGs for images).

        Returns:
            The prediction table ``mode=predict`` writes, one row per input row.

        Raises:
            DataError: inputs that do not fit the model, in one line.
        """
        generate = getattr(self.task, "bundle_predict", None)
        with self._lock:
            if generate is not None:
                return generate(inputs, model=self._graph)
            dm = self.datamodule
            dm.predict_data = None
            dm.predict_inputs(inputs)
            if dm.predict_data is None:
                raise DataError(f"{type(dm).__name__}.predict_inputs() filled no predict_data")
            return dm.predictions_frame(self.outputs(dm.predict_dataloader()))

    def predict_records(self, inputs: Any) -> list[dict[str, Any]]:
        """:meth:`predict` as JSON-ready records (NaN and infinity as None)."""
        return json_records(self.predict(inputs))

    def check(self, examples: Any, expected: list[dict[str, Any]]) -> dict[str, float]:
        """Replay the bundle's examples; raise if the answer moved beyond the tolerance."""
        got = self.predict_records(examples)
        return compare_records(got, expected, f"bundle self-check ({self.backend})")


def compare_records(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], what: str
) -> dict[str, float]:
    """Max absolute/relative difference of two prediction tables; raises ``DataError`` when
    a label differs or a number is off by more than ``ATOL + RTOL * |expected|``."""
    if len(got) != len(expected):
        raise DataError(f"{what}: {len(got)} predictions for {len(expected)} expected")
    worst_abs = worst_rel = 0.0
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if set(a) != set(b):
            raise DataError(f"{what}: columns {sorted(a)} differ from {sorted(b)}")
        for key, want in b.items():
            have = a[key]
            numbers = isinstance(want, (int, float)) and not isinstance(want, bool)
            if numbers and isinstance(have, (int, float)):
                diff = abs(float(have) - float(want))
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(abs(float(want)), 1e-12))
                if diff > ATOL + RTOL * abs(float(want)):
                    raise DataError(
                        f"{what}: row {i} {key} = {have!r}, expected {want!r} (tolerance "
                        f"{ATOL:g} + {RTOL:g} x |expected|)"
                    )
            elif have != want:
                raise DataError(f"{what}: row {i} {key} = {have!r}, expected {want!r}")
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel}


# -- export --------------------------------------------------------------------------------
def describe_classes(task: nn.Module, datamodule: Any) -> dict[str, Any]:
    """``model.json``: how to rebuild the task and the datamodule (registry names where they
    are registered, else their import paths) from their constructor arguments."""

    def name(kind: str, cls: type) -> str:
        path = _qualname(cls)
        found = [n for n, e in _registry.entries(kind).items() if e.value == path]
        return found[0] if found else path

    dm_args = {
        k: v
        for k, v in dict(getattr(datamodule, "hparams", {})).items()
        if k not in getattr(datamodule, "not_hyperparameters", ())
    }
    return {
        "format": BUNDLE_FORMAT,
        "task": name("task", type(task)),
        "task_class": _qualname(type(task)),
        "task_arguments": dict(task.hparams),
        "datamodule": name("datamodule", type(datamodule)),
        "datamodule_class": _qualname(type(datamodule)),
        "datamodule_arguments": dm_args,
    }


def _run_versions(model: dict[str, Any]) -> dict[str, str]:
    """What a run's summary.json records (``tasks.engine.runner._versions``), with the
    distributions of the bundle's task and datamodule (a plugin's version, say)."""
    from tasks.engine.runner import _versions

    entries = [
        _registry.get(kind, model[kind])
        for kind in ("task", "datamodule")
        if model[kind] in _registry.entries(kind)
    ]
    return _versions(entries)


def _restore(checkpoint: dict[str, Any], cfg: Any, ckpt: Path) -> tuple[Any, Any, dict]:
    """The task (weights loaded) and datamodule (fitted state restored) of a checkpoint."""
    from tasks.engine.runner import check_checkpoint_task

    task_name, dm_name = str(cfg.task._name_), str(cfg.datamodule._name_)
    task_cls = _registry.load("task", task_name)
    check_checkpoint_task(str(ckpt), checkpoint, task_cls)
    task_args = dict(checkpoint.get("hyper_parameters") or {})
    task = task_cls(**task_args)
    task.load_state_dict(_task_weights(checkpoint["state_dict"]))
    dm_cls = _registry.load("datamodule", dm_name)
    dm_args = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    if not dm_args:
        dm_args = dict(OmegaConf.to_container(cfg.datamodule, resolve=True))
        dm_args.pop("_name_", None)
    datamodule = dm_cls(**dm_args)
    state = checkpoint.get(dm_cls.__qualname__)
    if state:
        datamodule.load_state_dict(state)
    model = describe_classes(task, datamodule)
    model.update(task=task_name, datamodule=dm_name, datamodule_arguments=dm_args)
    return task, datamodule, model


def export_bundle(
    source: str | Path,
    out: str | Path | None = None,
    onnx: bool = False,
    name: str | None = None,
    version: int | None = None,
    examples: int = EXAMPLES,
) -> Path:
    """Export a trained run (its folder, or a checkpoint in it) to a bundle folder.

    Args:
        source: A run folder (its best checkpoint is used) or a ``.ckpt`` file in one.
        out: The bundle folder; default ``<run folder>/bundle``. With ``name`` or
            ``version``, ``out/NAME/VERSION`` (TensorFlow Serving's layout): ``version``
            defaults to one more than the highest there.
        onnx: Also write ``model.onnx``, checked against the torch predictor (parity gate).
        name: The model's name in a versioned layout (default: the preset).
        version: The version number in a versioned layout.
        examples: Real test inputs stored and replayed on load.

    Returns:
        The bundle folder.

    Raises:
        DataError: the run cannot be exported, or the ONNX graph fails the parity gate;
            nothing is written then.
    """
    from tasks.engine.runner import read_checkpoint

    ckpt, run_dir = _locate(source)
    checkpoint = read_checkpoint(str(ckpt))
    cfg = OmegaConf.load(run_dir / "config.yaml")
    preset = cfg.get("preset")
    target = _bundle_folder(run_dir, out, name, version, default_name=preset)
    task, datamodule, model = _restore(checkpoint, cfg, ckpt)
    datamodule.setup("fit")  # the test inputs, with the checkpoint's fitted state kept
    folder = write_bundle(
        task,
        datamodule,
        target,
        model=model,
        onnx=onnx,
        examples=examples,
        config=OmegaConf.to_yaml(cfg),
        facts={
            "preset": preset,
            "training_metrics": _training_metrics(run_dir),
            "source_checkpoint": str(ckpt.resolve()),
        },
    )
    if run_dir.resolve() in folder.resolve().parents and (run_dir / "summary.json").is_file():
        from tasks.report import write_report

        write_report(run_dir)  # its Export section now shows the bundle
    return folder


def write_bundle(
    task: nn.Module,
    datamodule: Any,
    target: Path,
    *,
    model: dict[str, Any] | None = None,
    onnx: bool = False,
    examples: int = EXAMPLES,
    config: str = "",
    facts: dict[str, Any] | None = None,
) -> Path:
    """Write the bundle of a live task and its set-up datamodule to ``target`` (new).

    The files are written to a staging folder beside ``target``, loaded back from there
    (the examples replayed), and only then renamed to ``target``: a failure leaves nothing.
    """
    try:
        example_inputs = datamodule.example_inputs(examples)
    except NotImplementedError as exc:
        raise DataError(f"{exc}; see docs/deploy.md (the datamodule contract)") from None
    model = model or describe_classes(task, datamodule)
    preprocessing = _encode_state(datamodule.state_dict(), "fitted_state")
    predictor = Predictor(task, datamodule)
    expected = predictor.predict_records(example_inputs)
    signature = {
        "inputs": datamodule.input_signature(),
        "outputs": sorted({k for row in expected for k in row}),
    }
    target = Path(target)
    created = [p for p in reversed(target.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is for sharing
    try:
        from safetensors.torch import save_file

        save_file(_task_weights(task.state_dict()), str(staging / "weights.safetensors"))
        (staging / "weights.safetensors").chmod(0o644)
        for file, data in (
            ("model.json", model),
            ("preprocessing.json", preprocessing),
            ("signature.json", signature),
            ("example_input.json", example_inputs),
            ("expected_output.json", expected),
        ):
            write_text_atomic(staging / file, to_json(data, indent=1) + "\n")
        write_text_atomic(staging / "config.yaml", config)
        manifest: dict[str, Any] = {
            "bundle_format": BUNDLE_FORMAT,
            "versions": _run_versions(model),
            "task": model["task"],
            "datamodule": model["datamodule"],
            "preset": None,
            "input_kind": signature["inputs"].get("kind"),
            "training_metrics": {},
            **(facts or {}),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tolerance": {"atol": ATOL, "rtol": RTOL},
        }
        if onnx:
            from tasks._onnx import export_onnx

            manifest["onnx"] = export_onnx(predictor, staging / "model.onnx", example_inputs)
        files = [f for f in (*FILES, "model.onnx") if (staging / f).is_file()]
        manifest["files"] = {f: _sha256(staging / f) for f in files}
        write_text_atomic(staging / "manifest.json", to_json(manifest, indent=1) + "\n")
        # loads from the written files alone, replaying the examples, before it is published
        load_bundle(staging, backend="torch")
        if target.exists():
            raise DataError(f"{target} appeared while exporting; nothing was replaced")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):  # the folders made for it, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target


def _bundle_folder(
    run_dir: Path,
    out: str | Path | None,
    name: str | None,
    version: int | None,
    default_name: str | None = None,
) -> Path:
    """Where the bundle goes (``out/NAME/VERSION`` when a name or version is given); an
    existing bundle is never overwritten."""
    base = Path(out) if out is not None else run_dir / "bundle"
    if name is not None or version is not None:
        folder = base / str(name or default_name or "model")
        if version is None:
            taken = [int(p.name) for p in folder.glob("*") if p.name.isdigit()]
            version = max(taken, default=0) + 1
        if version < 1:
            raise ConfigError(f"--version must be >= 1, got {version}")
        base = folder / str(version)
    if base.exists() and any(base.iterdir()):
        raise DataError(
            f"{base} exists and is not empty: nothing was overwritten; pass another --out "
            "or a new --version"
        )
    if base.exists():
        base.rmdir()
    return base


def _training_metrics(run_dir: Path) -> dict[str, Any]:
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return {}
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    keys = ("metrics", "baseline", "baseline_name", "best_score", "best_epoch", "epochs")
    return {k: data[k] for k in keys if k in data}


# -- load ----------------------------------------------------------------------------------
def read_manifest(path: str | Path) -> dict[str, Any]:
    """A bundle's manifest, after checking its format and every file's SHA-256.

    Raises:
        DataError: not a bundle, a newer format, or a file changed since export.
    """
    folder = Path(path).expanduser()
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        raise DataError(f"{folder}: not a bundle (no manifest.json); make one with `export`")
    try:
        manifest = json.loads(manifest_file.read_text())
    except ValueError as exc:
        raise DataError(f"{manifest_file}: not valid JSON ({exc})") from None
    fmt = manifest.get("bundle_format")
    if not isinstance(fmt, int) or fmt > BUNDLE_FORMAT:
        raise DataError(
            f"{folder}: bundle format {fmt!r} is newer than this library reads "
            f"({BUNDLE_FORMAT}); upgrade lightning-tasks"
        )
    for file, digest in (manifest.get("files") or {}).items():
        item = folder / file
        if not item.is_file():
            raise DataError(f"{folder}: {file} is missing; re-export the bundle")
        if _sha256(item) != digest:
            raise DataError(
                f"{item}: its SHA-256 differs from the manifest's: the file changed after "
                "export; re-export the bundle rather than editing it"
            )
    missing = [f for f in FILES if f not in (manifest.get("files") or {})]
    if missing:
        raise DataError(f"{folder}: the manifest lists no {', '.join(missing)}")
    return manifest


def load_bundle(path: str | Path, backend: str = "torch", check: bool = True) -> Predictor:
    """Load a bundle folder for predictions, on the CPU.

    Args:
        path: The bundle folder (written by ``export``).
        backend: ``torch``, or ``onnx`` to predict with onnxruntime (needs ``model.onnx``).
        check: Replay the stored examples and fail if the predictions moved beyond the
            tolerance (on by default; the server always checks).

    Returns:
        A :class:`Predictor`.

    Raises:
        DataError: a changed, incomplete or newer bundle, or a failed self-check.
    """
    from safetensors.torch import load_file

    if backend not in ("torch", "onnx"):
        raise ConfigError(f"backend={backend!r}: expected 'torch' or 'onnx'")
    folder = Path(path).expanduser()
    manifest = read_manifest(folder)

    def read(file: str) -> Any:
        return json.loads((folder / file).read_text())

    model = read("model.json")
    task = _build("task", model["task"], model["task_arguments"])
    weights = load_file(str(folder / "weights.safetensors"), device="cpu")
    task.load_state_dict(weights)
    datamodule = _build("datamodule", model["datamodule"], model["datamodule_arguments"])
    datamodule.load_state_dict(_decode_state(read("preprocessing.json")))
    graph = None
    if backend == "onnx":
        if "model.onnx" not in manifest["files"]:
            raise DataError(f"{folder}: no model.onnx; export with --onnx for backend='onnx'")
        from tasks._onnx import OnnxGraph

        onnx = manifest["onnx"]
        encoder = datamodule.input_encoder() if onnx.get("raw_inputs") else None
        graph = OnnxGraph(folder / "model.onnx", onnx["outputs"], encoder)
    predictor = Predictor(task, datamodule, manifest, read("signature.json"), graph, backend)
    if check:
        predictor.check(read("example_input.json"), read("expected_output.json"))
    return predictor
