"""``detect_heads`` finds an induction head in a tiny decoder trained on repeated random tokens, and
none in the same decoder before training (Elhage et al. 2021; Olsson et al. 2022).

The model is trained here, for 300 steps on one thread (~15-30 s), on the task an induction head
solves: the second half of ``[r, r]`` is predictable from the first and nothing else is. The half
length varies from step to step, so attending to a fixed offset does not solve it.

What is tested is the detector's definition (mean attention from the second copy to the token after
the earlier occurrence), as in TransformerLens's ``detect_head``: a head that scores high attends
like an induction head on this input. In a model this small trained this briefly the head found is
often in layer 0, which cannot compose with a previous-token head; proving the two-layer circuit
would take patching, not an attention score.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F

from attnlab import interpret
from attnlab.models import DecoderLM, TransformerConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
VOCAB, HALF = 24, 8


def train_on_repeats(model: DecoderLM, steps: int, seed: int = 1) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        n = int(torch.randint(4, HALF + 1, (1,), generator=g))
        r = torch.randint(0, VOCAB, (32, n), generator=g)
        x = torch.cat([r, r], dim=1)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits[:, n:].flatten(0, 1), x[:, n + 1:].flatten())  # the predictable half
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def test_training_on_repeated_tokens_makes_an_induction_head() -> None:
    torch.manual_seed(0)
    config = TransformerConfig(family="decoder", vocab_size=VOCAB, d_model=64, n_heads=4, n_layers=2, d_ff=64,
                               max_len=2 * HALF)
    untrained = DecoderLM(config).eval()
    trained = copy.deepcopy(untrained)
    start = time.perf_counter()
    loss = train_on_repeats(trained, steps=300)
    assert loss < 2.5, f"did not learn to copy (loss {loss:.2f} after {time.perf_counter() - start:.0f} s; chance 3.18)"

    before = interpret.detect_heads(untrained, seq_len=HALF, batch=16, seed=7)
    after = interpret.detect_heads(trained, seq_len=HALF, batch=16, seed=7)
    assert before.heads["induction"] == []
    assert after.heads["induction"], f"no induction head; scores {after.scores['induction']}"
    layer, head = after.heads["induction"][0]
    assert after.scores["induction"][layer, head] >= interpret.detect.THRESHOLDS["induction"]
    assert after.scores["induction"][layer, head] > 3 * before.scores["induction"].max()
    # the same head does not merely look at the earlier copy of the current token
    assert after.scores["duplicate-token"][layer, head] < after.scores["induction"][layer, head]
