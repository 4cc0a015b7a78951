"""Hugging Face counterparts of the other pre-training families, for `python -m scaling.export`
(scaling/export.py dispatches here for every family but the decoder).

  encoder          BertForMaskedLM   post-norm LayerNorm (eps 1e-5), learned positions, GELU with the tanh
                                     approximation ("gelu_new"): BERT itself, embedding LayerNorm and prediction
                                     head (dense, GELU, LayerNorm) included. One token type, whose embedding is 0.
  encoder_decoder  T5ForConditionalGeneration  pre-norm RMSNorm (eps 1e-6) with T5's relative position buckets
                                     (model.position=relative), GELU ("gelu_new") or SwiGLU ("gated-silu").

Both are written with tie_word_embeddings=false and the output layer explicitly: muP's logit multiplier (and
T5's own d_model^-0.5 rescaling of tied logits) then need no special case; a muP attention scale other than
1/sqrt(d_head) is folded into the query weights (BERT), or the whole scale is (T5 scales no scores). Biases
the model lacks are written as zeros. Other shapes of these families are refused in one line naming the fields.
The reserved ids ([MASK]; sentinels and the decoder start) are the model's own (scaling/model/objectives.py):
config.json names them; the exported tokenizer encodes text as the run's does.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model.mup import attention_scale, output_multiplier
from scaling.model.objectives import ENCODER, extra_tokens, mask_id, model_vocab
from scaling.model.sizing import ffn_dim

LAYERNORM_EPS = 1e-5  # scaling/model/layers.py: Norm
BERT_REQUIRES = {"norm_position": "post", "norm": "layernorm", "position": "learned", "mlp": "gelu"}


def architecture_for(cfg: ModelConfig) -> str:
    """The transformers class of the family's counterpart; ConfigError naming the fields that have none."""
    if cfg.family != ENCODER:
        raise ConfigError(
            "model.family",
            f"{cfg.family} has no exported counterpart",
            "export covers decoders (Llama, GPT-2) and BERT-shaped encoders",
        )
    differing = [name for name, value in BERT_REQUIRES.items() if getattr(cfg, name) != value]
    if differing:
        got = ", ".join(f"model.{name}={getattr(cfg, name)}" for name in differing)
        need = ", ".join(f"{name}={BERT_REQUIRES[name]}" for name in differing)
        raise ConfigError(
            ", ".join(f"model.{name}" for name in differing),
            f"{got} has no exact Hugging Face counterpart",
            f"BertForMaskedLM needs {need}",
        )
    return "BertForMaskedLM"


def _np(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32))


def _bias(layer: dict, width: int) -> np.ndarray:
    return _np(layer["bias"]) if "bias" in layer else np.zeros(width, np.float32)


def _linear(out: dict, name: str, layer: dict, scale: float = 1.0) -> None:
    """Our (in, out) kernel as torch's (out, in) weight, and its bias (zeros if none), times `scale`."""
    kernel = _np(layer["kernel"])
    out[f"{name}.weight"] = _np(kernel.T * scale)
    out[f"{name}.bias"] = _bias(layer, kernel.shape[1]) * np.float32(scale)


def _norm(out: dict, name: str, norm: dict) -> None:
    out[f"{name}.weight"] = _np(norm["scale"])
    out[f"{name}.bias"] = _bias(norm, norm["scale"].shape[0])


def bert_weights(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    d = cfg.d_model
    # BERT scales scores by 1/sqrt(d_head); a muP model's other scale goes into the queries.
    q_scale = attention_scale(cfg) * math.sqrt(d // cfg.n_heads)
    out = {
        "bert.embeddings.word_embeddings.weight": _np(params["embed"]["embedding"]),
        "bert.embeddings.position_embeddings.weight": _np(params["pos_embed"]["embedding"]),
        "bert.embeddings.token_type_embeddings.weight": np.zeros((1, d), np.float32),
    }
    _norm(out, "bert.embeddings.LayerNorm", params["embed_norm"])
    for i, block in sorted(params["blocks"].items()):
        p = f"bert.encoder.layer.{i}."
        qkv = block["attn"]["qkv"]
        for j, name in enumerate(("query", "key", "value")):
            part = {"kernel": qkv["kernel"][:, j * d : (j + 1) * d]}
            if "bias" in qkv:
                part["bias"] = qkv["bias"][j * d : (j + 1) * d]
            _linear(out, f"{p}attention.self.{name}", part, q_scale if name == "query" else 1.0)
        _linear(out, f"{p}attention.output.dense", block["attn"]["out"])
        _norm(out, f"{p}attention.output.LayerNorm", block["norm1"])
        _linear(out, f"{p}intermediate.dense", block["mlp"]["up"])
        _linear(out, f"{p}output.dense", block["mlp"]["down"])
        _norm(out, f"{p}output.LayerNorm", block["norm2"])
    _linear(out, "cls.predictions.transform.dense", params["transform"])
    _norm(out, "cls.predictions.transform.LayerNorm", params["transform_norm"])
    head = params["head"] if "head" in params else {"kernel": np.asarray(params["embed"]["embedding"]).T}
    _linear(out, "cls.predictions.decoder", head, output_multiplier(cfg))
    out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"]
    return out


def bert_config(cfg: ModelConfig, vocab_size: int, eot_id: int) -> dict:
    """config.json of the BertForMaskedLM counterpart; `vocab_size` is the corpus's (the model adds [MASK])."""
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": model_vocab(cfg, vocab_size),
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": ffn_dim(cfg),
        "hidden_act": "gelu_new",
        "max_position_embeddings": cfg.seq_len,
        "type_vocab_size": 1,
        "layer_norm_eps": LAYERNORM_EPS,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": False,
        "pad_token_id": eot_id,
        "mask_token_id": mask_id(vocab_size),
        "torch_dtype": "float32",
    }


def family_export(params: dict, cfg: ModelConfig, model_vocab_size: int, eot_id: int) -> tuple[dict, dict]:
    """(weights, config.json) of a non-decoder model's counterpart (`architecture_for` has accepted it)."""
    vocab_size = model_vocab_size - extra_tokens(cfg)
    return bert_weights(params, cfg), bert_config(cfg, vocab_size, eot_id)
