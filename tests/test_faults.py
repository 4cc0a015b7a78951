"""Fault injection on tiny runs: each test breaks something the way a real sweep meets it and checks
that nothing is lost and nothing is silent (issue 13's items 1, 2, 5, 6, 8, 9, 10, 11 and 13)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from analysis import fit, probe, report
from scaling import contract
from scaling.config import CheckpointConfig, DataConfig
from scaling.data.cache import verify
from scaling.data.load import load_corpus
from scaling.errors import ConfigError
from scaling.model.transformer import build_model
from scaling.sweeping import runs_table
from scaling.training import checkpoint
from scaling.training.rundir import read_config
from scaling.training.trainer import train
from tests.helpers import REPO, compose_config, run_cli, run_in_process, tree_digest

TINY_RUN = ["train.tokens=6000", "train.log_every=5"]  # 23 steps: checkpoints 0, 1, 2, 4, 8, 16, 23


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_overrides) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert train(compose_config([f"run_dir={run_dir}", *tiny_overrides, *TINY_RUN]))["status"] == "completed"
    return run_dir


# ---- 1: checkpoint.keep=0 ----


def test_keep_zero_is_refused_and_keep_one_keeps_the_final_checkpoint(tiny_overrides, tmp_path, monkeypatch, capsys):
    code, stderr = run_in_process(
        [f"run_dir={tmp_path / 'zero'}", *tiny_overrides, *TINY_RUN, "checkpoint.keep=0"], monkeypatch, capsys
    )
    assert code == 2 and len(_error_lines(stderr)) == 1 and "checkpoint.keep: 0" in stderr
    assert not (tmp_path / "zero").exists()
    cfg = compose_config([f"run_dir={tmp_path / 'one'}", *tiny_overrides, *TINY_RUN, "checkpoint.keep=1"])
    summary = train(cfg)
    assert checkpoint.saved_steps(tmp_path / "one") == [summary["steps"]]


# ---- 2: a damaged corpus cache ----


def _damage(folder: Path, kind: str) -> None:
    train_bin = folder / "train.bin"
    data = train_bin.read_bytes()
    if kind == "half":  # an even byte count: whole uint16 tokens, half of them
        train_bin.write_bytes(data[: len(data) // 4 * 2])
    elif kind == "odd":
        train_bin.write_bytes(data[:-1])
    elif kind == "empty":
        train_bin.write_bytes(b"")
    elif kind == "zeroed":  # the right size, the wrong tokens
        train_bin.write_bytes(bytes(len(data)))
    elif kind == "meta":
        (folder / "meta.json").write_text('{"pipeline": "te')
    elif kind == "tokenizer":
        (folder / "tokenizer.json").unlink()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, tiny_corpus_dir) -> DataConfig:
    root = tmp_path_factory.mktemp("small_corpus")
    for path in sorted(tiny_corpus_dir.glob("*.txt"))[:12]:
        shutil.copy(path, root / path.name)
    return DataConfig(
        name="text", path=f"{root}/*.txt", vocab_size=300, val_fraction=0.2, cache_dir=str(root / "cache")
    )


@pytest.mark.parametrize("kind", ["half", "odd", "empty", "zeroed", "meta", "tokenizer"])
def test_damaged_corpus_cache_is_rebuilt_to_the_same_tokens(small_corpus, kind):
    original = load_corpus(small_corpus, progress=False)
    tokens, folder = np.array(original.train), Path(original.tokenizer_path).parent
    _damage(folder, kind)
    with pytest.warns(UserWarning, match="is damaged .*rebuilding it"):
        rebuilt = load_corpus(small_corpus, progress=False)
    np.testing.assert_array_equal(np.asarray(rebuilt.train), tokens)
    assert rebuilt.meta[contract.CORPUS_HASH] == original.meta[contract.CORPUS_HASH]
    verify(folder)


def test_cache_prepared_before_sampled_hashes_still_opens(small_corpus):
    folder = Path(load_corpus(small_corpus, progress=False).tokenizer_path).parent
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sampled_sha256"]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert "sampled_sha256" in load_corpus(small_corpus, progress=False).meta  # recorded on first open
    assert "sampled_sha256" in json.loads((folder / "meta.json").read_text())


# ---- 5: resume and probes check the data ----


@pytest.fixture
def run_on_own_corpus(tmp_path, tiny_corpus_dir, tiny_overrides) -> tuple[Path, list[str]]:
    """An interrupted run (no summary yet) on a corpus of its own, which the test then edits."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus_dir, corpus)
    overrides = [*tiny_overrides, *TINY_RUN, f"data.path={corpus}/*.txt", f"data.cache_dir={tmp_path / 'cache'}"]
    run_dir = tmp_path / "run"
    train(compose_config([f"run_dir={run_dir}", *overrides]))
    (run_dir / contract.SUMMARY_FILE).unlink()  # as if killed after its last checkpoint
    first = sorted(corpus.glob("*.txt"))[0]
    first.write_text(first.read_text() + "\n# one more line: another corpus under the same config\n")
    return run_dir, overrides


