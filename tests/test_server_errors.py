"""`grace serve` failure paths: the port checked and bound before the model loads, unknown
models (404), one error shape with the index named, the body read timeout (408), work cut when
the client has gone, and a Retry-After that follows the queue."""

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from grace.errors import GraceInputError
from grace.server import ServerConfig, create_app
from grace.server.model_names import served_names
from grace.server.batcher import ClientGone, MicroBatcher, retry_after_s
from live_server import live_server

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402  (needs httpx)

CONFIG = ServerConfig(model="tiny-random", max_new_tokens=4, cache=False, max_texts=4, max_chars=60,
                      max_body_bytes=20_000, max_batch=1, max_pending_texts=8, body_timeout_s=0.5)


@pytest.fixture(scope="module")
def app():
    """The tiny model; texts holding SLOW take 1 s per model call (one text per call:
    max_batch=1)."""
    app = create_app(CONFIG)
    encoder = app.state.encoder
    real = encoder.encode

    def encode(texts, **kwargs):
        if any("SLOW" in t for t in texts):
            time.sleep(1.0)
        return real(texts, **kwargs)

    encoder.encode = encode
    return app


@pytest.fixture
def client(app):
    """Per test: the live-server tests serve the same app, one lifespan at a time."""
    with TestClient(app) as c:
        yield c


# --------------------------------------------------------------------------- 1. the port


