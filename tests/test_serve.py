"""``edgesent serve``: a real server process on a free loopback port, called with a real HTTP client.

One server per module, serving the classifier and the span model under two names (started once, stopped with
SIGTERM at the end, which must exit 0); a second short-lived one
for the SIGTERM-with-requests-in-flight test; queue-full (429) and timeout (503) run in process on a slow fake model.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest


pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from edgesent.errors import ConfigError
from edgesent.serve import ServeConfig


KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny"
SPAN_MODEL = "aspects"  # the span model (task token-classification) the module's server serves beside MODEL
TEXTS = ["great food and friendly staff", "", "awful", "   ", "the phone arrived on tuesday", "héllo wörld ✓"]


class _Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        return self.log_path.read_text()


def _start(model_dir: Path, tmp: Path, *options: str, span_dir: Path | None = None) -> _Server:
    port = free_port()
    key_file = tmp / "keys.txt"
    key_file.write_text(f"# operators\nother-key\n{KEY}\n")
    log_path = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "edgesent", "serve", f"{MODEL}={model_dir}", "--port", str(port)]
    cmd += [f"{SPAN_MODEL}={span_dir}"] if span_dir is not None else []
    cmd += ["--api-key-file", str(key_file), "--threads", "1", *options]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return _Server(proc, url, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server not ready in 60 s: {log_path.read_text()}")


def _stop(server: _Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


@pytest.fixture(scope="module")
def server(tiny_onnx_dir: Path, tiny_span_onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    limits = ["--max-wait-ms", "20", "--max-texts", "8", "--max-chars", "200", "--max-body-bytes", "2048"]
    srv = _start(tiny_onnx_dir, tmp_path_factory.mktemp("serve"), *limits, span_dir=tiny_span_onnx_dir)
    yield srv
    assert _stop(srv) == 0, srv.log()


@pytest.fixture(scope="module")
def client(server: _Server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(tiny_onnx_dir: Path):
    from edgesent.runtime import Predictor

    return Predictor.load(tiny_onnx_dir, threads=1)


def _expected(predictor, texts: list[str], top_k: int | None = None) -> list[dict]:
    """What the in-process predictor gives for the same texts, per-item errors included."""
    rows = [p.to_dict() for p in predictor.predict_stream(texts, top_k=top_k)]
    assert [row.get("error") for row in rows] == [None if t.strip() else "empty text" for t in texts]
    return rows


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert g["label"] == w["label"] and g["truncated"] == w["truncated"] and g.get("error") == w.get("error")
        assert list(g["scores"]) == list(w["scores"])
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)


def _metrics(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("top_k", [None, 2])
def test_predictions_equal_predictor(client, predictor, top_k) -> None:
    texts = [*TEXTS, "a " * 99]  # the last one is 99 tokens: truncated to 64
    response = client.post(f"/v1/models/{MODEL}/predict", json={"texts": texts, "top_k": top_k})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL
    _assert_same(body["results"], _expected(predictor, texts, top_k))
    assert body["results"][-1]["truncated"] is True


def test_models_probes_and_openapi(server, client, tiny_onnx_dir, tiny_span_onnx_dir) -> None:
    from edgesent.artifacts import manifest_sha256, read_manifest

    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}  # no key needed
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    model, span_model = client.get("/v1/models").json()["models"]
    manifest = read_manifest(tiny_onnx_dir)
    assert model == {
        "name": MODEL,
        "task": manifest.get("task", "classify"),
        "labels": manifest["labels"],
        "precision": manifest.get("precision"),
        "runtime": "onnxruntime",
        "provider": "cpu",
        "max_length": manifest["max_length"],
        "manifest_sha256": manifest_sha256(tiny_onnx_dir),
    }
    span_manifest = read_manifest(tiny_span_onnx_dir)
    assert span_model == {
        "name": SPAN_MODEL,
        "task": "token-classification",
        "labels": span_manifest["labels"],
        "tags": span_manifest["tags"],
        "precision": "fp32",
        "runtime": "onnxruntime",
        "provider": "cpu",
        "max_length": span_manifest["max_length"],
        "manifest_sha256": manifest_sha256(tiny_span_onnx_dir),
    }
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/v1/models/{name}/predict" in schema["paths"]
    result = schema["components"]["schemas"]["Result"]["properties"]
    assert result["spans"]["items"] == {"$ref": "#/components/schemas/Span"}
    assert schema["components"]["schemas"]["Span"]["required"] == ["text", "start", "end", "label", "score"]


def test_span_model_returns_the_predictors_spans(client, tiny_span_onnx_dir) -> None:
    from edgesent.runtime import Predictor

    texts = ["great 😀 service 👍🏽 was awful", "", "服务很好 the staff", "Café naïve résumé"]
    response = client.post(f"/v1/models/{SPAN_MODEL}/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    want = [p.to_dict() for p in Predictor.load(tiny_span_onnx_dir, threads=1).predict_stream(texts)]
    assert [row.keys() for row in results] == [row.keys() for row in want]
    assert results[1] == {"spans": [], "truncated": False, "unknown_tokens": 0, "error": "empty text"}
    for text, got, expected in zip(texts, results, want):
        assert [{**s, "score": None} for s in got["spans"]] == [{**s, "score": None} for s in expected["spans"]]
        assert [s["score"] for s in got["spans"]] == pytest.approx([s["score"] for s in expected["spans"]], abs=1e-5)
        assert all(text[s["start"] : s["end"]] == s["text"] for s in got["spans"])
    assert sum(len(row["spans"]) for row in results) > 3
    refused = client.post(f"/v1/models/{SPAN_MODEL}/predict", json={"texts": ["great"], "top_k": 2})
    assert refused.status_code == 422 and "returns spans, not label scores" in refused.json()["error"]


def test_span_metrics_count_each_span_label(client) -> None:
    before = _metrics(client)
    texts = ["great 😀 service 👍🏽 was awful", "服务很好 the staff", "   "]
    response = client.post(f"/v1/models/{SPAN_MODEL}/predict", json={"texts": texts})
    assert response.status_code == 200
    spans = [span["label"] for row in response.json()["results"] for span in row["spans"]]
    after = _metrics(client)

    def moved(family: str, **labels: str) -> float:
        name = f"{family}_total"
        return _value(after[family], name, model=SPAN_MODEL, **labels) - _value(
            before[family], name, model=SPAN_MODEL, **labels
        )

    assert moved("edgesent_texts_predicted") == 2
    assert {s.labels["label"] for s in after["edgesent_predictions"] if s.labels["model"] == SPAN_MODEL} == {
        "negative",
        "positive",
    }  # span labels, not BIO tags, each from the start
    for label in ("negative", "positive"):
        assert moved("edgesent_predictions", label=label) == spans.count(label)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/openapi.json"])
def test_auth_refuses_missing_or_wrong_key(server, headers, path) -> None:
    response = httpx.get(f"{server.url}{path}", headers=headers)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]
    assert httpx.get(f"{server.url}{path}", headers=AUTH).status_code == 200
    assert httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer other-key"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[" * 2000, 400, "nested too deeply"),  # past the parser's depth: RecursionError, not a 500
        (b'{"texts": ' + b"[" * 1010 + b"]" * 1010 + b"}", 400, "nested too deeply"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"texts": "one"}', 422, "list of strings"),
        (b'{"texts": ["a", 3]}', 422, "texts[1] must be a string"),
        (b'{"texts": ["a"], "top_k": 0}', 422, "top_k"),
        (b'{"texts": ["a"], "top_k": "2"}', 422, "top_k"),
        (b'{"texts": ["a"], "tokens": 1}', 422, "unknown field"),
        (json.dumps({"texts": ["a"] * 9}).encode(), 413, "limit is 8"),
        (json.dumps({"texts": ["a", "b" * 201]}).encode(), 413, "texts[1] has 201 characters"),
        (json.dumps({"texts": ["a " * 1100]}).encode(), 413, "2048 bytes"),
    ],
)
def test_limits_and_malformed_input(client, body, status, message) -> None:
    response = client.post(f"/v1/models/{MODEL}/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"] and response.json()["status"] == status
    assert client.post(f"/v1/models/{MODEL}/predict", json={"texts": ["still serving"]}).status_code == 200


def test_unknown_model_route_and_method(client) -> None:
    response = client.post("/v1/models/nope/predict", json={"texts": ["a"]})
    assert response.status_code == 404 and "unknown model 'nope'" in response.json()["error"]
    assert client.get("/v2/anything").status_code == 404
    assert client.get(f"/v1/models/{MODEL}/predict").status_code == 405


def test_made_up_methods_share_one_series(server, client) -> None:
    made_up = [f"M{i:03d}" for i in range(20)] + ["PUT", "OPTIONS"]
    before = _metrics(client)["edgesent_requests"]
    with httpx.Client(base_url=server.url) as anonymous:  # no key: a caller who is refused must not add series
        assert {anonymous.request(method, "/x").status_code for method in made_up} == {401}
    after = _metrics(client)["edgesent_requests"]
    assert {s.labels["method"] for s in after} <= {"GET", "HEAD", "POST", "OTHER"}
    name = "edgesent_requests_total"
    moved = _value(after, name, route="other", method="OTHER", status="401") - _value(
        before, name, route="other", method="OTHER", status="401"
    )
    assert moved == len(made_up)


def test_chunked_body_over_limit_and_lone_surrogate(client, predictor) -> None:
    chunks = iter([b'{"texts": ["', b"a" * 1500, b"a" * 1500, b'"]}'])
    response = client.post(f"/v1/models/{MODEL}/predict", content=chunks)  # no Content-Length
    assert response.status_code == 413
    response = client.post(
        f"/v1/models/{MODEL}/predict",
        content=b'{"texts": ["bad \\ud800 text"]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json()["results"][0]["label"] in predictor.labels


def test_client_gone_mid_body_is_499_without_traceback(server, client) -> None:
    def count(status: str) -> float:
        samples = _metrics(client)["edgesent_requests"]
        return _value(samples, "edgesent_requests_total", route="/v1/models/{name}/predict", status=status)

    before_499, before_500 = count("499"), count("500")
    head = f"POST /v1/models/{MODEL}/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"texts": ["gre')  # 15 of the 100 bytes announced, then hang up
    deadline = time.monotonic() + 10
    while count("499") == before_499 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count("499") == before_499 + 1 and count("500") == before_500, server.log()
    assert "Traceback" not in server.log() and "ClientDisconnect" not in server.log()
    assert any(json.loads(line).get("status") == 499 for line in server.log().splitlines() if line.startswith("{"))


def test_batching_merges_concurrent_requests_and_returns_own_rows(client, predictor) -> None:
    before = _metrics(client)["edgesent_batch_size"]
    requests = [[f"great food {i}", "awful " * (i % 3 + 1), f"okay {i} phone"][: i % 3 + 1] for i in range(16)]
    results: dict[int, list] = {}
    barrier = threading.Barrier(len(requests))

    def call(i: int) -> None:
        barrier.wait()
        response = client.post(f"/v1/models/{MODEL}/predict", json={"texts": requests[i]})
        results[i] = response.json()["results"] if response.status_code == 200 else response.text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for i, texts in enumerate(requests):
        _assert_same(results[i], _expected(predictor, texts))
    after = _metrics(client)["edgesent_batch_size"]
    calls = _value(after, "edgesent_batch_size_count") - _value(before, "edgesent_batch_size_count")
    texts = _value(after, "edgesent_batch_size_sum") - _value(before, "edgesent_batch_size_sum")
    assert texts == sum(map(len, requests))
    assert calls < len(requests)  # some requests shared a model call
    assert _value(after, "edgesent_batch_size_bucket", le="1.0") < _value(after, "edgesent_batch_size_count")


def test_metrics_parse_and_move(client, predictor) -> None:
    before = _metrics(client)
    texts = ["great food", "awful", "", "okay"]
    assert client.post(f"/v1/models/{MODEL}/predict", json={"texts": texts}).status_code == 200
    assert client.post("/v1/models/nope/predict", json={"texts": ["a"]}).status_code == 404
    empty = client.post(f"/v1/models/{MODEL}/predict", json={"texts": []})
    assert empty.status_code == 200 and empty.json() == {"model": MODEL, "results": []}
    after = _metrics(client)

    def moved_by(family: str, name: str) -> float:
        return _value(after[family], name, model=MODEL) - _value(before[family], name, model=MODEL)

    assert moved_by("edgesent_batch_size", "edgesent_batch_size_count") == 1  # the empty request is no model call
    assert moved_by("edgesent_batch_size", "edgesent_batch_size_sum") == 4
    assert moved_by("edgesent_text_errors", "edgesent_text_errors_total") == 1
    route = "/v1/models/{name}/predict"
    for status, moved in (("200", 2), ("404", 1)):
        name = "edgesent_requests_total"
        delta = _value(after["edgesent_requests"], name, route=route, status=status) - _value(
            before["edgesent_requests"], name, route=route, status=status
        )
        assert delta == moved
    delta = _value(after["edgesent_texts_predicted"], "edgesent_texts_predicted_total", model=MODEL) - _value(
        before["edgesent_texts_predicted"], "edgesent_texts_predicted_total", model=MODEL
    )
    assert delta == 3
    labels = [p.label for p in predictor.predict(["great food", "awful", "okay"])]
    for label in set(labels):
        name = "edgesent_predictions_total"
        moved = _value(after["edgesent_predictions"], name, model=MODEL, label=label) - _value(
            before["edgesent_predictions"], name, model=MODEL, label=label
        )
        assert moved == labels.count(label)
    assert _value(after["edgesent_text_errors"], "edgesent_text_errors_total", model=MODEL) >= 1
    assert (
        _value(after["edgesent_request_duration_seconds"], "edgesent_request_duration_seconds_count", route=route) > 0
    )
    assert _value(after["edgesent_model_load_seconds"], "edgesent_model_load_seconds", model=MODEL) > 0
    assert [s.labels["model"] for s in after["edgesent_queue_depth"]] == [MODEL, SPAN_MODEL]
    assert _value(after["edgesent_ready"], "edgesent_ready") == 1


def test_access_log_is_json_without_texts(server, client) -> None:
    secret = "confidential words"
    assert client.post(f"/v1/models/{MODEL}/predict", json={"texts": [secret]}).status_code == 200
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    predicts = [line for line in lines if line.get("path") == f"/v1/models/{MODEL}/predict" and line["status"] == 200]
    assert predicts and predicts[-1]["n_texts"] == 1 and predicts[-1]["model"] == MODEL and predicts[-1]["ms"] >= 0
    assert secret not in server.log()


def test_sigterm_finishes_requests_in_flight(tiny_onnx_dir, tmp_path, predictor) -> None:
    srv = _start(tiny_onnx_dir, tmp_path, "--max-wait-ms", "3000", "--max-batch", "256")
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            response = httpx.post(
                f"{srv.url}/v1/models/{MODEL}/predict",
                json={"texts": [f"great {i}", "awful"]},
                headers=AUTH,
                timeout=30,
            )
            results[i] = response.json()["results"] if response.status_code == 200 else response.status_code
        except httpx.HTTPError as err:
            results[i] = repr(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    route = "/v1/models/{name}/predict"
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=srv.url, headers=AUTH) as c:  # SIGTERM once all 8 wait for their batch (3 s)
        while _value(_metrics(c)["edgesent_requests_in_flight"], "edgesent_requests_in_flight", route=route) < 8:
            assert time.monotonic() < deadline, "requests never reached the server"
            time.sleep(0.02)
    assert _stop(srv) == 0, srv.log()
    for thread in threads:
        thread.join(30)
    for i in range(8):
        _assert_same(results[i], _expected(predictor, [f"great {i}", "awful"]))  # type: ignore[arg-type]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{srv.url}/healthz", timeout=2)


def test_tampered_model_stops_the_start(short_onnx_copy: Path) -> None:
    model = short_onnx_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:-16] + b"\0" * 16)
    result = subprocess.run(
        [sys.executable, "-m", "edgesent", "serve", str(short_onnx_copy), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Error: ") and "sha256 does not match" in result.stderr


def test_busy_port_is_one_line(tiny_onnx_dir) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "edgesent", "serve", str(tiny_onnx_dir), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2 and result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("name", "args", "env", "message"),
    [
        ("tiny", [], {"EDGESENT_API_KEYS": " , "}, "EDGESENT_API_KEYS is set but holds no key"),
        ("tiny", [], {"EDGESENT_API_KEYS": ""}, "EDGESENT_API_KEYS is set but holds no key"),
        ("tiny", ["--api-key-file", "{latin1}"], {}, "not UTF-8 text"),
        ("tiny", ["--max-batch", "99999999999999999999"], {}, "max_batch must be in [1, 65536]"),
        ("tiny", ["--max-queue", str(10**19)], {}, "max_queue must be in"),
        ("tiny", ["--max-body-bytes", str(10**30)], {}, "max_body_bytes must be in"),
        ("tiny", ["--timeout", "1e300"], {}, "timeout_s must be in (0, 86400]"),
        ("sl/ash", [], {}, "model name 'sl/ash' cannot be a URL path segment"),
        ("..", [], {}, "model name '..' cannot be a URL path segment"),
    ],
)
def test_bad_start_is_one_line_exit_2(tiny_onnx_dir, tmp_path, monkeypatch, name, args, env, message) -> None:
    latin1 = tmp_path / "keys.txt"
    latin1.write_bytes("cl\u00e9\n".encode("latin-1"))  # a key file that is not UTF-8
    monkeypatch.delenv("EDGESENT_API_KEYS", raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    cmd = [sys.executable, "-m", "edgesent", "serve", f"{name}={tiny_onnx_dir}", "--port", str(free_port())]
    cmd += [arg.format(latin1=latin1) for arg in args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_server_core_imports_no_torch(tiny_onnx_dir) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import edgesent.serve
        assert not [m for m in ("torch", "transformers") if m in sys.modules]
        app = edgesent.serve.create_app([{str(tiny_onnx_dir)!r}], api_keys=[])
        heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


class _SlowPredictor:
    """A stand-in model that takes ``delay`` seconds per call, to fill the queue and time requests out."""

    max_length = 16

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.labels = ["negative", "positive"]
        self.manifest = {"precision": "fake"}

    def predict(self, texts, batch_size=32, top_k=None):
        from edgesent.runtime import Prediction

        time.sleep(self.delay)
        return [Prediction("positive", 0.75, {"negative": 0.25, "positive": 0.75}) for _ in texts]

    def predict_stream(self, texts, batch_size=32, top_k=None):
        return iter(self.predict(list(texts), batch_size, top_k))


def _in_process(app, scenario):
    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await scenario(c)

    return asyncio.run(run())


def test_full_queue_is_429_with_retry_after() -> None:
    from edgesent.serve import create_app

    cfg = ServeConfig(max_batch=1, max_queue=2, max_texts=2, max_wait_ms=0)
    app = create_app({"slow": _SlowPredictor(0.4)}, cfg, api_keys=[])

    async def scenario(c):
        first = asyncio.create_task(c.post("/v1/models/slow/predict", json={"texts": ["a"]}))
        await asyncio.sleep(0.1)  # the first request is in the model; the queue is empty
        second = asyncio.create_task(c.post("/v1/models/slow/predict", json={"texts": ["b", "c"]}))
        await asyncio.sleep(0.05)  # the queue now holds 2 texts: full
        third = await c.post("/v1/models/slow/predict", json={"texts": ["d"]})
        return await first, await second, third, await c.post("/v1/models/slow/predict", json={"texts": ["e"]})

    first, second, third, later = _in_process(app, scenario)
    assert third.status_code == 429 and third.headers["Retry-After"] == "1" and "retry" in third.json()["error"]
    assert first.status_code == second.status_code == later.status_code == 200
    assert len(second.json()["results"]) == 2


def test_request_timeout_is_503_and_server_recovers() -> None:
    from edgesent.serve import create_app

    app = create_app({"slow": _SlowPredictor(0.3)}, ServeConfig(timeout_s=0.1), api_keys=[])

    async def scenario(c):
        late = await c.post("/v1/models/slow/predict", json={"texts": ["a"]})
        ready = await c.get("/readyz")
        await asyncio.sleep(0.3)
        return late, ready, await c.post("/v1/models/slow/predict", json={"texts": ["a"]}, timeout=5)

    late, ready, _ = _in_process(app, scenario)
    assert late.status_code == 503 and "no result within 0.1 s" in late.json()["error"]
    assert ready.status_code == 200
    # each caller's text was in the model when it gave up: predicted (and counted), just not delivered
    registry = app.state.metrics.registry
    assert registry.get_sample_value("edgesent_texts_predicted_total", {"model": "slow"}) == 2
    assert registry.get_sample_value("edgesent_batch_size_sum", {"model": "slow"}) == 2


def test_batch_never_exceeds_max_batch_when_a_caller_gave_up() -> None:
    from edgesent.serve.batcher import DynamicBatcher

    calls: list[list[str]] = []

    def predict(texts: list[str]) -> list[dict]:
        calls.append(texts)
        time.sleep(0.1)
        return [{"text": text} for text in texts]

    async def scenario() -> tuple[list[dict], list[dict]]:
        batcher = DynamicBatcher("m", predict, max_batch=8, max_wait_ms=0)
        batcher.start()
        busy = batcher.submit(["x"])  # holds the model thread while the others queue
        await asyncio.sleep(0.02)
        lead = batcher.submit(["a"] * 7)
        dead = batcher.submit(["d"])
        rest = batcher.submit(["c"] * 8)  # 7 + 8 > 8: must lead the next call, not join the first
        dead.cancel()  # what asyncio.wait_for does when its caller times out
        await busy
        results = await lead, await rest
        await batcher.stop()
        return results

    lead, rest = asyncio.run(scenario())
    assert [len(texts) for texts in calls] == [1, 7, 8]
    assert all("d" not in texts for texts in calls)  # the dead job is dropped, never predicted
    assert [row["text"] for row in lead] == ["a"] * 7 and [row["text"] for row in rest] == ["c"] * 8


def test_serve_config_validates() -> None:
    with pytest.raises(ConfigError, match="max_batch must be"):
        ServeConfig(max_batch=0)
    with pytest.raises(ConfigError, match="max_queue=4 is below max_texts=8"):
        ServeConfig(max_queue=4, max_texts=8)
    with pytest.raises(ConfigError, match=r"max_chars must be in \[1, 1e\+07\]"):
        ServeConfig(max_chars=10**8)
    with pytest.raises(ConfigError, match="shutdown_timeout_s must be in"):
        ServeConfig(shutdown_timeout_s=1e9)
    with pytest.raises(ConfigError, match="unknown setting"):
        ServeConfig.from_dict({"max_bach": 3})
    assert ServeConfig.from_dict(ServeConfig(port=9000).to_dict()) == ServeConfig(port=9000)


def test_missing_extra_is_one_line(monkeypatch) -> None:
    import importlib.util

    from edgesent.errors import MissingDependencyError
    from edgesent.serve import require_serve_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    with pytest.raises(MissingDependencyError, match=r"missing: uvicorn.*pip install 'edgesent\[serve\]'"):
        require_serve_extra("edgesent serve")


def test_cli_help(runner) -> None:
    from edgesent.cli import cli

    result = runner.invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--max-batch" in result.output and "--api-key-file" in result.output


def test_listening_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    from edgesent.serve.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # else Nagle + delayed ACK: ~40 ms on every response
    finally:
        sock.close()
