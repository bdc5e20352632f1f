"""Load test of ``grace serve``: concurrent clients on POST /v1/embeddings for a bounded time.

    .venv/bin/python -m benchmarks.server.load_test                     # tiny-random, 8 clients, 20 s
    .venv/bin/python -m benchmarks.server.load_test --quick             # 4 clients, 5 s, prints only
    .venv/bin/python -m benchmarks.server.load_test --model smollm2-135m --rationale none
    .venv/bin/python -m benchmarks.server.load_test --url http://127.0.0.1:8000   # a running server
    .venv/bin/python -m benchmarks.server.load_test --overload          # 150 x 64-text burst: 429s

Without ``--url`` the script starts its own server (``grace serve --model M --port FREE
--max-new-tokens N --no-cache`` in a subprocess), waits for /health and stops it at the end.
Each of ``--clients`` asyncio clients (one shared httpx.AsyncClient) sends requests back to
back until ``--duration`` seconds have passed; each request holds 1-4 texts drawn (seeded,
per client) from a small list of varied sentences. Requests in flight at the deadline are
awaited (up to ``--timeout``), not dropped.

Every request sent ends in exactly one bucket:

* ok: HTTP 200 whose body holds one embedding of the server's dimension and one rationale
  per text;
* error: any other HTTP answer (counted by status code; "200-bad-body" for a 200 whose body is
  wrong);
* lost: no HTTP answer at all (timeout, connection dropped, still pending at the end), counted
  by reason. ``sent == ok + errors + lost`` is checked.

Reported: requests/s and texts/s (ok ones, over the measured time), p50/p90/p99 latency of the
ok requests, errors by status, lost requests, and the server's batching from /health
(``model_calls`` and ``requests`` before and after: how many requests one model call served).
The summary goes to stdout and, unless ``--no-write`` (default with ``--quick``), to this run's
section of benchmarks/server/results-server.md (one section per model and rationale setting,
replaced by the next run of the same setting). The last line printed is ``errors: N lost: M``;
the exit code is 1 when either is non-zero.

``--overload`` runs the backpressure scenario instead: ``--burst-clients`` (150) clients each
send ONE request of ``--burst-texts`` (64) distinct texts at the same moment, with a
``--timeout`` of 15 s. The server accepts what fits its pending-text budget
(``--max-pending-texts``) and answers the rest 429 at once; 429s are counted apart from errors.
Then one request of one text is sent and timed (the server must still be responsive), and
/health is read twice, 2 s apart, to check that no abandoned work keeps the model busy. Last
line: ``errors: N lost: M``, N counting every status but 429 (and a failed or slow single
request); exit code 1 when either is non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common.report import cpu_model, versions, write_section

RESULTS = Path(__file__).resolve().parent / "results-server.md"
HEADER = (
    '# `grace serve` under load\n'
    '\n'
    'Written by `benchmarks/server/load_test.py`, one section per model and rationale setting (a\n'
    're-run replaces its own section). Concurrent clients send POST /v1/embeddings requests of\n'
    '1-4 short texts back to back; the server gathers concurrent requests into one model call\n'
    '(grace.server.batcher). ok + errors + lost = sent in every run.\n'
    '\n'
    'The overload sections (`--overload`) send one burst of 150 requests of 64 distinct texts at\n'
    'once (15 s client timeout), then one request of one text. With the default pending-text\n'
    'budget (256) the server accepts what it can answer in time and refuses the rest with 429 at\n'
    'once; with the budget lifted to the whole burst (9600, i.e. no backpressure) most clients\n'
    'time out, and the server drops their requests when they leave instead of encoding them.\n'
    'Figures of different dates were taken at different machine loads: compare rows of one run.\n'
)
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The stock market fell sharply on Monday after the rate decision.",
    "Two dogs are running through a snowy field.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The new museum wing opens to the public next spring.",
    "She ordered a coffee and sat by the window to read.",
    "Heavy rain caused flooding in several coastal towns.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Researchers found a link between sleep and memory consolidation.",
    "The team won the championship after a dramatic penalty shoot-out.",
    "Quantum computers use qubits that can be in superposition.",
    "A child is feeding ducks at the edge of a pond.",
    "The contract must be signed by both parties before Friday.",
    "Electric cars are becoming cheaper to buy and to run.",
    "He apologised for arriving late to the meeting.",
    "The volcano erupted, sending ash high into the sky.",
    "Please keep your luggage with you at all times.",
    "The novel tells the story of a family across three generations.",
    "Vaccines train the immune system to recognise a pathogen.",
    "A woman is slicing tomatoes in the kitchen.",
    "The bridge will be closed for repairs during the weekend.",
    "Is it safe to drink tap water in this city?",
    "The orchestra rehearsed the symphony for the last time before the premiere.",
]


@dataclass
class Tally:
    """What happened to every request sent (see the module docstring for the buckets)."""

    sent: int = 0
    ok: int = 0
    texts_ok: int = 0
    errors: Counter = field(default_factory=Counter)  # status code (str) -> count
    lost: Counter = field(default_factory=Counter)  # reason -> count
    latencies_ms: list[float] = field(default_factory=list)  # ok requests only
    latencies_429_ms: list[float] = field(default_factory=list)  # refused requests (overload)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str, list[str], Path]:
    """``grace serve`` on a free port; returns once /health answers."""
    port = _free_port()
    cmd = [sys.executable, "-m", "grace.cli", "serve", "--model", args.model, "--port", str(port),
           "--max-new-tokens", str(args.max_new_tokens), "--rationale", args.rationale,
           "--no-cache"]
    if args.max_pending_texts:
        cmd += ["--max-pending-texts", str(args.max_pending_texts)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    log = Path(tempfile.mkstemp(prefix="grace-serve-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"grace serve exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                return proc, url, cmd, log
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    sys.exit(f"grace serve did not answer /health within {args.start_timeout} s:\n"
             f"{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _check_body(body: dict, n: int, dim: int) -> bool:
    data = body.get("data")
    return (isinstance(data, list) and len(data) == n
            and all(len(d.get("embedding", ())) == dim for d in data)
            and [d.get("index") for d in data] == list(range(n))
            and len(body.get("rationales", ())) == n)


async def send(client: httpx.AsyncClient, url: str, texts: list[str], dim: int, tally: Tally) -> str:
    """One request, put in its bucket: returns "ok", "error", "timeout" or "gone" (no answer:
    the connection was refused, reset or closed)."""
    tally.sent += 1
    started = time.perf_counter()
    try:
        response = await client.post(url + "/v1/embeddings", json={"input": texts})
    except httpx.TimeoutException:
        tally.lost["timeout"] += 1
        return "timeout"
    except httpx.TransportError as exc:  # connection refused/reset, closed without answer
        tally.lost[type(exc).__name__] += 1
        return "gone"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        tally.errors[str(response.status_code)] += 1
        if response.status_code == 429:
            tally.latencies_429_ms.append(elapsed_ms)
        return "error"
    try:
        good = _check_body(response.json(), len(texts), dim)
    except ValueError:
        good = False
    if not good:
        tally.errors["200-bad-body"] += 1
        return "error"
    tally.ok += 1
    tally.texts_ok += len(texts)
    tally.latencies_ms.append(elapsed_ms)
    return "ok"


async def one_client(client: httpx.AsyncClient, url: str, rng: random.Random, end: float,
                     dim: int, tally: Tally) -> None:
    while time.perf_counter() < end:
        texts = rng.sample(SENTENCES, rng.randint(1, 4))
        if await send(client, url, texts, dim, tally) == "gone":
            await asyncio.sleep(0.2)  # a server gone: no busy loop of refused connections


async def run_load(url: str, clients: int, duration: float, timeout: float, seed: int,
                   dim: int) -> tuple[Tally, float]:
    """``clients`` loops for ``duration`` s; returns the tally and the measured seconds (until
    the last request in flight at the deadline was answered)."""
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        end = started + duration
        tasks = [asyncio.create_task(one_client(client, url, random.Random(seed * 1000 + i), end,
                                                dim, tally)) for i in range(clients)]
        done, pending = await asyncio.wait(tasks, timeout=duration + timeout + 10)
        for task in pending:  # a client stuck past every timeout: its request is lost
            task.cancel()
            tally.lost["pending-at-end"] += 1
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:  # a bug in this script: say so, loudly
                raise task.exception()
        measured = time.perf_counter() - started
    return tally, measured


async def run_burst(url: str, clients: int, texts_per_request: int, timeout: float, seed: int,
                    dim: int) -> tuple[Tally, float]:
    """``clients`` requests of ``texts_per_request`` distinct texts, all sent at once."""
    tally = Tally()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        texts = [f"{rng.choice(SENTENCES)} (request {i}, text {j})" for j in range(texts_per_request)]
        await send(client, url, texts, dim, tally)

    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(clients)))
        measured = time.perf_counter() - started
    return tally, measured


def single_request(url: str, timeout: float) -> tuple[int | str, float]:
    """(status or the exception's name, seconds) of one request of one text."""
    started = time.perf_counter()
    try:
        status = httpx.post(url + "/v1/embeddings", json={"input": ["one text after the burst"]},
                            timeout=timeout, trust_env=False).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.perf_counter() - started


def overload(args, url: str, server_cmd: list[str] | None) -> int:
    """The backpressure scenario (see the module docstring); returns the exit code."""
    health = _health(url)
    dim = int(health["embedding_dim"])
    load_before = os.getloadavg()[0]
    tally, measured = asyncio.run(run_burst(url, args.burst_clients, args.burst_texts,
                                            args.timeout, args.seed, dim))
    after_status, after_s = single_request(url, 30.0)
    health1 = _health(url)
    time.sleep(2.0)
    health2 = _health(url)
    refused = tally.errors.get("429", 0)
    other = {k: v for k, v in tally.errors.items() if k != "429"}
    errors, lost = sum(other.values()), sum(tally.lost.values())
    assert tally.sent == tally.ok + refused + errors + lost, "bookkeeping"
    slow = after_status != 200 or after_s > args.responsive_s
    lat, lat429 = _percentiles(tally.latencies_ms), _percentiles(tally.latencies_429_ms)
    other_text = ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "none"
    lost_text = ", ".join(f"{k}: {v}" for k, v in sorted(tally.lost.items())) or "none"
    busy_after = health2["model_calls"] - health1["model_calls"]
    setting = f"{health['model']}, rationale {health['rationale']}"
    lines = [
        f"overload: {args.burst_clients} requests x {args.burst_texts} texts at once against {url} "
        f"({setting}, max_pending_texts {health.get('max_pending_texts')})",
        f"requests: sent {tally.sent}, ok {tally.ok}, refused 429 {refused}, other errors {errors} "
        f"({other_text}), lost {lost} ({lost_text}); burst over in {measured:.1f} s",
        f"latency ms: ok p50 {lat['p50']:.0f} max {lat['max']:.0f}; 429 p50 {lat429['p50']:.0f} "
        f"max {lat429['max']:.0f}",
        f"one-text request after the burst: {after_status} in {after_s:.2f} s; model calls in the "
        f"2 s after it: {busy_after}; server counters: rejected {health2['rejected']}, dropped "
        f"{health2['dropped']}, pending texts {health2['pending_texts']}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        head, server = _section_head(
            f"Overload: {setting}, max_pending_texts {health.get('max_pending_texts')}", args, url,
            server_cmd, load_before)
        markdown = "\n".join([
            *head,
            f"- server: {server}; max_pending_texts {health.get('max_pending_texts')}, max_texts "
            f"{health['max_texts']}",
            f"- load: {args.burst_clients} clients send one request of {args.burst_texts} distinct "
            f"texts each, all at once, timeout {args.timeout:g} s; then one request of one text",
            "",
            "| sent | ok | refused (429) | other errors | lost | ok p50 ms | ok max ms | 429 p50 ms | "
            "429 max ms | single request after | model calls in the 2 s after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
            f"| {tally.sent} | {tally.ok} | {refused} | {errors} | {lost} | {lat['p50']:.0f} | "
            f"{lat['max']:.0f} | {lat429['p50']:.0f} | {lat429['max']:.0f} | {after_status} in "
            f"{after_s:.2f} s | {busy_after} |",
            "",
            f"Other errors by status: {other_text}. Lost by reason: {lost_text}. Server counters "
            f"after: rejected {health2['rejected']}, dropped {health2['dropped']}, pending texts "
            f"{health2['pending_texts']}.",
        ])
        name = f"overload:{section_name(health)}:pending{health.get('max_pending_texts')}"
        print(f"wrote {write_results(name, markdown)}")
    print(f"errors: {errors + int(slow)} lost: {lost}")
    return 1 if errors or lost or slow else 0


def _health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=10, trust_env=False).json()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(max(values))}


