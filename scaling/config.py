"""Typed configuration: the single source of truth for every field, its type and default.

Hydra composes YAML from `sweeps/` on top of these dataclasses; anything not declared here is
rejected as an unknown key. Validation that needs more than a type lives in `validate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ModelConfig:
    """Transformer shape, architecture switches and pre-training family."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: Optional[int] = 4  # None: d_model / head_dim, the family's head size
    seq_len: int = 256
    # Target TOTAL parameter count (embeddings included, the Chinchilla convention). When set,
    # `ladder.shape_for_params` picks d_model/n_layers/n_heads from the family below and the three
    # fields above are ignored.
    n_params: Optional[int] = None
    # The model family that parameter targets and IsoFLOP ladders draw shapes from (scaling/planning/ladder.py):
    # heads of `head_dim` channels, at least `min_layers` layers, d_model / n_layers near `aspect_ratio`.
    head_dim: int = 8
    aspect_ratio: float = 32.0
    min_layers: int = 2
    # The narrowest member has this many heads: narrower still, one width step changes the size so much that
    # no steady sqrt(2) ladder passes through it (the objectives sweep takes 3, to reach below 10k parameters).
    min_heads: int = 4
    d_ff: Optional[int] = None  # default: 4*d_model (gelu) or 8/3*d_model to a multiple of head_dim (swiglu)
    norm_position: str = "pre"  # pre | post
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    position: str = "rope"  # rope | learned | relative (T5's relative position buckets; encoder_decoder only)
    mlp: str = "swiglu"  # swiglu (Llama's; measured better than gelu at equal parameters and FLOPs) | gelu
    tie_embeddings: bool = True
    use_bias: bool = False
    init_std: float = 0.02
    rope_theta: float = 10000.0
    # sp (standard) | mup (Yang et al. 2022): init, per-parameter Adam lr, logit and attention multipliers
    # scale with d_model / base_width so that a learning rate tuned at the base width transfers (scaling/model/mup.py).
    parametrization: str = "sp"
    base_width: int = 32
    compute_dtype: str = "auto"  # auto (bf16 on GPU/TPU, fp32 on CPU) | float32 | bfloat16
    attention_impl: str = "auto"  # auto | xla | cudnn  (jax.nn.dot_product_attention)
    # The pre-training family (scaling/model/families.py): decoder (next-token prediction, GPT) | encoder
    # (bidirectional, masked language modelling, BERT) | encoder_decoder (T5's span corruption, cross-attention).
    family: str = "decoder"
    # The family's objective (scaling/model/objectives.py); null: the published setting, and a field
    # another family has no use for must stay null.
    mask_rate: Optional[float] = None  # encoder: share of positions predicted (null: 0.15, BERT)
    noise_density: Optional[float] = None  # encoder_decoder: share of tokens corrupted (null: 0.15, T5)
    mean_span: Optional[float] = None  # encoder_decoder: mean corrupted-span length in tokens (null: 3, T5)


