"""The evaluation set (scaling/data/eval_set.py): windows drawn across the validation documents with none
over its cap, deterministic, versioned like the data order, and its loss's standard error over documents
checked against the spread of the mean over resampled document sets."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from scaling import contract
from scaling.config import DataConfig
from scaling.data.eval_set import (
    DOCUMENTS,
    EVAL_SETS,
    TOKEN_FILE_BLOCKS,
    WINDOWS,
    build_eval_set,
    capped_counts,
    document_bounds,
    run_eval_windows,
)
from scaling.errors import ConfigError
from scaling.training import rundir
from scaling.training.relaunch import prepare_run_dir
from scaling.training.trainer import train, with_run_order
from tests.helpers import compose_config, run_in_process

EOT = 0


def corpus(lengths: list[int], seed: int = 0) -> np.ndarray:
    """A validation split of documents of these lengths (end-of-text token included), ids 1..99 inside."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.append(rng.integers(1, 100, n - 1), EOT) for n in lengths]).astype(np.uint16)


def owner_of(bounds: np.ndarray, position: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, position, side="right") - 1


def test_documents_are_cut_at_end_of_text_and_token_files_into_blocks():
    val = corpus([5, 3, 9])
    np.testing.assert_array_equal(document_bounds(val, EOT), [0, 5, 8, 17])
    np.testing.assert_array_equal(document_bounds(np.append(val, [7, 7]), EOT), [0, 5, 8, 17, 19])  # unterminated tail
    blocks = document_bounds(np.arange(1000), None)
    assert len(blocks) == TOKEN_FILE_BLOCKS + 1 and blocks[-1] == 1000 and np.ptp(np.diff(blocks)) == 0