def _grace(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "grace.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "on http://" not in out  # no traceback, no "serving" banner
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


@pytest.mark.slow
def test_serve_on_an_impossible_port_is_one_line_exit_2():
    _one_line_error(_grace("serve", "--model", "tiny-random", "--port", "70000"),
                    "port 70000 is out of range")


@pytest.mark.slow
def test_serve_on_a_busy_port_is_one_line_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _one_line_error(_grace("serve", "--model", "tiny-random", "--port", str(port)),
                        f"127.0.0.1:{port}", "in use")


def test_the_port_is_bound_before_the_model_loads(monkeypatch):
    import grace.server.app as server_app
    from grace.server.startup import serve

    def load(config):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(server_app, "load_encoder", load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(GraceInputError, match="in use"):
            serve(ServerConfig(port=busy.getsockname()[1]))
    for port in (-1, 65536):
        with pytest.raises(GraceInputError, match="out of range"):
            ServerConfig(port=port)


# --------------------------------------------------------------------------- 2. the model name


def test_served_names_are_the_loaded_name_its_last_part_and_grace():
    assert served_names("runs/demo/checkpoint-12") == ["runs/demo/checkpoint-12", "checkpoint-12", "grace"]
    assert served_names("runs/demo/checkpoint-12/") == ["runs/demo/checkpoint-12/", "checkpoint-12", "grace"]
    assert served_names("tiny-random") == ["tiny-random", "grace"]


def test_an_unknown_model_is_404_and_the_served_names_are_listed(client):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny-random"]
    assert listed["data"][0]["aliases"] == ["tiny-random", "grace"]
    for model in listed["data"][0]["aliases"]:
        assert client.get(f"/v1/models/{model}").json()["id"] == "tiny-random"
        response = client.post("/v1/embeddings", json={"input": ["a"], "model": model})
        assert response.status_code == 200 and response.json()["model"] == "tiny-random"
    assert client.post("/v1/embeddings", json={"input": ["a"]}).status_code == 200  # absent: allowed
    response = client.post("/v1/embeddings", json={"input": ["a"], "model": "no-such-model"})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "the model 'no-such-model' does not exist here; this server serves "
                   "'tiny-random' / 'grace'",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert client.get("/v1/models/no-such-model").json()["error"]["code"] == "model_not_found"


# --------------------------------------------------------------------------- 3. one error shape


@pytest.mark.parametrize("method, path, body, status, param, code, words", [
    ("POST", "/v1/embeddings", b'{"input": ["ok", 3, null]}', 422, "input[1]", "invalid_body",
     ["input[1] is a number", "input[2] is null"]),
    ("POST", "/v1/embeddings", b'{"input": [1, 2]}', 422, "input[0]", "invalid_body", ["token arrays"]),
    ("POST", "/v1/embeddings", b'{"input": null}', 422, "input", "invalid_body", ["got null"]),
    ("POST", "/v1/embeddings", b'{"input": ["ok", "\xff"]}', 422, None, "invalid_json", ["UTF-8", "byte 18"]),
    ("POST", "/v1/embeddings", b'{"inp', 422, None, "invalid_json", ["not valid JSON"]),
    ("POST", "/v1/embeddings", b'[1]', 422, None, "invalid_body", ["JSON object, got an array"]),
    ("POST", "/v1/embeddings", b'{"text": "x"}', 422, "input", "invalid_body", ["Field required"]),
    ("POST", "/v1/embeddings", b'{"input": "a", "encoding_format": "int8"}', 422, "encoding_format",
     "invalid_body", ['got "int8"']),
    ("POST", "/v1/embeddings", b'{"input": ["a", "  "]}', 422, "input[1]", "empty_text", []),
    ("POST", "/v1/embeddings", b'{"input": ["a", "b", "c", "d", "e"]}', 413, "input", "too_many_inputs", []),
    ("POST", "/v1/embeddings", b'{"input": "a", "model": "gpt-4"}', 404, "model", "model_not_found", []),
    ("POST", "/v1/explain", b'{"text_a": 3, "text_b": "y"}', 422, "text_a", "invalid_body", ["got 3"]),
    ("POST", "/v1/explain", b'{"text_a": "x", "text_b": "y", "top_k": 0}', 422, "top_k", "invalid_body", []),
    ("POST", "/v1/explain", b'\xfe\xff', 422, None, "invalid_json", ["UTF-8"]),
    ("GET", "/v1/nothing", None, 404, None, None, []),
    ("PUT", "/v1/embeddings", None, 405, None, None, []),
])
def test_every_4xx_has_the_openai_error_shape(client, method, path, body, status, param, code, words):
    response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] and error["param"] == param and error["code"] == code
    for word in words:
        assert word in error["message"]


# --------------------------------------------------------------------------- 4. the body timeout


def test_a_body_that_never_comes_gets_408_and_the_connection_closes(app):
    with live_server(app) as base:
        port = int(base.rsplit(":", 1)[1])
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\ncontent-type: application/json"
                         b"\r\ncontent-length: 100\r\n\r\n{\"input\": ")  # 10 of 100 bytes
            received = b""
            while chunk := conn.recv(65536):  # ends when the server closes (a timeout would raise)
                received += chunk
        elapsed = time.monotonic() - began
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body)["error"]["code"] == "body_timeout" and "10 bytes" in body.decode()
        assert 0.4 < elapsed < 5  # body_timeout_s=0.5
        import urllib.request

        with urllib.request.urlopen(base + "/health", timeout=10) as response:  # still serving
            assert json.loads(response.read())["status"] == "ok"


# --------------------------------------------------------------------------- 5. cut work, Retry-After


def test_a_large_request_is_encoded_in_calls_of_max_batch():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t)] for t in texts], dtype=np.float32), [f"r:{t}" for t in texts]

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=2, wait_s=0.0)
        out = await batcher.submit(["a", "bb", "a", "ccc", "dddd", "eeeee"])
        await batcher.stop()
        return out, batcher

    (emb, rationales), batcher = asyncio.run(main())
    assert calls == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]] and batcher.calls == 3
    assert emb[:, 0].tolist() == [1, 2, 1, 3, 4, 5] and rationales[3] == "r:ccc"


