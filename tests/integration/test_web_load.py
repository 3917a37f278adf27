"""The server under load and concurrency (issue 22 item 4; issue 23 items 3, 4 and 8).

Requests run against a real uvicorn on 127.0.0.1 (``attnlab.web.serve.serve_in_thread``), so that
requests really overlap and clients really disconnect. Slow work is simulated with catalogue entries
whose loader or forward pass waits (on an event the test controls, or for a fixed pause), never with a
real SmolLM2 load; what is asserted are answers and counts, not times.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import hook_name, hook_points
from attnlab.models import DecoderLM
from attnlab.tokenizers import CharTokenizer
from attnlab.web import models as web_models
from attnlab.web import order, timeline
from attnlab.web.app import create_app
from attnlab.web.demo import ALPHABET, _config, register_demo_models
from attnlab.web.serve import serve_in_thread

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return create_app(experiments_dir=tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def base(app) -> str:
    with serve_in_thread(app) as url:
        yield url


def _post(base: str, path: str, body: dict, timeout: float = 120) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=timeout)


def _entry(name: str, loader: Callable[[cat.ModelInfo], cat.LoadedModel]) -> cat.ModelInfo:
    """A catalogue row for a test model whose ``loader(info)`` builds it."""
    info = cat.ModelInfo(name=name, family="decoder", description="test model", n_params="~30k", source="test",
                         licence="MIT", install_hint="nothing", is_available=lambda: True,
                         loader=lambda: loader(info))
    return info


def _decoder(info: cat.ModelInfo, model: torch.nn.Module | None = None) -> cat.LoadedModel:
    config = _config("decoder")
    model = model if model is not None else DecoderLM(config).eval()
    return cat.LoadedModel(name=info.name, model=model, tokenizer=CharTokenizer(ALPHABET), config=config, info=info)


# --- issue 22 item 4: copies of a shared model are never taken while a request holds it ------------------------


ORDER = {"model": "demo-encoder", "first": "the cat sat", "second": "sat the cat"}
STEP = {"model": "demo-decoder", "step": 10, "layer": 1, "head": 2}


@pytest.mark.parametrize(("path", "body", "stack"), [("/api/positions", ORDER, "encoder"),
                                                     ("/api/timeline/attention", STEP, "decoder")])
def test_a_view_never_copies_a_model_while_another_request_has_hooks_on_it(base: str, path: str, body: dict,
                                                                           stack: str) -> None:
    """A request holding the model (as /api/why does, its hooks attached) while the Order or Timeline view
    makes its cached copy: the copy must not carry that hook, now or in any later answer."""
    order._UNPOSITIONED.clear()
    timeline._SNAPSHOT_MODELS.clear()
    alone = _post(base, path, body)
    assert alone.status_code == 200, alone.text
    order._UNPOSITIONED.clear()
    timeline._SNAPSHOT_MODELS.clear()
    loaded = cat.load(body["model"])
    point = hook_points(loaded.model)[hook_name(stack, 0, "hook_resid_post")]
    holding, release = threading.Event(), threading.Event()

    def another_request() -> None:  # what interpret.ablate does under the lock: a hook that changes the output
        with web_models.model_lock(loaded.name):
            handle = point.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
            holding.set()
            release.wait(60)
            handle.remove()

    holder = threading.Thread(target=another_request)
    holder.start()
    holding.wait(60)
    answer: dict[str, httpx.Response] = {}
    view = threading.Thread(target=lambda: answer.update(r=_post(base, path, body)))
    view.start()
    view.join(2.0)  # time enough for the view to take its copy, if it does so without the lock
    release.set()
    holder.join(60)
    view.join(120)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answer["r"].json() == alone.json()  # the copy was taken once the request was done
    assert _post(base, path, body).json() == alone.json()  # and every later answer (the cached copy) is right
    assert not any(p.watched for p in hook_points(loaded.model).values())


def _mixed() -> list[tuple[str, str, dict | None]]:
    """33 requests over every heavy view, the Why view on both families among them."""
    text = "the cat sat on the mat"
    why = [("POST", "/api/why", {"model": m, "text": text, "layer": layer, "head": head})
           for m in ("demo-encoder", "demo-decoder") for layer, head in ((0, 1), (1, 2), (1, 3))]
    order = [("POST", "/api/positions", {"model": "demo-encoder", "first": a, "second": b})
             for a, b in (("the cat sat", "sat the cat"), ("ab cd", "cd ab"), ("on the mat", "mat the on"), ("xy", "yx"))]
    steps = [("POST", "/api/timeline/attention", {"model": "demo-decoder", "step": step, "layer": layer, "head": 1})
             for step in (0, 10, 30) for layer in (0, 1)]
    rest = [
        *[("POST", "/api/attention", {"model": m, "text": text})
          for m in ("demo-decoder", "demo-encoder", "demo-seq2seq", "demo-decoder")],
        *[("POST", "/api/qkv", {"model": "demo-decoder", "text": text, "layer": layer, "head": 1, "focus": 3})
          for layer in (0, 1)],
        *[("POST", "/api/part", {"model": "demo-encoder", "text": text, "part": part, "layer": 1})
          for part in ("feed-forward", "add-norm")],
        *[("POST", "/api/next-token", {"model": "demo-decoder", "text": t}) for t in ("the", "the cat")],
        *[("POST", "/api/generate", {"model": "demo-decoder", "text": "the", "max_new_tokens": 4, "temperature": 0.8,
                                     "seed": seed}) for seed in (1, 2)],
        *[("POST", "/api/heads/rank", {"model": "demo-decoder", "text": text, "query": 4, "key": k}) for k in (1, 2)],
        *[("POST", "/api/translate", {"model": "demo-translator", "text": t, "max_new_tokens": 4})
          for t in ("In the beginning", "And God said")],
        ("GET", "/api/timeline?model=demo-decoder", None),
    ]
    return [*why, *order, *steps, *rest]


def test_thirty_mixed_requests_at_once_answer_as_each_does_alone(base: str) -> None:
    requests = _mixed()
    assert len(requests) >= 30

    def send(request: tuple[str, str, dict | None]) -> httpx.Response:
        method, path, body = request
        return httpx.request(method, base + path, json=body, timeout=300)

    def fresh() -> None:  # the views' cached copies are made again, during the burst
        order._UNPOSITIONED.clear()
        timeline._SNAPSHOT_MODELS.clear()

    fresh()
    alone = []
    for request in requests:
        r = send(request)
        assert r.status_code == 200, (request, r.text)
        alone.append(r.json())
    fresh()
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(send, requests))
    for request, r, expected in zip(requests, together, alone, strict=True):
        assert r.status_code == 200, (request, r.text)
        assert r.json() == expected, request
    for request, expected in zip(requests, alone, strict=True):  # every view is still right afterwards
        assert send(request).json() == expected, request
    for name in ("demo-encoder", "demo-decoder"):
        assert not any(p.watched for p in hook_points(cat.load(name).model).values())


# --- issue 23 item 4: a model load never blocks requests for other, loaded models ----------------------------


def test_a_loaded_model_answers_while_another_model_loads(base: str) -> None:
    assert _post(base, "/api/attention", {"model": "demo-decoder", "text": "hello"}).status_code == 200
    started, gate = threading.Event(), threading.Event()

    def slow_loader(info: cat.ModelInfo) -> cat.LoadedModel:
        started.set()
        gate.wait(120)  # a load that lasts until the test ends it
        return _decoder(info)

    cat.register(_entry("slow-to-load", slow_loader))
    loading: dict[str, httpx.Response] = {}
    loader = threading.Thread(target=lambda: loading.update(r=_post(base, "/api/models/slow-to-load/load", {})))
    loader.start()
    try:
        assert started.wait(60)
        answers: dict[str, httpx.Response] = {}
        fast = threading.Thread(target=lambda: answers.update(
            attention=_post(base, "/api/attention", {"model": "demo-decoder", "text": "hello"}),
            models=httpx.get(base + "/api/models", timeout=120)))
        fast.start()
        fast.join(30)  # generous: these answer in milliseconds; blocked, they would wait for the gate
        finished_during_the_load = not fast.is_alive()
        still_loading = not gate.is_set() and loader.is_alive()
    finally:
        gate.set()
        loader.join(120)
        fast.join(120)
    assert finished_during_the_load and still_loading
    assert answers["attention"].status_code == 200 and answers["attention"].json()["tokens"]
    assert answers["models"].status_code == 200
    assert loading["r"].status_code == 200 and cat.is_loaded("slow-to-load")
    web_models.unload_model("slow-to-load")


def test_one_model_loads_once_for_requests_that_ask_for_it_together() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def counted(info: cat.ModelInfo) -> cat.LoadedModel:
        calls.append(1)
        gate.wait(60)
        return _decoder(info)

    cat.register(_entry("loads-once", counted))
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cat.load, "loads-once") for _ in range(8)]
        time.sleep(0.5)
        gate.set()
        models = {id(f.result().model) for f in futures}
    assert calls == [1] and len(models) == 1
    cat.unload("loads-once")


# --- issue 23 item 3: abandoned requests are dropped; the heavy queue is bounded -----------------------------


class _SlowDecoder(DecoderLM):
    """A demo decoder whose forward pass first waits: ``pause`` seconds, or on ``gate`` when it is set up."""

    def __init__(self, pause: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__(_config("decoder"))
        self.pause, self.gate, self.calls = pause, gate, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(120)
        time.sleep(self.pause)
        return super().forward(*args, **kwargs)


def _abandon(base: str, path: str, body: bytes) -> None:
    """Send one complete request and hang up without reading the answer (a closed browser tab)."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode() + body)


