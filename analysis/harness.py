"""lm-evaluation-harness adapter: `--model scaling --model_args path=RUN,step=S` evaluates any checkpoint.

How `lm_eval` finds a model named on its command line: it looks the name up in its model registry,
which holds lm-eval's own backends and whatever `@register_model` added in the running process.
Importing this module registers ScalingLM as "scaling". Three ways to get it imported:

  python -m analysis.harness run --model scaling --model_args path=RUN,step=S --tasks ...
        lm-eval's own command line with this module imported first; works with every 0.4.x.
  lm_eval run --model scaling ...
        lm-eval releases with plugin discovery find it through this package's entry point
        (pyproject.toml: [project.entry-points."lm_eval.models"] scaling = "analysis.harness:ScalingLM");
        0.4.13 and earlier have no such discovery.
  lm_eval run --plugins analysis.harness --model scaling ...   (the same releases, explicitly)

`--model_args` takes path (a run directory), step (default: the newest checkpoint) and max_gen_toks;
the batch is lm-eval's `--batch_size`. Sweep runs are named without commas, since lm-eval cuts
`--model_args` at every one; a run folder named before (`flops=4e11,point=0`) is passed as JSON,
`--model_args '{"path": "results/demo/runs/flops=4e11,point=0"}'`. A path that is not a run, a step it
did not save, or an argument we do not take is one line naming it (exit 2) under `python -m analysis.harness`.

The checkpoint runs in JAX (float32) through our own model: loglikelihood in fixed-shape batches of
full forward passes, greedy generation with the KV-cache decoder (scaling/model/decode.py). Only greedy
generation exists; a request for sampling is refused rather than silently decoded greedily.
This module imports lm_eval (an optional extra, `hf`), so nothing of ours imports it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lm_eval.__main__ import cli_evaluate
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tokenizers import Tokenizer

from scaling import contract
from scaling.errors import ConfigError, exit_with
from scaling.export import tokenizer_files
from scaling.model.decode import make_greedy_decoder
from scaling.model.transformer import token_losses
from scaling.runtime import initialize
from scaling.training.checkpoint import load_model, saved_steps

DEFAULT_MAX_GEN_TOKS = 64
DEFAULT_BATCH = 16  # rows per forward pass when lm-eval's --batch_size is unset or "auto"
MODEL_ARGS = ("path", "step", "max_gen_toks")


def checked_step(path: str, step: int | str | None, unknown: dict) -> int:
    """The checkpoint to score: `step`, or the newest. A ConfigError naming the path, the step, or the
    arguments (`unknown`) that are none of ours; when the path is no run and lm-eval passed other
    arguments, it most likely cut a path with commas, and the fix says how to pass it whole."""
    if not contract.is_run_dir(path):
        fix = "pass path=RUN_DIR"
        if unknown:
            cut = ", ".join(f"{key}={value}" for key, value in unknown.items())
            fix = f'lm-eval cut the path at its commas (it passed {cut} too): pass it as JSON, --model_args \'{{"path": "..."}}\''
        raise ConfigError("--model_args path", f"{path} is not a run directory (no {contract.CONFIG_FILE})", fix)
    if unknown:
        names = ", ".join(unknown)
        raise ConfigError(
            "--model_args", f"{names}: not arguments of the scaling model", f"use {', '.join(MODEL_ARGS)}"
        )
    steps = saved_steps(path)
    if not steps:
        raise ConfigError("--model_args path", f"{path} has no complete checkpoint", "train the run first")
    if step in (None, "", "None"):
        return steps[-1]
    if not str(step).isdigit() or int(step) not in steps:
        raise ConfigError("--model_args step", f"{step} is not a saved checkpoint of {path}", f"use one of {steps}")
    return int(step)


def batch_rows(batch_size: int | str | None) -> int:
    """lm-eval's --batch_size as rows per forward pass ('auto' and unset: DEFAULT_BATCH)."""
    text = str(batch_size)
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_BATCH


