"""The lm-evaluation-harness adapter: its log-likelihoods equal a float64 reference, generation is the
greedy decode cut at the stop string, and the real lm_eval command line, run as the README prints it,
scores a run of a real sweep on the local tasks shipped in analysis/lm_eval_tasks (no hub access)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer

from scaling import contract
from scaling.errors import ConfigError
from scaling.export import tokenizer_files
from scaling.training.checkpoint import load_model, saved_steps
from tests.helpers import REPO, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="needs the hf extra (pip install -e '.[hf]': lm-eval)"
)

TASKS = REPO / "analysis" / "lm_eval_tasks"
MC_DOCS = [json.loads(line) for line in (TASKS / "python_mc.jsonl").read_text().splitlines()]
GEN_PROMPT = "def f(x):\n    return x"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    """One run of a real IsoFLOP sweep (`sweep=tiny` on the tiny corpus, one grid point: an 11k-parameter
    model on 36k tokens), named as every sweep names its runs."""
    root = tmp_path_factory.mktemp("lm_eval")
    sweep = ["sweep.tokens_per_param=1", "train.flops=2.4e9", "sweep.point=-1", f"results_root={root}"]
    sweep.append("model.seq_len=64")  # room for the longest task prompt, so nothing is cut from the left
    sweep += ["model.parametrization=mup", "model.base_width=8"]  # as the demo: muP, here at twice the base width
    result = run_cli(["--multirun", "sweep=tiny", *tiny_overrides, *sweep], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = list((root / "tiny" / contract.RUNS_SUBDIR).iterdir())
    assert run.name == "flops-2.4e9_point--1"
    return run


class Reference:
    """The checkpoint's full forward pass, jitted once at one shape (causal: zero padding after the tokens
    changes none of their logits), with log-probabilities taken in float64."""

    def __init__(self, run_dir, step: int | None = None):
        model = load_model(run_dir, step, compute_dtype="float32")
        graphdef, self.state = nnx.split(model)
        self.seq_len = model.cfg.seq_len
        self.forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))

    def __call__(self, tokens: list[int]) -> np.ndarray:
        inputs = np.zeros((1, self.seq_len), np.int32)
        inputs[0, : len(tokens)] = tokens
        return np.asarray(self.forward(self.state, inputs))[0, : len(tokens)]


def reference_logprob(model: Reference, tokens: list[int], n_scored: int) -> tuple[float, bool]:
    """float64 log-likelihood of the last n_scored tokens given the ones before, and whether each is the argmax."""
    logits = model(tokens[:-1]).astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    targets = np.asarray(tokens[1:])
    logp = logits[np.arange(len(targets)), targets] - logz
    greedy = logits.argmax(-1) == targets
    return float(logp[-n_scored:].sum()), bool(greedy[-n_scored:].all())


def pair_tokens(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """lm-eval's split (TemplateLM._encode_pair): the context's trailing whitespace moves to the continuation, the
    whole is encoded, and the continuation is what follows the context's own encoding."""
    head_text = context.rstrip()
    whole, head = tokenizer.encode(context + continuation).ids, tokenizer.encode(head_text).ids
    return whole, len(whole) - len(head)


def test_loglikelihood_and_rolling_equal_a_float64_reference(run_dir):
    from lm_eval.api.instance import Instance

    from analysis.harness import ScalingLM

    lm = ScalingLM(path=str(run_dir), batch_size="3")
    model = Reference(run_dir)
    tokenizer = Tokenizer.from_file(str(tokenizer_files(run_dir)[0]))
    pairs = [(doc["context"], " " + choice) for doc in MC_DOCS for choice in doc["choices"]]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for (logp, greedy), (context, continuation) in zip(lm.loglikelihood(requests), pairs):
        whole, n = pair_tokens(tokenizer, context, continuation)
        ref_logp, ref_greedy = reference_logprob(model, whole, n)
        assert logp == pytest.approx(ref_logp, abs=1e-4) and greedy == ref_greedy
    text = MC_DOCS[0]["context"]
    ids = tokenizer.encode(text).ids
    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert rolling == pytest.approx(reference_logprob(model, [lm.eot_token_id, *ids], len(ids))[0], abs=1e-4)


def test_generate_until_is_the_greedy_decode_cut_at_the_stop_string(run_dir):
    from lm_eval.api.instance import Instance

    from analysis.harness import ScalingLM

    lm = ScalingLM(path=str(run_dir))
    model = Reference(run_dir)
    prompt = GEN_PROMPT
    tokens = lm.tok_encode(prompt)
    for _ in range(8):  # naive greedy: the full forward pass for every new token
        tokens.append(int(model(tokens)[-1].argmax()))
    expected = lm.tok_decode(tokens[len(lm.tok_encode(prompt)) :])
    [out] = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 8}), 0)])
    assert out == expected.split("\n")[0]
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until([Instance("generate_until", {}, (prompt, {"do_sample": True, "temperature": 1.0}), 0)])


