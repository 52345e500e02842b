"""The HTTP server: a real `python -m tasks serve` process on 127.0.0.1, real requests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import make_table, write_image_folder

from tasks.api import run
from tasks.bundle import compare_records, export_bundle, load_bundle

requests = pytest.importorskip("requests")
pytest.importorskip("litserve")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m tasks serve BUNDLE`` on a free port, stopped at the end."""

    def __init__(self, bundle, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasks",
                "serve",
                str(bundle),
                "--port",
                str(self.port),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stop() ends the workers too
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stdout.read()}")
            try:
                if requests.get(self.url + "/health", timeout=10).text == "ok":
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError("the server did not become healthy in 120 s")

    def post(self, path: str, body, **options):
        return requests.post(self.url + path, json=body, timeout=60, **options)

    def stop(self) -> None:
        """SIGTERM, as a scheduler sends it: the server and its workers must all end."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of the group


@pytest.fixture(scope="module")
def table_bundle(tmp_path_factory):
    """A table with a category column, trained briefly and exported."""
    root = tmp_path_factory.mktemp("table")
    frame = make_table(160)
    frame["colour"] = np.where(frame["a"] > 0, "red", "blue")
    frame.to_csv(root / "table.csv", index=False)
    out = root / "run"
    run(
        "tabular_classification",
        [
            f"datamodule.path={root / 'table.csv'}",
            "datamodule.target=label",
            "debug=tiny",
            f"output_dir={out}",
        ],
    )
    return export_bundle(out, root / "bundle")


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    folder = write_image_folder(root / "images")
    out = root / "run"
    run("image_folder", [f"datamodule.path={folder}", "debug=tiny", f"output_dir={out}"])
    return export_bundle(out, root / "bundle")


@pytest.fixture(scope="module")
def table_server(table_bundle):
    server = Server(table_bundle, "--max-batch-size", "8", "--batch-timeout", "0.01")
    yield server
    server.stop()


def _examples(bundle):
    return json.loads((bundle / "example_input.json").read_text())


def test_both_endpoints_answer_as_the_predictor_does(table_bundle, table_server):
    examples = _examples(table_bundle)
    local = load_bundle(table_bundle).predict_records(examples)
    answer = table_server.post("/predict", {"inputs": examples})
    assert answer.status_code == 200
    compare_records(answer.json()["predictions"], local, "server /predict")
    name = json.loads((table_bundle / "manifest.json").read_text())["preset"]
    answer = table_server.post(f"/v1/models/{name}:predict", {"instances": examples})
    assert answer.status_code == 200
    compare_records(answer.json()["predictions"], local, "server TF Serving path")
    info = requests.get(table_server.url + "/info", timeout=10).json()["model"]
    assert info["signature"]["inputs"]["kind"] == "record"
    assert info["training_metrics"]["metrics"]


def test_eight_threads_of_fifty_requests_are_all_answered_and_identical(table_bundle, table_server):
    examples = _examples(table_bundle)
    local = load_bundle(table_bundle).predict_records(examples)
    answers: dict[tuple[int, int], object] = {}

    def client(worker: int) -> None:
        with requests.Session() as session:
            for i in range(50):
                row = (worker + i) % len(examples)
                reply = session.post(
                    table_server.url + "/predict", json={"inputs": [examples[row]]}, timeout=60
                )
                answers[(worker, i)] = (row, reply.status_code, reply.json())

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(answers) == 400
    for row, status, body in answers.values():
        assert status == 200
        compare_records(body["predictions"], [local[row]], "concurrent request")


BAD_REQUESTS = [
    ("{not json", 400, "not valid JSON"),
    ("[]", 400, "empty list"),
    ('{"inputs": []}', 400, "empty list"),
    ('{"rows": [{"a": 1}]}', 400, 'expected {"inputs": [...]}'),
    ('{"inputs": [{"a": 1}], "extra": 2}', 400, "unknown field(s) ['extra']"),
    ('{"inputs": 5}', 400, "must be a list"),
    ('{"inputs": [1, 2]}', 422, "expected a record"),
    ('{"inputs": [{"a": 0.1, "b": 0.2, "c": 0.3}]}', 422, "d"),
    ('{"inputs": [{"a": "x", "b": 0.2, "c": 0.3, "d": 1, "colour": "red"}]}', 422, "a"),
]


@pytest.mark.parametrize("body,status,words", BAD_REQUESTS)
def test_a_bad_request_gets_its_4xx_and_the_server_goes_on(
    body, status, words, table_bundle, table_server
):
    reply = requests.post(
        table_server.url + "/predict",
        data=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]
    good = table_server.post("/predict", {"inputs": _examples(table_bundle)[:1]})
    assert good.status_code == 200


def test_an_unknown_category_is_answered_with_a_warning(table_bundle, table_server):
    record = dict(_examples(table_bundle)[0], colour="purple")
    reply = table_server.post("/predict", {"inputs": [record]})
    assert reply.status_code == 200
    body = reply.json()
    assert len(body["predictions"]) == 1
    assert any("purple" in w for w in body.get("warnings", [])), body


def test_an_oversized_body_gets_413(table_server):
    reply = requests.post(
        table_server.url + "/predict",
        data=b'{"inputs": ["' + b"x" * (17 * 1024 * 1024) + b'"]}',
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert reply.status_code == 413
    assert table_server.post("/predict", {"inputs": [{"a": 1}]}).status_code == 422


def test_no_nan_in_a_json_answer(table_bundle, table_server):
    record = dict(_examples(table_bundle)[0], a=None)  # a missing number: imputed
    reply = table_server.post("/predict", {"inputs": [record]})
    assert reply.status_code in (200, 422)
    assert "NaN" not in reply.text and "Infinity" not in reply.text


def test_images_go_in_as_base64_and_bad_images_get_422(image_bundle):
    server = Server(image_bundle)
    try:
        examples = _examples(image_bundle)
        local = load_bundle(image_bundle).predict_records(examples)
        reply = server.post("/predict", {"inputs": examples})
        assert reply.status_code == 200
        compare_records(reply.json()["predictions"], local, "images")
        broken = base64.b64encode(b"\x89PNG not really").decode()
        reply = server.post("/predict", {"inputs": [examples[0], broken]})
        assert reply.status_code == 422 and "image 1 could not be read" in reply.json()["error"]
        assert server.post("/predict", {"inputs": examples[:1]}).status_code == 200
    finally:
        server.stop()


def test_a_bundle_that_fails_its_self_check_never_starts_serving(table_bundle, tmp_path):
    import shutil

    from tasks.bundle import _sha256

    folder = tmp_path / "broken"
    shutil.copytree(table_bundle, folder)
    expected = json.loads((folder / "expected_output.json").read_text())
    expected[0] = {k: ("nope" if isinstance(v, str) else v) for k, v in expected[0].items()}
    (folder / "expected_output.json").write_text(json.dumps(expected))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["expected_output.json"] = _sha256(folder / "expected_output.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [sys.executable, "-m", "tasks", "serve", str(folder), "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "bundle self-check" in result.stderr


def test_images_can_be_uploaded_as_multipart_files(image_bundle, tmp_path):
    server = Server(image_bundle)
    try:
        examples = _examples(image_bundle)
        local = load_bundle(image_bundle).predict_records(examples[:2])
        files = []
        for i, encoded in enumerate(examples[:2]):
            path = tmp_path / f"{i}.png"
            path.write_bytes(base64.b64decode(encoded))
            files.append(("file", (path.name, path.read_bytes(), "image/png")))
        reply = requests.post(server.url + "/predict", files=files, timeout=60)
        assert reply.status_code == 200, reply.text
        compare_records(reply.json()["predictions"], local, "multipart upload")
        bad = [("file", ("x.png", b"not an image", "image/png"))]
        reply = requests.post(server.url + "/predict", files=bad, timeout=60)
        assert reply.status_code == 422 and "could not be read" in reply.json()["error"]
    finally:
        server.stop()


def test_sigterm_ends_the_server_and_its_workers(table_bundle):
    server = Server(table_bundle)
    group = os.getpgid(server.process.pid)
    server.process.terminate()
    assert server.process.wait(timeout=60) == 0
    deadline = time.time() + 30
    while time.time() < deadline:  # the workers leave with it
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(group, signal.SIGKILL)
        raise AssertionError("worker processes outlived the server's SIGTERM")
