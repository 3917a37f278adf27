"""Bad weight files give errors that name the file and the problem (small crafted files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from attnlab.weights.gguf import GGUFError, load_llama_gguf, read_gguf  # noqa: E402

D, FF, HEADS, KV_HEADS = 8, 16, 2, 1
TOKENS = ["a", "b", "ab", "Ġ", "<|im_start|>", "<|im_end|>"]


def write_tiny_llama(
    path: Path, *, arch: str = "llama", vocab_size: int | None = None, quant_tensor: bool = False,
    change: dict[str, tuple[int, ...]] | None = None, sizes: dict[str, int] | None = None,
) -> Path:
    """A one-block llama GGUF with random float32 weights and a six-token BPE vocabulary; ``sizes``
    replaces metadata sizes (``embedding_length``, ``attention.head_count``, ...), not the tensors."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch)
    meta = {"block_count": 1, "context_length": 16, "embedding_length": D, "feed_forward_length": FF,
            "attention.head_count": HEADS, "attention.head_count_kv": KV_HEADS, **(sizes or {})}
    for key, value in meta.items():
        w.add_uint64(f"{arch}.{key}", value) if value >= 1 << 32 else w.add_uint32(f"{arch}.{key}", value)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab_size or len(TOKENS))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_types([1, 1, 1, 1, 3, 3])
    w.add_token_merges(["a b"])
    n = len(TOKENS)
    head = D // HEADS
    shapes = {
        "token_embd.weight": (n, D), "output_norm.weight": (D,), "blk.0.attn_norm.weight": (D,),
        "blk.0.attn_q.weight": (D, D), "blk.0.attn_k.weight": (KV_HEADS * head, D),
        "blk.0.attn_v.weight": (KV_HEADS * head, D), "blk.0.attn_output.weight": (D, D),
        "blk.0.ffn_norm.weight": (D,), "blk.0.ffn_gate.weight": (FF, D), "blk.0.ffn_up.weight": (FF, D),
        "blk.0.ffn_down.weight": (D, FF),
        **(change or {}),
    }
    for name, shape in shapes.items():
        if quant_tensor and name == "blk.0.ffn_up.weight":
            # IQ4_NL: blocks of 32 weights in 18 bytes; rows of 32 weights -> (16, 18) bytes
            w.add_tensor(name, np.zeros((FF, 18), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
            continue
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_llama_loads_and_runs(tmp_path: Path) -> None:
    """The crafted file is valid, so the failures below come from the damage alone."""
    model, tokenizer, _ = load_llama_gguf(write_tiny_llama(tmp_path / "tiny.gguf"))
    assert model.config.n_kv_heads == KV_HEADS and model.config.tie_embeddings
    assert tokenizer.encode("ab a<|im_end|>", allow_special=True) == [2, 3, 0, 5]
    assert 4 not in tokenizer.encode("<|im_start|>ab") and 5 not in tokenizer.encode("ab a<|im_end|>")  # typed: text
    assert model(torch.tensor([[0, 1, 2]])).shape == (1, 3, len(TOKENS))
    assert model.config.max_len == 16
    capped, _, _ = load_llama_gguf(tmp_path / "tiny.gguf", max_len=4)
    assert capped.config.max_len == 4
    torch.testing.assert_close(capped(torch.tensor([[0, 1, 2]])), model(torch.tensor([[0, 1, 2]])), atol=1e-6, rtol=0)


def test_tensors_that_do_not_fit_the_metadata(tmp_path: Path) -> None:
    """GGUF goes through the Hugging Face Llama key map, whose key/shape check names the tensor."""
    head = D // HEADS
    wrong = write_tiny_llama(tmp_path / "wrong.gguf", change={"blk.0.attn_v.weight": (2 * KV_HEADS * head, D)})
    with pytest.raises(GGUFError, match=r"wrong\.gguf: shape mismatch for 'model\.layers\.0\.self_attn\.v_proj\.weight'"):
        load_llama_gguf(wrong)
    extra = write_tiny_llama(tmp_path / "extra.gguf", change={"blk.0.attn_q_norm.weight": (D,)})
    with pytest.raises(GGUFError, match=r"extra\.gguf: unexpected tensor 'blk\.0\.attn_q_norm\.weight'"):
        load_llama_gguf(extra)
    deeper = write_tiny_llama(tmp_path / "deeper.gguf", change={"blk.1.attn_norm.weight": (D,)})
    with pytest.raises(GGUFError, match=r"deeper\.gguf: .*unexpected key.*model\.layers\.1\.input_layernorm"):
        load_llama_gguf(deeper)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(GGUFError, match=r"weights\.gguf: not a GGUF file"):
        read_gguf(path)
    with pytest.raises(GGUFError, match=r"missing\.gguf: cannot open"):
        read_gguf(tmp_path / "missing.gguf")


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_gguf(tmp_path: Path, keep: float) -> None:
    path = write_tiny_llama(tmp_path / "cut.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GGUFError, match=r"cut\.gguf: .*(corrupt|truncated)"):
        read_gguf(path)


def test_corrupt_header(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "bad.gguf")
    data = bytearray(path.read_bytes())
    data[8:16] = (10**15).to_bytes(8, "little")  # an absurd tensor count
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"bad\.gguf: corrupt or truncated"):
        read_gguf(path)


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "bert.gguf", arch="bert")
    with pytest.raises(GGUFError, match=r"bert\.gguf: architecture 'bert' is not supported"):
        load_llama_gguf(path)


def test_unsupported_quantization(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "iq.gguf", quant_tensor=True)
    with pytest.raises(GGUFError, match=r"iq\.gguf: tensor 'blk\.0\.ffn_up\.weight' uses quantization IQ4_NL"):
        read_gguf(path)


def test_tokenizer_vocab_must_match_model(tmp_path: Path) -> None:
    from attnlab.tokenizers.hf_json import TokenizerFileError

    path = write_tiny_llama(tmp_path / "mismatch.gguf", vocab_size=100)
    with pytest.raises(TokenizerFileError, match=r"mismatch\.gguf: the tokenizer has 6 tokens but the model's vocabulary has 100"):
        load_llama_gguf(path)


def test_corrupt_or_truncated_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attnlab.weights.checkpoint import CheckpointError, read_safetensors  # the one reader (MiniLM's too)

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64, 64)}, str(path))
    assert read_safetensors(path)["w"].shape == (64, 64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        read_safetensors(path)
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        read_safetensors(path)


def test_bert_checkpoint_with_wrong_keys_or_shapes(tmp_path: Path) -> None:
    from attnlab.models import EncoderModel, preset
    from attnlab.pretrained.minilm import WeightsFileError, bert_state_dict
    from attnlab.weights.hf import to_hf_state_dict

    config = preset("bert-tiny", vocab_size=50)
    theirs = to_hf_state_dict("bert", EncoderModel(config).state_dict(), config)
    assert set(bert_state_dict(theirs, config, source="ok.safetensors")) == set(EncoderModel(config).state_dict())
    wrong_shape = {**theirs, "embeddings.word_embeddings.weight": torch.zeros(60, 128)}
    with pytest.raises(WeightsFileError, match=r"ckpt\.safetensors: .*embeddings\.word_embeddings\.weight"):
        bert_state_dict(wrong_shape, config, source=tmp_path / "ckpt.safetensors")
    missing = {k: v for k, v in theirs.items() if "layer.1." not in k}
    with pytest.raises(WeightsFileError, match=r"ckpt\.safetensors: .*missing key"):
        bert_state_dict(missing, config, source=tmp_path / "ckpt.safetensors")


def test_corrupt_tokenizer_json(tmp_path: Path) -> None:
    from attnlab.tokenizers.hf_json import HFJsonTokenizer, TokenizerFileError

    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerFileError, match=r"tokenizer\.json: not a readable"):
        HFJsonTokenizer.from_file(path)