def harness_cli(model_args: str, out_dir, *tasks: str, model: str = "scaling") -> subprocess.CompletedProcess:
    """lm-eval's command line as the README prints it, from the repository root: through our harness
    (`--model scaling`, a run), or lm-eval's own (`--model hf`, an export)."""
    module = "analysis.harness" if model == "scaling" else "lm_eval"
    command = [sys.executable, "-m", module, "run", "--model", model, "--model_args", model_args]
    command += ["--tasks", *tasks, "--include_path", "analysis/lm_eval_tasks", "--output_path", str(out_dir)]
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(out_dir / "datasets")}
    return subprocess.run(
        command + ["--batch_size", "4"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


def test_lm_eval_command_line_scores_a_sweep_run_on_the_local_tasks(run_dir, tmp_path):
    step = saved_steps(run_dir)[-2]  # not the newest: the step is read from --model_args
    result = harness_cli(f"path={run_dir},step={step}", tmp_path / "out", "python_mc", "python_gen")
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list((tmp_path / "out").rglob("results*.json"))
    results = json.loads(path.read_text())["results"]
    # The accuracy lm-eval reports is the one the float64 reference gives at that step.
    assert results["python_mc"]["acc,none"] == pytest.approx(reference_accuracy(run_dir, step))
    assert "exact_match,none" in results["python_gen"]


def reference_accuracy(run_dir, step: int | None = None) -> float:
    """python_mc's accuracy by the float64 reference: the choice of highest log-likelihood, as lm-eval's acc."""
    model = Reference(run_dir, step)
    tokenizer = Tokenizer.from_file(str(tokenizer_files(run_dir)[0]))
    right = [
        np.argmax(
            [reference_logprob(model, *pair_tokens(tokenizer, doc["context"], " " + c))[0] for c in doc["choices"]]
        )
        == doc["label"]
        for doc in MC_DOCS
    ]
    return float(np.mean(right))


@pytest.mark.slow
def test_lm_evals_own_hf_backend_scores_the_export_alike(run_dir, tmp_path):
    """The README's last command: the exported run (muP folded into a plain Llama) in lm-eval's `--model hf`."""
    from scaling.export import export

    out = export(run_dir, None, tmp_path / "hf")
    result = harness_cli(f"pretrained={out}", tmp_path / "out", "python_mc", model="hf")
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list((tmp_path / "out").rglob("results*.json"))
    assert json.loads(path.read_text())["results"]["python_mc"]["acc,none"] == pytest.approx(
        reference_accuracy(run_dir)
    )


# The harness's one-line refusals are in the quick suite in-process (the old-style folder test below); this one
# pays for starting lm-eval's command line.
@pytest.mark.slow
def test_a_path_that_is_no_run_is_one_line_naming_it(tmp_path):
    result = harness_cli(f"path={tmp_path / 'nothing'}", tmp_path / "out", "python_mc")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --model_args path: {tmp_path / 'nothing'} is not a run directory (no config.yaml); pass path=RUN_DIR"
    )


def test_a_run_folder_named_the_old_way_is_scored_when_passed_whole(run_dir, tmp_path):
    """A sweep run made before run names lost their commas: as lm-eval's CLI hands over `--model_args
    '{"path": ...}'` (JSON), it is scored; cut at its commas (`path=...,step=...`), it is one line saying so."""
    from analysis.harness import ScalingLM

    old = tmp_path / "flops=2.4e9,point=-1"
    old.symlink_to(run_dir, target_is_directory=True)
    step = saved_steps(run_dir)[-1]
    lm = ScalingLM.create_from_arg_obj({"path": str(old), "step": step}, {"batch_size": 2, "device": None})
    assert lm.rows == 2 and lm.seq_len == load_model(run_dir).cfg.seq_len
    with pytest.raises(
        ConfigError, match="lm-eval cut the path at its commas \\(it passed point=-1 too\\): pass it as JSON"
    ):
        ScalingLM(path=str(tmp_path / "flops=2.4e9"), point=-1)
    with pytest.raises(ConfigError, match=f"--model_args step: 12345 is not a saved checkpoint of {old}"):
        ScalingLM(path=str(old), step=12345)
    with pytest.raises(ConfigError, match="--model_args: stp: not arguments of the scaling model"):
        ScalingLM(path=str(old), stp=3)
