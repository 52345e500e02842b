"""Serving cost: the HTTP server against calling the predictor in-process, and onnxruntime
against torch, for a tabular and an image bundle, on this machine's CPU.

For each bundle (trained here in a few seconds, or given with ``--bundle``):

(a) in-process: ``load_bundle(...).predict_records`` on one row at a time (latency) and on
    batches of 256 rows (throughput), with the torch and the ONNX backend;
(b) the server (``python -m tasks serve``, a real process on 127.0.0.1) answering one
    client at a time, one row per request, with dynamic batching off;
(c) the server with dynamic batching (``--max-batch-size 16``) answering 8 concurrent
    clients, one row per request.

Printed: requests (or rows) per second, p50 and p99 latency, and the ratios that matter:
server p50 / in-process p50 (the server's overhead per request), batched server
throughput / unbatched, and torch / onnxruntime time per row.

    python benchmarks/serve.py                    # both bundles, 400 requests per case
    python benchmarks/serve.py --requests 100     # a quick look
    python benchmarks/serve.py --bundle PATH ...  # your own bundles
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _make_bundles(folder: Path) -> list[Path]:
    """A tabular and an image bundle from short trainings on generated data."""
    from conftest import make_table, write_image_folder

    from tasks.api import run
    from tasks.bundle import export_bundle

    table = make_table(2000)
    table.to_csv(folder / "table.csv", index=False)
    images = write_image_folder(folder / "images", per_class=40, size=28)
    bundles = []
    for name, overrides in (
        (
            "tabular",
            [
                "+task=tabular_classification",
                f"datamodule.path={folder / 'table.csv'}",
                "datamodule.target=label",
            ],
        ),
        ("image", ["+task=image_folder", f"datamodule.path={images}"]),
    ):
        preset = overrides[0].split("=", 1)[1]
        run_dir = folder / f"run_{name}"
        run(
            preset,
            [
                *overrides[1:],
                "trainer.max_epochs=3",
                "logger=none",
                "trainer.enable_progress_bar=false",
                f"output_dir={run_dir}",
            ],
        )
        bundles.append(export_bundle(run_dir, folder / f"bundle_{name}", onnx=True))
    return bundles


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def _in_process(bundle: Path, rows: list[Any], requests: int) -> dict[str, Any]:
    from tasks.bundle import load_bundle

    out = {}
    for backend in ("torch", "onnx"):
        predictor = load_bundle(bundle, backend=backend)
        for row in rows[:5]:  # warm up
            predictor.predict_records([row])
        times = []
        for i in range(requests):
            started = time.perf_counter()
            predictor.predict_records([rows[i % len(rows)]])
            times.append(time.perf_counter() - started)
        big = (rows * (256 // len(rows) + 1))[:256]
        started = time.perf_counter()
        for _ in range(5):
            predictor.predict_records(big)
        batch_rate = 5 * 256 / (time.perf_counter() - started)
        p50, p99 = _percentiles(times)
        out[backend] = {"p50_ms": p50, "p99_ms": p99, "rows_per_s_batch256": batch_rate}
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server(bundle: Path, *options: str) -> tuple[subprocess.Popen, str]:
    import requests

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks", "serve", str(bundle), "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).text == "ok":
                return process, url
        except requests.ConnectionError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server for {bundle} did not start")


def _load(url: str, rows: list[Any], requests_total: int, clients: int) -> dict[str, Any]:
    import requests

    times: list[float] = []
    lock = threading.Lock()
    per_client = requests_total // clients

    def client(worker: int) -> None:
        with requests.Session() as session:
            for i in range(per_client):
                row = rows[(worker + i) % len(rows)]
                started = time.perf_counter()
                reply = session.post(url + "/predict", json={"inputs": [row]}, timeout=60)
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise SystemExit(f"request failed: {reply.status_code} {reply.text[:200]}")
                with lock:
                    times.append(elapsed)

    for row in rows[:5]:  # warm up
        requests.post(url + "/predict", json={"inputs": [row]}, timeout=60)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    p50, p99 = _percentiles(times)
    return {"requests_per_s": len(times) / wall, "p50_ms": p50, "p99_ms": p99}


def measure(bundle: Path, requests_total: int) -> dict[str, Any]:
    rows = json.loads((bundle / "example_input.json").read_text())
    report: dict[str, Any] = {"bundle": str(bundle)}
    report["in_process"] = _in_process(bundle, rows, requests_total)
    for label, options, clients in (
        ("server_batch1", ("--max-batch-size", "1"), 1),
        ("server_dynamic_8_clients", ("--max-batch-size", "16", "--batch-timeout", "0.005"), 8),
    ):
        process, url = _server(bundle, *options)
        try:
            report[label] = _load(url, rows, requests_total, clients)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return report


def table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| bundle | in-process p50 torch / onnx (ms) | rows/s batch 256 torch / onnx | "
        "server 1 client: req/s, p50, p99 (ms) | server 8 clients, dynamic batching: req/s, "
        "p50, p99 (ms) | server p50 / in-process p50 | torch / onnx per row (batch 256) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        t, o = r["in_process"]["torch"], r["in_process"]["onnx"]
        s1, s8 = r["server_batch1"], r["server_dynamic_8_clients"]
        lines.append(
            f"| {Path(r['bundle']).name} | {t['p50_ms']:.2f} / {o['p50_ms']:.2f} | "
            f"{t['rows_per_s_batch256']:.0f} / {o['rows_per_s_batch256']:.0f} | "
            f"{s1['requests_per_s']:.0f}, {s1['p50_ms']:.1f}, {s1['p99_ms']:.1f} | "
            f"{s8['requests_per_s']:.0f}, {s8['p50_ms']:.1f}, {s8['p99_ms']:.1f} | "
            f"{s1['p50_ms'] / t['p50_ms']:.1f} | "
            f"{o['rows_per_s_batch256'] / t['rows_per_s_batch256']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", nargs="*", type=Path, help="bundles to measure")
    parser.add_argument("--requests", type=int, default=400, help="requests per case")
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        bundles = options.bundle or _make_bundles(Path(folder))
        reports = [measure(Path(b), options.requests) for b in bundles]
    print(table(reports))
    if options.json:
        options.json.write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
