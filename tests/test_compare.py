"""python -m analysis.compare and the report's comparison section, on synthetic sweep folders and tables; bad input
is one line and exit 2."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.compare import main
from analysis.fits.lossmodel import LossParams
from analysis.fits.synthetic import scaled_law, training_curves, variant_runs
from analysis.report import main as report_main
from scaling import contract
from scaling.data.mix import excluded
from scaling.data.sources import stdlib_sources
from tests.helpers import REPO, run_cli, write_sweep

REFERENCE = LossParams(E=1.8, A=40.0, B=120.0, alpha=0.35, beta=0.33)
BETTER = scaled_law(REFERENCE, 2.0, 1.0)  # a multiplier of 2 at every budget
BUDGETS = np.array([5e10, 1e11, 2e11, 4e11])
CORPUS, TOKENIZER = "c" * 64, "t" * 64


def pair(noise: float = 0.003) -> pd.DataFrame:
    return variant_runs([REFERENCE, BETTER], BUDGETS, sizes=3, span_decades=0.3, noise=noise, seed=2)


def sweep(folder, runs: pd.DataFrame, eval_tokens: int = 8192, **columns) -> str:
    """A sweep folder in the training side's format, with the corpus fields and each run's config.yaml."""
    runs = runs.reset_index(drop=True)
    write_sweep(folder, runs, training_curves(REFERENCE, runs, evals=3))
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    table = table.assign(**{"corpus_hash": CORPUS, "tokenizer_hash": TOKENIZER, **columns})
    table.to_parquet(folder / contract.RUNS_TABLE)
    for run_dir in table[contract.RUN_DIR]:
        config = {"config": {"data": {"eval_tokens": eval_tokens, "val_fraction": 0.01}}}
        (folder / run_dir / contract.CONFIG_FILE).write_text(yaml.safe_dump(config))
    return str(folder)


def one_sweep(tmp_path, column: str = "swept.model.norm_position", values=("pre", "post")) -> str:
    runs = pair()
    runs = runs.assign(run=[f"{r},{values[v]}" for r, v in zip(runs["run"], runs["variant"])])
    return sweep(tmp_path / "study", runs, **{column: np.array(values)[runs["variant"]]})


def run_json(argv, capsys) -> dict:
    assert main([*argv, "--n-boot", "40", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_sweeps_give_each_variant_a_multiplier_per_budget(tmp_path, capsys):
    runs = pair()
    a = sweep(tmp_path / "pre_ln", runs[runs["variant"] == 0])
    b = sweep(tmp_path / "post_ln", runs[runs["variant"] == 1])
    out = run_json([a, b, "--budgets", "4e12"], capsys)
    assert out["reference"] == "pre_ln" and out["shared_e"] is True
    rows = out["variants"]["post_ln"]["multiplier"]
    assert [row["C"] for row in rows] == [*BUDGETS, 4e12] and [row["fitted"] for row in rows] == [True] * 4 + [False]
    for row in rows[:4]:
        assert row["low"] <= row["point"] <= row["high"] and row["point"] == pytest.approx(2.0, rel=0.1)
    assert "post_ln is worth" in out["variants"]["post_ln"]["verdict"]


def test_one_sweep_with_a_swept_switch_is_split_by_it(tmp_path, capsys):
    folder = one_sweep(tmp_path)
    (tmp_path / "study" / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"sweeper": {"params": {"model.norm_position": "pre,post"}}}})
    )
    found = run_json([folder], capsys)  # the swept column found, the reference the value listed first
    assert found["labels"] == ["pre", "post"]
    named = run_json([folder, "--by", "model.norm_position", "--reference", "post", "--free-e"], capsys)
    assert named["labels"] == ["post", "pre"] and named["shared_e"] is False
    assert named["variants"]["pre"]["multiplier"][0]["point"] == pytest.approx(0.5, rel=0.15)


def test_an_outside_table_with_a_variant_column(tmp_path, capsys):
    runs = pair().assign(variant=lambda r: np.where(r["variant"] == 0, "baseline", "new"))
    runs = runs.rename(columns={"N": "params", "loss": "val_loss"})
    runs[["params", "D", "val_loss", "budget", "variant"]].to_csv(tmp_path / "runs.csv", index=False)
    argv = [str(tmp_path / "runs.csv"), "--n-col", "params", "--loss-col", "val_loss", "--budget-col", "budget"]
    out = run_json([*argv, "--by", "variant"], capsys)
    assert out["labels"] == ["baseline", "new"]
    assert out["variants"]["new"]["multiplier"][-1]["point"] == pytest.approx(2.0, rel=0.1)
    assert any("not checked" in note for note in out["notes"])


def test_text_output_states_the_numbers_and_a_verdict(tmp_path, capsys):
    assert main([one_sweep(tmp_path), "--n-boot", "40"]) == 0
    text = capsys.readouterr().out
    assert "compute multiplier" in text and "exponent difference" in text and "crossover" in text
    assert "Adopt" in text or "Keep" in text or "No measurable difference" in text


def _bad(argv, capsys) -> str:
    assert main([*argv, "--n-boot", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus_hash": "d" * 64}, "corpus_hash differs"),
        ({"tokenizer_hash": "u" * 64}, "tokenizer_hash differs"),
        ({"vocab_size": 50304}, "vocab_size differs"),
        ({"eval_tokens": 4096}, "eval_set differs"),
    ],
)
def test_runs_that_do_not_compare_are_refused(tmp_path, capsys, change, message):
    runs = pair()
    a = sweep(tmp_path / "a", runs[runs["variant"] == 0])
    eval_tokens = change.pop("eval_tokens", 8192)
    b = sweep(tmp_path / "b", runs[runs["variant"] == 1], eval_tokens=eval_tokens, **change)
    err = _bad([a, b], capsys)
    assert message in err and str(tmp_path / "a") in err and str(tmp_path / "b") in err


def test_an_explicit_eval_set_version_must_agree(tmp_path, capsys):
    runs = pair()
    a = sweep(tmp_path / "a", runs[runs["variant"] == 0], eval_set="v1")
    b = sweep(tmp_path / "b", runs[runs["variant"] == 1], eval_set="v2")
    assert "eval_set differs" in _bad([a, b], capsys) and "has v1" in _bad([a, b], capsys)


def test_runs_of_two_training_mixes_compare_when_they_share_the_evaluation_windows(tmp_path, capsys):
    """A data change (data.exclude): corpus_hash differs, eval_digest and tokenizer agree, so the runs compare."""
    runs = pair()
    a = sweep(tmp_path / "a", runs[runs["variant"] == 0], eval_set="documents", eval_digest="e" * 16)
    b = sweep(
        tmp_path / "b", runs[runs["variant"] == 1], eval_set="documents", eval_digest="e" * 16, corpus_hash="d" * 64
    )
    out = run_json([a, b], capsys)
    assert out["labels"] == ["a", "b"] and any("2 different training sets" in note for note in out["notes"])


def test_runs_scored_on_other_evaluation_windows_are_refused_whatever_their_corpus(tmp_path, capsys):
    runs = pair()
    a = sweep(tmp_path / "a", runs[runs["variant"] == 0], eval_set="documents", eval_digest="e" * 16)
    for corpus in (CORPUS, "d" * 64):
        b = sweep(
            tmp_path / "b", runs[runs["variant"] == 1], eval_set="documents", eval_digest="f" * 16, corpus_hash=corpus
        )
        err = _bad([a, b], capsys)
        assert f"eval_digest differs: {a} (variant a" in err and "has eeee" in err and "has ffff" in err
        assert "data.exclude" in err  # the fix names the way to a data change that keeps the windows
    missing = sweep(tmp_path / "old", runs[runs["variant"] == 1], corpus_hash="d" * 64)  # recorded no digest
    assert "corpus_hash differs" in _bad([a, missing], capsys)


def test_inputs_that_cannot_be_compared_are_refused(tmp_path, capsys):
    runs = pair()
    a = sweep(tmp_path / "a", runs[runs["variant"] == 0])
    one_budget = runs[(runs["variant"] == 1) & (runs["budget"] == BUDGETS[0])]
    b = sweep(tmp_path / "b", one_budget)
    assert "variant b: runs at 1 budget(s)" in _bad([a, b], capsys)
    failed = sweep(tmp_path / "failed", runs[runs["variant"] == 1])
    table = pd.read_parquet(tmp_path / "failed" / contract.RUNS_TABLE).assign(status=contract.FAILED)
    table.to_parquet(tmp_path / "failed" / contract.RUNS_TABLE)
    assert "no completed runs (12 failed)" in _bad([a, failed], capsys)
    assert "has no runs.parquet" in _bad([a, str(tmp_path)], capsys)
    assert "--by model.mlp: " in _bad([one_sweep(tmp_path), "--by", "model.mlp"], capsys)
    assert "--reference gelu: no such variant" in _bad([one_sweep(tmp_path), "--reference", "gelu"], capsys)
    assert "no swept column" in _bad([a], capsys)


def test_report_of_a_sweep_with_a_swept_switch_compares_its_variants(tmp_path, capsys):
    folder = one_sweep(tmp_path, "swept.model.mlp", ("gelu", "swiglu"))
    assert report_main([folder, "--n-boot", "40"]) == 0
    report = (tmp_path / "study" / contract.REPORT_FILE).read_text()
    assert "# Variants compared across scale" in report and "**swiglu against gelu.**" in report
    assert (tmp_path / "study" / contract.FIGURES_DIR / "compare_variants.png").stat().st_size > 10_000
    assert "<!-- fit:start -->" not in report  # one law fitted to runs of two variants would mislead


def test_the_recipe_sweeps_one_switch_on_the_variant_ladder():
    """sweep=mlp is the variant ladder plus one swept key: a copy with another key is a new study."""
    recipe = yaml.safe_load((REPO / "sweeps/sweep/mlp.yaml").read_text())
    study = yaml.safe_load((REPO / "sweeps/sweep/norm_position.yaml").read_text())
    assert recipe["defaults"] == study["defaults"] == ["/sweep/variant_ladder"]
    assert recipe["hydra"]["sweeper"]["params"] == {"model.mlp": "gelu,swiglu"}
    assert study["hydra"]["sweeper"]["params"] == {"model.norm_position": "pre,post"}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 12 runs: about 2 minutes on 2 idle cores
def test_the_recipe_runs_on_the_tiny_sweep_with_a_swept_switch(tmp_path, capsys):
    """The recipe's sweep on the tiny sweep's grid (2 budgets x 3 sizes), trained for real, then compared."""
    table = trained_recipe(tmp_path, "mlp", ["train.flops=4e10,8e10", "sweep.point=-1,0,1", "data.eval_tokens=8192"])
    # SwiGLU's MLP counts parameters differently, so a rung may fall below the family's smallest model.
    per_variant = table.groupby("swept.model.mlp").agg(runs=("budget", "size"), budgets=("budget", "nunique"))
    assert list(per_variant.index) == ["gelu", "swiglu"] and (per_variant["budgets"] == 2).all()
    assert (per_variant["runs"] >= 5).all()
    compared_recipe(tmp_path / "mlp", ("gelu", "swiglu"), capsys)


def trained_recipe(tmp_path, name: str, overrides: list[str]) -> pd.DataFrame:
    """A recipe's sweep trained for real under `tmp_path`: its runs table, every run completed."""
    trained = run_cli(["--multirun", f"sweep={name}", f"results_root={tmp_path}", *overrides], timeout=1800)
    assert trained.returncode == 0, trained.stderr[-3000:]
    table = pd.read_parquet(tmp_path / name / contract.RUNS_TABLE)
    assert (table["status"] == contract.COMPLETED).all()
    return table


def compared_recipe(folder, labels: tuple[str, str], capsys) -> tuple[str, dict]:
    """The report and compare's JSON of a trained recipe, checked to compare `labels` (the reference first)."""
    assert report_main([str(folder), "--n-boot", "100"]) == 0
    report = (folder / contract.REPORT_FILE).read_text()
    assert f"**{labels[1]} against {labels[0]}.**" in report and "compute multiplier" in report
    capsys.readouterr()  # the report's own lines (where it wrote)
    out = run_json([str(folder)], capsys)
    assert out["labels"] == list(labels) and len(out["variants"][labels[1]]["multiplier"]) == 4
    return report, out


def test_the_data_recipe_sweeps_the_training_filter_on_the_variant_ladder():
    """sweep=data_mix is the variant ladder plus one swept data.exclude, whose pattern leaves out the standard
    library's test suite (and only part of the library)."""
    recipe = yaml.safe_load((REPO / "sweeps/sweep/data_mix.yaml").read_text())
    assert recipe["defaults"] == ["/sweep/variant_ladder"] and recipe["sweep"]["name"] == "data_mix"
    assert recipe["hydra"]["sweeper"]["params"] == {"data.exclude": "[],[test/*]"}
    dropped = excluded([source.relpath for source in stdlib_sources()[1]], ["test/*"])
    assert 0 < dropped.sum() < len(dropped)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 12 runs on the tiny corpus: about 2 minutes on 2 cores
def test_the_data_recipe_runs_on_the_tiny_sweep(tmp_path, tiny_overrides, capsys):
    """The data recipe on the tiny corpus (2 budgets x 3 sizes, small enough that no run repeats data), its filter
    leaving out one of its packages: both variants are scored on the same windows, and compared."""
    data = [override for override in tiny_overrides if override.startswith(("data=", "data."))]
    grid = ["train.flops=3e10,6e10", "sweep.point=0,1,2", "data.exclude=[],[json_*]"]
    table = trained_recipe(tmp_path, "data_mix", [*data, *grid])
    assert table["eval_digest"].nunique() == 1 and table["corpus_hash"].nunique() == 2
    per_variant = table.groupby("swept.data.exclude").agg(runs=("budget", "size"), corpora=("corpus_hash", "nunique"))
    assert list(per_variant.index) == ["[]", "[json_*]"] and (per_variant["runs"] == 6).all()
    assert (per_variant["corpora"] == 1).all()
    report, out = compared_recipe(tmp_path / "data_mix", ("[]", "[json_*]"), capsys)
    assert "2 different training sets (corpus_hash)" in report
    assert any("2 different training sets" in note for note in out["notes"])


def test_a_multiplier_outside_its_own_interval_is_warned_and_drawn():
    """The slow recipe test found a multiplier of 2.07x with an interval up to 1.97x: error bars about the point
    cannot draw that (matplotlib refuses negative ones), and a table must not let it pass for a clean result."""
    from analysis.fits.variant_comparison import Estimate, Gap, _off_interval

    table = pd.DataFrame(
        {
            "C": [4e10, 8e10, 3.2e11],
            "fitted": [True, True, False],
            "point": [1.5, 2.067, 5.0],
            "low": [1.2, 1.4, 6.0],  # the unfitted budget is outside too, but is not a budget trained
            "high": [1.8, 1.973, 9.0],
        }
    )
    gap = Gap("swiglu", table, Estimate(0.0, -0.1, 0.1), Estimate(np.inf, np.inf, np.inf))
    warnings = _off_interval([gap])
    assert len(warnings) == 1 and "8e10 FLOPs, 2.07x" in warnings[0] and "[1.4, 1.97]" in warnings[0]
    inside = table.assign(high=[1.8, 2.2, 9.0])
    assert _off_interval([Gap("swiglu", inside, gap.exponent_difference, gap.crossover_log10)]) == []


def test_the_figure_draws_a_point_outside_its_interval(tmp_path, capsys, monkeypatch):
    """The whole report, with a comparison whose first fitted multiplier is pushed above its interval."""
    import analysis.fits.variant_comparison as vc

    real = vc._gap

    def skewed(*args, **kwargs):
        gap = real(*args, **kwargs)
        first = gap.multiplier.index[gap.multiplier["fitted"]][0]
        gap.multiplier.loc[first, "point"] = gap.multiplier.loc[first, "high"] * 1.1
        return gap

    monkeypatch.setattr(vc, "_gap", skewed)
    folder = one_sweep(tmp_path, "swept.model.mlp", ("gelu", "swiglu"))
    assert report_main([folder, "--n-boot", "40"]) == 0
    report = (tmp_path / "study" / contract.REPORT_FILE).read_text()
    assert "lies outside its own interval" in report
    assert (tmp_path / "study" / contract.FIGURES_DIR / "compare_variants.png").stat().st_size > 10_000
