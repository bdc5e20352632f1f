"""`grace serve`: the HTTP API (FastAPI app, micro-batcher, limits) and the command itself."""

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from grace.server import ServerConfig, create_app
from grace.server.batcher import MicroBatcher

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402  (needs httpx)

CONFIG = ServerConfig(model="tiny-random", max_new_tokens=4, cache=False, max_texts=4, max_chars=60,
                      max_body_bytes=20_000)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(CONFIG)) as c:
        yield c


def _error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    return error


def test_health_names_the_model(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "tiny-random" and body["embedding_dim"] == 64


def test_embeddings_in_openai_shape_with_rationales(client):
    texts = ["a cat on a mat", "stocks fell on monday"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "whatever", "user": "u1"}).json()
    assert body["object"] == "list" and body["model"] == "tiny-random"
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    encoder = client.app.state.encoder
    expected, rationales = encoder.encode(texts, return_rationales=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)  # what the encoder itself gives
    assert body["rationales"] == rationales and body["usage"]["prompt_tokens"] > 0
    single = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(single["data"][0]["embedding"]), dtype=np.float32)
    np.testing.assert_allclose(decoded, expected[0], atol=1e-6)


def test_explain_endpoint_sums_to_the_cosine(client):
    body = client.post("/v1/explain", json={"text_a": "a cat", "text_b": "a kitten", "top_k": 2}).json()
    for side in ("a", "b"):
        assert abs(sum(t["contribution"] for t in body[side]["tokens"]) - body["cosine"]) < 1e-5
        assert len(body["top"][side]["adding"]) <= 2


@pytest.mark.parametrize("payload, status, code", [
    ({"input": ["x"] * 5}, 413, "too_many_inputs"),
    ({"input": ["x" * 61]}, 413, "text_too_long"),
    ({"input": []}, 422, "empty_input"),
    ({"input": ["fine", "  "]}, 422, "empty_text"),
    ({"input": 5}, 422, "invalid_body"),
    ({"text": "no input field"}, 422, "invalid_body"),
    ({"input": ["a"], "encoding_format": "int8"}, 422, "invalid_body"),
])
def test_bad_embedding_requests_get_json_errors(client, payload, status, code):
    assert _error_of(client.post("/v1/embeddings", json=payload), status)["code"] == code


def test_malformed_body_oversize_body_and_bad_explain(client):
    response = client.post("/v1/embeddings", content=b'{"inp', headers={"content-type": "application/json"})
    assert "not valid JSON" in _error_of(response, 422)["message"]
    big = json.dumps({"input": ["y" * 30_000]}).encode()
    assert _error_of(client.post("/v1/embeddings", content=big,
                                 headers={"content-type": "application/json"}), 413)["code"] == "body_too_large"
    def chunks():  # no content-length: the limit still holds
        yield b'{"input": ["'
        for _ in range(30):
            yield b"z" * 1000
        yield b'"]}'

    assert _error_of(client.post("/v1/embeddings", content=chunks(),
                                 headers={"content-type": "application/json"}), 413)["code"] == "body_too_large"
    small = client.post("/v1/embeddings", content=iter([b'{"input": ', b'["chunked ok"]}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200 and len(small.json()["data"]) == 1
    assert _error_of(client.post("/v1/explain", json={"text_a": "x" * 61, "text_b": "y"}), 413)["param"] == "text_a"
    _error_of(client.post("/v1/explain", json={"text_a": "x", "text_b": "y", "top_k": 0}), 422)
    _error_of(client.get("/v1/nothing"), 404)
    assert client.get("/health").json()["status"] == "ok"  # still serving


# --------------------------------------------------------------------------- batching


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    calls = []

    def encode(texts):  # a text's "embedding" is its length; the "rationale" says which text
        calls.append(list(texts))
        time.sleep(0.01)
        return np.array([[len(t)] for t in texts], dtype=np.float32), [f"r:{t}" for t in texts]

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=8, wait_s=0.02)
        requests = [[f"t{i}", "shared", "x" * i] for i in range(12)] + [["big"] * 3 + [f"b{i}" for i in range(9)]]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return requests, results, batcher

    requests, results, batcher = asyncio.run(main())
    for texts, (emb, rationales) in zip(requests, results):
        assert emb[:, 0].tolist() == [len(t) for t in texts] and rationales == [f"r:{t}" for t in texts]
    assert batcher.requests == len(requests) and batcher.calls == len(calls) < len(requests)
    assert all(len(c) == len(set(c)) for c in calls)  # repeated texts encoded once per call
    assert all(len(c) <= 8 for c in calls[:-1] if "big" not in c)


def test_a_failing_call_fails_its_requests_and_the_worker_goes_on():
    state = {"fail": True}

    def encode(texts):
        if state.pop("fail", False):
            raise RuntimeError("boom")
        return np.zeros((len(texts), 2), dtype=np.float32), [""] * len(texts)

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=4, wait_s=0.01)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(["a"])
        emb, _ = await batcher.submit(["b", "c"])
        await batcher.stop()
        return emb

    assert asyncio.run(main()).shape == (2, 2)


# --------------------------------------------------------------------------- the command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_grace_serve_command_answers_health_embeddings_and_oversize(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRACE_CACHE": os.environ.get("GRACE_CACHE", str(tmp_path))}
    proc = subprocess.Popen([sys.executable, "-m", "grace.cli", "serve", "--model", "tiny-random",
                             "--port", str(port), "--max-new-tokens", "4", "--no-cache",
                             "--max-texts", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.25)
        else:
            pytest.fail("grace serve did not answer /health within 60 s")
        assert health["status"] == "ok" and health["model"] == "tiny-random"
        status, body = _post(base + "/v1/embeddings", {"input": ["a cat", "a dog"]})
        assert status == 200 and len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 64
        assert len(body["rationales"]) == 2
        status, body = _post(base + "/v1/embeddings", {"input": ["a"] * 4})
        assert status == 413 and "at most 3" in body["error"]["message"]
        assert proc.poll() is None  # still up
    finally:
        proc.terminate()
        proc.wait(timeout=30)
