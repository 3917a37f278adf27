"""Each experiment in its tiny mode: the shape and sanity of its results, never exact numbers or timings."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnlab.experiments import EXPERIMENTS, list_results, run_experiment
from attnlab.experiments.common import loglog_fit, synthetic_text
from attnlab.experiments.induction_heads import phase_change, repeated_span_batch
from attnlab.experiments.positions import which_first_batch
from attnlab.experiments.rnn_vs_transformer import char_lm, delayed_copy_batch, matched_models


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny models run best on one thread, and on a busy machine (CI, shared cores) two threads that
    wait for each other at every small operator were measured 8x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check_written(result: dict, out: Path, mode: str = "tiny") -> dict:
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["experiment"] == result["experiment"]
    assert on_disk["mode"] == mode
    assert on_disk["command"].startswith(f"attnlab experiment {result['experiment']}")
    assert " --threads 1" in on_disk["command"]  # the fixture's thread count: part of what repeats a run
    assert on_disk["machine"]["torch_threads"] >= 1 and on_disk["elapsed_s"] > 0
    assert result["figures"]
    for name in result["figures"]:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["summary"] and all(isinstance(line, str) for line in result["summary"])
    return on_disk


@pytest.mark.slow
def test_context_cost_tiny(tmp_path: Path) -> None:
    result = run_experiment("context-cost", "tiny", tmp_path, show_progress=False)
    _check_written(result, tmp_path)
    rows, fits = result["data"]["rows"], result["data"]["fits"]
    assert {(r["backend"], r["tokens"]) for r in rows} == {(b, n) for b in ("math", "sdpa") for n in (64, 128, 256)}
    for r in rows:
        assert r["total_s"] > 0 and r["forward_s"] > 0 and r["peak_bytes"] > 0
    for fit in fits.values():
        assert math.isfinite(fit["time_exponent"]) and math.isfinite(fit["memory_exponent"])
    # Memory is deterministic (allocation records, not timings): the explicit weights of math
    # attention, 6 heads x n x n floats, must be in its peak and must exceed the fused kernel's.
    math_256 = next(r for r in rows if r["backend"] == "math" and r["tokens"] == 256)
    sdpa_256 = next(r for r in rows if r["backend"] == "sdpa" and r["tokens"] == 256)
    assert math_256["peak_bytes"] >= 6 * 256 * 256 * 4
    assert math_256["peak_bytes"] > sdpa_256["peak_bytes"]
    assert fits["math"]["memory_exponent"] > fits["sdpa"]["memory_exponent"]


@pytest.mark.slow
def test_rnn_vs_transformer_tiny(tmp_path: Path) -> None:
    result = run_experiment("rnn-vs-transformer", "tiny", tmp_path, show_progress=False)
    _check_written(result, tmp_path)
    a, b = result["data"]["throughput"], result["data"]["long_range"]
    kinds = {"rnn", "lstm", "gru", "transformer"}
    assert {(r["model"], r["seq_len"]) for r in a["rows"]} == {(k, n) for k in kinds for n in a["lengths"]}
    assert all(r["step_s"] > 0 and r["tokens_per_s"] > 0 for r in a["rows"])
    assert all(math.isfinite(v) for v in a["step_time_exponent"].values())
    target = a["params"]["transformer"]
    for kind in ("rnn", "lstm", "gru"):  # parameter-matched within 5%
        assert abs(a["params"][kind] - target) / target < 0.05
    assert {(r["model"], r["delay"]) for r in b["rows"]} == {(k, d) for k in kinds for d in b["delays"]}
    assert all(0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["final_loss"]) for r in b["rows"])
    c = result["data"]["char_lm"]
    assert [r["model"] for r in c["rows"]] == ["rnn", "lstm", "gru", "transformer"]
    for r in c["rows"]:
        assert r["steps"] == c["steps"] >= 1 and all(math.isfinite(p["val_loss"]) for p in r["curve"])
        assert r["curve"][-1]["step"] == c["steps"]  # a step count, not a time budget, ends training
        assert [p["seconds"] for p in r["curve"]] == sorted(p["seconds"] for p in r["curve"])
        assert r["val_loss_at_equal_time"] in [p["val_loss"] for p in r["curve"]]


def test_char_lm_losses_repeat_exactly() -> None:
    """Only the time axis of (c) may vary between runs; the losses are seeded and step-counted."""
    first, second = (char_lm("tiny", 0, None, False) for _ in range(2))
    losses = [[[p["val_loss"] for p in r["curve"]] for r in run["rows"]] for run in (first, second)]
    assert losses[0] == losses[1]


def test_models_are_parameter_matched_and_copy_task_is_well_formed() -> None:
    models = matched_models(65, 64, 2, 128)
    # nn.Module.parameters() yields a tied (shared) tensor once, so these are honest counts.
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    for kind in ("rnn", "lstm", "gru"):
        assert abs(counts[kind] - counts["transformer"]) / counts["transformer"] < 0.05
    ids, targets = delayed_copy_batch(4, 3, 5, torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (4, 8)
    assert (targets[:, :3] == -100).all()
    assert torch.equal(targets[:, 3:], ids[:, :-3])


@pytest.mark.slow
def test_positions_tiny(tmp_path: Path) -> None:
    result = run_experiment("positions", "tiny", tmp_path, show_progress=False)
    _check_written(result, tmp_path)
    perm = result["data"]["permutation_error"]
    # Without positions an encoder is permutation-equivariant (up to float rounding); with any it is not.
    assert perm["none"] < 1e-4
    assert all(perm[k] > 1e-3 for k in ("sinusoidal", "learned", "rotary"))
    acc = {r["positions"]: r["accuracy"] for r in result["data"]["runs"]}
    # Without positions the [CLS] output cannot depend on order at all: chance, whatever the training.
    assert abs(acc["none"] - 0.5) < 0.1
    assert max(acc[k] for k in ("sinusoidal", "learned", "rotary")) > acc["none"] + 0.15


def test_which_first_batch_places_one_a_and_one_b() -> None:
    ids, labels = which_first_batch(16, 10, torch.Generator().manual_seed(0))
    assert ids.shape == (16, 10) and (ids[:, 0] == 0).all()
    assert ((ids == 1).sum(1) == 1).all() and ((ids == 2).sum(1) == 1).all()
    a_first = (ids == 1).float().argmax(1) < (ids == 2).float().argmax(1)
    assert torch.equal(labels, a_first.long())


@pytest.mark.slow
def test_heads_form_tiny(tmp_path: Path) -> None:
    result = run_experiment("heads-form", "tiny", tmp_path, show_progress=False)
    _check_written(result, tmp_path)
    snapshots = result["data"]["snapshots"]
    assert snapshots[0]["step"] == 0 and snapshots[-1]["step"] == result["data"]["steps"]
    n_layers, n_heads = result["data"]["config"]["n_layers"], result["data"]["config"]["n_heads"]
    for snap in snapshots:
        assert math.isfinite(snap["val_loss"])
        assert len(snap["layers"]) == n_layers
        for layer in snap["layers"]:
            assert layer["row_sum_error"] < 1e-5  # recorded attention rows sum to 1
            assert len(layer["entropy"]) == len(layer["roles"]) == n_heads
            assert all(0.0 <= e <= math.log(64) + 1e-6 for e in layer["entropy"])
    assert snapshots[-1]["val_loss"] < snapshots[0]["val_loss"]  # it learned something


@pytest.mark.slow
def test_scaling_tiny(tmp_path: Path) -> None:
    result = run_experiment("scaling", "tiny", tmp_path, show_progress=False)
    _check_written(result, tmp_path)
    runs, fit = result["data"]["runs"], result["data"]["fit"]
    assert len(runs) >= 4
    params = [r["params"] for r in runs]
    assert params == sorted(params) and len(set(params)) == len(params)
    tokens = {r["curve"][-1]["tokens"] for r in runs}
    assert len(tokens) == 1  # the same token budget for every size
    for r in runs:
        assert r["flops"] == 6 * r["params"] * r["curve"][-1]["tokens"]
    assert math.isfinite(fit["alpha_params"]) and math.isfinite(fit["alpha_compute"])


@pytest.mark.slow
def test_induction_heads_quick_mode_claims_come_from_its_numbers(tmp_path: Path) -> None:
    """The quick mode itself (fp32, one thread, seeded), its claims asserted from its own results.

    The phase change in the loss: the 2-layer attention-only model's loss on the repeated tokens (the
    ones only in-context copying can predict) falls to under half the 1-layer control's, most steeply
    within one snapshot interval that the summary names with its numbers, and its ICL score ends far
    below the control's. The control never has a head at the induction bound. Whether and where the
    2-layer model's best head reaches the bound is recorded exactly when it does, and the summary says
    which with the recorded numbers, and where the heads look at the end (docs/experiments.md: in this run
    the copying is done by a shifted circuit, a first-layer head several tokens back and a last-layer head
    on the key that many after the induction score's key, so no head reaches the bound).
    """
    assert torch.get_default_dtype() == torch.float32
    result = run_experiment("induction-heads", "quick", tmp_path, show_progress=False)
    _check_written(result, tmp_path, mode="quick")
    data, summary = result["data"], result["summary"]
    bound, runs = data["bound"], data["runs"]
    assert set(runs) == {"attn-only 2L", "attn-only 1L"}
    two, one = runs["attn-only 2L"], runs["attn-only 1L"]
    for run in (two, one):
        snaps = run["snapshots"]
        assert [x["step"] for x in snaps] == list(range(0, data["settings"]["steps"] + 1, data["settings"]["every"]))
        for snap in snaps:
            assert len(snap["induction"]) == run["layers"] and len(snap["induction"][0]) == 4
            for row in snap["induction"] + snap["previous_token"]:
                assert all(0.0 <= v <= 1.0 for v in row)
            assert snap["best_induction"] == pytest.approx(max(max(r) for r in snap["induction"]), abs=1e-5)
        assert abs(snaps[0]["icl_score"]) < 0.05
        assert snaps[0]["repeat_loss"] == pytest.approx(data["chance_loss"], abs=0.1)
    end2, end1 = two["snapshots"][-1], one["snapshots"][-1]
    assert end2["repeat_loss"] < 0.5 * end1["repeat_loss"]
    assert end2["icl_score"] < end1["icl_score"] - 0.3
    drop = two["steepest_loss_drop"]
    assert drop["from_loss"] - drop["to_loss"] > 0.3 and drop["to_icl"] < drop["from_icl"]
    assert (f"fell fastest between steps {drop['from_step']} and {drop['to_step']} "
            f"({drop['from_loss']:.2f} -> {drop['to_loss']:.2f} nats") in summary[2]
    # the jump of the best induction score (the tour's "a head forms"), recomputed from the snapshots
    snaps = two["snapshots"]
    a, b = max(itertools.pairwise(snaps), key=lambda p: (p[1]["best_induction"] - p[0]["best_induction"]) / (p[1]["step"] - p[0]["step"]))
    jump = two["induction_jump"]
    assert (jump["from_step"], jump["to_step"], jump["from_score"], jump["to_score"]) == (
        a["step"], b["step"], a["best_induction"], b["best_induction"])
    # where the heads look at the end: the grids' largest entries, and the sentence that names them
    look = two["where_heads_look"]
    shift, off = look["best_shift"], look["best_offset"]
    grid = torch.tensor(look["last_layer"])
    assert shift["weight"] == pytest.approx(float(grid.max()), abs=1e-5) and shift["d"] == int(grid.argmax()) % grid.shape[1]
    assert off["weight"] == pytest.approx(float(torch.tensor(look["first_layer"]).max()), abs=1e-5)
    assert float(grid[:, 0].max()) == pytest.approx(end2["induction"][1][int(grid[:, 0].argmax())], abs=1e-4)  # d = 0 is the score
    assert f"the most attention of a last-layer head, {shift['weight']:.2f} ({shift['head']})" in summary[1]
    assert (f"{off['weight']:.2f} ({off['head']}), is {off['d']} token") in summary[1]
    assert ("shifted circuit" in summary[1]) == (shift["d"] == off["d"] > 0)
    for run in (two, one):  # every snapshot's best shifted attention is d >= 0 after the induction score's key
        assert all(max(x["induction"][-1]) - 1e-5 <= x["best_shift"] <= 1.0 for x in run["snapshots"])  # d = 0 included
    c, d = max(itertools.pairwise(snaps), key=lambda p: (p[1]["best_shift"] - p[0]["best_shift"]) / (p[1]["step"] - p[0]["step"]))
    sj = two["shift_jump"]
    assert (sj["from_step"], sj["to_step"], sj["from_score"], sj["to_score"]) == (c["step"], d["step"], c["best_shift"], d["best_shift"])
    assert f"rose fastest between steps {sj['from_step']} and {sj['to_step']} ({sj['from_score']:.2f} -> {sj['to_score']:.2f}" in summary[1]
    # a head forms in the 2-layer model, on a key of the earlier copy, and in no 1-layer model: the bound separates them
    best_shift_one = max(x["best_shift"] for x in one["snapshots"])
    assert shift["weight"] >= bound > best_shift_one
    assert f"(any shift) at any snapshot {best_shift_one:.2f}" in summary[3]
    best_one = max(x["best_induction"] for x in one["snapshots"])
    assert best_one < bound and one["phase_change"] is None
    assert any(f"best induction score at any snapshot {best_one:.2f} (below {bound})" in line for line in summary)
    best_two = max(x["best_induction"] for x in two["snapshots"])
    pc = two["phase_change"]
    if best_two >= bound:
        assert pc is not None and pc["before"]["best_induction"] < bound <= pc["after"]["best_induction"]
        assert f"rose from {pc['before']['best_induction']:.2f} (step {pc['before']['step']})" in summary[0]
    else:
        assert pc is None
        assert f"no head reached an induction score of {bound} in {data['settings']['steps']} steps " \
               f"(best {best_two:.2f})" in summary[0]


def test_repeated_span_batches_repeat_and_mark_what_is_predictable() -> None:
    x, y, repeat = repeated_span_batch(64, 32, 20, torch.Generator().manual_seed(3), (4, 12))
    assert x.shape == y.shape == repeat.shape == (64, 32) and torch.equal(x[:, 1:], y[:, :-1])
    lengths, starts = set(), set()
    for row in range(64):
        marked = repeat[row].nonzero().flatten()  # target indices t: the token at sequence position t + 1
        n = len(marked) + 1  # the copy's first token is not predictable
        assert 4 <= n <= 12 and torch.equal(marked, torch.arange(int(marked[0]), int(marked[0]) + n - 1))
        seq = torch.cat([x[row], y[row, -1:]])
        copy = int(marked[0])  # sequence position where the second copy starts
        assert torch.equal(seq[copy:copy + n], seq[copy - n:copy])
        lengths.add(n)
        starts.add(copy - n)
    assert len(lengths) > 3 and len(starts) > 3  # no fixed offset or place solves it
    with pytest.raises(ValueError, match="span"):
        repeated_span_batch(2, 16, 20, torch.Generator(), (4, 9))


def test_phase_change_is_where_the_best_score_first_reaches_the_bound() -> None:
    def snap(step: int, score: float) -> dict:
        return {"step": step, "best_induction": score, "best_induction_head": "L1H0", "val_loss": 3.0 - score,
                "repeat_loss": 2.0 - score, "icl_score": -score}

    snaps = [snap(0, 0.05), snap(10, 0.2), snap(20, 0.7), snap(30, 0.3), snap(40, 0.8)]
    pc = phase_change(snaps, bound=0.4)
    assert pc is not None and pc["before"]["step"] == 10 and pc["after"]["step"] == 20
    assert pc["after"]["repeat_loss"] == pytest.approx(1.3)
    assert phase_change(snaps[:2], bound=0.4) is None


def test_loglog_fit_recovers_an_exponent() -> None:
    xs = [2.0**i for i in range(1, 8)]
    slope, intercept = loglog_fit(xs, [3.0 * x**1.7 for x in xs])
    assert slope == pytest.approx(1.7) and math.exp(intercept) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="two"):
        loglog_fit([1.0], [1.0])


def test_synthetic_text_is_deterministic() -> None:
    assert synthetic_text(500, seed=1) == synthetic_text(500, seed=1)
    assert len(synthetic_text(500)) == 500


def test_unknown_experiment_and_mode_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known experiments"):
        run_experiment("nope", "tiny", tmp_path)
    with pytest.raises(ValueError, match="unknown mode"):
        run_experiment("positions", "huge", tmp_path)  # type: ignore[arg-type]


def test_list_results_indexes_result_folders(tmp_path: Path) -> None:
    good = tmp_path / "positions"
    good.mkdir()
    (good / "positions.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (good / "results.json").write_text(json.dumps({
        "experiment": "positions", "title": "t", "mode": "quick", "summary": ["s"],
        "figures": ["positions.png", "missing.png"]}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    entries = list_results(tmp_path)
    assert [e["name"] for e in entries] == ["positions"]
    assert entries[0]["figures"] == [str((good / "positions.png").resolve())]
    assert list_results(tmp_path / "absent") == []


def test_cli_experiment_rejects_unknown_names() -> None:
    from attnlab.cli import app

    result = CliRunner().invoke(app, ["experiment", "nope"])
    assert result.exit_code == 2
    assert all(name in result.output for name in EXPERIMENTS)