@pytest.mark.parametrize("total", [1, 7, 40, 64, 100])
def test_capped_counts_fill_evenly_under_the_cap(total):
    available = np.array([0, 1, 3, 50, 50, 50, 8, 2, 30, 30])
    cap = max(1, total // 4)
    counts = capped_counts(available, total, cap)
    possible = np.minimum(available, cap).sum() >= total
    if not possible:
        assert counts is None
        return
    assert counts.sum() == total and (counts <= np.minimum(available, cap)).all()
    # water-filling: no document gives more than one window beyond any document that had room for more
    short = counts < np.minimum(available, cap)
    if short.any():
        assert counts.max() <= counts[short].min() + 1


def test_document_windows_stay_inside_their_document_and_under_the_cap():
    lengths = [40, 3000, 65, 66, 900, 130, 2000, 10] + [200] * 30
    val = corpus(lengths)
    bounds = document_bounds(val, EOT)
    data = DataConfig(eval_tokens=64 * 96, eval_max_doc_share=0.05)
    eval_set = run_eval_windows(data, val, EOT, 64, 16)
    assert eval_set.kind == DOCUMENTS and len(eval_set.windows_NxT1) == 96  # a multiple of the batch
    assert eval_set.largest_share <= 0.05
    views = np.lib.stride_tricks.sliding_window_view(val, 65)
    starts = np.array([np.flatnonzero(np.all(views == w, axis=1))[0] for w in eval_set.windows_NxT1])
    np.testing.assert_array_equal(owner_of(bounds, starts), eval_set.document_N)
    np.testing.assert_array_equal(owner_of(bounds, starts + 64), eval_set.document_N)  # the last target too
    # the 40- and 10-token documents hold no window; the short ones give all they hold, the long ones no more
    # than the 200-token ones (water-filling), so the 3000-token document is 3% of the set, not 49%
    counts = np.bincount(eval_set.document_N, minlength=len(lengths))
    assert counts[[0, 7]].tolist() == [0, 0] and counts[[2, 3, 5]].tolist() == [1, 1, 2]
    assert counts[[1, 4, 6]].max() <= counts[8:].max()
    assert eval_set.describe()["eval_documents"] == len(lengths) - 2
    again = run_eval_windows(data, val, EOT, 64, 16)
    assert again.digest() == eval_set.digest()  # a pure function of the split and the config


def test_an_eval_set_that_cannot_meet_its_cap_names_the_field_and_a_size_that_can():
    val = corpus([130] * 25)  # 25 documents of 2 windows: 64 windows would need 3 from some of them
    data = DataConfig(eval_tokens=64 * 64, eval_max_doc_share=0.05)
    with pytest.raises(ConfigError, match=r"data\.eval_tokens: 4,096 tokens with no document over 5%") as info:
        run_eval_windows(data, val, EOT, 64, 1)
    suggested = int(info.value.fix.split("to ")[1].split(" ")[0].replace(",", ""))
    assert 64 * 40 <= suggested < 4096
    assert run_eval_windows(dataclasses.replace(data, eval_tokens=suggested), val, EOT, 64, 1).largest_share <= 0.05
    with pytest.raises(ConfigError, match="raise data.val_fraction") as info:  # 12 documents: no size can
        run_eval_windows(data, corpus([700] * 12), EOT, 64, 1)
    assert "lower data.eval_tokens" not in info.value.line()
    loose = dataclasses.replace(data, eval_max_doc_share=0.1)
    assert run_eval_windows(loose, corpus([700] * 12), EOT, 64, 1).largest_share <= 0.1


def test_the_windows_kind_is_the_spread_set_of_older_runs():
    val = corpus([400, 601])
    old = build_eval_set(WINDOWS, val, EOT, seq_len=10, n_tokens=50, max_share=0.05)
    np.testing.assert_array_equal(old.windows_NxT1[:, 0], val[[0, 200, 400, 600, 800]])
    np.testing.assert_array_equal(old.document_N, [0, 0, 1, 1, 1])
    assert build_eval_set(WINDOWS, val, EOT, 10, 10**9, 0.05).windows_NxT1.shape == (100, 11)


def test_the_standard_error_matches_the_spread_of_the_mean_over_document_sets():
    """Documents whose mean loss varies (sd 0.3) and whose windows vary about it (sd 0.5), of unequal
    sizes: over 2,000 draws of 60 documents, the mean of the reported errors equals the spread of the
    mean loss within 5%, and the error agrees with a float64 delete-one-document jackknife."""
    rng = np.random.default_rng(0)
    means, sds = [], []
    for _ in range(2000):
        sizes = rng.integers(1, 30, 60)
        document = np.repeat(np.arange(60), sizes)
        losses = 3.0 + rng.normal(0, 0.3, 60)[document] + rng.normal(0, 0.5, document.size)
        loss, se = contract.loss_and_se(losses, document)
        means.append(loss)
        sds.append(se)
    assert np.mean(sds) == pytest.approx(np.std(means), rel=0.05)
    sums, counts = np.bincount(document, losses), np.bincount(document)
    left_out = (sums.sum() - sums) / (counts.sum() - counts)
    jackknife = np.sqrt((60 - 1) / 60 * np.sum((left_out - left_out.mean()) ** 2))
    assert se == pytest.approx(jackknife, rel=0.05)
    assert np.isnan(contract.loss_and_se(np.ones(4), np.zeros(4, int))[1])  # one document: no error to state


def old_run(run_dir, eval_set):
    cfg = compose_config([f"run_dir={run_dir}", "train.tokens=100000"])
    config = dataclasses.asdict(cfg)
    if eval_set is None:
        del config["data"]["eval_set"], config["data"]["eval_max_doc_share"]
    else:
        config["data"]["eval_set"] = eval_set
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_config(run_dir, {"config": config, "derived": {"grad_accum": 1}, "data": {}})


def test_a_new_run_takes_documents_and_a_resumed_one_keeps_the_set_it_started_with(tmp_path):
    base = [f"run_dir={tmp_path}", "train.tokens=100000"]
    assert with_run_order(compose_config(base), tmp_path).data.eval_set == DOCUMENTS
    for started_with in (None, *EVAL_SETS):
        old_run(tmp_path, started_with)
        cfg = with_run_order(compose_config(base), tmp_path)
        assert cfg.data.eval_set == (started_with or WINDOWS)
        resolved = {"config": dataclasses.asdict(cfg), "derived": {"grad_accum": 1}, "data": {}}
        assert prepare_run_dir(cfg, tmp_path, resolved) is None  # the stored-config check does not refuse it
    old_run(tmp_path, None)
    asked = with_run_order(compose_config([*base, "data.eval_set=documents"]), tmp_path)
    resolved = {"config": dataclasses.asdict(asked), "derived": {"grad_accum": 1}, "data": {}}
    with pytest.raises(ConfigError, match="data.eval_set"):  # evaluated otherwise: its losses would not compare
        prepare_run_dir(asked, tmp_path, resolved)
    old_run(tmp_path / "parent", None)  # a WSD branch is evaluated as the run it starts from
    branch = compose_config([f"run_dir={tmp_path}/branch", "train.tokens=100000", f"train.init_from={tmp_path}/parent"])
    assert with_run_order(branch, tmp_path / "branch").data.eval_set == WINDOWS


def test_a_run_records_its_eval_set_and_the_loss_error(tmp_path, tiny_overrides):
    summary = train(compose_config([f"run_dir={tmp_path}", *tiny_overrides, "train.tokens=4096"]))
    assert summary["status"] == "completed" and summary["eval_set"] == DOCUMENTS
    assert summary["eval_largest_document_share"] <= 0.05 and summary["eval_documents"] >= 20
    assert 0 < summary["final_eval_loss_se"] < 0.5 * summary["final_eval_loss"]
    assert summary["eval_count"] >= 2 and summary["eval_s"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["eval_digest"] == summary["eval_digest"]


def test_bad_eval_set_input_is_one_line_and_exit_2(tmp_path, tiny_overrides, monkeypatch, capsys):
    args = [f"run_dir={tmp_path / 'run'}", *tiny_overrides, "train.tokens=4096"]
    code, err = run_in_process([*args, "data.eval_tokens=20000000"], monkeypatch, capsys)
    assert code == 2 and err.strip().startswith("error: data.eval_tokens:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written
    code, err = run_in_process([*args, "data.eval_set=sampled"], monkeypatch, capsys)
    assert code == 2 and "data.eval_set" in err


def test_a_run_on_the_windows_set_of_older_runs_still_scores_its_whole_batches(tmp_path, tiny_overrides):
    """62 windows in batches of 8: the 56 of the whole batches are scored, as before documents existed."""
    args = [
        f"run_dir={tmp_path}",
        *tiny_overrides,
        "train.tokens=2048",
        "data.eval_set=windows",
        "data.eval_tokens=2000",
    ]
    summary = train(compose_config(args))
    assert summary["status"] == "completed" and summary["eval_set"] == WINDOWS and summary["eval_windows"] == 62
    windows = pd.read_parquet(tmp_path / "eval_windows.parquet")
    assert len(windows) == 56 and windows["loss"].mean() == pytest.approx(summary["final_eval_loss"], rel=1e-6)
