"""`grace serve` as text-embeddings-inference: /embed (and POST /), /tokenize, /info, /metrics in
TEI's shapes and error shape, `dimensions` on /v1/embeddings, the token-budget batching, and
TEI's own client (huggingface_hub.InferenceClient) against a live server with the defaults the
README shows (ServerConfig() on the tiny model)."""

import asyncio
import json
import math
import re
import shlex
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from grace.errors import GraceInputError
from grace.server import ServerConfig, create_app
from grace.server.batcher import MicroBatcher, fits, plan_calls
from grace.server.protocol import finish_vectors
from live_server import live_server

README = Path(__file__).resolve().parents[1] / "README.md"
TEI_INFO_KEYS = {"model_id", "model_sha", "model_dtype", "served_model_name", "model_type",
                 "max_concurrent_requests", "max_input_length", "max_batch_tokens",
                 "max_batch_requests", "max_client_batch_size", "auto_truncate",
                 "tokenization_workers", "version", "sha", "docker_label"}


# --------------------------------------------------------------------------- pure functions


def test_plan_calls_keeps_the_count_and_the_token_budget():
    # 5+3 = 8 fit in 10 tokens; +4 would be 12; 4+10 = 14; 10+2 = 12
    assert plan_calls([5, 3, 4, 10, 2], 3, 10) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    # by count only (no budget): calls of max_batch, as before the budget
    assert plan_calls([1] * 7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    # the count binds before the budget: 3 texts of 1 token in a budget of 100
    assert plan_calls([1, 1, 1, 1], 3, 100) == [range(0, 3), range(3, 4)]
    # a text alone over the budget is a call of its own, the rest go on
    assert plan_calls([20, 1, 1], 8, 10) == [range(0, 1), range(1, 3)]
    assert plan_calls([], 3, 10) == []
    assert fits(2, 8, 1, 2, 3, 10) and not fits(2, 8, 1, 3, 3, 10)
    assert not fits(3, 0, 1, 0, 3, None) and fits(2, 10 ** 9, 1, 10 ** 9, 3, None)


def test_gatherings_and_calls_keep_the_token_budget():
    """Requests of 2 texts (3+3 tokens), 1 (4) and 1 (5) in a budget of 10: the first two share
    a call (10 tokens), the third waits for the next; a request of 3 x 6 tokens is 3 calls."""
    calls, observed = [], []

    def encode(texts):
        calls.append(list(texts))
        return np.zeros((len(texts), 2), dtype=np.float32), [""] * len(texts)

    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher = MicroBatcher(encode, pool, max_batch=8, wait_s=0.05, max_batch_tokens=10,
                                   observe=lambda n, tokens, s: observed.append((n, tokens)))
            try:
                await asyncio.gather(batcher.submit(["a1", "a2"], tokens=[3, 3]),
                                     batcher.submit(["b"], tokens=[4]),
                                     batcher.submit(["c"], tokens=[5]))
                await batcher.submit(["d1", "d2", "d3"], tokens=[6, 6, 6])
            finally:
                await batcher.stop()

    asyncio.run(main())
    assert calls == [["a1", "a2", "b"], ["c"], ["d1"], ["d2"], ["d3"]]
    assert observed == [(3, 10), (1, 5), (1, 6), (1, 6), (1, 6)]


def test_finish_vectors_cuts_then_normalises():
    rows = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 5.0]])
    np.testing.assert_allclose(finish_vectors(rows, 2, True), [[0.6, 0.8], [0.0, 0.0]])  # zero stays
    np.testing.assert_allclose(finish_vectors(rows, 2, False), [[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(finish_vectors(rows, None, True), [[3 / 13, 4 / 13, 12 / 13], [0, 0, 1]],
                               rtol=1e-6)
    assert finish_vectors(rows, None, False).dtype == np.float32


def test_the_token_budget_must_hold_the_longest_text():
    with pytest.raises(GraceInputError, match=r"max_batch_tokens \(100\) must be at least max_input_tokens \(512\)"):
        ServerConfig(max_batch_tokens=100)
    with pytest.raises(GraceInputError, match="max_input_tokens must be >= 1"):
        ServerConfig(max_input_tokens=0)


def test_grace_serve_passes_the_token_flags(capsys):
    from grace.cli import main

    assert main(["serve", "--model", "tiny-random", "--max-input-tokens", "64",
                 "--max-batch-tokens", "32"]) == 2
    assert "max_batch_tokens (32) must be at least max_input_tokens (64)" in capsys.readouterr().err


# --------------------------------------------------------------------------- Prometheus text


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def parse_exposition(text: str) -> dict:
    """Prometheus text format 0.0.4, strictly: each family's HELP then TYPE, then only its own
    samples, well-formed labels and numbers; histogram buckets cumulative up to le="+Inf" ==
    _count. -> {family: {"type", "samples": [(name, labels, value)]}}."""
    families, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in families, f"{name} twice"
            current = families[name] = {"type": None, "samples": []}
            current["name"] = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert current is not None and name == current["name"] and not current["samples"], line
            assert kind in SUFFIXES, line
            current["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match and current is not None and current["type"], f"bad line: {line!r}"
            name, labels_text, value = match.groups()
            assert name in [current["name"] + s for s in SUFFIXES[current["type"]]], line
            labels = dict(LABEL.findall(labels_text or ""))
            if labels_text:
                assert ",".join(f'{k}="{v}"' for k, v in LABEL.findall(labels_text)) == labels_text, line
            current["samples"].append((name, labels, float(value)))
    for name, fam in families.items():
        if fam["type"] != "histogram":
            continue
        series = {}
        for sample, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if sample.endswith("_bucket"):
                series[key]["buckets"].append((float(labels["le"]), value))
            elif sample.endswith("_count"):
                series[key]["count"] = value
        for key, s in series.items():
            les = [le for le, _ in s["buckets"]]
            counts = [n for _, n in s["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf, (name, key)
            assert counts == sorted(counts) and counts[-1] == s["count"], (name, key)
    return families


def value_of(families: dict, family: str, sample: str | None = None, **labels) -> float:
    """A sample's value (0 if absent: a counter not yet incremented)."""
    for name, got, value in families[family]["samples"]:
        if name == (sample or family) and all(got.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def test_the_exposition_parser_refuses_malformed_text():
    good = "# HELP x_total a\n# TYPE x_total counter\nx_total{a=\"1\"} 2\n"
    assert value_of(parse_exposition(good), "x_total", a="1") == 2
    for bad in ("x_total 2\n", "# HELP x_total a\n# TYPE x_total counter\ny 2\n",
                "# HELP h a\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# --------------------------------------------------------------------------- a live server


@pytest.fixture(scope="module")
def app():
    return create_app(ServerConfig(model="tiny-random"))  # every other setting as the README's


@pytest.fixture(scope="module")
def base(app):
    with live_server(app) as url:
        yield url


def call(base: str, path: str, body=None, raw: bytes | None = None):
    """(status, headers, parsed body: JSON, or text for /metrics)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, headers, content = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, content = exc.code, exc.headers, exc.read()
    if headers.get("content-type", "").startswith("application/json"):
        return status, headers, json.loads(content)
    return status, headers, content.decode()


def test_embed_answers_a_list_of_vectors_equal_to_v1_embeddings(base, app):
    texts = ["a cat sits on the mat", "stocks fell on monday"]
    status, headers, vectors = call(base, "/embed", {"inputs": texts})
    assert status == 200 and isinstance(vectors, list) and len(vectors) == 2
    assert all(isinstance(v, list) and len(v) == 64 and isinstance(v[0], float) for v in vectors)
    assert int(headers["x-compute-tokens"]) > 0 and int(headers["x-compute-characters"]) == sum(map(len, texts))
    status, _, openai = call(base, "/v1/embeddings", {"input": texts})
    np.testing.assert_allclose(vectors, [d["embedding"] for d in openai["data"]], atol=1e-6)
    np.testing.assert_allclose(vectors, app.state.encoder.encode(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    status, _, one = call(base, "/embed", {"inputs": texts[0]})  # one string: a list of one
    assert status == 200 and len(one) == 1
    np.testing.assert_allclose(one[0], vectors[0], atol=1e-6)
    status, _, root = call(base, "/", {"inputs": texts[0]})  # what InferenceClient posts to
    assert status == 200 and root == one


def test_embed_dimensions_and_normalize(base):
    status, _, full = call(base, "/embed", {"inputs": ["a small dog"]})
    status, _, cut = call(base, "/embed", {"inputs": ["a small dog"], "dimensions": 16})
    full = np.array(full[0], dtype=np.float64)
    np.testing.assert_allclose(cut[0], full[:16] / np.linalg.norm(full[:16]), atol=1e-6)
    status, _, raw_cut = call(base, "/embed", {"inputs": ["a small dog"], "dimensions": 16,
                                               "normalize": False})
    # normalize false: GRACE's raw mean-pooled vector, whose direction is the unit one's
    status, _, raw = call(base, "/embed", {"inputs": ["a small dog"], "normalize": False})
    raw = np.array(raw[0], dtype=np.float64)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-2
    np.testing.assert_allclose(raw / np.linalg.norm(raw), full, atol=1e-6)
    np.testing.assert_allclose(raw_cut[0], raw[:16], rtol=1e-6, atol=1e-6)  # cut, not renormalised


class Scaled:
    """The tiny GRACE encoder with its vectors times 3: a stand-in for an encoder whose vectors
    are not unit length (LLM2Vec-Gen's, sentence-transformers' with normalize_embeddings False)."""

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, texts, **kwargs):  # 3 times the unit vectors, whatever the server asks
        emb, rationales = self._encoder.encode(texts, **{**kwargs, "normalize_embeddings": True})
        return 3 * np.asarray(emb), rationales


def test_normalize_false_returns_an_unnormalised_encoders_vectors(app):
    from fastapi.testclient import TestClient

    with TestClient(create_app(ServerConfig(model="tiny-random"), encoder=Scaled(app.state.encoder))) as c:
        raw = np.array(c.post("/embed", json={"inputs": ["a cat", "a dog"], "normalize": False}).json())
        unit = np.array(c.post("/embed", json={"inputs": ["a cat", "a dog"]}).json())
        openai = c.post("/v1/embeddings", json={"input": ["a cat", "a dog"]}).json()
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 3.0, atol=1e-5)
    np.testing.assert_allclose(raw / 3, unit, atol=1e-6)
    np.testing.assert_allclose([d["embedding"] for d in openai["data"]], unit, atol=1e-6)  # unit


def test_v1_embeddings_dimensions_truncate_and_renormalise(base):
    text = "the quick brown fox"
    _, _, full = call(base, "/v1/embeddings", {"input": text})
    full = np.array(full["data"][0]["embedding"], dtype=np.float64)
    for n in (1, 8, 64):
        status, _, body = call(base, "/v1/embeddings", {"input": text, "dimensions": n})
        assert status == 200 and len(body["data"][0]["embedding"]) == n
        np.testing.assert_allclose(body["data"][0]["embedding"], full[:n] / np.linalg.norm(full[:n]),
                                   atol=1e-6)
    for bad in (0, -3, 65, "8", True, 2.5):
        status, _, body = call(base, "/v1/embeddings", {"input": text, "dimensions": bad})
        assert status == 422 and body["error"]["param"] == "dimensions", body
        assert "dimensions" in body["error"]["message"]


def test_tokenize_answers_tei_tokens_with_byte_offsets(base, app):
    texts = ["héllo world", "a cat"]
    status, _, tokens = call(base, "/tokenize", {"inputs": texts, "add_special_tokens": True})
    assert status == 200 and len(tokens) == 2
    tokenizer = app.state.encoder.tokenizer
    for text, toks in zip(texts, tokens):
        assert [t["id"] for t in toks] == tokenizer(text)["input_ids"]
        for t in toks:
            assert set(t) == {"id", "text", "special", "start", "stop"}
            if not t["special"]:
                assert text.encode()[t["start"]:t["stop"]].decode() == t["text"]
    assert tokens[0][1] == {"id": tokens[0][1]["id"], "text": "é", "special": False, "start": 1, "stop": 3}
    status, _, one = call(base, "/tokenize", {"inputs": "a cat", "add_special_tokens": False})
    assert status == 200 and one == [tokens[1]]


def test_info_has_teis_fields_and_graces(base):
    status, _, info = call(base, "/info")
    assert status == 200 and TEI_INFO_KEYS <= set(info)
    config = ServerConfig()
    assert info["model_id"] == "tiny-random" and info["model_dtype"] == "float32"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert (info["max_input_length"], info["max_batch_tokens"], info["max_batch_requests"],
            info["max_client_batch_size"], info["max_concurrent_requests"]) == (
        config.max_input_tokens, config.max_batch_tokens, config.max_batch, config.max_texts,
        config.max_pending_texts)
    assert info["auto_truncate"] is False and isinstance(info["version"], str)
    assert info["embedding_dim"] == 64 and info["rationale"] == "greedy"
    assert info["rationale_cache"] is True and info["max_new_tokens"] == 64


def test_v1_models_has_openais_list_shape(base):
    status, _, body = call(base, "/v1/models")
    assert status == 200 and body["object"] == "list" and len(body["data"]) == 1
    model = body["data"][0]
    assert model["id"] == "tiny-random" and model["object"] == "model"
    assert isinstance(model["created"], int) and isinstance(model["owned_by"], str)


@pytest.mark.parametrize("path,body,status,error_type", [
    ("/embed", {"inputs": []}, 400, "Empty"),
    ("/embed", {"inputs": ["a"] * 65}, 413, "Validation"),
    ("/embed", {"inputs": "x" * 8193}, 413, "Validation"),
    ("/embed", {"inputs": [1]}, 422, "Validation"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "Validation"),
    ("/embed", {"inputs": "a", "dimensions": 65}, 422, "Validation"),
    ("/embed", {"inputs": "a", "truncation_direction": "Middle"}, 422, "Validation"),
    ("/embed", {"inputs": "a", "prompt_name": "passage"}, 422, "Validation"),
    ("/embed", {"inputs": "bad \ud800"}, 422, "Tokenizer"),
    ("/embed", b"{not json", 422, "Validation"),
    ("/", {"inputs": []}, 400, "Empty"),
    ("/tokenize", {"inputs": []}, 400, "Empty"),
    ("/tokenize", {"inputs": ["a"] * 65}, 413, "Validation"),
])
def test_tei_routes_answer_errors_in_teis_shape(base, path, body, status, error_type):
    got, _, answer = call(base, path, raw=body if isinstance(body, bytes) else None,
                          body=None if isinstance(body, bytes) else body)
    assert got == status, answer
    assert set(answer) == {"error", "error_type"} and answer["error_type"] == error_type
    assert isinstance(answer["error"], str) and answer["error"]


def test_a_text_over_max_input_tokens_is_413_or_cut_with_truncate(base, app):
    tokenizer = app.state.encoder.tokenizer
    text = "word " * 600  # 3000 characters, about 600 tokens
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(ids["input_ids"]) > 512
    status, _, body = call(base, "/embed", {"inputs": text})
    assert status == 413 and body["error_type"] == "Validation" and "512" in body["error"]
    status, _, body = call(base, "/v1/embeddings", {"input": text})
    assert status == 413 and body["error"]["code"] == "text_too_long"
    head = text[:ids["offset_mapping"][511][1]]  # the first 512 tokens' characters
    tail = text[ids["offset_mapping"][-512][0]:]
    for direction, kept in (("Right", head), ("left", tail)):
        status, _, cut = call(base, "/embed", {"inputs": text, "truncate": True,
                                               "truncation_direction": direction})
        assert status == 200
        _, _, expected = call(base, "/embed", {"inputs": kept})
        np.testing.assert_allclose(cut, expected, atol=1e-6)


def test_overload_is_429_overloaded_with_retry_after(base, app, monkeypatch):
    batcher = app.state.batcher
    monkeypatch.setattr(batcher, "pending", app.state.config.max_pending_texts)  # a full queue
    status, headers, body = call(base, "/embed", {"inputs": "a"})
    assert status == 429 and body["error_type"] == "Overloaded" and int(headers["retry-after"]) >= 1


def test_a_failed_model_call_is_424_backend(base, app, monkeypatch):
    encoder = app.state.encoder
    real = encoder.encode

    def encode(texts, **kwargs):
        if any("EXPLODE" in t for t in texts):
            raise RuntimeError("EXPLODE in the model call")
        return real(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", encode)
    status, _, body = call(base, "/embed", {"inputs": "EXPLODE here"})
    assert status == 424 and body["error_type"] == "Backend" and "EXPLODE" in body["error"]
    status, _, body = call(base, "/v1/embeddings", {"input": "EXPLODE here"})  # OpenAI's route
    assert status == 500 and body["error"]["type"] == "server_error"


def test_metrics_parse_and_count_requests(base):
    def scrape():
        status, headers, text = call(base, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:  # not installed here: our strict parser alone
            pass
        else:
            assert list(text_string_to_metric_families(text))
        return parse_exposition(text)

    before = scrape()
    ok = dict(method="POST", route="/embed", status="200")
    call(base, "/embed", {"inputs": "metrics probe"})
    call(base, "/embed", {"inputs": "metrics probe"})  # the second: from the rationale cache
    call(base, "/embed", {"inputs": []})
    after = scrape()
    assert value_of(after, "grace_http_requests_total", **ok) == value_of(before, "grace_http_requests_total", **ok) + 2
    assert value_of(after, "grace_http_requests_total", method="POST", route="/embed", status="400") >= 1
    assert value_of(after, "grace_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert value_of(after, "grace_http_request_duration_seconds", "grace_http_request_duration_seconds_count",
                    route="/embed") >= 3
    assert value_of(after, "grace_batch_texts", "grace_batch_texts_count") >= 1
    assert value_of(after, "grace_batch_tokens", "grace_batch_tokens_sum") > 0
    assert value_of(after, "grace_model_calls_total") >= 1
    assert value_of(after, "grace_queue_texts") == 0 and after["grace_queue_requests"]["type"] == "gauge"
    assert value_of(after, "grace_rationale_cache_hits_total") >= value_of(before, "grace_rationale_cache_hits_total") + 1
    assert value_of(after, "grace_batcher_requests_total", outcome="answered") >= 2


def test_huggingface_hubs_inference_client_reads_embed(base, monkeypatch):
    """TEI's own client: ``InferenceClient(model=URL).feature_extraction`` posts to URL/."""
    hub = pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants

    # HF_HUB_OFFLINE (set for the test suite) blocks every request the client makes, loopback
    # included; this call goes to 127.0.0.1 only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    client = hub.InferenceClient(model=base)
    got = client.feature_extraction("a cat sits on the mat")
    _, _, expected = call(base, "/embed", {"inputs": "a cat sits on the mat"})
    assert got.shape == (1, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    cut = client.feature_extraction("a cat sits on the mat", normalize=False, truncate=True,
                                    truncation_direction="left")
    cut = np.asarray(cut, dtype=np.float64)  # short text: nothing cut; GRACE's raw vector
    np.testing.assert_allclose(cut / np.linalg.norm(cut), expected, atol=1e-6)


def test_the_readmes_curl_examples_answer(base):
    """Every `curl -s localhost:8000/...` line of the README, sent as written to the server."""
    commands = [line for line in README.read_text().splitlines() if line.startswith("curl -s localhost:8000")]
    paths = set()
    for line in commands:
        args = shlex.split(line)
        path = args[2].removeprefix("localhost:8000")
        body = json.loads(args[args.index("-d") + 1]) if "-d" in args else None
        status, _, answer = call(base, path, body)
        assert status == 200, (line, answer)
        paths.add(path)
    assert {"/v1/embeddings", "/embed", "/tokenize", "/info", "/metrics"} <= paths
