"""The Why view in plain words: sentences computed from the payload's numbers, plain labels for the
score decomposition's components, and the fidelity ledger's lines.

Every number a sentence prints is one of the payload's numbers rounded as the sentence shows it
(``fmt``), and every comparison word ("lowers", "raises", "leaves") is chosen from the rounded
numbers it compares, so the sentence never says more than the numbers show.
"""

from __future__ import annotations

import re

DIGITS = 2  # probabilities and scores in sentences: two decimals
#: Component labels of ``interpret.score_decomposition`` (``L2H1``, ``MLP0``, ``q/k bias`` ...) in plain words.
_FIXED = {
    "embed": "embedding (token + position)",
    "tok embed": "token embedding",
    "pos embed": "position embedding",
    "token type": "segment embedding",
    "biases": "constant biases",
    "norm offsets": "norm offsets",
    "final norm offset": "final-norm offset",
    "q/k bias": "query/key bias",
}


def plain_label(label: str) -> str:
    """``"L2H1"`` -> ``"layer 2 head 1"``, ``"MLP0"`` -> ``"feed-forward block 0"``, ``"enc MLP1"`` ->
    ``"source: feed-forward block 1"``; a label it does not know comes back unchanged."""
    if label.startswith("enc "):
        return "source: " + plain_label(label[4:])
    if label in _FIXED:
        return _FIXED[label]
    if m := re.fullmatch(r"L(\d+)H(\d+)", label):
        return f"layer {m[1]} head {m[2]}"
    if m := re.fullmatch(r"L(\d+)X(\d+)", label):
        return f"layer {m[1]} cross-attention head {m[2]}"
    if m := re.fullmatch(r"MLP(\d+)", label):
        return f"feed-forward block {m[1]}"
    return label


def fmt(value: float, digits: int = DIGITS) -> str:
    """``value`` as the sentences print it (fixed decimals; ``-0.00`` is ``0.00``)."""
    text = f"{value:.{digits}f}"
    return text[1:] if re.fullmatch(r"-0\.0*", text) else text


def change(what: str, before: float, after: float, digits: int = DIGITS) -> str:
    """``"lowers <what> from 0.41 to 0.12"`` / ``"raises ..."`` / ``"leaves <what> at 0.41"``, the verb
    chosen from the rounded values the phrase prints."""
    a, b = fmt(before, digits), fmt(after, digits)
    if a == b:
        return f"leaves {what} at {a}"
    return f"{'lowers' if float(b) < float(a) else 'raises'} {what} from {a} to {b}"


def quote(token: str) -> str:
    return "“" + token.replace("\n", "⏎") + "”"


def attention_sentence(layer: int, head: int, query: str, key: str, weight: float, cross: bool) -> str:
    kind = "cross-attention head" if cross else "head"
    return (f"In layer {layer} {kind} {head}, {quote(query)} gives {fmt(weight)} of its attention to {quote(key)} "
            f"(its strongest link in this head).")


def prediction_sentence(layer: int, head: int, after: str, target: str, clean: float, ablated: float, cross: bool) -> str:
    kind = "cross-attention head" if cross else "head"
    return (f"After {quote(after)} the model predicts {quote(target)} with probability {fmt(clean)}; "
            f"removing layer {layer} {kind} {head} {change('it', clean, ablated)}.")


def embedding_sentence(layer: int, head: int, ablated: float) -> str:
    digits = 4  # a cosine similarity near 1: two decimals would hide every change
    what = "the sentence embedding's cosine similarity to the original (1: unchanged)"
    return f"Removing layer {layer} head {head} {change(what, 1.0, ablated, digits)}."


def effects_sentence(effects: list[list[float]], what: str, cross: bool, estimated: bool = False) -> str:
    """``estimated``: the map is attribution patching's estimate (the sentence says so)."""
    cells = [(abs(v), v, layer, head) for layer, row in enumerate(effects) for head, v in enumerate(row)]
    _, v, layer, head = max(cells)
    kind = "cross-attention head" if cross else "head"
    n = len(cells)
    direction = "lowers" if v < 0 else "raises"
    by = "By the gradient estimate (exact values are being computed), " if estimated else ""
    if fmt(abs(v)) == fmt(0.0):
        return f"{by}{'n' if by else 'N'}one of the {n} {kind}s changes the {what} by 0.005 or more when removed."
    return (f"{by}{'o' if by else 'O'}f all {n} {kind}s, removing layer {layer} {kind} {head} changes the {what} most: it {direction} "
            f"it by {fmt(abs(v))}.")


def score_sentence(query: str, key: str, score: float, top: tuple[str, str, float] | None) -> str:
    if top is None:
        return f"The attention score of {quote(query)} for {quote(key)} is {fmt(score)}."
    q, k, v = top
    return (f"The attention score of {quote(query)} for {quote(key)} is {fmt(score)}; its largest part, {fmt(v)}, "
            f"is {plain_label(q)} (query side) meeting {plain_label(k)} (key side).")


def saliency_sentence(tokens: list[str], scores: list[float], what: str) -> str:
    """``what``: the quantity the scores attribute (``"the logit of “ Sarah”"``)."""
    i = max(range(len(scores)), key=lambda j: abs(scores[j]))
    direction = "raises" if scores[i] >= 0 else "lowers"
    return (f"Of the input tokens, {quote(tokens[i])} matters most to {what}: against the baseline input it "
            f"{direction} it by {fmt(abs(scores[i]))} (integrated gradients).")


def no_vocabulary_head(name: str) -> str:
    return (f"{name} has no vocabulary head (it outputs a sentence embedding, not a next token), so it has "
            f"no next-token prediction and no logit lens; its ablations measure the embedding instead.")
