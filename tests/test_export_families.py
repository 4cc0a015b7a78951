"""Export of the other families: BertForMaskedLM's and T5ForConditionalGeneration's logits in `transformers` equal
ours to 1e-4 (muP folded, tied and untied heads, both T5 MLPs), and shapes without a counterpart are refused in one
line naming the fields."""

from __future__ import annotations

import numpy as np
import pytest

from scaling import export, export_families
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model.objectives import span_layout
from scaling.training.checkpoint import load_model
from tests.test_export import needs_hf, trained_run

BERT = [
    "model.family=encoder",
    "model.norm_position=post",
    "model.norm=layernorm",
    "model.position=learned",
    "model.mlp=gelu",
]
T5 = ["model.family=encoder_decoder", "model.position=relative"]
VARIANTS = {
    "bert-bias-tied": [*BERT, "model.use_bias=true"],
    "bert-untied-mup": [*BERT, "model.tie_embeddings=false", "model.parametrization=mup", "model.base_width=16"],
    "t5-gelu-tied": T5,
    "t5-swiglu-untied-mup": [
        *T5,
        "model.mlp=swiglu",
        "model.tie_embeddings=false",
        "model.parametrization=mup",
        "model.base_width=16",
    ],
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory, tiny_overrides):
    run_dir = trained_run(tmp_path_factory, tiny_overrides, VARIANTS[request.param])
    return run_dir, export.export(run_dir, None, tmp_path_factory.mktemp("hf") / "model")


@needs_hf
def test_exported_logits_equal_ours(exported):
    """BERT: the prediction head at every position of random ids; T5: the decoder's logits for random encoder and
    decoder inputs (lengths of a corrupted sequence)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    run_dir, out = exported
    ours = load_model(run_dir, compute_dtype="float32")
    rng = np.random.default_rng(0)
    if ours.cfg.family == "encoder":
        inputs = (rng.integers(0, ours.vocab_size, (3, ours.cfg.seq_len)),)
        hf = AutoModelForMaskedLM.from_pretrained(out, dtype=torch.float32).eval()
    else:
        layout = span_layout(ours.cfg)
        inputs = tuple(rng.integers(0, ours.vocab_size, (3, n)) for n in (layout.inputs(ours.cfg.seq_len), 20))
        hf = AutoModelForSeq2SeqLM.from_pretrained(out, dtype=torch.float32).eval()
    logits_ours = np.asarray(ours(*(x.astype(np.int32) for x in inputs)))
    with torch.no_grad():
        named = dict(zip(("input_ids", "decoder_input_ids"), (torch.from_numpy(x.astype(np.int64)) for x in inputs)))
        logits_hf = hf(**named).logits.numpy()
    assert type(hf).__name__ == export_families.architecture_for(ours.cfg) and np.abs(logits_ours).max() > 1.0
    np.testing.assert_allclose(logits_hf, logits_ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"family": "encoder"}, "model.norm_position, model.norm, model.position, model.mlp"),  # our default shape
        (
            {"family": "encoder", "norm_position": "post", "norm": "layernorm", "position": "learned", "mlp": "swiglu"},
            "model.mlp",
        ),
    ],
)
def test_shapes_without_a_counterpart_are_refused_naming_the_fields(fields, named):
    with pytest.raises(ConfigError) as caught:
        export_families.architecture_for(ModelConfig(**fields))
    assert caught.value.field == named and "\n" not in caught.value.line()


@needs_hf
def test_relative_buckets_equal_t5s():
    """Our buckets (computed in float32 as T5 computes them) equal T5's at every distance up to 300 positions."""
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    from scaling.model.encoder_decoder import relative_buckets

    for bidirectional in (True, False):
        for queries, keys in ((300, 300), (13, 57)):
            distance = torch.arange(keys)[None, :] - torch.arange(queries)[:, None]
            theirs = T5Attention._relative_position_bucket(distance, bidirectional, num_buckets=32, max_distance=128)
            np.testing.assert_array_equal(relative_buckets(queries, keys, bidirectional), theirs.numpy())
