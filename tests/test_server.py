"""`grace serve`: the HTTP API (FastAPI app, micro-batcher, limits) and the command itself."""

import asyncio
import base64
import dataclasses
import http.client
import json
import threading
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from grace.server import ServerConfig, create_app
from grace.server.batcher import ClientGone, MicroBatcher, Overloaded
from live_server import live_server

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402  (needs httpx)

CONFIG = ServerConfig(model="tiny-random", max_new_tokens=4, cache=False, max_texts=4, max_chars=60,
                      max_body_bytes=20_000)


@pytest.fixture(scope="module", params=[True, False], ids=["default-cache", "no-cache"])
def client(request):
    """The app with the rationale cache on (the default: SQLite opened in this thread, used by
    the model thread) and off."""
    config = dataclasses.replace(CONFIG, cache=request.param)
    with TestClient(create_app(config)) as c:
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
    body = client.post("/v1/embeddings", json={"input": texts, "model": "tiny-random", "user": "u1"}).json()
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
    from grace.explain.render import shown_rationale

    body = client.post("/v1/explain", json={"text_a": "a cat", "text_b": "a kitten", "top_k": 2}).json()
    for side in ("a", "b"):
        assert abs(sum(t["contribution"] for t in body[side]["tokens"]) - body["cosine"]) < 1e-5
        assert len(body["top"][side]["adding"]) <= 2
        assert body[side]["shown"]["decoded"] is None  # a GRACE encoder decodes nothing
        assert body[side]["shown"]["rationale"] == shown_rationale(body[side]["rationale"])


def test_explanation_json_shows_rationales_as_the_terminal_does():
    """The explorer's display strings: empty -> "(no rationale)", whitespace only -> its
    characters named, anything else unchanged; a decoding likewise ("(nothing decoded)")."""
    from grace.explain.pair import Explanation, SideExplanation, TokenShare
    from grace.server.protocol import explanation_json

    tokens = [TokenShare("cat", 0.25, "text"), TokenShare("\n", -0.05, "rationale")]
    ex = Explanation(0.2, SideExplanation("a", "\n" * 64, tokens),
                     SideExplanation("b", "", tokens, decoded=" \n"), kind="grace")
    out = explanation_json(ex, top_k=1)
    assert out["a"]["shown"] == {"rationale": "(whitespace only: 64 newlines)", "decoded": None}
    assert out["b"]["shown"] == {"rationale": "(no rationale)",
                                 "decoded": "(whitespace only: 1 space, 1 newline)"}
    assert out["a"]["rationale"] == "\n" * 64  # the raw field is kept as it is
    assert [t["token"] for t in out["top"]["a"]["adding"]] == ["cat"]
    assert [t["token"] for t in out["top"]["b"]["subtracting"]] == ["\n"]
    ex.a.rationale, ex.b.decoded = "  A cat.\n", ""
    out = explanation_json(ex, top_k=1)
    assert out["a"]["shown"]["rationale"] == "  A cat.\n"  # visible text: unchanged
    assert out["b"]["shown"]["decoded"] == "(nothing decoded)"


@pytest.mark.parametrize("payload, status, code", [
    ({"input": ["x"] * 5}, 413, "too_many_inputs"),
    ({"input": ["x" * 61]}, 413, "text_too_long"),
    ({"input": []}, 422, "empty_input"),
    ({"input": ["fine", "  "]}, 422, "empty_text"),
    ({"input": 5}, 422, "invalid_body"),
    ({"text": "no input field"}, 422, "invalid_body"),
    ({"input": ["a"], "encoding_format": "int8"}, 422, "invalid_body"),
    ({"input": ["fine", "bad \ud800"]}, 422, "invalid_text"),  # a lone surrogate: no tokenizer takes it
])
def test_bad_embedding_requests_get_json_errors(client, payload, status, code):
    body = json.dumps(payload)  # ASCII JSON: a lone surrogate travels as "\\ud800", as clients send it
    response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert _error_of(response, status)["code"] == code


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


def test_a_failing_call_fails_only_the_request_that_causes_it():
    """Three requests gathered into one call; one text makes the call fail: the two others are
    retried alone and answered, the culprit gets the exception, and the worker goes on."""
    calls = []

    def encode(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("boom")
        return np.array([[len(t)] for t in texts], dtype=np.float32), [""] * len(texts)

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=8, wait_s=0.05)
        results = await asyncio.gather(batcher.submit(["a"]), batcher.submit(["boom", "bb"]),
                                       batcher.submit(["ccc"]), return_exceptions=True)
        after = await batcher.submit(["dddd"])
        await batcher.stop()
        return results, after, batcher

    (a, bad, c), after, batcher = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and a[0][:, 0].tolist() == [1] and c[0][:, 0].tolist() == [3]
    assert after[0][:, 0].tolist() == [4]
    assert calls[0] == ["a", "boom", "bb", "ccc"]  # one gathering, then each request alone
    assert sorted(map(tuple, calls[1:4])) == [("a",), ("boom", "bb"), ("ccc",)]
    assert batcher.failed == 1 and batcher.requests == 3 and batcher.pending == 0