@dataclass
class DataConfig:
    """Where tokens come from. `name` picks the pipeline; see scaling/data/load.py."""

    name: str = "pystdlib"  # pystdlib | text | tokens
    vocab_size: int = 4096
    # text: a glob of .txt/.md/.py/.jsonl files; tokens: a .bin/.npy token file (train split).
    path: Optional[str] = None
    val_path: Optional[str] = None  # tokens: optional held-out token file
    token_dtype: str = "uint16"  # tokens: dtype of a raw .bin file
    jsonl_field: str = "text"
    # Share of files (pystdlib/text) or tail tokens (tokens) held out. 5%: the standard library's 1% held
    # 17 documents, too few for an evaluation set with no document over 5% of it.
    val_fraction: float = 0.05
    eval_tokens: int = 65536  # size of the fixed held-out evaluation set
    # No validation document gives more than this share of the evaluation set (scaling/data/eval_set.py).
    eval_max_doc_share: float = 0.05
    # The evaluation set (scaling/data/eval_set.py): documents | windows (that of runs made before this field).
    # Unset: a resumed run keeps the set it started with, a new run takes documents; config.yaml records it.
    eval_set: Optional[str] = None
    cache_dir: Optional[str] = None  # default: $SCALING_CACHE or ~/.cache/scaling
    # The data order (scaling/data/order.py): feistel | permutation (that of runs made before this field).
    # Unset: a resumed run keeps the order it started with, a new run takes feistel; config.yaml records it.
    order: Optional[str] = None
    # Training documents left out (scaling/data/mix.py): glob patterns (fnmatch) over a document's name inside the
    # corpus (pystdlib: 'test/*'; text: its path under the glob's folder). The validation documents, the tokenizer
    # and so the evaluation set are the same with and without them, so runs that differ only here compare.
    exclude: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """Token budget, optimiser and schedule (defaults follow Pythia)."""

    tokens: Optional[int] = None  # D; or give flops
    flops: Optional[float] = None  # C; D = C / (6 N_total)
    batch_size: int = 16  # sequences per optimiser step
    # Micro-batches per step, accumulated inside jit. None: chosen for the backend (on CPU, ~512-token
    # micro-batches, which keep activations in cache; see scaling.planning.plan.micro_batches).
    grad_accum: Optional[int] = None
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio exactly at the last step
    warmup_fraction: float = 0.05
    max_warmup_steps: int = 1000
    warmup_steps: Optional[int] = None  # explicit warmup; overrides the fraction (WSD branches share it)
    schedule: str = "cosine"  # cosine | wsd | constant
    decay_fraction: float = 0.2  # wsd: share of steps in the (1 - sqrt) cooldown
    decay_start: Optional[int] = None  # wsd branch: step at which this run's cooldown starts
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Weight decay by timescale (Wang & Aitchison 2024): AdamW's weights are an exponential moving average of
    # its updates over about 1 / (lr x weight_decay) steps. Set, this is that timescale as a fraction of the
    # run's steps, and the weight decay becomes 1 / (lr x timescale x steps) (train.weight_decay is ignored),
    # so runs of every length are regularised alike. A WSD branch keeps the decay of the run it starts from.
    weight_decay_timescale: Optional[float] = None
    grad_clip: float = 1.0
    seed: int = 0  # parameter initialisation
    data_seed: Optional[int] = None  # data order; defaults to seed
    log_every: int = 10
    # Start from another run's checkpoint (a WSD cooldown branch): its params, optimiser state and step.
    init_from: Optional[str] = None
    init_step: Optional[int] = None


@dataclass
class CheckpointRule:
    every: int = 1000
    until: Optional[int] = None


@dataclass
class CheckpointConfig:
    """Which steps are saved: 0, powers of two (log_spaced), the rules, the explicit steps, the end."""

    enabled: bool = True
    log_spaced: bool = True
    rules: list[CheckpointRule] = field(default_factory=lambda: [CheckpointRule(every=1000)])
    steps: list[int] = field(default_factory=list)
    keep: Optional[int] = None  # keep only the newest K (None: keep the whole schedule)
    async_save: bool = True


@dataclass
class MeshConfig:
    """Device mesh: data * fsdp must equal the number of devices (-1 fills the rest); multi-host."""

    data: int = -1
    fsdp: int = 1
    # Multi-process runs: an explicit coordinator ("host:port"), else SLURM's environment is used.
    coordinator: Optional[str] = None
    num_processes: int = 1
    process_id: int = 0


