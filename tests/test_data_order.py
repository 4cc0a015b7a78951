"""The data order is a pure function of (seed, step); batches are the windows it names.

Two orders exist (scaling/data/order.py): `feistel`, a keyed bijection computed per index (new runs),
and `permutation`, a stored permutation per epoch (runs made before config.yaml recorded data.order).
References: the orders written out the slow, obvious way, and brute force on small cases.
"""

import dataclasses
import os
import resource
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.trained_runs import open_data, read_run
from scaling.config import DataConfig
from scaling.data import order as order_module
from scaling.data import tokens as token_files
from scaling.data.load import load_corpus
from scaling.data.order import (
    FEISTEL,
    FEISTEL_ROUNDS,
    ORDERS,
    PERMUTATION,
    DataOrder,
    feistel,
    feistel_keys,
    half_bits,
    n_sequences,
    permutation,
    sequences,
    warn_if_repeats,
)
from scaling.errors import ConfigError
from scaling.training import runbook as runbook_module
from scaling.training import rundir
from scaling.training.trainer import prepare_run_dir, train, with_run_order
from tests.helpers import compose_config

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix_reference(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def feistel_reference(seed: int, epoch: int, offset: int, n_seqs: int) -> int:
    """The sequence at `offset` of an epoch, one index at a time in Python integers: the round keys
    hash (seed, epoch, round), each round swaps the halves and mixes one into the other, and the
    network is re-applied until the value lands in [0, n_seqs)."""
    epoch_key = mix_reference(mix_reference((seed + GAMMA) & MASK64) ^ mix_reference((epoch + 2 * GAMMA) & MASK64))
    keys = [mix_reference((epoch_key + (r + 1) * GAMMA) & MASK64) for r in range(FEISTEL_ROUNDS)]
    h = 1
    while 4**h < n_seqs:
        h += 1
    mask, value = (1 << h) - 1, offset
    while True:
        left, right = value >> h, value & mask
        for key in keys:
            left, right = right, left ^ (mix_reference(right ^ key) & mask)
        value = (left << h) | right
        if value < n_seqs:
            return value


def stream(order: DataOrder, n_epochs: int) -> np.ndarray:
    """The endless order written out the slow, obvious way: one epoch's order after another."""
    if order.kind == PERMUTATION:
        epochs = [np.random.default_rng([order.seed, e]).permutation(order.n_seqs) for e in range(n_epochs)]
    else:
        epochs = [
            [feistel_reference(order.seed, e, o, order.n_seqs) for o in range(order.n_seqs)] for e in range(n_epochs)
        ]
    return np.concatenate(epochs)


def epoch_order(seed: int, epoch: int, n: int, inverse: bool = False) -> np.ndarray:
    """The whole Feistel order of one small epoch (or its inverse), through the vectorised code."""
    return feistel(np.arange(n), feistel_keys(seed, np.full(n, epoch)), n, inverse=inverse)


# ---- both orders: the contract DataOrder keeps ----


@pytest.mark.parametrize("kind", ORDERS)
def test_indices_are_a_pure_function_of_seed_and_step(kind):
    order = DataOrder(seed=3, batch_size=8, n_seqs=1000, kind=kind)
    first = [order.indices(step) for step in (0, 7, 500)]
    permutation.cache_clear()
    again = [DataOrder(seed=3, batch_size=8, n_seqs=1000, kind=kind).indices(step) for step in (500, 0, 7)]
    for a, b in zip(first, [again[1], again[2], again[0]]):
        np.testing.assert_array_equal(a, b)
    other_seed = DataOrder(seed=4, batch_size=8, n_seqs=1000, kind=kind).indices(0)
    assert not np.array_equal(first[0], other_seed)
    assert first[0].dtype == np.int64 and first[0].shape == (8,)


@pytest.mark.parametrize("kind", ORDERS)
def test_one_epoch_covers_every_sequence_exactly_once(kind):
    order = DataOrder(seed=0, batch_size=8, n_seqs=120, kind=kind)
    seen = np.concatenate([order.indices(step) for step in range(120 // 8)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(120))
    assert order.epochs(120 // 8) == 1.0


@pytest.mark.parametrize("kind", ORDERS)
def test_positions_continue_across_epoch_boundaries(kind):
    order = DataOrder(seed=1, batch_size=7, n_seqs=10, kind=kind)  # 10 % 7 != 0: batches straddle epochs
    expected = stream(order, 8)
    for step in range(10):
        np.testing.assert_array_equal(order.indices(step), expected[step * 7 : step * 7 + 7])
    assert not np.array_equal(expected[:10], expected[10:20])


@pytest.mark.parametrize("kind", ORDERS)
def test_a_block_of_steps_equals_its_steps_one_by_one(kind):
    """The trainer gathers many steps at once (RunBook.batch); the ids must be those of each step alone,
    across epoch boundaries too."""
    order = DataOrder(seed=5, batch_size=7, n_seqs=30, kind=kind)
    block = order.indices(3, steps=11)
    np.testing.assert_array_equal(block, np.concatenate([order.indices(step) for step in range(3, 14)]))


@pytest.mark.parametrize("kind", ORDERS)
def test_batch_larger_than_an_epoch(kind):
    order = DataOrder(seed=2, batch_size=25, n_seqs=10, kind=kind)
    np.testing.assert_array_equal(order.indices(1), stream(order, 5)[25:50])


@pytest.mark.parametrize("kind", ORDERS)
def test_steps_seen_agrees_with_indices(kind):
    order = DataOrder(seed=5, batch_size=4, n_seqs=18, kind=kind)
    n_steps = 23  # 92 positions: five whole epochs and part of a sixth
    for seq in range(order.n_seqs):
        # one entry per occurrence: a step straddling two epochs can hold a sequence twice
        brute = [step for step in range(n_steps) for seq_id in order.indices(step) if seq_id == seq]
        np.testing.assert_array_equal(order.steps_seen(seq, n_steps), brute)
    assert order.steps_seen(0, 0).shape == (0,)
    with pytest.raises(ValueError):
        order.steps_seen(18, n_steps)


def test_the_permutation_order_is_unchanged_for_old_runs():
    """Runs made before data.order keep exactly the batches they trained on."""
    order = DataOrder(seed=7, batch_size=6, n_seqs=50, kind=PERMUTATION)
    expected = np.concatenate([np.random.default_rng([7, e]).permutation(50) for e in range(3)])
    np.testing.assert_array_equal(np.concatenate([order.indices(s) for s in range(25)]), expected)


def test_the_permutation_order_builds_each_epoch_once():
    """The old order draws a whole epoch's permutation: once per epoch, not once per step."""
    order_module.permutation.cache_clear()
    order = DataOrder(seed=0, batch_size=512, n_seqs=1_000_000, kind=PERMUTATION)
    for step in range(201):
        order.indices(step)
    assert order_module.permutation.cache_info().misses == 1


# ---- the Feistel order: a bijection, computed per index ----


def test_new_orders_are_feistel():
    assert DataOrder(seed=0, batch_size=1, n_seqs=10).kind == FEISTEL


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 15, 16, 17, 64, 97, 1000, 1024, 1025, 4099])
def test_feistel_is_a_bijection_of_exactly_n(n):
    assert 4 ** half_bits(n) >= n and (half_bits(n) == 1 or 4 ** (half_bits(n) - 1) < n)  # the smallest even width
    for seed, epoch in [(0, 0), (1, 0), (0, 5), (123456789, 2**40)]:
        forward = epoch_order(seed, epoch, n)
        np.testing.assert_array_equal(np.sort(forward), np.arange(n))  # every id exactly once
        inverse = epoch_order(seed, epoch, n, inverse=True)
        np.testing.assert_array_equal(inverse[forward], np.arange(n))  # inverse undoes forward
        np.testing.assert_array_equal(forward[inverse], np.arange(n))
        np.testing.assert_array_equal(inverse, np.argsort(forward))  # it is forward's inverse


def test_feistel_matches_the_order_written_one_index_at_a_time():
    """The vectorised network (keys per element, cycle-walking on a shrinking subset) against Python
    integers; changing the order would change which sequences a seed picks, so it fails here first."""
    for n, seed in [(1, 0), (6, 3), (1000, 1), (4**5 + 1, 2)]:
        for epoch in (0, 1, 9):
            expected = [feistel_reference(seed, epoch, o, n) for o in range(n)]
            np.testing.assert_array_equal(epoch_order(seed, epoch, n), expected)
    order = DataOrder(seed=11, batch_size=16, n_seqs=10**9)
    for step in (0, 62_499_999, 62_500_000, 10**12):  # the last step of epoch 0, the first of epoch 1, far on
        epoch, offset = np.divmod(step * 16 + np.arange(16), 10**9)
        expected = [feistel_reference(11, int(e), int(o), 10**9) for e, o in zip(epoch, offset)]
        np.testing.assert_array_equal(order.indices(step), expected)


def test_epochs_and_seeds_give_different_orders():
    n = 1000
    orders = [epoch_order(seed, epoch, n) for seed in range(4) for epoch in range(4)]
    for i, a in enumerate(orders):
        for b in orders[i + 1 :]:
            assert (a == b).mean() < 0.02  # two random orders agree at about 1 position in n


def test_feistel_order_looks_random():
    """Statistical sanity at a prime size (cycle-walking at work): no trace of position in the id,
    of one epoch in the next, of neighbours in each other, or of the seed in where a sequence lands."""
    n = 100_003
    ids = epoch_order(0, 0, n).astype(float)
    positions = np.arange(n, dtype=float)
    bound = 4 / np.sqrt(n)  # four standard errors of a correlation between independent orders
    assert abs(np.corrcoef(positions, ids)[0, 1]) < bound
    assert abs(np.corrcoef(ids, epoch_order(0, 1, n))[0, 1]) < bound
    assert abs(np.corrcoef(ids[:-1], ids[1:])[0, 1]) < bound
    assert abs((np.diff(ids) > 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    # a 10 x 10 table of (position decile, id decile) holds about n / 100 in every cell
    table = np.histogram2d(positions, ids, bins=10)[0]
    expected = n / 100
    assert ((table - expected) ** 2 / expected).sum() < 124  # chi-square, 81 degrees of freedom: p = 0.001
    # over 3400 seeds, sequence 0 lands about equally often at each of 17 positions
    keys_RN = np.concatenate([feistel_keys(seed, np.zeros(17)) for seed in range(3400)], axis=1)
    orders = feistel(np.tile(np.arange(17), 3400), keys_RN, 17).reshape(3400, 17)
    counts = np.bincount(np.flatnonzero(orders == 0) % 17, minlength=17)
    assert ((counts - 200) ** 2 / 200).sum() < 39.3  # chi-square, 16 degrees of freedom: p = 0.001


def test_steps_seen_is_exact_at_a_billion_sequences():
    """No brute force at this size: every step steps_seen names holds the sequence, and the step
    that holds it in each epoch is among those named."""
    order = DataOrder(seed=2, batch_size=16, n_seqs=10**9)
    n_steps = 3 * 10**9 // 16 + 5  # three epochs and a little of a fourth
    for step in (0, 12_345_678, n_steps - 1):
        for seq in order.indices(step)[:4]:
            seen = order.steps_seen(int(seq), n_steps)
            assert step in seen and 3 <= len(seen) <= 4
            assert all(seq in order.indices(int(s)) for s in seen)
            assert np.all(np.diff(seen) > 0) and seen[-1] < n_steps


def test_indices_cost_memory_in_proportion_to_the_batch_at_a_billion_sequences():
    order = DataOrder(seed=0, batch_size=16, n_seqs=10**9)
    order.indices(0)
    tracemalloc.start()
    try:
        order.indices(10**8)
        _, peak16 = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        DataOrder(seed=0, batch_size=4096, n_seqs=10**9).indices(10**6)
        _, peak4096 = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        order.steps_seen(5, 10**9)  # 16 epochs
        _, peak_seen = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak16 < 64 * 1024  # a permutation of the epoch would be 8 GB
    assert peak4096 < 4096 * 200  # about a hundred bytes per batch slot, not per sequence
    assert peak_seen < 64 * 1024
    assert network_passes_per_index(order, range(1, 201)) < 4.0  # the walk's cost, not the epoch's size


def network_passes_per_index(order: DataOrder, steps) -> float:
    """Values sent through the Feistel network per index drawn: the work of drawing, counted rather than
    timed (a timing would fail on a loaded machine and pass a slow algorithm on a fast one)."""
    sent = [0]
    original = order_module._network

    def counting(value_N, *args, **kwargs):
        sent[0] += value_N.size
        return original(value_N, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(order_module, "_network", counting)
        drawn = sum(order.indices(step).size for step in steps)
    return sent[0] / drawn


def test_indices_cheap_at_the_worst_case_size_for_cycle_walking():
    """Just above a power of 4 the network's domain is almost 4 n: walks are longest there, and still
    cost about domain / n = 4 passes per index on average (4.01 over these 102,400 draws), because a
    finished value leaves the loop (a loop that carried every value until the longest walk ended would
    cost several times that here)."""
    order = DataOrder(seed=0, batch_size=512, n_seqs=4**10 + 1)
    assert network_passes_per_index(order, range(200)) < 4.2


def test_a_batch_from_a_sparse_file_of_a_billion_sequences(tmp_path, monkeypatch):
    """The real data=tokens path on a token file of 10^9 sequences (8 GB, sparse: it takes no disk):
    a batch is assembled by reading its own windows, nothing else of the file is read or held."""
    seq_len, n_seqs, batch = 4, 10**9, 16
    path = tmp_path / "train.bin"
    with open(path, "wb") as f:
        f.truncate((n_seqs * seq_len + 1) * 2)  # uint16 tokens, all holes
    np.arange(64, dtype=np.uint16).tofile(tmp_path / "val.bin")
    order = DataOrder(seed=0, batch_size=batch, n_seqs=n_seqs)
    step = 10**7
    ids = order.indices(step)
    windows = (ids[:, None] * 7 + np.arange(seq_len + 1)) % 60_000 + 1  # nonzero tokens, a pattern per window
    with open(path, "r+b") as f:  # write just these windows, a few pages
        for seq_id, window in zip(ids, windows):
            f.seek(int(seq_id) * seq_len * 2)
            f.write(window.astype(np.uint16).tobytes())
    assert os.stat(path).st_blocks * 512 < 1 << 20

    # The corpus hash is a once-per-file scan, cached; it stands in here so the test reads no more of the file.
    real_scan, scanned = token_files._scan, []
    fake = {"min_id": 0, "max_id": 60_000, "n_tokens": n_seqs * seq_len + 1, "sha256": "sparse"}
    monkeypatch.setattr(
        token_files, "_scan", lambda t: scanned.append(len(t)) or (fake if len(t) > 10**6 else real_scan(t))
    )
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt + resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    tracemalloc.start()
    try:
        corpus = load_corpus(
            DataConfig(
                name="tokens",
                path=str(path),
                val_path=str(tmp_path / "val.bin"),
                vocab_size=65_536,
                cache_dir=str(tmp_path / "cache"),
            ),
            progress=False,
        )
        n = n_sequences(len(corpus.train), seq_len)
        got = sequences(corpus.train, DataOrder(seed=0, batch_size=batch, n_seqs=n).indices(step), seq_len)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert n == n_seqs and scanned == [n_seqs * seq_len + 1, 64]
    np.testing.assert_array_equal(got, windows)
    assert peak < 1 << 20
    assert usage.ru_minflt + usage.ru_majflt - faults < 5_000  # reading the file would fault in 2M pages
    assert os.stat(path).st_blocks * 512 < 1 << 20


# ---- which order a run trains with ----


def old_run(run_dir: Path, order: str | None) -> None:
    """A config.yaml as a run started with `order` wrote it (None: before data.order existed)."""
    cfg = compose_config([f"run_dir={run_dir}", "train.tokens=100000"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(cfg)
    if order is None:
        del config["data"]["order"]
    else:
        config["data"]["order"] = order
    rundir.write_config(run_dir, {"config": config, "derived": {"grad_accum": 1}, "data": {}})


def resolved(cfg) -> dict:
    return {"config": dataclasses.asdict(cfg), "derived": {"grad_accum": 1}, "data": {}}


def test_a_new_run_takes_the_feistel_order_and_a_resumed_one_keeps_its_own(tmp_path):
    base = [f"run_dir={tmp_path}", "train.tokens=100000"]
    assert with_run_order(compose_config(base), tmp_path).data.order == FEISTEL  # nothing there yet
    for started_with in ORDERS:
        old_run(tmp_path, started_with)
        cfg = with_run_order(compose_config(base), tmp_path)
        assert cfg.data.order == started_with
        assert prepare_run_dir(cfg, tmp_path, resolved(cfg)) is None
    assert with_run_order(compose_config([*base, "overwrite=true"]), tmp_path).data.order == FEISTEL
    with pytest.raises(ConfigError, match="data.order"):
        with_run_order(compose_config([*base, "data.order=shuffled"]), tmp_path)
    with pytest.raises(ConfigError, match="data.order"):
        DataOrder(seed=0, batch_size=1, n_seqs=1, kind="shuffled")


def test_a_run_made_before_data_order_resumes_with_the_permutation_order(tmp_path):
    old_run(tmp_path, None)
    cfg = with_run_order(compose_config([f"run_dir={tmp_path}", "train.tokens=100000"]), tmp_path)
    assert cfg.data.order == PERMUTATION
    assert prepare_run_dir(cfg, tmp_path, resolved(cfg)) is None  # the stored-config check does not refuse it
    assert rundir.read_config(tmp_path)["config"]["data"]["order"] == PERMUTATION  # and now it says so
    old_run(tmp_path, None)
    asked = with_run_order(
        compose_config([f"run_dir={tmp_path}", "train.tokens=100000", "data.order=feistel"]), tmp_path
    )
    with pytest.raises(ConfigError, match="data.order"):  # another order would change what it trains on
        prepare_run_dir(asked, tmp_path, resolved(asked))


def test_a_relaunch_that_leaves_the_order_unset_matches_the_stored_run(tmp_path):
    """The sweep asks whether a stored run is this configuration before any order is resolved."""
    unset = {"config": dataclasses.asdict(compose_config([f"run_dir={tmp_path}", "train.tokens=100000"]))}
    assert unset["config"]["data"]["order"] is None
    for started_with in (None, *ORDERS):
        old_run(tmp_path, started_with)
        assert rundir.config_differences(rundir.read_config(tmp_path), unset) == []
    old_run(tmp_path, None)
    for asked, differs in [(PERMUTATION, []), (FEISTEL, ["data.order"])]:
        current = {
            "config": dataclasses.asdict(
                compose_config([f"run_dir={tmp_path}", "train.tokens=100000", f"data.order={asked}"])
            )
        }
        assert rundir.config_differences(rundir.read_config(tmp_path), current) == differs


def test_a_branch_continues_the_order_of_the_run_it_starts_from(tmp_path):
    old_run(tmp_path / "parent", None)
    cfg = compose_config([f"run_dir={tmp_path}/branch", "train.tokens=100000", f"train.init_from={tmp_path}/parent"])
    assert with_run_order(cfg, tmp_path / "branch").data.order == PERMUTATION


def test_an_old_run_resumes_and_is_probed_with_the_order_it_trained_with(tmp_path, tiny_overrides, monkeypatch):
    """End to end: a run trained with the permutation order, whose config.yaml is made to look as one
    written before data.order existed and cut back to step 8 of 24, is resumed by a plain relaunch.
    It trains on with that order and ends bitwise identical to the uninterrupted run."""
    built = []  # every order a RunBook builds
    monkeypatch.setattr(runbook_module, "DataOrder", lambda *a, **k: built.append(DataOrder(*a, **k)) or built[-1])
    args = [*tiny_overrides, "train.tokens=6144"]  # 24 steps of 8 x 32; checkpoints at 0, 1, 2, 4, 8, 16, 24
    reference = tmp_path / "reference"
    done = train(compose_config([f"run_dir={reference}", *args, "data.order=permutation"]))
    assert done["status"] == "completed" and done["steps_done"] == 24 and built[-1].kind == PERMUTATION
    run_dir = tmp_path / "old"
    shutil.copytree(reference, run_dir)
    (run_dir / "summary.json").unlink()
    (run_dir / "run_manifest.json").unlink()  # (a run from before data.order also predates run manifests)
    for step in (16, 24):
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    del stored["config"]["data"]["order"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert read_run(run_dir).data_order == PERMUTATION
    feistel_order = DataOrder(seed=0, batch_size=8, n_seqs=open_data(read_run(run_dir)).order.n_seqs)
    assert not np.array_equal(open_data(read_run(run_dir)).order.indices(8), feistel_order.indices(8))

    resumed = train(compose_config([f"run_dir={run_dir}", *args]))
    assert len(built) == 2 and built[-1].kind == PERMUTATION
    assert resumed["status"] == "completed" and resumed["params_digest"] == done["params_digest"]
    assert rundir.read_config(run_dir)["config"]["data"]["order"] == PERMUTATION
    run = read_run(run_dir)
    assert run.data_order == PERMUTATION and run.data_fingerprint == read_run(reference).data_fingerprint
    np.testing.assert_array_equal(open_data(run).update_batch(8), open_data(read_run(reference)).update_batch(8))


# ---- windows, warnings ----


def test_sequences_are_the_fixed_windows():
    tokens = np.arange(101, dtype=np.uint16)
    batch = sequences(tokens, np.array([3, 0]), seq_len=10)
    assert batch.dtype == np.int32 and batch.shape == (2, 11)
    np.testing.assert_array_equal(batch[0], np.arange(30, 41))
    np.testing.assert_array_equal(batch[1], np.arange(0, 11))
    assert n_sequences(len(tokens), 10) == 10  # the last window ends exactly on the last token
    np.testing.assert_array_equal(sequences(tokens, np.array([9]), 10)[0], np.arange(90, 101))
    with pytest.raises(IndexError):
        sequences(tokens, np.array([10]), 10)


def test_sequences_from_a_memmap(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    tokens = np.memmap(path, np.uint16, mode="r")
    order = DataOrder(seed=0, batch_size=4, n_seqs=n_sequences(len(tokens), 64))
    batch = sequences(tokens, order.indices(3), 64)
    np.testing.assert_array_equal(batch[:, 0], order.indices(3) * 64)
    np.testing.assert_array_equal(np.diff(batch, axis=1), 1)


def test_too_short_for_one_sequence_names_the_field():
    with pytest.raises(ConfigError, match="model.seq_len"):
        n_sequences(64, seq_len=64)


def test_warn_if_repeats():
    order = DataOrder(seed=0, batch_size=10, n_seqs=100)
    assert warn_if_repeats(10, order) is None
    assert "1.50 epochs" in warn_if_repeats(15, order)


def test_bad_order_arguments_name_the_field():
    with pytest.raises(ConfigError, match="train.batch_size"):
        DataOrder(seed=0, batch_size=0, n_seqs=10)
    with pytest.raises(ConfigError, match="train.data_seed"):
        DataOrder(seed=-1, batch_size=1, n_seqs=10)
