"""The parametric laws approach 3 can fit: L(N, D) (and, for one, the epochs a run repeated its data).

- chinchilla: L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2).
- tied: one exponent for N and D, L = E + A/N^alpha + B/D^alpha (Gadre et al. 2024, eq. 4: their
  L(C, M) = E + (a M^eta + b M^-eta) C^-eta is this law with C = 6ND, M = D/N).
- kaplan: L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D, no irreducible term (Kaplan et al. 2020, eq. 1.5).
- data_constrained: the Chinchilla law on effective data D' = U (1 + R* (1 - exp(-R/R*))), where
  U = D/epochs is the unique data and R = epochs - 1 the repetitions (Muennighoff et al. 2023, eq. 5).
  Their matching term for excess parameters (N') is left out: it needs the compute-optimal N for the
  unique data, which only a first fit gives; here N is used as is.
- farseer: L = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^-exp(a1 N^alpha + b1) (Li et al. 2025,
  "Farseer: A Refined Scaling Law in Large Language Models", arXiv:2506.10972): the data term's
  coefficient and exponent both vary with N, so the IsoFLOP profiles' shape can change with scale.

Every law is fitted in log space in internal coordinates theta, with log N and log D centred on their
means (which decorrelates each coefficient from its exponent); `log_predict` gives log L and its Jacobian
for many theta rows at once, so starts and bootstrap replicates are polished together. Scale parameters
live as logs (log E, ...) bounded to a range set by the data, so the optimiser can reach "this term is
zero" in finitely many steps and the identification check can see it.
"""

from analysis.fits.laws.base import Law, LawData, law_data, variable_projection
from analysis.fits.laws.chinchilla import Chinchilla, DataConstrained, Tied
from analysis.fits.laws.farseer import Farseer
from analysis.fits.laws.kaplan import Kaplan

LAWS: dict[str, Law] = {law.name: law for law in (Chinchilla(), Tied(), Kaplan(), DataConstrained(), Farseer())}
DEFAULT_LAW = "chinchilla"

__all__ = ["DEFAULT_LAW", "LAWS", "Law", "LawData", "law_data", "variable_projection"]
