"""The run directory's file-safety rule and its damaged files (issue 25).

A run trains only into a new or empty folder or a run directory of ours, `overwrite=true` deletes only the
entries the run's manifest lists, and a damaged config.yaml, summary.json or metrics.parquet is named in one
line: rebuilt when it can be (summary.json), refused with the fix when it cannot."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from scaling import contract
from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.errors import ConfigError
from scaling.training import ownership, rundir
from scaling.training.checkpoint import saved_steps
from scaling.training.trainer import train
from tests.helpers import compose_config, run_in_process, tree_digest

RUN = ["train.tokens=6000", "train.log_every=5"]  # 23 steps: checkpoints 0, 1, 2, 4, 8, 16, 23


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_overrides) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert train(compose_config([f"run_dir={run_dir}", *tiny_overrides, *RUN]))["status"] == "completed"
    return run_dir


def _users_folder(folder: Path) -> Path:
    """A folder of someone else's files under the names a run writes."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("mine: 1\n")
    (folder / "summary.json").write_text('{"mine": 1}\n')
    (folder / "checkpoints" / "m.pt").write_bytes(b"weights")
    return folder


# ---- the file-safety rule ----


@pytest.mark.parametrize("overwrite", [[], ["overwrite=true"]])
def test_empty_run_dir_is_refused_and_nothing_is_written_in_the_current_folder(
    tiny_overrides, tmp_path, monkeypatch, capsys, overwrite
):
    _users_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = tree_digest(tmp_path)
    code, stderr = run_in_process(["run_dir=''", *tiny_overrides, *RUN, *overwrite], monkeypatch, capsys)
    assert code == 2 and _errors(stderr) == [line for line in stderr.splitlines() if line], stderr
    assert "run_dir" in stderr and "current" in stderr
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("overwrite", [[], ["overwrite=true"]])
def test_a_folder_of_someone_elses_files_is_refused_and_left_as_it_was(
    tiny_overrides, tmp_path, monkeypatch, capsys, overwrite
):
    folder = _users_folder(tmp_path / "theirs")
    before = tree_digest(folder)
    code, stderr = run_in_process([f"run_dir={folder}", *tiny_overrides, *RUN, *overwrite], monkeypatch, capsys)
    assert code == 2 and len(_errors(stderr)) == 1 and "Traceback" not in stderr
    assert "not a run of ours" in stderr and "config.yaml" in stderr and "new or empty folder" in stderr
    assert tree_digest(folder) == before


def test_overwrite_deletes_what_the_manifest_lists_and_nothing_else(trained, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    manifest = json.loads((run_dir / contract.RUN_MANIFEST).read_text())
    assert set(manifest["entries"]) == set(ownership.OWN_ENTRIES)
    (run_dir / "notes.txt").write_text("my notes")  # a person's file in the run's folder
    (run_dir / "analysis").mkdir()
    (run_dir / "checkpoints" / "best.txt").write_text("step 16")  # and one among its checkpoints
    # A manifest edited to list more than a run writes deletes no more: only the run's own names count.
    manifest["entries"] += ["notes.txt", "analysis", "..", "/"]
    (run_dir / contract.RUN_MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="overwrite=true kept what the run did not write: .*best.txt"):
        ownership.clear(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["notes.txt", "analysis", "checkpoints", contract.RUN_MANIFEST, contract.RUN_LOCK]
    )
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["best.txt"]
    cfg = compose_config([f"run_dir={run_dir}", *tiny_overrides, *RUN, "overwrite=true"])
    assert train(cfg)["status"] == "completed" and (run_dir / "notes.txt").read_text() == "my notes"
    assert (run_dir / "checkpoints" / "best.txt").read_text() == "step 16"


def test_a_run_made_before_manifests_is_relaunched_but_never_overwritten(trained, tiny_overrides, tmp_path):
    run_dir = tmp_path / "earlier"
    shutil.copytree(trained, run_dir)
    (run_dir / contract.RUN_MANIFEST).unlink()
    before = tree_digest(run_dir)
    ownership.check_run_dir(str(run_dir), overwrite=False)  # ours by its config.yaml: relaunching is fine
    assert train(compose_config([f"run_dir={run_dir}", *tiny_overrides, *RUN]))["status"] == "completed"
    with pytest.raises(ConfigError, match="overwrite: .* nothing proves which of its files"):
        ownership.check_run_dir(str(run_dir), overwrite=True)
    assert tree_digest(run_dir) == before


def test_new_empty_and_own_folders_are_accepted(trained, tmp_path):
    ownership.check_run_dir(str(tmp_path / "new" / "run"), overwrite=True)
    (tmp_path / "empty").mkdir()
    ownership.check_run_dir(str(tmp_path / "empty"), overwrite=True)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / contract.RUN_LOCK).write_text("")  # a first launch that died after its lock
    ownership.check_run_dir(str(tmp_path / "locked"), overwrite=False)
    ownership.check_run_dir(str(trained), overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="run_dir: cannot write"):
        ownership.check_run_dir(str(tmp_path / "file"), overwrite=False)
    with pytest.raises(ConfigError, match="run_dir: '~/runs/a' starts with ~"):
        ownership.check_run_dir("~/runs/a", overwrite=False)


