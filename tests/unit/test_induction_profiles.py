"""The induction-heads experiment's ``look_profiles`` on hand-set attention whose circuit is known: a canonical
induction circuit (previous-token head, then a head on the token after the earlier occurrence) and a shifted
one (a head 4 back, then a head on the key 4 after that token). The induction score (``detect``'s
``pattern_scores``, Olsson et al.'s definition) reads 1 for the first and 0 for the second, though both copy:
the profiles tell them apart."""

from __future__ import annotations

import torch

from attnlab.experiments.induction_heads import look_profiles
from attnlab.interpret.detect import pattern_scores

N, SHIFT = 10, 4


def _rows(target: list[int]) -> torch.Tensor:
    """A ``(2N, 2N)`` attention map putting all of row q on key ``target[q]``."""
    w = torch.zeros(2 * N, 2 * N)
    w[torch.arange(2 * N), torch.tensor(target)] = 1.0
    return w


def test_profiles_tell_a_canonical_induction_circuit_from_a_shifted_one() -> None:
    qs = range(2 * N)
    first = torch.stack([_rows([max(q - 1, 0) for q in qs]),  # previous token
                         _rows([q - SHIFT if q >= SHIFT else 0 for q in qs])])[None]  # SHIFT back
    # last layer: from the second copy, head 0 on the token after the earlier occurrence, head 1 SHIFT after it
    last = torch.stack([_rows([q - N + 1 if q > N else 0 for q in qs]),
                        _rows([q - N + 1 + SHIFT if q > N else 0 for q in qs])])[None]
    shifted, back = look_profiles(first, last, N)
    assert shifted.shape == back.shape == (2, N - 2)
    assert shifted[0].tolist() == [1.0] + [0.0] * (N - 3)
    assert shifted[1].tolist() == [0.0] * SHIFT + [1.0] + [0.0] * (N - 3 - SHIFT)
    assert back[0].tolist() == [0.0, 1.0] + [0.0] * (N - 4)
    assert back[1].tolist() == [0.0] * SHIFT + [1.0] + [0.0] * (N - 3 - SHIFT)
    # the induction score sees only the canonical head
    assert pattern_scores(last, N)["induction"].tolist() == [1.0, 0.0]
    assert pattern_scores(first, N)["previous-token"].tolist() == [1.0, 0.0]
