"""`python -m scaling.export RUN [--step S] OUT_DIR`: a checkpoint as a Hugging Face `transformers` model.

OUT_DIR gets model.safetensors, config.json, and the run's tokenizer (tokenizer.json,
tokenizer_config.json, special_tokens_map.json), so `AutoModelForCausalLM.from_pretrained(OUT_DIR)`
and `AutoTokenizer.from_pretrained(OUT_DIR)` load it. Nothing here needs torch: weights are written
from NumPy, the JSON by hand. Only architectures with an exact counterpart are exported:

  Llama   (LlamaForCausalLM)  pre-norm, RMSNorm (eps 1e-6), RoPE (first half against second half of
                              each head, as Llama's rotate_half), SwiGLU: down(silu(gate x) * up x).
                              Biases map to attention_bias / mlp_bias.
  GPT-2   (GPT2LMHeadModel)   pre-norm, LayerNorm (eps 1e-5), learned positions, GELU with the tanh
                              approximation (GPT-2's "gelu_new"). GPT-2 always has biases: a model
                              without them is exported with zero biases, which computes the same.

Anything else (post-norm, RMSNorm with GELU, LayerNorm with RoPE, an untied output head with a
bias, which neither has) is refused in one line naming the fields without a counterpart.

muP (scaling/model/mup.py) is folded into the weights, so a muP run exports as a plain Llama or GPT-2
that computes the same logits: its 1/m logit multiplier goes into an untied output head (lm_head =
the head, or the tied embedding, times 1/m; tie_word_embeddings is then false, since a head tied to the
input embedding cannot carry a factor the embedding does not), and its attention scale into the query
projection (times scale * sqrt(d_head), which the architecture's own 1/sqrt(d_head) turns back into
the scale). Where both factors are 1 (SP; muP at its base width with heads of the family's size) the
weights are exported as they are. Our
kernels are (in, out): Llama's nn.Linear weights are their transpose, GPT-2's Conv1D weights are
them as they are; our fused qkv kernel (d, 3d) holds [q | k | v] columns, each head-major, which
is also how both split theirs into heads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from scaling import contract
from scaling.config import DataConfig, ModelConfig
from scaling.data.load import load_corpus
from scaling.data.prepare import EOT
from scaling.errors import ConfigError, Interrupted, exit_with
from scaling.export_families import _bias_or_zeros, _np, architecture_for, family_export
from scaling.files import unwritable_reason
from scaling.model.mup import attention_scale, output_multiplier
from scaling.model.sizing import ffn_dim
from scaling.runtime import initialize
from scaling.training.checkpoint import DamagedCheckpoint, load_model, saved_steps
from scaling.training.rundir import read_config

WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
RMSNORM_EPS, LAYERNORM_EPS = 1e-6, 1e-5  # scaling/model/layers.py: Norm


@dataclass(frozen=True)
class Family:
    """An HF architecture and the architecture switches (ModelConfig fields) it requires."""

    name: str
    architecture: str
    requires: dict[str, str]


LLAMA = Family(
    "Llama", "LlamaForCausalLM", {"norm_position": "pre", "norm": "rmsnorm", "position": "rope", "mlp": "swiglu"}
)
GPT2 = Family(
    "GPT-2", "GPT2LMHeadModel", {"norm_position": "pre", "norm": "layernorm", "position": "learned", "mlp": "gelu"}
)
FAMILIES = (LLAMA, GPT2)


def _differing(cfg: ModelConfig, family: Family) -> list[str]:
    return [name for name, value in family.requires.items() if getattr(cfg, name) != value]


def family_for(cfg: ModelConfig) -> Family:
    """The family whose every switch `cfg` matches; else a ConfigError naming the fields that differ
    from the nearest family. (A parametrization is not a switch: `Folding` carries it into the weights.)"""
    nearest = min(FAMILIES, key=lambda family: len(_differing(cfg, family)))
    fields = _differing(cfg, nearest)
    if fields:
        got = ", ".join(f"model.{name}={getattr(cfg, name)}" for name in fields)
        need = ", ".join(f"{name}={nearest.requires[name]}" for name in fields)
        raise ConfigError(
            ", ".join(f"model.{name}" for name in fields),
            f"{got} has no exact Hugging Face counterpart",
            f"the nearest, {nearest.name}, needs {need}; export covers Llama and GPT-2 shapes only",
        )
    if cfg.use_bias and not cfg.tie_embeddings:
        raise ConfigError(
            "model.use_bias, model.tie_embeddings",
            "an untied output head with a bias has no counterpart",
            f"{nearest.name}'s lm_head has no bias; export runs with tie_embeddings=true or use_bias=false",
        )
    return nearest


@dataclass(frozen=True)
class Folding:
    """What the exported weights absorb so that a standard architecture computes our logits: the factor
    on the logits (muP's 1/m) and the factor on the queries (our attention scale over 1/sqrt(d_head))."""

    logits: float
    queries: float

    @classmethod
    def of(cls, cfg: ModelConfig) -> Folding:
        d_head = cfg.d_model // cfg.n_heads
        return cls(logits=output_multiplier(cfg), queries=attention_scale(cfg) * math.sqrt(d_head))

    def untied(self, cfg: ModelConfig) -> bool:
        """Whether the export needs its own lm_head: ours is untied, or the logits carry a factor."""
        return not cfg.tie_embeddings or self.logits != 1.0

    def head(self, params: dict, cfg: ModelConfig) -> np.ndarray:
        """lm_head.weight (vocab, d): our head's kernel transposed, or the tied embedding, times the logit factor."""
        weight = params["embed"]["embedding"] if cfg.tie_embeddings else _np(params["head"]["kernel"]).T
        return _np(np.asarray(weight, np.float64) * self.logits)


def llama_weights(params: dict, cfg: ModelConfig, fold: Folding) -> dict[str, np.ndarray]:
    d = cfg.d_model
    out = {
        "model.embed_tokens.weight": _np(params["embed"]["embedding"]),
        "model.norm.weight": _np(params["final_norm"]["scale"]),
    }
    for i, block in sorted(params["blocks"].items()):
        p = f"model.layers.{i}."
        qkv, attn_out, mlp = block["attn"]["qkv"], block["attn"]["out"], block["mlp"]
        kernel, bias = _folded_qkv(qkv, d, fold)
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{p}self_attn.{name}.weight"] = _np(kernel[:, j * d : (j + 1) * d].T)
            if cfg.use_bias:
                out[f"{p}self_attn.{name}.bias"] = _np(bias[j * d : (j + 1) * d])
        linears = {
            "self_attn.o_proj": attn_out,
            "mlp.gate_proj": mlp["gate"],
            "mlp.up_proj": mlp["up"],
            "mlp.down_proj": mlp["down"],
        }
        for name, layer in linears.items():
            out[f"{p}{name}.weight"] = _np(layer["kernel"]).T.copy()
            if cfg.use_bias:
                out[f"{p}{name}.bias"] = _np(layer["bias"])
        out[f"{p}input_layernorm.weight"] = _np(block["norm1"]["scale"])
        out[f"{p}post_attention_layernorm.weight"] = _np(block["norm2"]["scale"])
    if fold.untied(cfg):
        out["lm_head.weight"] = fold.head(params, cfg)
    return out


def _folded_qkv(qkv: dict, d: int, fold: Folding) -> tuple[np.ndarray, np.ndarray | None]:
    """Our fused [q | k | v] kernel (d, 3d) and bias (3d), the query columns times the query factor
    (computed in float64: a factor of 1 leaves the weights bit for bit)."""
    factor = np.ones(3 * d)
    factor[:d] = fold.queries
    kernel = np.asarray(qkv["kernel"], np.float64) * factor
    bias = np.asarray(qkv["bias"], np.float64) * factor if "bias" in qkv else None
    return kernel, bias


def gpt2_weights(params: dict, cfg: ModelConfig, fold: Folding) -> dict[str, np.ndarray]:
    d, f = cfg.d_model, ffn_dim(cfg)
    out = {
        "transformer.wte.weight": _np(params["embed"]["embedding"]),
        "transformer.wpe.weight": _np(params["pos_embed"]["embedding"]),
        "transformer.ln_f.weight": _np(params["final_norm"]["scale"]),
        "transformer.ln_f.bias": _bias_or_zeros(params["final_norm"], d),
    }
    for i, block in sorted(params["blocks"].items()):
        p = f"transformer.h.{i}."
        kernel, bias = _folded_qkv(block["attn"]["qkv"], d, fold)
        qkv = {"kernel": kernel, **({"bias": bias} if bias is not None else {})}
        layers = {
            "attn.c_attn": (qkv, 3 * d),
            "attn.c_proj": (block["attn"]["out"], d),
            "mlp.c_fc": (block["mlp"]["up"], f),
            "mlp.c_proj": (block["mlp"]["down"], d),
        }
        for name, (layer, width) in layers.items():
            out[f"{p}{name}.weight"] = _np(layer["kernel"])  # Conv1D: (in, out), as ours
            out[f"{p}{name}.bias"] = _bias_or_zeros(layer, width)
        for name, norm in (("ln_1", block["norm1"]), ("ln_2", block["norm2"])):
            out[f"{p}{name}.weight"] = _np(norm["scale"])
            out[f"{p}{name}.bias"] = _bias_or_zeros(norm, d)
    if fold.untied(cfg):
        out["lm_head.weight"] = fold.head(params, cfg)
    return out


def hf_config(family: Family, cfg: ModelConfig, vocab_size: int, eot_id: int, fold: Folding) -> dict:
    common = {
        "architectures": [family.architecture],
        "vocab_size": vocab_size,
        "tie_word_embeddings": not fold.untied(cfg),
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "initializer_range": cfg.init_std,
        "use_cache": True,
        "torch_dtype": "float32",
        # Where our parametrization went (read by nothing in transformers; there for a person reading the file).
        "scaling_folded": {"parametrization": cfg.parametrization, "logits": fold.logits, "queries": fold.queries},
    }
    if family is LLAMA:
        return {
            **common,
            "model_type": "llama",
            "hidden_size": cfg.d_model,
            "intermediate_size": ffn_dim(cfg),
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_heads,
            "head_dim": cfg.d_model // cfg.n_heads,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.seq_len,
            "rms_norm_eps": RMSNORM_EPS,
            "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": cfg.use_bias,
            "mlp_bias": cfg.use_bias,
            "attention_dropout": 0.0,
        }
    return {
        **common,
        "model_type": "gpt2",
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_positions": cfg.seq_len,
        "n_ctx": cfg.seq_len,
        "n_inner": ffn_dim(cfg),
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYERNORM_EPS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
    }


def tokenizer_files(run_dir: Path) -> tuple[Path, int]:
    """(tokenizer.json of the run's corpus, its end-of-text id), checked against the hash the run recorded."""
    stored = read_config(run_dir)
    meta = stored[contract.DATA_SECTION]
    if not meta.get(contract.TOKENIZER_HASH):
        raise ConfigError(
            "data.name",
            f"{meta.get('pipeline')}: the run was trained on token ids without a tokenizer",
            "export needs a run trained on data=pystdlib or data=text",
        )
    known = set(DataConfig.__dataclass_fields__)
    corpus = load_corpus(
        DataConfig(**{k: v for k, v in stored[contract.CONFIG_SECTION]["data"].items() if k in known}), progress=False
    )
    if corpus.meta.get(contract.TOKENIZER_HASH) != meta[contract.TOKENIZER_HASH]:
        raise ConfigError(
            "data",
            "the corpus on this machine has another tokenizer than the run recorded",
            "export where the run was trained",
        )
    return Path(corpus.tokenizer_path), int(meta["eot_id"])


def tokenizer_config(seq_len: int) -> dict:
    """A fast tokenizer over tokenizer.json: byte-level BPE, no prefix space, end-of-text as bos/eos/pad."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": EOT,
        "model_max_length": seq_len,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }


def export(run_dir: Path, step: int | None, out_dir: Path) -> Path:
    """Write the HF model of `run_dir` at `step` (default: the newest) to `out_dir`, atomically."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not contract.is_run_dir(run_dir):
        raise ConfigError("RUN", f"{run_dir} has no {contract.CONFIG_FILE}", "pass a run directory")
    reason = unwritable_reason(out_dir)
    if reason is not None or (out_dir.exists() and not out_dir.is_dir()):
        raise ConfigError(
            "OUT_DIR", f"cannot write the folder {out_dir} ({reason or 'it is a file'})", "choose a new folder"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError("OUT_DIR", f"{out_dir} exists and is not empty", "choose a new folder or remove it")
    steps = saved_steps(run_dir)
    if not steps or (step is not None and step not in steps):
        raise ConfigError("--step", f"{step} is not a saved checkpoint of {run_dir}", f"use one of {steps}")
    try:
        model = load_model(run_dir, step, compute_dtype="float32")
    except DamagedCheckpoint as err:
        others = [s for s in steps if s != err.step]
        raise ConfigError(
            "--step", f"{err} in {run_dir}; nothing was written", f"export another step: {others}"
        ) from None
    decoder = model.cfg.family == "decoder"  # the other families' counterparts: scaling/export_families.py
    family = family_for(model.cfg) if decoder else architecture_for(model.cfg)  # refuses before anything is written
    tokenizer_path, eot_id = tokenizer_files(run_dir)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if decoder:
        fold = Folding.of(model.cfg)
        weights = (llama_weights if family is LLAMA else gpt2_weights)(params, model.cfg, fold)
        config = hf_config(family, model.cfg, model.vocab_size, eot_id, fold)
    else:
        weights, config = family_export(params, model.cfg, model.vocab_size, eot_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(model.cfg.seq_len), indent=2) + "\n")
        specials = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
        tmp.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m scaling.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument("out_dir", type=Path, help="the folder to write (new or empty)")
    args = parser.parse_args(argv)
    initialize(compilation_cache=False)  # (quietens Orbax's per-read log lines, as for every command)
    try:
        out = export(args.run, args.step, args.out_dir)
    except ConfigError as err:
        exit_with(err)
    except KeyboardInterrupt:  # OUT_DIR appears whole (a renamed temporary folder) or not at all
        exit_with(Interrupted(f"nothing was written to {args.out_dir}"))
    print(f"wrote {out} ({out / WEIGHTS_FILE}, {CONFIG_FILE}, tokenizer files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