# ---- damaged files of a run directory ----


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_summary_is_rebuilt_from_the_final_checkpoint(trained, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    original = json.loads((run_dir / contract.SUMMARY_FILE).read_text())
    _truncate(run_dir / contract.SUMMARY_FILE)
    with pytest.warns(UserWarning, match=f"{run_dir / contract.SUMMARY_FILE} is unreadable .* relaunching rebuilds it"):
        summary = train(compose_config([f"run_dir={run_dir}", *tiny_overrides, *RUN]))
    rebuilt = json.loads((run_dir / contract.SUMMARY_FILE).read_text())
    for key in ("status", "params_digest", "final_eval_loss", "final_train_loss", "steps_done", "clipped_fraction"):
        assert rebuilt[key] == original[key] == summary[key], key


@pytest.mark.parametrize("cut", ["parse error", "clean cut"])
def test_truncated_config_is_named_in_one_line_and_nothing_changes(
    trained, tiny_overrides, tmp_path, monkeypatch, capsys, cut
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    path = run_dir / contract.CONFIG_FILE
    text = path.read_text()
    # A cut inside a value fails to parse; a cut at a line end still parses, as a shorter mapping.
    path.write_text(text[:100] if cut == "parse error" else text[: text.index("\nderived:") + 1])
    before = tree_digest(run_dir)
    code, stderr = run_in_process([f"run_dir={run_dir}", *tiny_overrides, *RUN], monkeypatch, capsys)
    assert code == 2 and len(_errors(stderr)) == 1 and "Traceback" not in stderr, stderr
    assert _errors(stderr)[0].startswith(f"error: {path}: unreadable") and "overwrite=true" in stderr
    assert tree_digest(run_dir) == before
    code, stderr = run_in_process([f"run_dir={run_dir}", *tiny_overrides, *RUN, "overwrite=true"], monkeypatch, capsys)
    assert code == 0 and stderr.splitlines()[-1].startswith("completed:"), stderr  # the fix it names works


def test_metrics_table_that_a_resume_needs_is_named_when_damaged(
    trained, tiny_overrides, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / contract.SUMMARY_FILE).unlink()  # an interrupted run: the relaunch resumes from step 23
    _truncate(run_dir / contract.METRICS_FILE, 300)
    code, stderr = run_in_process([f"run_dir={run_dir}", *tiny_overrides, *RUN], monkeypatch, capsys)
    assert code == 2 and len(_errors(stderr)) == 1 and "Traceback" not in stderr, stderr
    assert _errors(stderr)[0].startswith(f"error: {run_dir / contract.METRICS_FILE}: unreadable")
    assert "overwrite=true" in stderr and saved_steps(run_dir)[-1] == 23  # nothing was moved or deleted


def test_a_run_made_before_per_family_centres_is_the_same_configuration(tmp_path):
    """A sweep's runs recorded before `sweep.family_tokens_per_param` existed hold no such key; they were
    centred on the one tokens_per_param for every family, which is what the field's default ({}) means. So a
    relaunch (a sweep grown to more seeds) takes them as its own, and a centre given now is still refused."""
    current = {contract.CONFIG_SECTION: dataclasses.asdict(compose_config([f"run_dir={tmp_path}"]))}
    old = json.loads(json.dumps(current))
    del old[contract.CONFIG_SECTION]["sweep"]["family_tokens_per_param"]
    assert rundir.config_differences(old, current) == []
    centred = {
        contract.CONFIG_SECTION: dataclasses.asdict(
            compose_config([f"run_dir={tmp_path}", "+sweep.family_tokens_per_param.decoder=25"])
        )
    }
    assert rundir.config_differences(old, centred) == ["sweep.family_tokens_per_param.decoder"]


def test_every_new_config_field_says_what_older_runs_used():
    """A relaunch compares the stored config.yaml with the launch's, field by field (rundir.config_differences),
    so a field added after runs exist must say what those runs used (ADDED_FIELDS) or that it never changes a
    run (VOLATILE_FIELDS). Otherwise every earlier run is refused as 'another configuration' (as happened with
    sweep.family_tokens_per_param), and a sweep can no longer be resumed or grown."""
    lines = (Path(__file__).parent / "data" / "config_fields.txt").read_text().splitlines()
    known = {line for line in lines if line and not line.startswith("#")}
    # The names the relaunch check compares: config.yaml's config section, flattened as it flattens it.
    recorded = {name for name in rundir._flatten(dataclasses.asdict(RunConfig())) if not rundir._volatile(name)}
    unexplained = sorted(recorded - known - set(rundir.ADDED_FIELDS))
    assert not unexplained, (
        f"config fields new since tests/data/config_fields.txt: {unexplained}; give each the value runs recorded "
        "before it implied in scaling/training/rundir.py ADDED_FIELDS (or add it to VOLATILE_FIELDS)"
    )
    assert not known & set(rundir.ADDED_FIELDS)  # (a field is either original or added, not both)


def test_the_stages_after_a_grid_never_make_its_runs_another_configuration():
    """A sweep given a held-out run or reach runs after its grid trained relaunches onto the same grid runs:
    neither field changes what a grid run trains. A run's own stretch does."""
    stored = {contract.CONFIG_SECTION: dataclasses.asdict(RunConfig())}
    for field, value in (("holdout_factor", 4.0), ("reach", 2.0), ("stretch", 2.0)):
        launched = {contract.CONFIG_SECTION: dataclasses.asdict(cfg_replace(RunConfig(), sweep={field: value}))}
        expected = [f"sweep.{field}"] if field == "stretch" else []
        assert rundir.config_differences(stored, launched) == expected
