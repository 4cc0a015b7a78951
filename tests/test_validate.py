"""Every bad value of every config field: exit 2, one line naming the field, the value and what would be
valid, and nothing written (the run directory is not even created). In-process through the entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaling.overrides import whole_numbers
from scaling.training.validate import BOUNDS, CHOICES, OPTIONAL_CHOICES, Range
from tests.helpers import run_in_process

# case -> (overrides, field named in the message, the value as the message shows it)
CASES = {
    "d_model negative": (["model.d_model=-32"], "model.d_model", "-32"),
    "n_layers zero": (["model.n_layers=0"], "model.n_layers", "0"),
    "n_heads zero": (["model.n_heads=0"], "model.n_heads", "0"),
    "n_heads not dividing d_model": (["model.n_heads=3"], "model.d_model", "32"),
    "odd RoPE head": (["model.d_model=36", "model.n_heads=4"], "model.n_heads", "36/4"),
    "head_dim zero": (["model.head_dim=0"], "model.head_dim", "0"),
    "odd family head": (["model.head_dim=5"], "model.head_dim", "5"),
    "aspect_ratio negative": (["model.aspect_ratio=-1"], "model.aspect_ratio", "-1"),
    "min_layers zero": (["model.min_layers=0"], "model.min_layers", "0"),
    "min_heads zero": (["model.min_heads=0"], "model.min_heads", "0"),
    "base_width zero": (["model.base_width=0"], "model.base_width", "0"),
    "parametrization": (["model.parametrization=ntk"], "model.parametrization", "ntk"),
    "wandb_mode": (["tracker.wandb_mode=cloud"], "tracker.wandb_mode", "cloud"),
    "holdout_factor negative": (["sweep.holdout_factor=-4"], "sweep.holdout_factor", "-4"),
    "reach of one": (["sweep.reach=1"], "sweep.reach", "1"),
    "stretch zero": (["sweep.stretch=0"], "sweep.stretch", "0"),
    "stretch without a budget": (["sweep.stretch=2"], "sweep.stretch", "train.flops is not set"),
    "seq_len zero": (["model.seq_len=0"], "model.seq_len", "0"),
    "n_params negative": (["model.n_params=-5"], "model.n_params", "-5"),
    # Scientific notation is read as the count it is; both are far beyond what this machine can hold.
    "n_params 1e13": (["model.n_params=1e13"], "model.n_params", "parameters"),
    "n_params too large for memory": (["model.n_params=2e11"], "model.n_params", "GiB to train"),
    "d_ff zero": (["model.d_ff=0"], "model.d_ff", "0"),
    "init_std zero": (["model.init_std=0"], "model.init_std", "0"),
    "init_std negative": (["model.init_std=-0.02"], "model.init_std", "-0.02"),
    "rope_theta zero": (["model.rope_theta=0"], "model.rope_theta", "0"),
    "norm_position": (["model.norm_position=middle"], "model.norm_position", "middle"),
    "norm": (["model.norm=batchnorm"], "model.norm", "batchnorm"),
    "position": (["model.position=alibi"], "model.position", "alibi"),
    "mlp": (["model.mlp=relu"], "model.mlp", "relu"),
    "compute_dtype": (["model.compute_dtype=float16"], "model.compute_dtype", "float16"),
    "attention_impl": (["model.attention_impl=flash"], "model.attention_impl", "flash"),
    "cudnn without a GPU": (["model.attention_impl=cudnn"], "model.attention_impl", "cpu"),
    "data name": (["data.name=books"], "data.name", "books"),
    "vocab_size zero": (["data.vocab_size=0"], "data.vocab_size", "0"),
    "vocab_size below the bytes": (["data.vocab_size=100"], "data.vocab_size", "100"),
    "val_fraction zero": (["data.val_fraction=0"], "data.val_fraction", "0"),
    "val_fraction one": (["data.val_fraction=1"], "data.val_fraction", "1"),
    "eval_tokens zero": (["data.eval_tokens=0"], "data.eval_tokens", "0"),
    "eval_tokens beyond the cap": (["data.eval_tokens=10000000"], "data.eval_tokens", "10,000,000"),
    "eval_max_doc_share zero": (["data.eval_max_doc_share=0"], "data.eval_max_doc_share", "0"),
    "eval_set": (["data.eval_set=sampled"], "data.eval_set", "sampled"),
    "token_dtype not integer": (["data.token_dtype=float32"], "data.token_dtype", "float32"),
    "val_path outside data=tokens": (["data.val_path=/tmp/val.bin"], "data.val_path", "/tmp/val.bin"),
    "text glob matching nothing": (["data.path=/nonexistent/*.txt"], "data.path", "/nonexistent/*.txt"),
    "token file missing": (["data=tokens", "data.path=/nonexistent/train.bin"], "data.path", "/nonexistent/train.bin"),
    "cache_dir under a file": (["data.cache_dir={blocker}/cache"], "data.cache_dir", "{blocker}"),
    "tokens zero": (["train.tokens=0"], "train.tokens", "0"),
    "tokens below one step": (["train.tokens=100"], "train.tokens", "256"),
    "flops negative": (["train.tokens=null", "train.flops=-1e12"], "train.flops", "-1e+12"),
    "flops infinite": (["train.tokens=null", "train.flops=inf"], "train.flops", "inf"),
    "both budgets": (["train.flops=1e12"], "train.tokens", "(3000)"),
    "no budget": (["train.tokens=null"], "train.tokens", "None"),
    "batch_size zero": (["train.batch_size=0"], "train.batch_size", "0"),
    "grad_accum zero": (["train.grad_accum=0"], "train.grad_accum", "0"),
    "grad_accum not dividing": (["train.grad_accum=3"], "train.grad_accum", "3"),
    "lr zero": (["train.lr=0"], "train.lr", "0"),
    "lr not a number": (["train.lr=nan"], "train.lr", "nan"),
    "min_lr_ratio above one": (["train.min_lr_ratio=1.5"], "train.min_lr_ratio", "1.5"),
    "warmup_fraction one": (["train.warmup_fraction=1"], "train.warmup_fraction", "1"),
    "max_warmup_steps negative": (["train.max_warmup_steps=-1"], "train.max_warmup_steps", "-1"),
    "warmup_steps negative": (["train.warmup_steps=-1"], "train.warmup_steps", "-1"),
    "warmup_steps beyond the run": (["train.warmup_steps=100000"], "train.warmup_steps", "100000"),
    "schedule": (["train.schedule=linear"], "train.schedule", "linear"),
    "decay_fraction zero": (["train.decay_fraction=0"], "train.decay_fraction", "0"),
    "decay_start without wsd": (["train.decay_start=5"], "train.decay_start", "5"),
    "decay_start beyond the run": (["train.schedule=wsd", "train.decay_start=100000"], "train.decay_start", "100000"),
    "b1 one": (["train.b1=1"], "train.b1", "1"),
    "b2 negative": (["train.b2=-0.1"], "train.b2", "-0.1"),
    "eps zero": (["train.eps=0"], "train.eps", "0"),
    "weight_decay negative": (["train.weight_decay=-0.1"], "train.weight_decay", "-0.1"),
    "weight_decay_timescale zero": (["train.weight_decay_timescale=0"], "train.weight_decay_timescale", "0"),
    "grad_clip zero": (["train.grad_clip=0"], "train.grad_clip", "0"),
    "seed negative": (["train.seed=-1"], "train.seed", "-1"),
    "data_seed negative": (["train.data_seed=-1"], "train.data_seed", "-1"),
    "log_every zero": (["train.log_every=0"], "train.log_every", "0"),
    "init_from not a run": (
        ["train.init_from=/nonexistent/run", "train.init_step=0"],
        "train.init_from",
        "/nonexistent/run",
    ),
    "init_step alone": (["train.init_step=5"], "train.init_step", "5"),
    "init_step not saved": (["train.init_from={parent}", "train.init_step=7"], "train.init_step", "7"),
    "keep zero": (["checkpoint.keep=0"], "checkpoint.keep", "0"),
    "rule every zero": (["checkpoint.rules=[{every:0}]"], "checkpoint.rules[0].every", "0"),
    "rule until decreasing": (
        ["checkpoint.rules=[{every:10,until:100},{every:5,until:50}]"],
        "checkpoint.rules[1].until",
        "50",
    ),
    "open rule not last": (
        ["checkpoint.rules=[{every:10},{every:5,until:50}]"],
        "checkpoint.rules[0].until",
        "until: null",
    ),
    "negative checkpoint step": (["checkpoint.steps=[-1]"], "checkpoint.steps", "-1"),
    "mesh data zero": (["mesh.data=0"], "mesh.data", "0"),
    "mesh data beyond the devices": (["mesh.data=2"], "mesh.data", "mesh.data=2"),
    "mesh fsdp zero": (["mesh.fsdp=0"], "mesh.fsdp", "0"),
    "num_processes zero": (["mesh.num_processes=0"], "mesh.num_processes", "0"),
    "process_id beyond": (["mesh.process_id=3"], "mesh.process_id", "3"),
    "coordinator without port": (["mesh.coordinator=node0"], "mesh.coordinator", "node0"),
    "sweep spacing one": (["sweep.spacing=1"], "sweep.spacing", "1"),
    "tokens_per_param zero": (["sweep.tokens_per_param=0"], "sweep.tokens_per_param", "0"),
    "family centre for no family": (
        ["+sweep.family_tokens_per_param={prefix:60}"],
        "sweep.family_tokens_per_param",
        "['prefix']",
    ),
    "family centre zero": (["+sweep.family_tokens_per_param={encoder:0}"], "sweep.family_tokens_per_param", "0"),
    "seeds zero": (["sweep.seeds=0"], "sweep.seeds", "0"),
    "seed_offset negative": (["sweep.seed_offset=-1"], "sweep.seed_offset", "-1"),
    "pack negative": (["sweep.pack=-1"], "sweep.pack", "-1"),
    "jobs negative": (["sweep.jobs=-2"], "sweep.jobs", "-2"),
    "branch beyond one": (["sweep.branches=[1.5]"], "sweep.branches", "1.5"),
    "run_dir under a file": (["run_dir={blocker}/run"], "run_dir", "{blocker}"),
    "family": (["model.family=prefix_lm"], "model.family", "prefix_lm"),
    "relative positions in a decoder": (["model.position=relative"], "model.position", "not decoder"),
    "mask_rate one": (["model.family=encoder", "model.mask_rate=1"], "model.mask_rate", "1"),
    "mask_rate for a decoder": (["model.mask_rate=0.2"], "model.mask_rate", "model.family=encoder only, not decoder"),
    "noise_density zero": (["model.family=encoder_decoder", "model.noise_density=0"], "model.noise_density", "0"),
    "noise_density for an encoder": (
        ["model.family=encoder", "model.noise_density=0.2"],
        "model.noise_density",
        "model.family=encoder_decoder only, not encoder",
    ),
    "noise_density leaving too few clean tokens": (
        ["model.family=encoder_decoder", "model.noise_density=0.9", "model.mean_span=1"],
        "model.noise_density",
        "0.9 leaves 3 uncorrupted tokens for 29 spans",
    ),
    "mean_span below one": (["model.family=encoder_decoder", "model.mean_span=0.5"], "model.mean_span", "0.5"),
    "mean_span for a decoder": (["model.mean_span=3"], "model.mean_span", "model.family=encoder_decoder only"),
    "mean_span longer than the sequence": (
        ["model.family=encoder_decoder", "model.mean_span=40"],
        "model.mean_span",
        "40 tokens is longer than the 5 tokens",
    ),
}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    """A file to put folders under (impossible), and a run directory with no checkpoint to start from."""
    root = tmp_path_factory.mktemp("places")
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    parent = root / "parent"
    parent.mkdir()
    (parent / "config.yaml").write_text(yaml.safe_dump({"config": {}, "derived": {}, "data": {}}))
    return {"blocker": blocker, "parent": parent}


def _placed(text: str, places: dict[str, Path]) -> str:
    for name, path in places.items():
        text = text.replace(f"{{{name}}}", str(path))
    return text


@pytest.mark.parametrize("overrides, field, shown", CASES.values(), ids=CASES.keys())
def test_bad_value_one_line_exit_2_nothing_written(
    overrides, field, shown, places, tiny_overrides, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    overrides = [_placed(o, places) for o in overrides]
    code, stderr = run_in_process(
        [f"run_dir={run_dir}", *tiny_overrides, "train.tokens=3000", *overrides], monkeypatch, capsys
    )
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: {field}:") and _placed(shown, places) in errors[0], errors[0]
    assert not run_dir.exists()


def test_counts_in_scientific_notation_are_whole_numbers():
    assert whole_numbers(["model.n_params=1e13", "train.tokens=3e5,6e5", "--multirun"]) == [
        "model.n_params=10000000000000",
        "train.tokens=300000,600000",
        "--multirun",
    ]
    # floats stay as written, and a count that is not whole is left for the type check to refuse
    assert whole_numbers(["train.lr=1e-3", "train.flops=1e11", "model.n_params=2.5"]) == [
        "train.lr=1e-3",
        "train.flops=1e11",
        "model.n_params=2.5",
    ]


def test_every_numeric_field_has_a_case():
    """The table above covers every bounded and every multiple-choice field."""
    covered = {override.split("=")[0] for overrides, _, _ in CASES.values() for override in overrides}
    assert set(BOUNDS) | set(CHOICES) | set(OPTIONAL_CHOICES) <= covered


def test_range_text_and_membership():
    fraction = Range(0, 1, low_closed=True)
    assert fraction.text() == "[0, 1)" and fraction.holds(0.0) and not fraction.holds(1.0)
    assert not Range(0).holds(float("inf")) and not Range(0).holds(float("nan"))
