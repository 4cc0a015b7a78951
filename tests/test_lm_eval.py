"""The lm-evaluation-harness adapter: its log-likelihoods equal a float64 reference, generation is the
greedy decode cut at the stop string, and the real lm_eval command line evaluates a checkpoint on a
local task (YAML over a local data file, no hub access)."""

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

from scaling.export import tokenizer_files
from scaling.training.checkpoint import load_model
from scaling.training.trainer import train
from tests.helpers import REPO, compose_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="needs the hf extra (pip install -e '.[hf]': lm-eval)"
)

MC_DOCS = [
    {"context": "def add(a, b):\n    return", "choices": ["a + b", "None", "print"], "label": 0},
    {"context": "import os\nimport", "choices": ["sys", "json", "re"], "label": 1},
    {"context": "for i in range(10):\n   ", "choices": ["pass", "break", "yield i"], "label": 2},
    {"context": "class Foo:\n    def", "choices": ["__init__(self):", "run(self):", "x"], "label": 0},
    {"context": "x = [1, 2, 3]\ny =", "choices": ["x", "len(x)", "sum(x)"], "label": 1},
]
GEN_DOCS = [{"prompt": "def f(x):\n    return x", "answer": " + 1"}, {"prompt": "import", "answer": " os"}]
MC_YAML = """task: scaling_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""
GEN_YAML = """task: scaling_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("lm_eval") / "run"
    # A wide initialisation gives every choice a clearly different likelihood after a few steps.
    train(compose_config([*tiny_overrides, "model.init_std=0.2", "train.tokens=2048", f"run_dir={run_dir}"]))
    return run_dir


class Reference:
    """The checkpoint's full forward pass, jitted once at one shape (causal: zero padding after the tokens
    changes none of their logits), with log-probabilities taken in float64."""

    def __init__(self, run_dir):
        model = load_model(run_dir, compute_dtype="float32")
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
    prompt = GEN_DOCS[0]["prompt"]
    tokens = lm.tok_encode(prompt)
    for _ in range(8):  # naive greedy: the full forward pass for every new token
        tokens.append(int(model(tokens)[-1].argmax()))
    expected = lm.tok_decode(tokens[len(lm.tok_encode(prompt)) :])
    [out] = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 8}), 0)])
    assert out == expected.split("\n")[0]
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until([Instance("generate_until", {}, (prompt, {"do_sample": True, "temperature": 1.0}), 0)])


@pytest.mark.slow
def test_lm_eval_command_line_evaluates_a_checkpoint_on_a_local_task(run_dir, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, docs, yaml in (("mc", MC_DOCS, MC_YAML), ("gen", GEN_DOCS, GEN_YAML)):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
        (tasks / f"{name}.yaml").write_text(yaml.format(data=data))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    command = [
        sys.executable,
        "-m",
        "analysis.harness",
        "run",
        "--model",
        "scaling",
        "--model_args",
        f"path={run_dir}",
        "--tasks",
        "scaling_local_mc",
        "scaling_local_gen",
        "--include_path",
        str(tasks),
        "--output_path",
        str(tmp_path / "out"),
        "--batch_size",
        "4",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list((tmp_path / "out").rglob("results*.json"))
    results = json.loads(path.read_text())["results"]
    # The accuracy lm-eval reports is the one the float64 reference gives.
    model = Reference(run_dir)
    tokenizer = Tokenizer.from_file(str(tokenizer_files(run_dir)[0]))
    right = [
        np.argmax(
            [reference_logprob(model, *pair_tokens(tokenizer, doc["context"], " " + c))[0] for c in doc["choices"]]
        )
        == doc["label"]
        for doc in MC_DOCS
    ]
    assert results["scaling_local_mc"]["acc,none"] == pytest.approx(np.mean(right))
    assert "exact_match,none" in results["scaling_local_gen"]
