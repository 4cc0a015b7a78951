"""Export to Hugging Face: logits in `transformers` equal ours (muP folded into the weights), the
tokenizer encodes alike, and architectures without an exact counterpart are refused in one line naming
the fields."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from scaling import export
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.training.checkpoint import load_model, saved_steps
from scaling.training.trainer import train
from tests.helpers import compose_config

HAS_HF = all(importlib.util.find_spec(name) for name in ("torch", "transformers"))
needs_hf = pytest.mark.skipif(not HAS_HF, reason="needs the hf extra (pip install -e '.[hf]': torch, transformers)")

LLAMA = ["model.norm=rmsnorm", "model.position=rope", "model.mlp=swiglu"]
GPT2 = ["model.norm=layernorm", "model.position=learned", "model.mlp=gelu"]
# The demo's settings (muP, WSD, the default family, tied embeddings) at twice the base width, so the 1/m
# logit multiplier must go into an untied head; heads of 16 channels against the family's 4, so the
# attention scale must go into the queries.
DEMO = ["model.parametrization=mup", "model.base_width=16", "model.head_dim=4", "train.schedule=wsd"]
VARIANTS = {
    "demo-mup": DEMO,
    "llama-tied-bias": [*LLAMA, "model.use_bias=true", "model.d_ff=48"],
    "llama-untied": [*LLAMA, "model.tie_embeddings=false"],
    "gpt2-untied-nobias": [*GPT2, "model.tie_embeddings=false"],
    "gpt2-tied-bias": [*GPT2, "model.use_bias=true"],
    "gpt2-mup-untied-bias": [*GPT2, *DEMO, "model.base_width=64", "model.tie_embeddings=false", "model.use_bias=false"],
    "llama-mup-bias": [*LLAMA, *DEMO, "model.use_bias=true"],
}
TEXTS = ["def f(x):\n    return x + 1\n", "  leading spaces and ünïcödé — “quotes” 😀", "a<|endoftext|>b\r\n\tz"]


def trained_run(tmp_path_factory, tiny_overrides, variant: list[str]):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    # A wide initialisation makes the logits depend strongly on the weights; 8 steps move every parameter.
    train(compose_config([*tiny_overrides, *variant, "model.init_std=0.2", "train.tokens=2048", f"run_dir={run_dir}"]))
    return run_dir


# Three variants cover every mapping (muP folded, biases, zero biases, tied and untied heads, both
# families); the others are marked slow.
QUICK = ("demo-mup", "llama-tied-bias", "gpt2-untied-nobias")
PARAMS = [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in VARIANTS]


@pytest.fixture(scope="module", params=PARAMS, ids=list(VARIANTS))
def exported(request, tmp_path_factory, tiny_overrides):
    run_dir = trained_run(tmp_path_factory, tiny_overrides, VARIANTS[request.param])
    out = export.export(run_dir, None, tmp_path_factory.mktemp("hf") / "model")
    return run_dir, out


@needs_hf
def test_exported_logits_equal_ours(exported):
    import torch
    from transformers import AutoModelForCausalLM

    run_dir, out = exported
    ours = load_model(run_dir, compute_dtype="float32")
    tokens_BxT = np.random.default_rng(0).integers(0, ours.vocab_size, (3, ours.cfg.seq_len)).astype(np.int32)
    logits_ours = np.asarray(ours(tokens_BxT))
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits_hf = hf(torch.from_numpy(tokens_BxT.astype(np.int64))).logits.numpy()
    assert np.abs(logits_ours).max() > 1.0  # the logits are far from uniform, so agreement means something
    np.testing.assert_allclose(logits_hf, logits_ours, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(logits_hf.argmax(-1), logits_ours.argmax(-1))  # the same greedy tokens


@needs_hf
def test_exported_tokenizer_encodes_to_the_same_ids(exported, tiny_overrides):
    from transformers import AutoTokenizer

    run_dir, out = exported
    theirs = AutoTokenizer.from_pretrained(out)
    ours = Tokenizer.from_file(str(out / export.TOKENIZER_FILE))
    for text in TEXTS:
        assert theirs.encode(text) == ours.encode(text).ids
        assert theirs.decode(ours.encode(text).ids) == text
    assert theirs.eos_token_id == 0  # end-of-text, the first special token (scaling/data/prepare.py)


def test_export_writes_weights_config_and_tokenizer(exported):
    _, out = exported
    names = {path.name for path in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"norm_position": "post", "norm": "rmsnorm", "mlp": "swiglu"}, ["model.norm_position"]),
        ({"norm": "rmsnorm", "position": "rope", "mlp": "gelu"}, ["model.mlp"]),  # the default before SwiGLU
        ({"norm": "layernorm", "position": "rope", "mlp": "swiglu"}, ["model.norm"]),
        (
            {"norm": "layernorm", "position": "learned", "mlp": "gelu", "use_bias": True, "tie_embeddings": False},
            ["model.use_bias", "model.tie_embeddings"],
        ),
    ],
)
def test_architectures_without_a_counterpart_are_refused_naming_the_fields(fields, named):
    with pytest.raises(ConfigError) as caught:
        export.family_for(ModelConfig(**fields))
    assert caught.value.field == ", ".join(named)
    assert "\n" not in caught.value.line()


def test_the_two_families_are_recognised():
    assert export.family_for(ModelConfig()) is export.LLAMA  # the default: RMSNorm, RoPE, SwiGLU
    assert export.family_for(ModelConfig(parametrization="mup")) is export.LLAMA
    assert export.family_for(ModelConfig(norm="rmsnorm", position="rope", mlp="swiglu")) is export.LLAMA
    assert (
        export.family_for(ModelConfig(norm="layernorm", position="learned", mlp="gelu", use_bias=True)) is export.GPT2
    )


@pytest.mark.parametrize(
    "fields, logits, queries, untied",
    [
        ({}, 1.0, 1.0, False),  # SP
        ({"parametrization": "mup", "base_width": 128, "n_heads": 16, "head_dim": 8}, 1.0, 1.0, False),  # = SP
        ({"parametrization": "mup", "base_width": 64, "n_heads": 16, "head_dim": 8}, 0.5, 1.0, True),
        ({"parametrization": "mup", "base_width": 256, "n_heads": 4, "head_dim": 8}, 2.0, 0.5, True),
        ({"parametrization": "mup", "base_width": 128, "n_heads": 16, "tie_embeddings": False}, 1.0, 1.0, True),
    ],
)
def test_folding_factors_are_mups_multipliers(fields, logits, queries, untied):
    """d_model 128: the logit factor is 1/m; with 4 heads of 32 channels against the family's 8, muP scales
    scores by sqrt(8) / 32 where transformers scales by 1 / sqrt(32): the queries carry the ratio, 1/2."""
    cfg = ModelConfig(d_model=128, **fields)
    fold = export.Folding.of(cfg)
    assert (fold.logits, fold.queries, fold.untied(cfg)) == (pytest.approx(logits), pytest.approx(queries), untied)


def test_cli_refuses_in_one_line_and_writes_nothing(exported, tmp_path, capsys):
    run_dir, out = exported
    assert_refused = []
    for argv in ([str(run_dir), str(out)], [str(run_dir), "--step", "12345", str(tmp_path / "new")]):
        with pytest.raises(SystemExit) as caught:
            export.main(argv)
        err = capsys.readouterr().err.strip()
        assert_refused.append((caught.value.code, err.startswith("error:"), "\n" not in err))
    assert assert_refused == [(2, True, True)] * 2
    assert not (tmp_path / "new").exists()


def test_cli_refuses_a_file_as_out_dir_and_a_damaged_checkpoint_in_one_line(exported, tmp_path, capsys):
    run_dir, _ = exported
    (tmp_path / "file").write_text("mine")
    damaged = tmp_path / "run"
    shutil.copytree(run_dir, damaged)
    step = saved_steps(damaged)[-1]
    leaf = max((p for p in (damaged / "checkpoints" / str(step) / "params").rglob("*") if p.is_file()), key=_size)
    data = bytearray(leaf.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: its digest no longer matches
    leaf.write_bytes(bytes(data))
    cases = {
        "a file": ([str(run_dir), str(tmp_path / "file")], "OUT_DIR: cannot write"),
        "damaged": ([str(damaged), str(tmp_path / "out")], f"--step: checkpoint step {step} is damaged"),
    }
    for argv, named in cases.values():
        with pytest.raises(SystemExit) as caught:
            export.main(argv)
        err = capsys.readouterr().err
        assert caught.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {named}"), err
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "out").exists()


def _size(path: Path) -> int:
    return path.stat().st_size