def test_a_request_whose_client_left_is_cut_between_model_calls():
    started, gate, calls = threading.Event(), threading.Event(), []

    def encode(texts):
        calls.append(list(texts))
        started.set()
        gate.wait(10)
        return np.zeros((len(texts), 1), dtype=np.float32), [""] * len(texts)

    async def main():
        loop = asyncio.get_running_loop()
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=2, wait_s=0.0, max_pending=8)
        left = loop.create_future()
        big = asyncio.ensure_future(batcher.submit(list("abcdef"), gone=lambda: left))
        await loop.run_in_executor(None, started.wait, 10)  # its first call is running
        left.set_result(None)  # the client disconnects
        with pytest.raises(ClientGone):
            await big
        assert batcher.pending == 0
        gate.set()
        await batcher.submit(["next"])
        await batcher.stop()
        return batcher

    batcher = asyncio.run(main())
    assert calls == [["a", "b"], ["next"]]  # c..f never reached the model
    assert batcher.cut == 1 and batcher.calls == 2 and batcher.requests == 1


def test_a_live_client_that_gave_up_frees_the_model_for_the_next_request(app):
    """The observed case: a large request whose client has gone no longer makes the next
    request wait for all of it (4 SLOW texts, one per call of 1 s)."""
    import httpx

    with live_server(app) as base:
        async def run():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                before = (await client.get("/health")).json()
                with pytest.raises(httpx.TimeoutException):
                    await client.post("/v1/embeddings", json={"input": [f"SLOW {i}" for i in range(4)]},
                                      timeout=0.3)
                began = time.monotonic()
                quick = await client.post("/v1/embeddings", json={"input": ["quick"]})
                waited = time.monotonic() - began
                return before, quick, waited, (await client.get("/health")).json()

        before, quick, waited, after = asyncio.run(run())
    assert quick.status_code == 200 and waited < 2.5  # not the 3 s left of the abandoned request
    assert after["cut"] == before["cut"] + 1 and after["model_calls"] == before["model_calls"] + 2
    assert after["pending_texts"] == 0


def test_retry_after_is_the_pending_texts_at_the_measured_rate():
    assert retry_after_s(256, 0.05) == 13  # 12.8 s, rounded up
    assert retry_after_s(64, 0.153) == 10  # 9.792 s: the observed 64-text call
    assert retry_after_s(3, 0.1) == 1  # 0.3 s: at least 1
    assert retry_after_s(0, 0.5) == 1
    assert retry_after_s(100, None) == 1  # nothing measured yet


def test_seconds_per_text_is_a_running_mean_of_measured_calls():
    batcher = MicroBatcher(lambda texts: None, None)
    batcher._measure(2, 1.0)
    assert batcher.seconds_per_text == pytest.approx(0.5)
    batcher._measure(4, 0.4)  # 0.1 s per text: 0.7 * 0.5 + 0.3 * 0.1
    assert batcher.seconds_per_text == pytest.approx(0.38)

    def encode(texts):
        time.sleep(0.2)
        return np.zeros((len(texts), 1), dtype=np.float32), [""] * len(texts)

    async def main():
        measured = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=2, wait_s=0.0)
        await measured.submit(["a", "b"])
        await measured.stop()
        return measured.seconds_per_text

    assert 0.09 < asyncio.run(main()) < 0.5  # 0.2 s for 2 texts


def test_an_overload_429_carries_the_estimated_retry_after(client):
    batcher = client.app.state.batcher
    pending, per_text = batcher.pending, batcher.seconds_per_text
    batcher.pending, batcher.seconds_per_text = CONFIG.max_pending_texts, 0.7  # a full queue
    try:
        response = client.post("/v1/embeddings", json={"input": ["one more"]})
    finally:
        batcher.pending, batcher.seconds_per_text = pending, per_text
    assert response.status_code == 429 and response.headers["retry-after"] == "6"  # 8 * 0.7 = 5.6
    assert response.json()["error"]["code"] == "overloaded" and "retry in 6 s" in response.json()["error"]["message"]
