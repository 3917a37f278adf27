"""Head-role detection on synthetic attention patterns whose role is known by construction."""

from __future__ import annotations

import pytest
import torch

from attnlab.inspect.roles import detect_role, detect_roles, pattern_scores


def _causal_uniform(n: int) -> torch.Tensor:
    w = torch.tril(torch.ones(n, n))
    return w / w.sum(dim=-1, keepdim=True)


def _mix(target: torch.Tensor, share: float, n: int, causal: bool) -> torch.Tensor:
    base = _causal_uniform(n) if causal else torch.full((n, n), 1.0 / n)
    return share * target + (1 - share) * base


@pytest.mark.parametrize("causal", [True, False])
def test_previous_token_head(causal: bool) -> None:
    n = 10
    target = torch.zeros(n, n)
    target[0, 0] = 1.0
    target[torch.arange(1, n), torch.arange(n - 1)] = 1.0
    role = detect_role(_mix(target, 0.9, n, causal), causal=causal)
    assert role.role == "previous-token"
    assert role.scores["previous-token"] > 0.9


@pytest.mark.parametrize("causal", [True, False])
def test_first_token_sink_head(causal: bool) -> None:
    n = 10
    target = torch.zeros(n, n)
    target[:, 0] = 1.0
    assert detect_role(_mix(target, 0.8, n, causal), causal=causal).role == "first-token"


@pytest.mark.parametrize("causal", [True, False])
def test_same_token_head(causal: bool) -> None:
    n = 10
    assert detect_role(_mix(torch.eye(n), 0.7, n, causal), causal=causal).role == "same-token"


def test_uniform_heads_are_broad_with_full_entropy() -> None:
    n = 12
    for causal, w in ((True, _causal_uniform(n)), (False, torch.full((n, n), 1.0 / n))):
        role = detect_role(w, causal=causal)
        assert role.role == "broad"
        assert role.scores["broad"] == pytest.approx(1.0)


def test_a_head_with_no_clear_pattern_gets_no_role() -> None:
    # Each row splits its attention between two tokens three back: no listed pattern, low entropy.
    n = 10
    w = torch.zeros(n, n)
    for q in range(n):
        keys = [max(q - 3, 0), max(q - 4, 0)]
        for k in keys:
            w[q, k] += 0.5
    assert detect_role(w, causal=True).role is None


def test_scores_are_shares_and_rows_sum_matter() -> None:
    n = 6
    target = torch.zeros(n, n)
    target[:, 0] = 1.0
    scores = pattern_scores(target, causal=True)
    assert scores["first-token"] == pytest.approx(1.0)
    assert scores["previous-token"] == pytest.approx(1 / (n - 1))  # only row 1's previous token is token 0
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_detect_roles_over_a_layer_and_bad_shapes() -> None:
    n = 8
    layer = torch.stack([torch.eye(n), torch.full((n, n), 1.0 / n)])[None]  # (1, heads, q, k)
    roles = detect_roles(layer, causal=False)
    assert [r.role for r in roles] == ["same-token", "broad"]
    with pytest.raises(ValueError, match="square"):
        pattern_scores(torch.ones(3, 4), causal=False)
    with pytest.raises(ValueError, match="batch size 1"):
        detect_roles(torch.ones(2, 1, 3, 3), causal=False)


def test_single_token_has_no_role() -> None:
    assert detect_role(torch.ones(1, 1), causal=True).role is None


def test_one_table_of_role_names_and_thresholds() -> None:
    """The one-sentence labels, the corpus roles and detect_heads read their bars from ROLE_THRESHOLDS."""
    from attnlab.inspect.roles import ROLE_THRESHOLDS, ROLES
    from attnlab.interpret import corpus, detect

    assert set(ROLES) | set(corpus.ROLES) | set(detect.PATTERNS) <= set(ROLE_THRESHOLDS)
    assert {r: ROLE_THRESHOLDS[r] for r in corpus.ROLES} == corpus.ROLE_THRESHOLDS
    assert {p: ROLE_THRESHOLDS[p] for p in detect.PATTERNS} == detect.THRESHOLDS


def test_previous_token_label_uses_the_shared_threshold() -> None:
    """A head with 0.45 of its attention on the previous token is a previous-token head in the timeline's
    curves and the corpus roles (bar 0.4); the one-sentence label says the same (it used a bar of 0.5)."""
    from attnlab.inspect.roles import ROLE_THRESHOLDS

    n = 12
    w = torch.zeros(n, n)
    w[0, 0], w[1, 0], w[1, 1] = 1.0, 0.45, 0.55
    for i in range(2, n):  # 0.45 on the previous token, the rest spread over the keys before it
        w[i, i - 1] = 0.45
        w[i, : i - 1] = 0.55 / (i - 1)
    role = detect_role(w, causal=True)
    assert ROLE_THRESHOLDS["previous-token"] <= role.scores["previous-token"] < 0.5
    assert role.role == "previous-token"