def test_resume_on_other_data_is_refused_naming_both_hashes(run_on_own_corpus, monkeypatch, capsys):
    run_dir, overrides = run_on_own_corpus
    stored = yaml_data_hash(run_dir)
    before = tree_digest(run_dir)
    code, stderr = run_in_process([f"run_dir={run_dir}", *overrides], monkeypatch, capsys)
    errors = _error_lines(stderr)
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr
    assert "corpus_hash" in errors[0] and stored[:16] in errors[0] and "overwrite=true" in errors[0]
    assert tree_digest(run_dir) == before
    code, stderr = run_in_process([f"run_dir={run_dir}", *overrides, "overwrite=true"], monkeypatch, capsys)
    assert code == 0 and yaml_data_hash(run_dir) != stored  # started over on the new corpus


def test_probes_refuse_other_data(run_on_own_corpus, capsys):
    run_dir, _ = run_on_own_corpus
    assert probe.main([str(run_dir), "--k", "4", "--continuation", "4", "--memo-samples", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data (corpus_hash)") and "\n" not in err and yaml_data_hash(run_dir)[:16] in err


def yaml_data_hash(run_dir: Path) -> str:
    return read_config(run_dir)[contract.DATA_SECTION][contract.CORPUS_HASH]


# ---- 6: a checkpoint that does not restore ----


def _abstract_params(run_dir: Path) -> dict:
    """The parameter tree the code builds for this run, as restore targets (what a resume asks for)."""
    model_cfg, vocab_size, _ = checkpoint._stored_model_config(run_dir)
    _, params = nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, vocab_size, seed=0)), nnx.Param)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.to_pure_dict(params))


