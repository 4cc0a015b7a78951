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
from scaling.model.encoder_decoder import RELATIVE_MAX_DISTANCE
from scaling.model.mup import attention_scale, output_multiplier
from scaling.model.objectives import (
    ENCODER,
    ENCODER_DECODER,
    extra_tokens,
    mask_id,
    model_vocab,
    sentinel_id,
    span_layout,
    start_id,
)
from scaling.model.sizing import RELATIVE_BUCKETS, ffn_dim

LAYERNORM_EPS, RMSNORM_EPS = 1e-5, 1e-6  # scaling/model/layers.py: Norm
# Each family's counterpart and the switches it requires (T5 takes either MLP, as gelu_new or gated-silu).
REQUIRES = {
    ENCODER: ("BertForMaskedLM", {"norm_position": "post", "norm": "layernorm", "position": "learned", "mlp": "gelu"}),
    ENCODER_DECODER: (
        "T5ForConditionalGeneration",
        {"norm_position": "pre", "norm": "rmsnorm", "position": "relative", "use_bias": False},
    ),
}


def architecture_for(cfg: ModelConfig) -> str:
    """The transformers class of the family's counterpart; ConfigError naming the fields that have none."""
    architecture, requires = REQUIRES[cfg.family]
    differing = [name for name, value in requires.items() if getattr(cfg, name) != value]
    if differing:
        got = ", ".join(f"model.{name}={getattr(cfg, name)}" for name in differing)
        need = ", ".join(f"{name}={requires[name]}" for name in differing)
        raise ConfigError(
            ", ".join(f"model.{name}" for name in differing),
            f"{got} has no exact Hugging Face counterpart",
            f"{architecture} needs {need}",
        )
    return architecture


def _np(x) -> np.ndarray:
    """float32, C-contiguous: what safetensors writes (scaling/export.py uses it too)."""
    return np.ascontiguousarray(np.asarray(x, np.float32))


def _bias_or_zeros(layer: dict, width: int) -> np.ndarray:
    """The layer's bias, or zeros where the model has none: the same function for an architecture that needs one."""
    return _np(layer["bias"]) if "bias" in layer else np.zeros(width, np.float32)


def _linear(out: dict, name: str, layer: dict, scale: float = 1.0) -> None:
    """Our (in, out) kernel as torch's (out, in) weight, and its bias (zeros if none), times `scale`."""
    kernel = _np(layer["kernel"])
    out[f"{name}.weight"] = _np(kernel.T * scale)
    out[f"{name}.bias"] = _bias_or_zeros(layer, kernel.shape[1]) * np.float32(scale)


def _norm(out: dict, name: str, norm: dict) -> None:
    out[f"{name}.weight"] = _np(norm["scale"])
    out[f"{name}.bias"] = _bias_or_zeros(norm, norm["scale"].shape[0])


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


def _t5_attention(out: dict, name: str, q: dict, k: dict, v: dict, o: dict, q_scale: float) -> None:
    """T5's q, k, v, o (bias-free torch (out, in) weights); T5 scales no scores, so ours go into q."""
    for part, layer, scale in (("q", q, q_scale), ("k", k, 1.0), ("v", v, 1.0), ("o", o, 1.0)):
        out[f"{name}.{part}.weight"] = _np(_np(layer["kernel"]).T * scale)


def _t5_mlp(out: dict, name: str, mlp: dict) -> None:
    """DenseReluDense: wi, wo (gelu_new); or wi_0 (gate, silu'd), wi_1 (up), wo (gated-silu)."""
    pairs = {"wi_0": mlp["gate"], "wi_1": mlp["up"]} if "gate" in mlp else {"wi": mlp["up"]}
    for part, layer in {**pairs, "wo": mlp["down"]}.items():
        out[f"{name}.DenseReluDense.{part}.weight"] = _np(_np(layer["kernel"]).T)


def _split_qkv(qkv: dict, d: int) -> tuple[dict, dict, dict]:
    return tuple({"kernel": qkv["kernel"][:, j * d : (j + 1) * d]} for j in range(3))


