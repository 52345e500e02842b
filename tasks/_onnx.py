"""A bundle's ``model.onnx``: the task's predict step exported with ``torch.onnx.export``,
checked against the torch predictor before it is kept (the parity gate)."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tasks.bundle import ATOL, PARITY_ROWS, RTOL, PredictGraph, Predictor, batch_inputs
from tasks.errors import DataError

log = logging.getLogger(__name__)

#: Rows compared one at a time (batch size 1) by the parity gate.
SINGLE_ROWS = 100


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise DataError('ONNX needs onnxruntime: pip install "lightning-tasks[onnx]"') from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EncodedGraph(nn.Module):
    """The datamodule's input encoder followed by the task's predict step: what
    ``model.onnx`` holds when the datamodule has an encoder (raw values in)."""

    def __init__(self, encoder: nn.Module, graph: PredictGraph) -> None:
        super().__init__()
        self.encoder = encoder
        self.predict = graph  # not "graph": the exporter's FX modules reserve that name
        self.keys = graph.keys

    def forward(self, *raw: Tensor) -> tuple[Tensor, ...]:
        encoded = self.encoder(*raw)
        return self.predict(*(encoded if isinstance(encoded, tuple) else (encoded,)))


class OnnxGraph:
    """``model.onnx`` run by onnxruntime, called like the torch predict step: the encoded
    tensors of the datamodule in (turned into raw values by ``encoder`` when the graph
    starts from them), a dict of named tensors out."""

    def __init__(self, path: Path, outputs: list[str], encoder: nn.Module | None = None) -> None:
        self.session = _session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = list(outputs)
        self.encoder = encoder

    def __call__(self, *inputs: Tensor) -> dict[str, Tensor]:
        if self.encoder is not None:
            inputs = self.encoder.raw(*inputs)
        # inputs are named input_<position>; the exporter drops those the graph never reads
        # (e.g. the empty categorical block of a table without categories)
        positions = [int(name.rsplit("_", 1)[1]) for name in self.inputs]
        if max(positions, default=-1) >= len(inputs):
            raise DataError(f"model.onnx reads input {max(positions)}, got {len(inputs)} inputs")
        feed = {n: inputs[i].detach().cpu().numpy() for n, i in zip(self.inputs, positions)}
        values = self.session.run(self.outputs, feed)
        return {key: torch.from_numpy(np.asarray(v)) for key, v in zip(self.outputs, values)}


def _sample_inputs(predictor: Predictor, example_inputs: Any) -> tuple[Tensor, ...]:
    """One predict batch of at least two rows (a batch of one would fix the batch size)."""
    dm = predictor.datamodule
    if getattr(predictor.task, "bundle_predict", None) is not None:
        inputs = batch_inputs(next(iter(dm.test_dataloader())))[:1]
    else:
        dm.predict_inputs(example_inputs)
        inputs = batch_inputs(next(iter(dm.predict_dataloader())))
    if len(inputs[0]) < 2:
        inputs = tuple(torch.cat([x, x]) for x in inputs)
    return inputs


def _dynamic(inputs: tuple[Tensor, ...], lengths: tuple[int, ...] = ()) -> list[dict[int, str]]:
    """Batch size varies for every input; so does dimension 1 (the length) of the inputs at
    the positions the datamodule names (``variable_length_inputs``: token ids)."""
    return [{0: "batch", 1: "length"} if i in lengths else {0: "batch"} for i in range(len(inputs))]


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress and advice to stdout/stderr; a user sees one line."""
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _export(
    graph: PredictGraph, inputs: tuple[Tensor, ...], path: Path, lengths: tuple[int, ...] = ()
) -> str:
    """Export with the dynamo exporter, falling back to the TorchScript one (logged)."""
    names = [f"input_{i}" for i in range(len(inputs))]
    axes = _dynamic(inputs, lengths)

    def export(**options: Any) -> None:
        torch.onnx.export(
            graph, inputs, str(path), input_names=names, output_names=graph.keys, **options
        )

    try:
        from torch.export import Dim

        dims: dict[str, Any] = {}
        shapes = tuple(
            {axis: dims.setdefault(name, Dim(name, min=1)) for axis, name in a.items()}
            for a in axes
        )
        export(
            dynamo=True,
            dynamic_shapes=(shapes,),  # one entry: forward takes *inputs
            external_data=False,  # one file: the bundle's hash covers all of the graph
            verbose=False,
        )
        return "dynamo"
    except Exception as exc:  # the exporter's failures are many and version-dependent
        reason = " ".join(str(exc).split())[:200]
        log.info("ONNX: the dynamo exporter failed (%s); using the TorchScript exporter", reason)
    export(
        dynamic_axes={
            **{n: a for n, a in zip(names, axes)},
            **{k: {0: "batch"} for k in graph.keys},
        },
        dynamo=False,
    )
    return "torchscript"