@dataclass
class SweepConfig:
    """Set by sweep definitions in sweeps/sweep/*.yaml; a single run leaves these empty."""

    name: Optional[str] = None
    point: Optional[int] = None  # IsoFLOP: offset of this model size from the expected optimum
    spacing: float = 2.0  # IsoFLOP: ratio between neighbouring sizes
    tokens_per_param: float = 20.0  # IsoFLOP: where the grid is centred (Chinchilla's D/N = 20)
    # IsoFLOP, per pre-training family: a centre for each family named here (others keep tokens_per_param).
    # A masked LM learns from 15% of the positions it computes, so its optimum sits at more tokens per
    # parameter than a decoder's; one centre for all would leave some family's minimum off its grid.
    family_tokens_per_param: dict[str, float] = field(default_factory=dict)
    # Seeds: every grid point trains at `seeds` seeds (train.seed, and the data order that follows it),
    # train.seed + seeds x seed_offset + k for k < seeds, so seed_offset=1 is a second design that shares
    # no seed with the first (scaling/sweeping/jobs.py). A run at a seed other than train.seed is named by it.
    seeds: int = 1
    seed_offset: int = 0
    # WSD ladder: budgets, as fractions of train.tokens, reached by cooldown branches of one run.
    branches: list[float] = field(default_factory=list)
    # Predict, then verify (scaling/sweeping/holdout.py): after the grid, one run at this factor times the
    # largest budget, at the size the fits call optimal; 0 for none.
    holdout_factor: float = 0.0
    # Reach (scaling/sweeping/reach.py): after the grid, its largest budget's largest model trained again on
    # this many times its tokens, at every seed, so that the held-out run, a larger model beyond the grid,
    # has fitted runs of nearly its size at its tokens per parameter; 0 for none. `stretch` is what such a
    # run trains: stretch x the tokens train.flops gives, off the IsoFLOP budget (its row has no budget).
    reach: float = 0.0
    stretch: float = 1.0
    # hydra/launcher=local on an accelerator: how many runs of one shape train in one vmapped program
    # (scaling/training/packed.py); 0 chooses (1 on CPU, where packing measured slower; 8 on accelerators).
    pack: int = 0
    # hydra/launcher=local on a CPU: how many runs train side by side, each in its own process on its own
    # cores (cores / jobs each); 0 chooses for each run from the core count and its size
    # (scaling/planning/cores.py); 1 trains them one after another in the launching process.
    jobs: int = 0
    # Set by the launching command (scaling/cli.py), never by hand: the keys a command-line multirun
    # varies (with the keys of hydra.sweeper.params they name each run's folder), and this launch's id.
    vary: list[str] = field(default_factory=list)
    launch: Optional[str] = None

    def centre(self, family: str) -> float:
        """The tokens per parameter a family's IsoFLOP grid is centred on."""
        return float(self.family_tokens_per_param.get(family, self.tokens_per_param))


@dataclass
class TrackerConfig:
    """Experiment trackers a run writes to besides metrics.parquet (scaling/training/tracking.py); pick them with
    the config group: tracker=tensorboard (default), tracker=wandb, tracker=[tensorboard,wandb], tracker=none."""

    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "scaling"
    wandb_mode: str = "offline"  # offline (sync later with `wandb sync`) | online | disabled


@dataclass
class BenchConfig:
    steps: int = 10
    warmup: int = 3
    pack: int = 1  # > 1: also time this many runs packed in one vmapped program
    # != 1: also time K runs side by side, each in its own process on its own cores (0: as many as
    # hydra/launcher=local would train at once for this size, scaling/planning/cores.py)
    jobs: int = 1


@dataclass
class RunConfig:
    """Root config of `python -m scaling.train`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    run_dir: Optional[str] = None  # default: results/runs/<timestamp>; a sweep names its runs' folders itself
    results_root: str = "results"
    progress: bool = True
    overwrite: bool = False
    debug: bool = False
    compilation_cache: bool = True


def register_configs() -> None:
    """Register the schema so YAML in sweeps/ is validated against it."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)


def to_dataclass(cfg: Any) -> RunConfig:
    """Turn an OmegaConf node (or plain dict) into a RunConfig."""
    from omegaconf import OmegaConf

    if isinstance(cfg, RunConfig):
        return cfg
    node = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return OmegaConf.to_object(node)  # type: ignore[return-value]


def run_config(node: Any, drop: tuple[str, ...] = ()) -> RunConfig:
    """The RunConfig of a composed Hydra node: every section but Hydra's own (and `drop`)."""
    from omegaconf import OmegaConf

    return to_dataclass(OmegaConf.masked_copy(node, [k for k in node if k not in ("hydra", *drop)]))


def replace(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Return a copy with some fields of some sections replaced: replace(cfg, model={"d_model": 64})."""
    updates = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **updates)