def test_requests_whose_clients_left_are_dropped_and_a_fast_route_is_not_queued_behind_them(app, base: str) -> None:
    slow = _SlowDecoder(pause=0.3)
    cat.register(_entry("slow-forward", lambda info: _decoder(info, slow.eval())))
    assert _post(base, "/api/attention", {"model": "slow-forward", "text": "hi"}).status_code == 200
    assert _post(base, "/api/attention", {"model": "demo-decoder", "text": "hello"}).status_code == 200
    slow.calls = 0
    dropped_before, started_before = app.state.heavy.dropped, app.state.heavy.started
    body = b'{"model": "slow-forward", "text": "hello there"}'
    with ThreadPoolExecutor(30) as pool:  # 30 clients send a heavy request and give up at once
        list(pool.map(lambda _: _abandon(base, "/api/attention", body), range(30)))
    time.sleep(1.0)  # the server has read all 30 (at most ~3 could have run in this second)
    r = _post(base, "/api/attention", {"model": "demo-decoder", "text": "hello"})
    ran_before_the_fast_answer = slow.calls
    assert r.status_code == 200
    # Queued behind the abandoned work it would have waited for all 30 (9 s of forward passes).
    assert ran_before_the_fast_answer <= 6, ran_before_the_fast_answer
    deadline = time.monotonic() + 60
    queue = app.state.heavy
    while queue.dropped - dropped_before + queue.started - started_before < 31 or queue.running:  # 30 + the fast one
        assert time.monotonic() < deadline, (queue.dropped - dropped_before, queue.started - started_before)
        time.sleep(0.05)
    assert slow.calls <= 6 and queue.dropped - dropped_before >= 24
    web_models.unload_model("slow-forward")


