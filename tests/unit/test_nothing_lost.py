"""Nothing attnlab writes replaces what it did not write; stale temporaries go; a stranger's config
cannot make the loader allocate before its sizes are checked (issue 14, items 1, 5 and 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from attnlab.models import DecoderLM, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.weights.checkpoint import (
    MARKER_FILE,
    CheckpointError,
    is_checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)

TOK = CharTokenizer("abcdefgh")


def tiny() -> DecoderLM:
    return DecoderLM(TransformerConfig(family="decoder", vocab_size=8, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                       max_len=16))


def tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_save_refuses_a_folder_attnlab_did_not_write(tmp_path) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match=r"thesis exists and is not an attnlab checkpoint"):
        save_checkpoint(thesis, tiny(), TOK)
    assert tree(thesis) == {"chapter1.tex": b"years of work"}
    assert sorted(os.listdir(tmp_path)) == ["thesis"]


def test_save_refuses_a_file_and_a_link(tmp_path) -> None:
    (tmp_path / "notes").write_text("keep me")
    with pytest.raises(CheckpointError, match=r"notes is a file"):
        save_checkpoint(tmp_path / "notes", tiny(), TOK)
    assert (tmp_path / "notes").read_text() == "keep me"
    assert not (tmp_path / ".notes.old").exists()
    save_checkpoint(tmp_path / "real", tiny(), TOK)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(CheckpointError, match="symbolic link"):
        save_checkpoint(tmp_path / "link", tiny(), TOK)


def test_save_replaces_its_own_checkpoints_marked_or_legacy(tmp_path) -> None:
    first = save_checkpoint(tmp_path / "c", tiny(), TOK)
    assert json.loads((first / MARKER_FILE).read_text())["format"] == "attnlab-checkpoint"
    model = tiny()
    save_checkpoint(tmp_path / "c", model, TOK)
    assert torch.equal(load_checkpoint(tmp_path / "c").model.embed.token.weight, model.embed.token.weight)
    (tmp_path / "c" / MARKER_FILE).unlink()  # a checkpoint written before the marker existed
    assert is_checkpoint_dir(tmp_path / "c")
    save_checkpoint(tmp_path / "c", tiny(), TOK)
    (tmp_path / "c" / MARKER_FILE).unlink()
    (tmp_path / "c" / "bleu.json").write_text("{}")  # ... but with a file of the user's in it: not ours
    assert not is_checkpoint_dir(tmp_path / "c")
    with pytest.raises(CheckpointError, match="not an attnlab checkpoint"):
        save_checkpoint(tmp_path / "c", tiny(), TOK)
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", tiny(), TOK)  # an empty folder holds nothing to lose
    load_checkpoint(tmp_path / "empty")


def test_stale_temporary_folders_of_dead_processes_vanish_at_the_next_save(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free (reaped)
    for name in ("last", "best"):
        stale = tmp_path / f".{name}.tmp-{dead.pid}"
        (stale / "training").mkdir(parents=True)
        (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    alive = tmp_path / f".best.tmp-{os.getppid()}"  # a live process's save in progress is left alone
    alive.mkdir()
    save_checkpoint(tmp_path / "last", tiny(), TOK)
    assert sorted(os.listdir(tmp_path)) == sorted(["last", alive.name])


def test_export_cli_never_targets_its_source_or_a_run_or_a_foreign_folder(tmp_path) -> None:
    from attnlab.cli import main

    save_checkpoint(tmp_path / "src", tiny(), TOK)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    before = tree(tmp_path)
    for dest in (tmp_path / "src", tmp_path / "." / "src", thesis):
        assert main(["export", str(tmp_path / "src"), str(dest)]) == 2
    assert tree(tmp_path) == before
    assert main(["export", str(tmp_path / "src"), str(tmp_path / "small")]) == 0
    assert main(["export", str(tmp_path / "src"), str(tmp_path / "small")]) == 0  # replacing an export is fine
    assert load_checkpoint(tmp_path / "small").config.vocab_size == 8


def test_export_cli_refuses_a_checkpoint_with_training_state(tmp_path) -> None:
    from attnlab.cli import main
    from attnlab.weights.checkpoint import TrainingState

    save_checkpoint(tmp_path / "src", tiny(), TOK)
    save_checkpoint(tmp_path / "last", tiny(), TOK, TrainingState(info={"step": 3}))
    before = tree(tmp_path / "last")
    assert main(["export", str(tmp_path / "src"), str(tmp_path / "last")]) == 2
    assert tree(tmp_path / "last") == before


def test_huge_vocab_size_in_config_is_refused_before_allocation(tmp_path) -> None:
    """Under an address-space limit a few hundred MB above what torch needs, the 10^10-row config is
    refused by name; allocating first would fail with an allocator error instead (or be killed)."""
    save_checkpoint(tmp_path / "c", tiny(), TOK)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["vocab_size"] = 10_000_000_000
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    script = textwrap.dedent(f"""
        import resource, torch
        torch.set_num_threads(1)
        from attnlab.weights.checkpoint import CheckpointError, load_checkpoint
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = used + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            load_checkpoint({str(tmp_path / "c")!r})
        except CheckpointError as exc:
            print("REFUSED", exc)
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("REFUSED"), done.stdout
    assert "embed.token.weight: file (8, 16) vs model (10000000000, 16)" in done.stdout
    assert "checked before allocating" in done.stdout