@register_model("scaling")
class ScalingLM(TemplateLM):
    """One checkpoint of one run (`path`, `step`: default the newest) as an lm-eval language model."""

    def __init__(
        self,
        path: str,
        step: int | str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        # lm-eval passes these three to every model (its --batch_size, ...); JAX picks its own device.
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        device: str | None = None,
        **unknown,
    ):
        super().__init__()
        path = str(path)
        model = load_model(path, checked_step(path, step, unknown), compute_dtype="float32")
        if model.cfg.family != "decoder":
            raise ConfigError(
                "model.family",
                f"{path} is a {model.cfg.family} run; lm-eval's log-likelihoods and generation are a decoder's",
                "score it with python -m analysis.tasks, which scores every family by its own objective",
            )
        self.graphdef, self.state = nnx.split(model)
        self.seq_len, self.vocab_size = model.cfg.seq_len, model.vocab_size
        tokenizer_path, self.eot = tokenizer_files(path)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.rows, self.max_gen_toks = batch_rows(batch_size), int(max_gen_toks)
        self.scores = jax.jit(self._scores)
        self.decoders: dict[int, object] = {}

    def _scores(self, state: nnx.State, inputs_BxT: jax.Array, targets_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(log-likelihood of each target (B, T), whether it is the argmax (B, T))."""
        logits_BxTxV = nnx.merge(self.graphdef, state)(inputs_BxT)
        return -token_losses(logits_BxTxV, targets_BxT), jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT

    @property
    def eot_token_id(self) -> int:
        return self.eot

    @property
    def max_length(self) -> int:
        return self.seq_len

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string).ids

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-likelihoods, whether greedy decoding would emit it) per request;
        the context is cut from the left to what fits the model's context, as lm-eval's HF backend does."""
        windows = []
        for _, context, continuation in requests:
            whole = (list(context) + list(continuation))[-(self.seq_len + 1) :]
            windows.append((whole[:-1], whole[1:], len(continuation)))
        out = []
        for start in range(0, len(windows), self.rows):
            batch = windows[start : start + self.rows]
            inputs = np.zeros((self.rows, self.seq_len), np.int32)
            targets = np.zeros((self.rows, self.seq_len), np.int32)
            for i, (x, y, _) in enumerate(batch):
                inputs[i, : len(x)], targets[i, : len(y)] = x, y
            logp, greedy = (np.asarray(a) for a in self.scores(self.state, jnp.asarray(inputs), jnp.asarray(targets)))
            for i, (x, _, n) in enumerate(batch):
                scored = slice(len(x) - n, len(x))  # the continuation is the last n targets
                out.append((float(logp[i, scored].astype(np.float64).sum()), bool(greedy[i, scored].all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each string's whole log-likelihood after end-of-text, in disjoint windows of the model's context."""
        out = []
        for (string,) in (request.args for request in requests):
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(self.tok_encode(string), self.eot, self.seq_len, 1)
            ]
            scores = self._loglikelihood_tokens([(None, context, target) for context, target in windows])
            out.append(sum(score for score, _ in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context, cut at the first stop string (and at end-of-text)."""
        out = []
        for context, gen_kwargs in (request.args for request in requests):
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0.0) > 0.0:
                raise ValueError(f"the scaling model decodes greedily only; got gen_kwargs {gen_kwargs}")
            n_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            prompt = self.tok_encode(context)[-(self.seq_len - n_new + 1) :]  # the decode must fit the context
            if n_new not in self.decoders:
                self.decoders[n_new] = make_greedy_decoder(self.graphdef, n_new)
            tokens = np.asarray(self.decoders[n_new](self.state, jnp.asarray([prompt], jnp.int32)))[0].tolist()
            if self.eot in tokens:
                tokens = tokens[: tokens.index(self.eot)]
            text = self.tok_decode(tokens)
            cut = min([text.find(stop) for stop in until if stop and stop in text], default=len(text))
            out.append(text[:cut])
        return out


def main() -> None:
    """lm-eval's command line with ScalingLM registered; our bad input is one line, exit 2."""
    try:
        initialize()
        cli_evaluate()
    except ConfigError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