def t5_weights(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    d, scale = cfg.d_model, attention_scale(cfg)
    embedding = _np(params["embed"]["embedding"])
    out = {
        "shared.weight": embedding,
        "encoder.embed_tokens.weight": embedding,
        "decoder.embed_tokens.weight": embedding,
    }
    for i, block in sorted(params["blocks"].items()):
        p = f"encoder.block.{i}.layer."
        _t5_attention(out, f"{p}0.SelfAttention", *_split_qkv(block["attn"]["qkv"], d), block["attn"]["out"], scale)
        out[f"{p}0.layer_norm.weight"] = _np(block["norm1"]["scale"])
        _t5_mlp(out, f"{p}1", block["mlp"])
        out[f"{p}1.layer_norm.weight"] = _np(block["norm2"]["scale"])
    for i, block in sorted(params["decoder_blocks"].items()):
        p = f"decoder.block.{i}.layer."
        _t5_attention(out, f"{p}0.SelfAttention", *_split_qkv(block["attn"]["qkv"], d), block["attn"]["out"], scale)
        cross = block["cross"]
        k, v = ({"kernel": cross["kv"]["kernel"][:, j * d : (j + 1) * d]} for j in range(2))
        _t5_attention(out, f"{p}1.EncDecAttention", cross["q"], k, v, cross["out"], scale)
        _t5_mlp(out, f"{p}2", block["mlp"])
        for j, norm in enumerate(("norm1", "norm2", "norm3")):
            out[f"{p}{j}.layer_norm.weight"] = _np(block[norm]["scale"])
    for stack in ("encoder", "decoder"):  # only the first layer of each stack holds the table, as in T5
        out[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = _np(
            params[f"{stack}_bias"]["table"]
        )
    out["encoder.final_layer_norm.weight"] = _np(params["final_norm"]["scale"])
    out["decoder.final_layer_norm.weight"] = _np(params["decoder_norm"]["scale"])
    head = _np(params["head"]["kernel"]) if "head" in params else embedding.T
    out["lm_head.weight"] = _np(head.T * output_multiplier(cfg))
    return out


def t5_config(cfg: ModelConfig, vocab_size: int) -> dict:
    """config.json of the T5ForConditionalGeneration counterpart; `vocab_size` is the corpus's."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": model_vocab(cfg, vocab_size),
        "d_model": cfg.d_model,
        "d_kv": cfg.d_model // cfg.n_heads,
        "d_ff": ffn_dim(cfg),
        "num_layers": cfg.n_layers,
        "num_decoder_layers": cfg.n_layers,
        "num_heads": cfg.n_heads,
        "relative_attention_num_buckets": RELATIVE_BUCKETS,
        "relative_attention_max_distance": RELATIVE_MAX_DISTANCE,
        "feed_forward_proj": "gated-silu" if cfg.mlp == "swiglu" else "gelu_new",
        "layer_norm_epsilon": RMSNORM_EPS,
        "dropout_rate": 0.0,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "scale_decoder_outputs": False,
        "decoder_start_token_id": start_id(cfg, vocab_size),
        "pad_token_id": start_id(cfg, vocab_size),  # T5 starts the decoder from its pad token
        "eos_token_id": None,
        "sentinel_token_ids": [sentinel_id(vocab_size, k) for k in range(span_layout(cfg).spans)],
        "torch_dtype": "float32",
    }


def family_export(params: dict, cfg: ModelConfig, model_vocab_size: int, eot_id: int) -> tuple[dict, dict]:
    """(weights, config.json) of a non-decoder model's counterpart (`architecture_for` has accepted it)."""
    vocab_size = model_vocab_size - extra_tokens(cfg)
    if cfg.family == ENCODER:
        return bert_weights(params, cfg), bert_config(cfg, vocab_size, eot_id)
    return t5_weights(params, cfg), t5_config(cfg, vocab_size)