def test_admission_refuses_past_the_pending_budget_and_frees_it():
    gate = threading.Event()

    def encode(texts):
        gate.wait(10)
        return np.zeros((len(texts), 1), dtype=np.float32), [""] * len(texts)

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=2, wait_s=0.0, max_pending=4)
        first = asyncio.ensure_future(batcher.submit(["a", "b"]))
        second = asyncio.ensure_future(batcher.submit(["c", "d"]))
        await asyncio.sleep(0.05)
        assert batcher.pending == 4
        with pytest.raises(Overloaded, match="at most 4"):
            await batcher.submit(["e"])
        gate.set()
        await asyncio.gather(first, second)
        assert batcher.pending == 0
        await batcher.submit(["e"])  # room again
        await batcher.stop()
        return batcher

    batcher = asyncio.run(main())
    assert batcher.rejected == 1 and batcher.requests == 3


def test_a_request_whose_client_left_never_reaches_the_model():
    gate, seen = threading.Event(), []

    def encode(texts):
        seen.extend(texts)
        gate.wait(10)
        return np.zeros((len(texts), 1), dtype=np.float32), [""] * len(texts)

    async def main():
        batcher = MicroBatcher(encode, ThreadPoolExecutor(1), max_batch=1, wait_s=0.0, max_pending=8)
        busy = asyncio.ensure_future(batcher.submit(["busy"]))  # holds the model thread
        await asyncio.sleep(0.05)
        left = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(batcher.submit(["abandoned"], gone=lambda: left))
        await asyncio.sleep(0.02)
        left.set_result(None)  # the client disconnects while its request waits
        with pytest.raises(ClientGone):
            await waiting
        assert batcher.pending == 1  # its texts left the budget at once
        gate.set()
        await busy
        await batcher.submit(["next"])
        await batcher.stop()
        return batcher

    batcher = asyncio.run(main())
    assert "abandoned" not in seen and seen == ["busy", "next"] and batcher.dropped == 1


# --------------------------------------------------------------------------- a live server


@pytest.fixture(scope="module")
def flaky_app():
    """The tiny model behind the real app, with an encoder that fails on texts holding EXPLODE
    (a stand-in for a bug in the model call) and sleeps on texts holding SLOW."""
    app = create_app(dataclasses.replace(CONFIG, max_pending_texts=6, batch_wait_ms=30.0))
    encoder = app.state.encoder
    real = encoder.encode

    def encode(texts, **kwargs):
        if any("EXPLODE" in t for t in texts):
            raise RuntimeError("EXPLODE in the model call")
        if any("SLOW" in t for t in texts):
            time.sleep(1.0)
        return real(texts, **kwargs)

    encoder.encode = encode
    return app


def _request(conn, payload):
    conn.request("POST", "/v1/embeddings", body=json.dumps(payload),
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_bad_and_failing_requests_fail_alone_and_keep_the_connection(flaky_app):
    """Concurrent requests, one with a bad text (422) and one that breaks the model call (500):
    every other request gets 200, and each connection serves its next request."""
    with live_server(flaky_app) as base:
        port = int(base.rsplit(":", 1)[1])
        payloads = [{"input": ["a good text"]}, {"input": ["fine", "bad \ud800"]},
                    {"input": ["EXPLODE here"]}, {"input": ["another", "good"]}, {"input": "third"}]
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in payloads]
        with ThreadPoolExecutor(len(payloads)) as pool:
            answers = list(pool.map(_request, conns, payloads))
        assert [status for status, _ in answers] == [200, 422, 500, 200, 200]
        assert answers[1][1]["error"]["param"] == "input[1]" and "surrogate" in answers[1][1]["error"]["message"]
        assert "EXPLODE" in answers[2][1]["error"]["message"]
        for conn in conns:  # keep-alive: the same connection answers again
            status, body = _request(conn, {"input": ["after the errors"]})
            assert status == 200 and len(body["data"]) == 1
            conn.close()
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        assert health["failed"] == 1 and health["pending_texts"] == 0


