"""Export of the other families: BertForMaskedLM's logits in `transformers` equal our encoder's to 1e-4, and shapes
without a counterpart are refused in one line naming the fields."""

from __future__ import annotations

import numpy as np
import pytest

from scaling import export, export_families
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.training.checkpoint import load_model
from tests.test_export import needs_hf, trained_run

BERT = ["model.family=encoder", "model.norm_position=post", "model.norm=layernorm", "model.position=learned"]
VARIANTS = {
    "bert-bias-tied": [*BERT, "model.use_bias=true"],
    "bert-untied-mup": [*BERT, "model.tie_embeddings=false", "model.parametrization=mup", "model.base_width=16"],
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory, tiny_overrides):
    run_dir = trained_run(tmp_path_factory, tiny_overrides, VARIANTS[request.param])
    return run_dir, export.export(run_dir, None, tmp_path_factory.mktemp("hf") / "model")


@needs_hf
def test_exported_encoder_logits_equal_ours(exported):
    import torch
    from transformers import AutoModelForMaskedLM

    run_dir, out = exported
    ours = load_model(run_dir, compute_dtype="float32")
    tokens_BxT = np.random.default_rng(0).integers(0, ours.vocab_size, (3, ours.cfg.seq_len)).astype(np.int32)
    logits_ours = np.asarray(ours(tokens_BxT))  # the prediction head at every position
    hf = AutoModelForMaskedLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits_hf = hf(torch.from_numpy(tokens_BxT.astype(np.int64))).logits.numpy()
    assert type(hf).__name__ == "BertForMaskedLM" and np.abs(logits_ours).max() > 1.0
    np.testing.assert_allclose(logits_hf, logits_ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"family": "encoder"}, "model.norm_position, model.norm, model.position"),  # our default shape
        (
            {"family": "encoder", "norm_position": "post", "norm": "layernorm", "position": "learned", "mlp": "swiglu"},
            "model.mlp",
        ),
    ],
)
def test_encoders_without_a_counterpart_are_refused_naming_the_fields(fields, named):
    with pytest.raises(ConfigError) as caught:
        export_families.architecture_for(ModelConfig(**fields))
    assert caught.value.field == named and "\n" not in caught.value.line()
