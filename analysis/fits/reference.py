"""Published Chinchilla estimates, drawn on our figures and tables for comparison.

- Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", arXiv:2203.15556: Table 2
  (exponents, 10th-90th percentile intervals) and the approach-3 fit in section 3.3.
- Besiroglu, Erdil, Barnett & You (2024), "Chinchilla Scaling: A replication attempt", arXiv:2404.10102
  (epoch-research/analyzing-chinchilla): the approach-3 refit on data extracted from Hoffmann's Figure 4.
"""

import numpy as np

from analysis.fits.lossmodel import (
    FLOPS_PER_PARAM_TOKEN,
    LossParams,
    compute_optimal,
)

HOFFMANN_2022 = LossParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BESIROGLU_2024 = LossParams(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
# Hoffmann et al. Table 2: approach -> (a, a interval, b, b interval).
HOFFMANN_TABLE2 = {
    "approach1": (0.50, (0.488, 0.502), 0.50, (0.501, 0.512)),
    "approach2": (0.49, (0.462, 0.534), 0.51, (0.483, 0.529)),
    "approach3": (0.46, (0.454, 0.455), 0.54, (0.542, 0.543)),
}
# The compute of the runs both approach-3 fits above were fitted on (Hoffmann et al.'s Figure 4, as
# extracted by Epoch: tests/data/svg_extracted_data.csv spans 1.40e18 to 1.30e22 FLOPs). Outside this
# range their lines are extrapolations, and figures must say so.
PUBLISHED_FIT_FLOPS = (1.4e18, 1.3e22)
# Chinchilla itself: 70B parameters on 1.4T tokens, the "20 tokens per parameter" rule.
CHINCHILLA_TOKENS_PER_PARAM = 20.0

EPOCH_LABEL = "Besiroglu et al. 2024 (Epoch refit)"
HOFFMANN_LABEL = "Hoffmann et al. 2022 (approach-3 fit)"
RULE_LABEL = "20 tokens per parameter"


def reference_frontiers(C: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Published (N_opt, D_opt) at budgets C: both approach-3 fits and the 20-tokens-per-parameter rule."""
    n_rule = np.sqrt(np.asarray(C, float) / (FLOPS_PER_PARAM_TOKEN * CHINCHILLA_TOKENS_PER_PARAM))
    return {
        HOFFMANN_LABEL: compute_optimal(C, **HOFFMANN_2022.as_dict())[:2],
        EPOCH_LABEL: compute_optimal(C, **BESIROGLU_2024.as_dict())[:2],
        RULE_LABEL: (n_rule, CHINCHILLA_TOKENS_PER_PARAM * n_rule),
    }