def test_overload_gets_429_at_once_and_the_server_stays_responsive(flaky_app):
    import httpx

    with live_server(flaky_app) as base:
        async def burst():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                slow = [client.post("/v1/embeddings", json={"input": [f"SLOW {i}", f"SLOW {i}b"]})
                        for i in range(3)]  # 6 texts: the whole budget
                first = asyncio.gather(*slow)
                await asyncio.sleep(0.3)
                refused = await client.post("/v1/embeddings", json={"input": ["one more"]})
                accepted_done = first.done()  # False: refused while the accepted ones still encode
                return await first, refused, accepted_done

        accepted, refused, answered_first = asyncio.run(burst())
        assert all(r.status_code == 200 for r in accepted)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert not answered_first  # refused at once, not after waiting behind the model
        status, body = _post(base + "/v1/embeddings", {"input": ["after the burst"]})
        assert status == 200


def test_a_request_whose_client_gave_up_is_dropped(flaky_app):
    import httpx

    with live_server(flaky_app) as base:
        async def run():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                busy = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["SLOW busy"]}))
                await asyncio.sleep(0.2)
                with pytest.raises(httpx.TimeoutException):  # gives up while it waits
                    await client.post("/v1/embeddings", json={"input": ["given up"]}, timeout=0.2)
                return await busy

        before = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        assert asyncio.run(run()).status_code == 200
        time.sleep(0.2)
        after = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        assert after["dropped"] == before["dropped"] + 1 and after["pending_texts"] == 0


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


def _fresh_cache(tmp_path) -> Path:
    """A new GRACE_CACHE (so the rationale cache starts empty) whose model folders link to the
    session's (so nothing is rebuilt)."""
    from grace.models.backbones import cache_dir, prepare_tiny_random

    prepare_tiny_random()
    root = tmp_path / "cache"
    root.mkdir()
    for folder in cache_dir().iterdir():
        if folder.is_dir():
            (root / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return root


@contextmanager
def grace_serve(args, cache_root):
    """``grace serve ARGS --port FREE`` as a subprocess (GRACE_CACHE=cache_root); yields the base
    URL once /health answers."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRACE_CACHE": str(cache_root)}
    proc = subprocess.Popen([sys.executable, "-m", "grace.cli", "serve", *args, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.25)
        else:
            pytest.fail("grace serve did not answer /health within 120 s")
        yield base
        assert proc.poll() is None  # still up
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _health(base):
    with urllib.request.urlopen(base + "/health", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_grace_serve_as_the_readme_shows_answers_twice_the_second_from_the_cache(tmp_path):
    """`grace serve --model tiny-random --port P`, no other flag: the default rationale cache
    (SQLite, opened at start-up, used by the model thread) works."""
    cache = _fresh_cache(tmp_path)
    texts = ["a cat sits on the mat", "stocks fell on monday"]
    with grace_serve(["--model", "tiny-random"], cache) as base:
        health = _health(base)
        assert health["status"] == "ok" and health["cache"]["path"] == str(cache / "rationales.sqlite")
        status, first = _post(base + "/v1/embeddings", {"input": texts})
        assert status == 200 and len(first["data"]) == 2 and len(first["data"][0]["embedding"]) == 64
        assert len(first["rationales"]) == 2
        assert _health(base)["cache"] == {**health["cache"], "hits": 0, "misses": 2}
        status, second = _post(base + "/v1/embeddings", {"input": texts})
        assert status == 200 and second["data"] == first["data"] and second["rationales"] == first["rationales"]
        assert _health(base)["cache"]["hits"] == 2  # nothing generated the second time
        status, body = _post(base + "/v1/explain", {"text_a": texts[0], "text_b": texts[1]})
        assert status == 200 and body["a"]["rationale"] == first["rationales"][0]


@pytest.mark.slow
def test_grace_serve_command_answers_health_embeddings_and_oversize(tmp_path):
    with grace_serve(["--model", "tiny-random", "--max-new-tokens", "4", "--no-cache",
                      "--max-texts", "3"], _fresh_cache(tmp_path)) as base:
        health = _health(base)
        assert health["status"] == "ok" and health["model"] == "tiny-random" and health["cache"] is None
        status, body = _post(base + "/v1/embeddings", {"input": ["a cat", "a dog"]})
        assert status == 200 and len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 64
        assert len(body["rationales"]) == 2
        status, body = _post(base + "/v1/embeddings", {"input": ["a"] * 4})
        assert status == 413 and "at most 3" in body["error"]["message"]


def test_grace_serve_refuses_a_pending_budget_below_max_texts(capsys):
    from grace.cli import main

    assert main(["serve", "--model", "tiny-random", "--max-texts", "8", "--max-pending-texts", "4"]) == 2
    assert "max_pending_texts (4) must be at least max_texts (8)" in capsys.readouterr().err
