"""An HTTP prediction server for a bundle, built on LitServe (FastAPI and uvicorn underneath).

Endpoints:

- ``POST /predict``: ``{"inputs": [...]}`` (or a bare JSON list) -> ``{"predictions": [...]}``
  plus ``"warnings"`` when the inputs needed a fallback (e.g. an unseen category); images
  also as a multipart upload (``curl -F file=@cat.png``), one file per part;
- ``POST /v1/models/NAME:predict``: TensorFlow Serving's REST form, ``{"instances": [...]}``
  -> ``{"predictions": [...]}``;
- ``GET /health`` (``ok`` once every worker loaded the bundle) and ``GET /info`` (the
  signature, versions and training metrics).

A bad request gets a 4xx JSON answer ``{"error": "..."}`` that names the problem, and the
server goes on: requests batched together are answered one by one when one of them fails.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from tasks.bundle import Predictor, load_bundle, read_manifest
from tasks.errors import ConfigError, DataError

try:
    import litserve as ls
except ImportError:  # pragma: no cover - the [serve] extra is not installed
    raise ConfigError('serving needs LitServe: pip install "lightning-tasks[serve]"') from None

#: Largest request body accepted (bytes); larger ones get 413.
MAX_PAYLOAD = 16 * 1024 * 1024
#: Inputs in one request, at most.
MAX_INPUTS = 10_000
#: Input kinds whose inputs are independent rows, predicted together across requests.
ROW_KINDS = ("record", "image", "text", "sequence")


class BadRequest(Exception):
    """A request the server answers with ``status`` and an error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


