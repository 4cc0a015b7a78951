"""The model of each pre-training family (`model.family`), built from one config: what training, checkpoint
loading and analysis call, so that every family trains, resumes and loads the same way.

  decoder          scaling/model/transformer.py   next-token prediction (GPT)
  encoder          scaling/model/encoder.py       masked language modelling (BERT)
  encoder_decoder  scaling/model/encoder_decoder.py  span corruption (T5)

Each model's `loss(batch)` is its family's objective on a batch laid out by scaling/model/objectives.py.
"""

from __future__ import annotations

from flax import nnx

from scaling.config import ModelConfig
from scaling.model.encoder import Encoder
from scaling.model.encoder_decoder import EncoderDecoder
from scaling.model.objectives import ENCODER, ENCODER_DECODER
from scaling.model.transformer import Transformer, build_model

Model = Transformer  # every family's model is a Transformer (the decoder) or builds on it


def build(cfg: ModelConfig, vocab_size: int, seed: int) -> Model:
    """The family's model for a corpus of `vocab_size` ids (its own reserved ids are added on top)."""
    if cfg.family == ENCODER:
        return Encoder(cfg, vocab_size, nnx.Rngs(params=seed))
    if cfg.family == ENCODER_DECODER:
        return EncoderDecoder(cfg, vocab_size, nnx.Rngs(params=seed))
    return build_model(cfg, vocab_size, seed)