def _section_head(title: str, args, url: str, server_cmd: list[str] | None,
                  load_before: float) -> tuple[list[str], str]:
    """The first lines of a results section (title, this script's command line, the machine)
    and the server as it was started."""
    command = "python -m benchmarks.server.load_test" + "".join(f" {a}" for a in sys.argv[1:])
    if server_cmd:
        shown = [("FREE" if prev == "--port" else a)  # the port differs on every run
                 for prev, a in zip([""] + server_cmd, server_cmd)]
        server = ("`grace serve " + " ".join(shown[shown.index("serve") + 1:]) + "`"
                  + (f" (OMP_NUM_THREADS={args.threads})" if args.threads else ""))
    else:
        server = f"a running server at {url}"
    head = [
        f"## {title}",
        "",
        f"`{command}` -- {date.today().isoformat()}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores visible, load average "
        f"{load_before:.2f} at the start (other jobs share the cores; the clients run on the "
        f"same machine); Python {platform.python_version()}; "
        + versions("torch", "transformers", "fastapi", "uvicorn", "httpx"),
    ]
    return head, server


def report(args, url: str, server_cmd: list[str] | None, health0: dict, health1: dict | None,
           tally: Tally, measured: float, load_before: float) -> tuple[str, str]:
    """(text summary, markdown section)."""
    errors, lost = sum(tally.errors.values()), sum(tally.lost.values())
    assert tally.sent == tally.ok + errors + lost, "bookkeeping: every request must end in a bucket"
    lat = _percentiles(tally.latencies_ms)
    rps, tps = tally.ok / measured, tally.texts_ok / measured
    if health1 is None:  # the server did not answer /health after the load
        health1, calls, served = health0, "?", "?"
    else:
        calls = health1["model_calls"] - health0["model_calls"]
        served = health1["requests"] - health0["requests"]
    per_call = served / calls if isinstance(calls, int) and calls else float("nan")
    texts_per_call = tally.texts_ok / calls if isinstance(calls, int) and calls else float("nan")
    error_text = ", ".join(f"{k}: {v}" for k, v in sorted(tally.errors.items())) or "none"
    lost_text = ", ".join(f"{k}: {v}" for k, v in sorted(tally.lost.items())) or "none"
    setting = (f"{health1['model']}, rationale {health1['rationale']}"
               + (f", max_new_tokens {args.max_new_tokens}" if server_cmd else ""))
    lines = [
        f"load test: {args.clients} clients x {args.duration:g} s against {url} ({setting})",
        f"requests: sent {tally.sent}, ok {tally.ok}, errors {errors} ({error_text}), "
        f"lost {lost} ({lost_text})",
        f"throughput: {rps:.1f} requests/s, {tps:.1f} texts/s over {measured:.1f} s",
        f"latency ms (ok requests): p50 {lat['p50']:.1f}, p90 {lat['p90']:.1f}, "
        f"p99 {lat['p99']:.1f}, max {lat['max']:.1f}",
        f"batching: {calls} model calls served {served} requests: {per_call:.2f} requests "
        f"({texts_per_call:.2f} texts) per call",
    ]
    head, server = _section_head(setting, args, url, server_cmd, load_before)
    markdown = "\n".join([
        *head,
        f"- server: {server}; embedding dim {health1['embedding_dim']}",
        f"- load: {args.clients} concurrent clients for {args.duration:g} s, each request 1-4 "
        f"texts drawn from {len(SENTENCES)} sentences (seed {args.seed}), request timeout "
        f"{args.timeout:g} s; in-flight requests awaited at the deadline",
        "",
        "| sent | ok | errors | lost | requests/s | texts/s | p50 ms | p90 ms | p99 ms | "
        "model calls | requests per call | texts per call |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {tally.sent} | {tally.ok} | {errors} | {lost} | {rps:.1f} | {tps:.1f} | "
        f"{lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | {calls} | {per_call:.2f} | "
        f"{texts_per_call:.2f} |",
        "",
        f"Errors by status: {error_text}. Lost (no answer) by reason: {lost_text}. "
        "Texts per call counts texts as sent; the batcher encodes each distinct text of a "
        "gathering once.",
    ])
    return "\n".join(lines), markdown