class JsonBodyCheck:
    """ASGI middleware: a POST body larger than ``max_size`` gets 413 and one that is not
    valid JSON 400, both as JSON errors, before LitServe (which would answer 500)."""

    def __init__(self, app: Any, max_size: int = MAX_PAYLOAD) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"application/json").decode("latin-1")
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_size:
                await self._answer(
                    send, 413, f"request body over {self.max_size} bytes; send fewer inputs"
                )
                return
        if "json" in kind:
            try:
                json.loads(body or b"null")
            except ValueError as exc:
                await self._answer(send, 400, f"the request body is not valid JSON: {exc}")
                return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _answer(send: Any, status: int, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def request_inputs(payload: Any, field: str, kind: str) -> list[Any]:
    """The list of inputs of a request body (``{field: [...]}`` or a bare list).

    Raises:
        BadRequest: anything else, with what was expected.
    """
    if hasattr(payload, "multi_items"):  # multipart/form-data: uploaded files and fields
        if kind != "image":
            raise BadRequest(
                415, f"multipart uploads are for images; send JSON {{{field!r}: [...]}}"
            )
        payload = [
            value.file.read() if hasattr(value, "file") else value
            for _, value in payload.multi_items()
        ]
    if isinstance(payload, dict):
        if field not in payload:
            others = sorted(payload)[:5]
            raise BadRequest(400, f'expected {{"{field}": [...]}}, got the field(s) {others}')
        extra = sorted(set(payload) - {field, "signature_name"})
        if extra:
            raise BadRequest(400, f"unknown field(s) {extra} beside {field!r}")
        payload = payload[field]
    if isinstance(payload, (str, dict)) and kind in ("text", "image", "prompt", "record"):
        payload = [payload]
    if not isinstance(payload, list):
        raise BadRequest(400, f"{field} must be a list of inputs, got {type(payload).__name__}")
    if not payload:
        raise BadRequest(400, f"{field} is an empty list: send at least one input")
    if len(payload) > MAX_INPUTS:
        raise BadRequest(413, f"{len(payload)} inputs in one request; at most {MAX_INPUTS}")
    return payload


def _predict(predictor: Predictor, inputs: list[Any]) -> dict[str, Any]:
    """Predictions and the warnings the inputs raised (e.g. unseen categories)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rows = predictor.predict_records(inputs)
        except DataError as exc:
            raise BadRequest(422, str(exc)) from None
        except (ValueError, TypeError, KeyError) as exc:  # a malformed input deep inside
            raise BadRequest(422, f"the inputs do not fit the model: {exc}") from None
    answer: dict[str, Any] = {"predictions": rows}
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    if notes:
        answer["warnings"] = notes
    return answer


class BundleAPI(ls.LitAPI):
    """Serves one bundle at ``api_path``; requests carry their inputs in ``field``."""

    def __init__(self, bundle: str, field: str, **options: Any) -> None:
        super().__init__(**options)
        self.bundle = bundle
        self.field = field

    def setup(self, device: str) -> None:
        self.predictor = load_bundle(self.bundle)  # replays the bundle's examples
        self.kind = self.predictor.input_kind

    # no annotations on request or the answer: LitServe reads them as the endpoint's types
    def decode_request(self, request, **kwargs):  # noqa: ANN001, ANN201
        try:
            return request_inputs(request, self.field, self.kind)
        except BadRequest as exc:
            return exc

    def predict(self, items: Any, **kwargs: Any) -> Any:
        batched = self.max_batch_size > 1
        items = list(items) if batched else [items]
        answers: list[Any] = [item if isinstance(item, BadRequest) else None for item in items]
        todo = [i for i, a in enumerate(answers) if a is None]
        if self.kind in ROW_KINDS and len(todo) > 1:
            merged = [x for i in todo for x in items[i]]
            try:
                both = _predict(self.predictor, merged)
            except BadRequest:
                both = None  # one request is bad: answer each on its own
            if both is not None and len(both["predictions"]) == len(merged):
                start = 0
                for i in todo:
                    n = len(items[i])
                    answers[i] = {"predictions": both["predictions"][start : start + n]}
                    if "warnings" in both:
                        answers[i]["warnings"] = both["warnings"]
                    start += n
                todo = []
        for i in todo:
            try:
                answers[i] = _predict(self.predictor, items[i])
            except BadRequest as exc:
                answers[i] = exc
        return answers if batched else answers[0]

    def encode_response(self, output, **kwargs):  # noqa: ANN001, ANN201
        if isinstance(output, BadRequest):
            return _error_response(output.status, output.message)
        return output


def build_server(
    bundle: str | Path,
    workers: int = 1,
    max_batch_size: int = 16,
    batch_timeout: float = 0.005,
    timeout: float = 60.0,
) -> Any:
    """A LitServer for ``bundle`` (checked and loaded once here, so that a broken bundle
    fails before any worker starts)."""
    if workers < 1 or max_batch_size < 1 or batch_timeout < 0:
        raise ConfigError(
            f"--workers and --max-batch-size must be >= 1 and --batch-timeout >= 0, got "
            f"{workers}, {max_batch_size}, {batch_timeout}"
        )
    bundle = str(Path(bundle).expanduser().resolve())
    predictor = load_bundle(bundle)  # the examples replay here: refuse to start otherwise
    manifest = read_manifest(bundle)
    name = str(manifest.get("preset") or manifest.get("task") or "model")
    apis = [
        BundleAPI(
            bundle, field, max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=path
        )
        for field, path in (("inputs", "/predict"), ("instances", f"/v1/models/{name}:predict"))
    ]
    metadata = {
        "name": name,
        "signature": predictor.signature,
        "versions": manifest.get("versions"),
        "training_metrics": manifest.get("training_metrics"),
        "created": manifest.get("created"),
        "onnx": manifest.get("onnx", {}).get("parity"),
        "endpoints": ["/predict", f"/v1/models/{name}:predict", "/health", "/info"],
    }
    server = ls.LitServer(
        apis,
        accelerator="cpu",
        devices=1,
        workers_per_device=workers,
        timeout=timeout,
        model_metadata=json.loads(json.dumps(metadata, default=str)),
        middlewares=[(JsonBodyCheck, {"max_size": MAX_PAYLOAD})],
    )
    server.bundle_name = name
    return server


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_batch_size: int = 16,
    batch_timeout: float = 0.005,
) -> None:
    """Serve ``bundle`` until interrupted (``python -m tasks serve BUNDLE``)."""
    server = build_server(bundle, workers, max_batch_size, batch_timeout)
    print(
        f"serving {bundle} at http://{host}:{port}/predict and "
        f"/v1/models/{server.bundle_name}:predict (health: /health, signature: /info)",
        flush=True,
    )
    import multiprocessing
    import signal
    import threading

    def stop(signum: int, frame: Any) -> None:
        """SIGTERM (Docker, Kubernetes, kill): LitServe alone would leave its workers running.
        Once serving, set its shutdown event (from a thread: the main thread is blocked on
        that event's manager connection); while starting, stop as Ctrl-C would."""
        event = getattr(server, "_shutdown_event", None)
        if event is None:
            raise KeyboardInterrupt
        threading.Thread(target=event.set, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    except KeyboardInterrupt:
        pass  # a stop: not an error
    finally:
        for child in multiprocessing.active_children():  # no worker outlives the server
            child.terminate()