def test_bpe_training_reads_a_bounded_sample_in_bounded_pieces() -> None:
    """Item 9: a corpus that is one endless line is read only up to the bound, in small pieces."""
    from attnlab.tokenizers import BPETokenizer
    from attnlab.tokenizers.bpe import bounded_pieces

    read = []

    def one_endless_line():
        while True:
            chunk = "lorem ipsum dolor sit amet " * 4000
            read.append(len(chunk))
            yield chunk

    tok = BPETokenizer.train(one_endless_line(), vocab_size=300, max_chars=500_000)
    assert sum(read) < 500_000 + 4000 * 27 and 256 < tok.vocab_size <= 300
    line = "word " * 50_000 + "x" * 3000
    pieces = list(bounded_pieces([line], max_chars=10**9, piece_chars=1000))
    assert "".join(pieces) == line and max(len(p) for p in pieces) <= 1000
    assert all(p.startswith(" ") for p in pieces[1:-3])  # cut before a space: the same words are counted
    assert "".join(bounded_pieces([line, line], max_chars=12_345)) == line[:12_345]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("n_layers", 10**9, "layers but the file holds only"),
    ("max_len", 10**9, "max_len 1000000000 is above the limit"),
    ("d_model", 1 << 20, "checked before allocating"),
])
def test_other_huge_sizes_are_refused_before_building(tmp_path, key, value, message) -> None:
    save_checkpoint(tmp_path / "c", tiny(), TOK)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    (tmp_path / "c" / "config.json").write_text(json.dumps({**cfg, key: value, "head_dim": None}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "c")


def test_truncated_tokens_and_split_files_are_named_with_what_to_do(tmp_path) -> None:
    from attnlab.train.data import DataError, open_tokens, prepare_tokens

    (tmp_path / "c.txt").write_text("abcdefgh " * 200)
    prepare_tokens([tmp_path / "c.txt"], CharTokenizer("abcdefgh "), tmp_path / "data")
    tokens = tmp_path / "data" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:300])
    with pytest.raises(DataError, match=r"tokens\.npy: truncated or corrupt \(300 bytes on disk for 1800 tokens.*delete"):
        open_tokens(tmp_path / "data")
    (tmp_path / "data" / "split.json").write_text('{"n_tok')
    with pytest.raises(DataError, match=r"split\.json: not a readable split file"):
        open_tokens(tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []
