"""Issue 27 item 4: the training timeline shows the chosen head's role scores at every snapshot.

The payload's scores are recomputed here from the snapshot files without the web code: previous-token,
first-token and duplicate-token by brute force on the timeline sentence, induction with ``detect_heads``,
pronoun-noun with ``corpus_roles`` on the one sentence.
"""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.interpret import detect_heads
from attnlab.interpret.corpus import ROLE_THRESHOLDS, ROLES, corpus_roles
from attnlab.web.app import create_app
from attnlab.web.demo import register_demo_models
from attnlab.web.timeline import roles_summary

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    register_demo_models(tmp_path_factory.mktemp("timeline-roles"))
    return TestClient(create_app(), base_url=LOCAL)


def _brute_force(weights: torch.Tensor, ids: list[int]) -> dict[str, float]:
    """previous-token, first-token and duplicate-token of one head's (n, n) weights, loop by loop."""
    n = len(ids)
    prev = [float(weights[i, i - 1]) for i in range(1, n)]
    first = [float(weights[i, 0]) for i in range(1, n)]
    dup = [sum(float(weights[i, p]) for p in range(i) if ids[p] == ids[i]) for i in range(n) if ids[i] in ids[:i]]
    return {"previous-token": sum(prev) / len(prev), "first-token": sum(first) / len(first),
            "duplicate-token": sum(dup) / len(dup)}


@pytest.mark.slow
def test_bundled_timeline_role_scores_equal_the_roles_run_on_each_snapshot(client: TestClient) -> None:
    from attnlab.weights.bundled import snapshot_dirs
    from attnlab.weights.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    index = client.get("/api/timeline").json()
    layer, head = 1, 2
    body = client.post("/api/timeline/attention", json={"step": index["snapshots"][-1]["step"], "layer": layer, "head": head}).json()
    steps = [s["step"] for s in index["snapshots"]]
    assert body["role_steps"] == steps
    assert body["role_thresholds"] == ROLE_THRESHOLDS and list(body["role_scores"]) == list(ROLES)
    loaded = cat.load("bible-bpe")
    ids = loaded.tokenizer.encode(index["sentence"])
    for k, step in enumerate(steps):
        model = load_checkpoint(snapshot_dirs()[step]).model.float().eval()
        _, cache = run_with_cache(model, torch.tensor([ids]))
        want = _brute_force(cache.attention(layer)[0, head].double(), ids)
        want["induction"] = float(detect_heads(model, seq_len=32).scores["induction"][layer, head])
        want["pronoun-noun"] = float(corpus_roles(model, loaded.tokenizer, [index["sentence"]], cache=False,
                                                  progress=False).scores["pronoun-noun"][layer, head])
        for role, value in want.items():
            assert body["role_scores"][role][k] == pytest.approx(value, abs=1e-5), (role, step)
    assert body["role_summary"] == roles_summary(steps, body["role_scores"], ROLE_THRESHOLDS)


def test_character_timeline_has_no_pronoun_case_and_one_score_per_snapshot(client: TestClient) -> None:
    index = client.get("/api/timeline", params={"model": "demo-decoder"}).json()
    body = client.post("/api/timeline/attention", json={"model": "demo-decoder", "step": index["snapshots"][0]["step"],
                                                        "layer": 0, "head": 1}).json()
    assert body["role_steps"] == [s["step"] for s in index["snapshots"]]
    assert all(len(v) == len(body["role_steps"]) for v in body["role_scores"].values())
    assert set(body["role_scores"]["pronoun-noun"]) == {None}  # characters are never whole-word pronouns
    assert all(0 <= v <= 1 for v in body["role_scores"]["previous-token"])
    assert "pronoun-noun: no case in the sentence" in body["role_summary"]


def test_roles_summary_reads_the_numbers() -> None:
    text = roles_summary([0, 10, 20], {"induction": [0.1, 0.5, 0.45], "previous-token": [0.2, 0.35, 0.1],
                                       "first-token": [0.6, 0.7, 0.3], "pronoun-noun": [None, None, None]},
                         {"induction": 0.4, "previous-token": 0.4, "first-token": 0.5, "pronoun-noun": 0.3})
    assert text == ("induction reaches its threshold 0.4 at step 10 and stays above it; previous-token stays below "
                    "its threshold 0.4 (highest 0.35, at step 10); first-token reaches its threshold 0.5 at step 0 "
                    "but ends at 0.30; pronoun-noun: no case in the sentence.")


def test_toolbar_role_label_speaks_the_corpus_roles_vocabulary_and_thresholds(client: TestClient) -> None:
    """The label beside the step (the toolbar) is the role the curves give the head at that step: the role whose
    score clears its ``ROLE_THRESHOLDS`` bar by the largest margin, or none; never a name outside ``ROLES``
    (before, the label came from a second detector with its own names, "broad" and "same-token", and a
    previous-token bar of 0.5 against the curves' 0.4)."""
    index = client.get("/api/timeline", params={"model": "demo-decoder"}).json()
    steps = [s["step"] for s in index["snapshots"]]
    labels = set()
    for layer in range(index["n_layers"]):
        for head in range(index["n_heads"]):
            for k, step in enumerate(steps):
                body = client.post("/api/timeline/attention", json={"model": "demo-decoder", "step": step,
                                                                    "layer": layer, "head": head}).json()
                at = {r: v[k] for r, v in body["role_scores"].items() if v[k] is not None}
                given = sorted(((v - ROLE_THRESHOLDS[r], r) for r, v in at.items() if v >= ROLE_THRESHOLDS[r]), reverse=True)
                assert body["role"]["role"] == (given[0][1] if given else None), (layer, head, step, at)
                assert body["role"]["scores"] == pytest.approx(at, abs=1e-12)
                labels.add(body["role"]["role"])
    assert labels <= set(ROLES) | {None}