def _parity_batches(predictor: Predictor, arity: int) -> list[tuple[Tensor, ...]]:
    """Up to PARITY_ROWS test rows as predict inputs, in the test loader's batches."""
    batches, rows = [], 0
    for batch in predictor.datamodule.test_dataloader():
        inputs = batch_inputs(batch)[:arity]
        batches.append(inputs)
        rows += len(inputs[0])
        if rows >= PARITY_ROWS:
            break
    return batches


def parity(predictor: Predictor, graph: OnnxGraph, batches: list[tuple[Tensor, ...]]) -> dict:
    """Torch vs onnxruntime on ``batches`` and on their first rows one at a time: the largest
    absolute and relative differences and the share of rows whose prediction agrees."""
    singles = [tuple(x[i : i + 1] for x in b) for b in batches for i in range(len(b[0]))]
    report: dict[str, Any] = {"rows": sum(len(b[0]) for b in batches)}
    for label, chosen in (("batched", batches), ("batch_size_1", singles[:SINGLE_ROWS])):
        worst_abs = worst_rel = 0.0
        agree = total = 0
        over = None
        for inputs in chosen:
            ref = predictor._step(inputs)
            try:
                got = graph(*inputs)
            except DataError:
                raise
            except Exception as exc:  # onnxruntime's own errors: shapes, types
                reason = " ".join(str(exc).split())[:300]
                raise DataError(
                    f"ONNX parity gate failed ({label}): onnxruntime could not run a batch of "
                    f"{len(inputs[0])} row(s): {reason}; the bundle was not written"
                ) from None
            for key in graph.outputs:
                a, b = ref[key].detach().float().cpu(), got[key].float()
                if a.shape != b.shape:
                    raise DataError(
                        f"ONNX output {key} has shape {tuple(b.shape)}, torch's is {tuple(a.shape)}"
                    )
                diff = (a - b).abs()
                worst_abs = max(worst_abs, float(diff.max()) if diff.numel() else 0.0)
                rel = diff / a.abs().clamp(min=1e-12)
                worst_rel = max(worst_rel, float(rel.max()) if rel.numel() else 0.0)
                bad = diff > ATOL + RTOL * a.abs()
                if key == graph.outputs[0]:
                    rows_bad = bad.reshape(len(a), -1).any(dim=1) if a.ndim else bad.reshape(1)
                    agree += int((~rows_bad).sum())
                    total += len(rows_bad)
                if bool(bad.any()) and over is None:
                    over = (key, float(diff.max()))
        report[label] = {
            "max_abs_diff": worst_abs,
            "max_rel_diff": worst_rel,
            "agreement": agree / total if total else 1.0,
        }
        if over is not None:
            raise DataError(
                f"ONNX parity gate failed ({label}): output {over[0]!r} differs from torch by "
                f"{over[1]:.3g}, beyond {ATOL:g} + {RTOL:g} x |torch|; the bundle was not "
                "written (export without --onnx, or report the network)"
            )
    return report


def export_onnx(predictor: Predictor, path: Path, example_inputs: Any) -> dict[str, Any]:
    """Write the predict step to ``path`` and gate it on parity with the torch predictor.

    Returns:
        The manifest's ``onnx`` entry: exporter, opset, inputs/outputs, timings and the
        parity figures.

    Raises:
        DataError: the export failed or the ONNX graph disagrees with torch.
    """
    started = time.time()
    inputs = _sample_inputs(predictor, example_inputs)
    with torch.inference_mode():
        keys = list(predictor.task.predict_step(inputs, 0))
    # eval mode throughout: an exporter may set every submodule to its wrapper's mode
    graph: nn.Module = PredictGraph(predictor.task.eval(), keys).eval()
    encoder = predictor.datamodule.input_encoder()
    lengths = tuple(getattr(predictor.datamodule, "variable_length_inputs", ()))
    graph_inputs = inputs
    if encoder is not None:  # the graph starts from raw values
        graph = EncodedGraph(encoder, graph).eval()
        graph_inputs, lengths = tuple(encoder.raw(*inputs)), ()
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            exporter = _export(graph, graph_inputs, path, lengths)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise DataError(
            f"ONNX export of {type(predictor.task).__name__} failed: {reason}"
        ) from None
    runtime = OnnxGraph(path, keys, encoder)
    report = parity(predictor, runtime, [inputs, *_parity_batches(predictor, len(inputs))])
    described = encoder.describe() if encoder is not None else [{} for _ in graph_inputs]
    return {
        "exporter": exporter,
        # the inputs start from raw values (the encoder's statistics are in the graph)
        "raw_inputs": encoder is not None,
        "inputs": [
            {
                "name": n,
                "dtype": str(x.dtype).replace("torch.", ""),
                "shape": list(x.shape[1:]),
                **{k: v for k, v in about.items() if k != "dtype"},
            }
            for n, x, about in zip(
                [f"input_{i}" for i in range(len(graph_inputs))], graph_inputs, described
            )
            if n in runtime.inputs
        ],
        "outputs": keys,
        "parity": report,
        "seconds": round(time.time() - started, 2),
    }