def section_name(health: dict) -> str:
    return f"server:{health['model']}:{health['rationale']}"


def write_results(name: str, markdown: str, path: Path = RESULTS) -> Path:
    if not path.exists():
        path.write_text(HEADER)
    return write_section(name, markdown, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running grace server (default: start one)")
    p.add_argument("--model", default="tiny-random", help="the started server's model")
    p.add_argument("--rationale", default="greedy",
                   help="the started server's rationale: greedy | none")
    p.add_argument("--max-new-tokens", type=int, default=8,
                   help="the started server's rationale cap")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of the started server (0: leave unset)")
    p.add_argument("--clients", type=int, help="concurrent clients (default 8; --quick 4)")
    p.add_argument("--duration", type=float, help="seconds of load (default 20; --quick 5)")
    p.add_argument("--quick", action="store_true", help="4 clients for 5 s, prints only")
    p.add_argument("--timeout", type=float, default=None,
                   help="per-request timeout (s; default 60, --overload 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=300.0,
                   help="seconds to wait for the started server's /health (the first SmolLM2 "
                   "load converts the GGUF)")
    p.add_argument("--overload", action="store_true",
                   help="the backpressure scenario: one burst of --burst-clients large requests")
    p.add_argument("--burst-clients", type=int, default=150)
    p.add_argument("--burst-texts", type=int, default=64, help="texts per burst request")
    p.add_argument("--max-pending-texts", type=int, default=None,
                   help="the started server's pending-text budget (default: the server's)")
    p.add_argument("--responsive-s", type=float, default=5.0,
                   help="the single request after the burst must be answered within this")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write benchmarks/server/results-server.md (default: only without --quick)")
    args = p.parse_args(argv)
    args.clients = args.clients or (4 if args.quick else 8)
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    args.write = (not args.quick) if args.write is None else args.write
    args.timeout = args.timeout or (15.0 if args.overload else 60.0)

    proc, server_cmd = None, None
    if args.url:
        url = args.url.rstrip("/")
    else:
        proc, url, server_cmd, log = start_server(args)
    if args.overload:
        try:
            warm = httpx.post(url + "/v1/embeddings", json={"input": SENTENCES[:2]}, timeout=60,
                              trust_env=False)
            warm.raise_for_status()
            return overload(args, url, server_cmd)
        finally:
            if proc is not None:
                stop_server(proc)
                log.unlink(missing_ok=True)
    try:
        health = _health(url)
        warm = httpx.post(url + "/v1/embeddings", json={"input": SENTENCES[:2]},
                          timeout=args.timeout, trust_env=False)  # the first call's one-off costs
        warm.raise_for_status()
        health0 = _health(url)
        load_before = os.getloadavg()[0]
        tally, measured = asyncio.run(run_load(url, args.clients, args.duration, args.timeout,
                                               args.seed, int(health["embedding_dim"])))
        try:
            health1 = _health(url)
        except httpx.HTTPError as exc:  # the server died under load: report what we have
            print(f"warning: /health after the load failed ({exc!r}); batching unknown")
            health1 = None
    finally:
        if proc is not None:
            stop_server(proc)
            log.unlink(missing_ok=True)
    text, markdown = report(args, url, server_cmd, health0, health1, tally, measured, load_before)
    print(text)
    if args.write:
        print(f"wrote {write_results(section_name(health0), markdown)}")
    errors, lost = sum(tally.errors.values()), sum(tally.lost.values())
    print(f"errors: {errors} lost: {lost}")
    return 1 if errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