@pytest.fixture
def no_allocation(monkeypatch):
    """The model may be built only on the meta device: a real build fails the test (instead of asking
    the machine for terabytes)."""
    import attnlab.weights.gguf as gguf_module

    real = gguf_module.DecoderLM

    def meta_only(config):
        if torch.get_default_device().type != "meta":
            raise AssertionError(f"a model of width {config.d_model} was allocated before its sizes were checked")
        return real(config)

    monkeypatch.setattr(gguf_module, "DecoderLM", meta_only)


@pytest.mark.parametrize(("sizes", "message"), [
    ({"embedding_length": 1 << 20}, r"shape mismatch for 'model\.embed_tokens\.weight'.*\(checked before allocating\)"),
    ({"attention.head_count": 0}, r"metadata llama\.attention\.head_count is 0; expected an integer in \[1, 16777216\]"),
    ({"attention.head_count_kv": 0}, r"metadata llama\.attention\.head_count_kv is 0"),
    ({"embedding_length": 0}, r"metadata llama\.embedding_length is 0"),
    ({"block_count": 1 << 40}, r"metadata llama\.block_count is 1099511627776; expected an integer in \[1, 16777216\]"),
    ({"attention.head_count": 3}, r"metadata sizes do not fit together: embedding_length 8 must split into head_count 3 heads"),
    ({"attention.head_count_kv": 3, "attention.head_count": 2}, r"metadata sizes .*head_count into head_count_kv 3 groups"),
    ({"feed_forward_length": 1 << 22}, r"shape mismatch for 'model\.layers\.0\.mlp\.gate_proj\.weight'"),
    ({"block_count": 1000}, r"the Hugging Face llama state dict is missing key\(s\) 'model\.layers\.1\."),
    ({"context_length": 1 << 30}, r"context length 1073741824 is above the limit of 262144 positions"),
])
def test_metadata_sizes_are_checked_before_allocating(tmp_path: Path, no_allocation, sizes, message) -> None:
    """Issue 23 item 6: embedding_length 2^20 asked for 13 TB; 0 heads was a ZeroDivisionError."""
    path = write_tiny_llama(tmp_path / "sizes.gguf", sizes=sizes)
    with pytest.raises(GGUFError, match=r"sizes\.gguf: " + message):
        load_llama_gguf(path)


def test_a_model_larger_than_memory_is_refused(tmp_path: Path, monkeypatch, no_allocation) -> None:
    import attnlab.weights.gguf as gguf_module

    monkeypatch.setattr(gguf_module.os, "sysconf", lambda name: 1 if name == "SC_PAGE_SIZE" else 1000)
    with pytest.raises(GGUFError, match=r"the model has [\d,]+ parameters, .* GiB in float32, more than this "
                                        r"machine's 0\.0 GiB of memory"):
        load_llama_gguf(write_tiny_llama(tmp_path / "tiny.gguf"))