def test_renamed_parameter_is_a_one_line_error_and_nothing_moves(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = tree_digest(run_dir)
    target = _abstract_params(run_dir)
    target["embedding_table"] = target.pop("embed")  # a code change renamed a parameter
    mngr = checkpoint.manager(run_dir, CheckpointConfig())
    with pytest.raises(ConfigError) as error:
        checkpoint.restore_latest(mngr, {"params": target})
    mngr.close()
    line = error.value.line()
    assert "saved only: embed/embedding" in line and "in the model only: embedding_table/embedding" in line
    assert "\n" not in line and "nothing was moved" in line
    assert tree_digest(run_dir) == before and not (run_dir / contract.DAMAGED_CHECKPOINT_DIR).exists()


@pytest.mark.parametrize("writer", [True, False])
def test_missing_files_are_damage_moved_aside_by_the_writer_only(trained, tmp_path, monkeypatch, writer):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    newest, previous = checkpoint.saved_steps(run_dir)[-2:][::-1]
    shutil.rmtree(run_dir / contract.CHECKPOINT_DIR / str(newest) / "params" / "ocdbt.process_0")
    monkeypatch.setattr(checkpoint, "is_writer", lambda: writer)
    mngr = checkpoint.manager(run_dir, CheckpointConfig())
    with pytest.warns(UserWarning, match=f"checkpoint step {newest} is damaged"):
        restored = checkpoint.restore_latest(mngr, {"params": _abstract_params(run_dir)})
    mngr.close()
    assert restored["record"]["step"] == previous
    moved = list((run_dir / contract.DAMAGED_CHECKPOINT_DIR).glob(f"{newest}-*"))
    assert len(moved) == (1 if writer else 0)
    assert (newest in checkpoint.saved_steps(run_dir)) != writer


def test_the_only_checkpoint_damaged_says_the_run_starts_over(trained, tmp_path):
    """checkpoint.keep=1 and that checkpoint damaged (issue 25, case 18): no "trying an older one" when none
    is left; the warning says the run starts over, and the damaged step is set aside for inspection."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    *older, newest = checkpoint.saved_steps(run_dir)
    for step in older:
        shutil.rmtree(run_dir / contract.CHECKPOINT_DIR / str(step))
    shutil.rmtree(run_dir / contract.CHECKPOINT_DIR / str(newest) / "params" / "ocdbt.process_0")
    mngr = checkpoint.manager(run_dir, CheckpointConfig(keep=1))
    with pytest.warns(UserWarning) as caught:
        restored = checkpoint.restore_latest(mngr, {"params": _abstract_params(run_dir)})
    mngr.close()
    messages = [str(w.message) for w in caught if "is damaged" in str(w.message)]
    assert restored is None and len(messages) == 1
    assert messages[0].endswith("no older one is left: the run starts over") and "trying" not in messages[0]
    assert checkpoint.saved_steps(run_dir) == [] and list((run_dir / contract.DAMAGED_CHECKPOINT_DIR).iterdir())


# ---- 11: probes skip a damaged checkpoint ----


def test_probe_skips_a_damaged_checkpoint_and_probes_the_rest(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    steps = checkpoint.saved_steps(run_dir)
    for path in (run_dir / contract.CHECKPOINT_DIR / str(steps[-1]) / "params").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "d" in path.parent.name:
            path.write_bytes(bytes(path.stat().st_size))  # the same size, the wrong bytes
    with pytest.warns(UserWarning, match=f"checkpoint step {steps[-1]} is damaged .*not probed"):
        assert (
            probe.main([str(run_dir), "--k", "4", "--continuation", "4", "--memo-samples", "8", "--eval-tokens", "512"])
            == 0
        )
    probed = set(pd.read_parquet(run_dir / "probes.parquet").step)
    assert probed == set(steps[:-1])
    err = capsys.readouterr().err  # the count is of the checkpoints probed (issue 25, case 9)
    assert f"probed {len(steps) - 1} checkpoints in " in err and f"1 damaged, skipped (steps {steps[-1]})" in err
    assert steps[-1] in checkpoint.saved_steps(run_dir)  # analysis reads; it never moves a run's files


# ---- 8 and 9: two launches of one sweep at once, then a truncated runs.parquet ----

SWEEP = ["sweep.name=pair", "run_dir=null", "train.lr=1e-3,2e-3,3e-3", "train.tokens=12000", "train.log_every=5"]


@pytest.fixture(scope="module")
def two_launches(tmp_path_factory, tiny_overrides):
    """Launch B starts while launch A trains its first run; both run to the end."""
    root = tmp_path_factory.mktemp("pair")
    cmd = [
        sys.executable,
        "-m",
        "scaling.train",
        "--multirun",
        *tiny_overrides,
        *SWEEP,
        f"results_root={root}",
    ]  # (the sweep overrides the lr)
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((root / "pair" / contract.RUNS_SUBDIR).glob(f"*/{contract.CHECKPOINT_DIR}/0")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.2)
    second = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [proc.communicate(timeout=600) + (proc.returncode,) for proc in (first, second)]
    return root / "pair", results


@pytest.mark.slow
def test_two_launches_train_each_run_once_and_fill_the_table(two_launches):
    folder, results = two_launches
    for _, stderr, code in results:
        assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    assert len(table) == 3 and (table.status == contract.COMPLETED).all()
    outcomes = pd.DataFrame([json.loads(line) for line in (folder / contract.LAUNCH_LOG).read_text().splitlines()])
    assert set(outcomes.outcome) <= {"trained", "skipped", "busy"}
    assert (outcomes[outcomes.outcome == "trained"].run_name.value_counts() == 1).all()
    assert set(outcomes[outcomes.outcome == "trained"].run_name) == set(table.run_name)
    busy = outcomes[outcomes.outcome == "busy"]
    for name in busy.run_name:  # the launch that skipped a busy run said which
        assert any(f"{name}: busy" in stderr for _, stderr, _ in results)


@pytest.mark.slow
def test_truncated_table_is_rebuilt_from_the_run_directories(two_launches, tiny_overrides, capsys):
    folder, _ = two_launches
    path = folder / contract.RUNS_TABLE
    original = pd.read_parquet(path).sort_values(contract.RUN_NAME).reset_index(drop=True)
    rebuilt = pd.DataFrame(runs_table.rebuilt_rows(folder)).sort_values(contract.RUN_NAME).reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt[original.columns], original, check_dtype=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert report.main([str(folder)]) == 2  # analysis says how to rebuild it
    assert "relaunch the sweep's command" in capsys.readouterr().err
    again = run_cli(["--multirun", *tiny_overrides, *SWEEP, f"results_root={folder.parent}"], timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("is unreadable") == 1 and again.stderr.count(": skipped") == 3, again.stderr[-3000:]
    table = pd.read_parquet(path).sort_values(contract.RUN_NAME).reset_index(drop=True)
    pd.testing.assert_frame_equal(table[original.columns], original, check_dtype=False)


# ---- 10: a full disk ----


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB filesystem: room for the run's config and a checkpoint or two (a real ENOSPC, not a mock)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_checkpoints_stay_intact(small_disk, tiny_overrides):
    run_dir = small_disk / "run"
    args = [f"run_dir={run_dir}", *tiny_overrides, *TINY_RUN]
    result = run_cli(args, timeout=300)
    errors = _error_lines(result.stderr)
    assert result.returncode == 74 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    others = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("error:")]
    assert all(line.startswith("warning: TensorBoard lost its last events") for line in others), result.stderr
    assert errors[0].startswith(f"error: disk full: writing {run_dir}") and " bytes and " in errors[0]
    saved = checkpoint.saved_steps(run_dir)
    assert saved and saved[-1] < 23
    for step in saved:  # every checkpoint that was written is whole
        checkpoint.load_model(run_dir, step)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    resumed = run_cli(args, timeout=300)
    assert resumed.returncode == 0 and f"from step {saved[-1]}" in resumed.stderr, resumed.stderr[-3000:]


# ---- 13: rows an outside table loses ----


def test_fit_that_cannot_run_says_which_rows_were_dropped_and_why(tmp_path, capsys):
    table = pd.DataFrame(
        {"N": [1e8, np.nan, 2e8, -4e8, 8e8], "D": [2e9, 4e9, np.nan, 8e9, 1.6e10], "loss": [3.1, 3.0, 2.9, 2.8, -2.7]}
    )
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert fit.main([str(tmp_path / "runs.csv"), "--n-boot", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dropped 4 rows of 5" in err
    assert "2 with a missing or infinite value, 2 with a value <= 0" in err