def test_a_full_heavy_queue_is_a_503_with_retry_after(app, base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    slow = _SlowDecoder(gate=gate)
    cat.register(_entry("gated-forward", lambda info: _decoder(info, slow.eval())))
    web_models.load_model("gated-forward")
    queue = app.state.heavy
    monkeypatch.setattr(queue, "max_waiting", 3)
    body = {"model": "gated-forward", "text": "hi"}
    with ThreadPoolExecutor(5) as pool:
        try:
            # 2 run (held), then 3 wait: in two rounds, so that a slow machine cannot count a request that is
            # still on its way to a free slot as waiting (which would refuse one of the five)
            waiting = [pool.submit(_post, base, "/api/attention", body) for _ in range(2)]
            deadline = time.monotonic() + 60
            while queue.running < 2:
                assert time.monotonic() < deadline, (queue.waiting, queue.running)
                time.sleep(0.02)
            waiting += [pool.submit(_post, base, "/api/attention", body) for _ in range(3)]
            while queue.waiting < 3:
                assert time.monotonic() < deadline, (queue.waiting, queue.running)
                time.sleep(0.02)
            refused = _post(base, "/api/attention", body)
        finally:
            gate.set()
        assert [f.result().status_code for f in waiting] == [200] * 5
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1 and "busy" in refused.json()["detail"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    web_models.unload_model("gated-forward")


def test_long_requests_leave_a_slot_for_the_short_views(base: str) -> None:
    """Two Why requests stuck on a slow model (as 30 abandoned SmolLM2 ones were): a short view still answers."""
    gate = threading.Event()
    slow = _SlowDecoder(gate=gate)
    cat.register(_entry("gated-why", lambda info: _decoder(info, slow.eval())))
    web_models.load_model("gated-why")
    body = {"model": "gated-why", "text": "hello", "layer": 0, "head": 0}
    with ThreadPoolExecutor(2) as pool:
        try:
            whys = [pool.submit(_post, base, "/api/why", body) for _ in range(2)]
            deadline = time.monotonic() + 60
            while slow.calls < 1:  # the first is inside the model
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.5)  # and the second has reached the server
            answers: dict[str, httpx.Response] = {}
            short = threading.Thread(target=lambda: answers.update(
                r=_post(base, "/api/attention", {"model": "demo-decoder", "text": "hello"})))
            short.start()
            short.join(30)  # generous: it answers in milliseconds; blocked, it would wait for the gate
            answered_while_the_whys_were_stuck = not short.is_alive() and not gate.is_set()
        finally:
            gate.set()
        assert [f.result().status_code for f in whys] == [200, 200]
    short.join(60)
    assert answered_while_the_whys_were_stuck and answers["r"].status_code == 200
    web_models.unload_model("gated-why")


# --- issue 23 item 8: unloading gives the memory back to the system --------------------------------------------

# Run in a fresh process: in a long test session the resident size also moves with what earlier tests
# freed (a trim here can return their memory too), so only a process of its own measures the unload alone.
_UNLOAD_SCRIPT = r"""
import gc, json, os, sys
from pathlib import Path
import torch
from fastapi.testclient import TestClient
from attnlab import catalog as cat
from attnlab.models import DecoderLM
from attnlab.tokenizers import CharTokenizer
from attnlab.web.app import create_app
from attnlab.web.demo import ALPHABET, _config

pins = []  # small tensors made during the load and kept: the fragmentation a real load leaves


def resident_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def big(info):
    config = _config("decoder")
    model = DecoderLM(config).eval()
    model.ballast = torch.nn.ParameterList()
    for _ in range(1600):
        model.ballast.append(torch.nn.Parameter(torch.randn(16384), requires_grad=False))
        pins.append(torch.zeros(256))
    return cat.LoadedModel(name=info.name, model=model, tokenizer=CharTokenizer(ALPHABET), config=config, info=info)


info = cat.ModelInfo(name="big-ballast", family="decoder", description="test model", n_params="~26M",
                     source="test", licence="MIT", install_hint="nothing", is_available=lambda: True,
                     loader=lambda: big(info))
cat.register(info)
client = TestClient(create_app(experiments_dir=Path(sys.argv[1])), base_url="http://127.0.0.1")
gc.collect()
before = resident_mb()
assert client.post("/api/models/big-ballast/load", json={}).status_code == 200
loaded = resident_mb()
assert client.delete("/api/models/big-ballast").json()["was_loaded"] is True
after = resident_mb()
print(json.dumps([before, loaded, after]))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc to read the resident size")
def test_unloading_gives_the_models_memory_back_to_the_system(tmp_path) -> None:
    """~100 MB of 64 KB tensors (under glibc's mmap threshold, so they come from its heaps) interleaved
    with small tensors that stay: after the unload, at least half of what the load added is returned."""
    done = subprocess.run([sys.executable, "-c", _UNLOAD_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    before, loaded, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded - before > 80  # the load took what it should
    assert loaded - after >= 0.5 * (loaded - before), (before, loaded, after)
