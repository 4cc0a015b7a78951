"""The task suite: scores equal a float64 reference and greedy decoding, items are what each task says,
the set is fixed by its seed, the ladder recovers known truth, and the command is idempotent."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from tokenizers import Tokenizer

from analysis import measurements
from analysis import tasks as tasks_command
from analysis.abilities.build import CLOSERS, INDUCTION_PREFIX, MAX_ANSWER, build_suite
from analysis.abilities.documents import heldout_texts, tokenize
from analysis.abilities.emergence import above_chance
from analysis.abilities.score import SuiteScorer, candidate_logprobs, summarise
from analysis.abilities.suite import CHOICE, GENERATE, Item, Task
from analysis.abilities.two_step import Sigmoid, fit_sigmoid, two_step
from analysis.failures import InputError
from analysis.fits.lossmodel import predict_loss
from analysis.reporting.document import markers
from scaling.config import DataConfig, ModelConfig
from scaling.data.load import load_corpus
from scaling.model.decode import make_greedy_decoder
from scaling.model.transformer import build_model
from scaling.training.trainer import train
from tests.helpers import compose_config

VOCAB, P = 97, 12


def _model(variant: dict):
    # A large init makes the output depend on the prompt; at 0.02 a random model repeats one token.
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=32, compute_dtype="float32", init_std=0.5, **variant)
    return build_model(cfg, VOCAB, seed=3)


def _float64_logprobs(model, prompt: tuple[int, ...], cand: tuple[int, ...]) -> np.ndarray:
    """log p(cand[t] | prompt, cand[:t]) in float64 from the full forward pass over prompt + candidate."""
    tokens = np.asarray([prompt + cand[:-1]], np.int32)
    logits = np.asarray(model(tokens))[0, len(prompt) - 1 :].astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return logits[np.arange(len(cand)), cand] - logz


VARIANTS = [
    {},
    {"norm_position": "post", "position": "learned", "mlp": "swiglu", "norm": "layernorm", "tie_embeddings": False},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=["pre-ln-rope", "post-ln-learned-swiglu-untied"])
def test_cached_candidate_scores_equal_the_full_forward_pass_in_float64(variant):
    model = _model(variant)
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, VOCAB, (5, P)).astype(np.int32)
    cands = rng.integers(0, VOCAB, (5, 3, 4)).astype(np.int32)
    logp, _ = candidate_logprobs(model, jnp.asarray(prompts), jnp.asarray(cands))
    for i in range(5):
        for j in range(3):
            reference = _float64_logprobs(model, tuple(prompts[i]), tuple(cands[i, j]))
            np.testing.assert_allclose(np.asarray(logp)[i, j], reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=["pre-ln-rope", "post-ln-learned-swiglu-untied"])
def test_exact_match_by_teacher_forcing_equals_greedy_decoding(variant):
    """Half the answers are the model's own greedy output (exact match 1), half have one token changed (0)."""
    model = _model(variant)
    graphdef, state = nnx.split(model)
    prompts = np.random.default_rng(1).integers(0, VOCAB, (8, P)).astype(np.int32)
    greedy = np.asarray(make_greedy_decoder(graphdef, 5)(state, jnp.asarray(prompts)))
    answers = greedy.copy()
    answers[1::2, 2] = (answers[1::2, 2] + 1) % VOCAB  # wrong at the third token
    items = tuple(Item(tuple(p.tolist()), (tuple(a.tolist()),), 0, "") for p, a in zip(prompts, answers))
    task = Task("t", GENERATE, "", 0.0, items)
    scorer = SuiteScorer(graphdef, [task], VOCAB)
    logp, is_argmax = scorer._candidates(state, prompts, answers[:, None, :])
    np.testing.assert_array_equal(is_argmax[:, 0].all(axis=-1), (answers == greedy).all(axis=1))
    assert scorer.score(state)["t"]["exact_match"] == 0.5


def test_summary_metrics_by_hand():
    # 2 items, 3 candidates of lengths (2, 1, 2) (the 1.0s are padding); item 0's right answer (1) is the likeliest, item 1's (0) is not.
    logp = np.log(np.array([[[0.5, 0.5], [0.9, 1.0], [0.1, 0.1]], [[0.2, 0.5], [0.4, 1.0], [0.3, 0.9]]]))
    lengths = np.array([[2, 1, 2], [2, 1, 2]])
    argmax = np.ones_like(logp, bool)
    task = Task("c", CHOICE, "", 1 / 3, (Item((0,), ((0,),), 1, ""), Item((0,), ((0,),), 0, "")))
    out = summarise(task, logp, argmax, lengths, np.array([1, 0]))
    totals = np.array([[0.25, 0.9, 0.01], [0.1, 0.4, 0.27]])  # products of the valid probabilities
    probs = totals / totals.sum(axis=1, keepdims=True)
    assert out["accuracy"] == 0.5
    assert out["choice_prob"] == pytest.approx((probs[0, 1] + probs[1, 0]) / 2)
    assert out["answer_logprob"] == pytest.approx((np.log(0.9) + np.log(0.1) / 2) / 2)


def test_above_chance_needs_three_standard_errors():
    assert not above_chance(0.40, 1 / 3, 100)  # 1.4 standard errors
    assert above_chance(0.50, 1 / 3, 100)  # 3.5
    assert not above_chance(0.0, 0.0, 100) and above_chance(0.05, 0.0, 100)  # 5 of 100 right when chance is 0


# ---- tasks cut from the tiny corpus ----


@pytest.fixture(scope="module")
def suite(tiny_corpus_dir, cache_dir):
    cfg = DataConfig(
        name="text", path=f"{tiny_corpus_dir}/*.txt", vocab_size=300, val_fraction=0.2, cache_dir=str(cache_dir)
    )
    tokenizer = Tokenizer.from_file(load_corpus(cfg, progress=False).tokenizer_path)
    texts = heldout_texts(cfg)
    docs = tokenize(texts, tokenizer)
    return texts, docs, tokenizer, build_suite(docs, tokenizer, 48, 30, seed=0)


def test_items_are_cut_from_held_out_text_in_its_own_tokenization(suite):
    texts, _, tokenizer, tasks = suite
    corpus = "\n".join(text for _, text in texts)
    for task in tasks:
        assert len(task.items) >= 20, task.name
        for item in task.items:
            assert len(item.prompt) == 48 and all(len(c) <= MAX_ANSWER for c in item.choices)
            if task.name != "induction":  # induction appends a repeat; the others are document text as is
                assert tokenizer.decode(list(item.prompt + item.choices[item.answer])) in corpus


def test_each_task_holds_what_it_says(suite):
    _, _, tokenizer, tasks = suite
    by_name = {task.name: task for task in tasks}
    closers = by_name["close_bracket"]
    assert np.bincount([item.answer for item in closers.items]).tolist() == [len(closers.items) // 3] * 3
    for item in closers.items:  # the innermost bracket open at the prompt's end is the answer's opener
        stack = []
        for char in tokenizer.decode(list(item.prompt)):
            if char in "([{":
                stack.append(char)
            elif char in CLOSERS:
                stack = stack[:-1] if stack and stack[-1] == CLOSERS[char] else []
        assert stack[-1] == CLOSERS[list(CLOSERS)[item.answer]]
    for item in by_name["induction"].items:  # the cue occurs once before it, followed by the answer
        prompt, answer = list(item.prompt), list(item.choices[0])
        cue, body = prompt[-INDUCTION_PREFIX:], prompt[:-INDUCTION_PREFIX]
        at = [i for i in range(len(body) - INDUCTION_PREFIX + 1) if body[i : i + INDUCTION_PREFIX] == cue]
        assert len(at) == 1 and body[at[0] + INDUCTION_PREFIX : at[0] + INDUCTION_PREFIX + len(answer)] == answer
    for item in by_name["recall_identifier"].items:  # the name was defined inside the prompt
        assert item.text.strip() in tokenizer.decode(list(item.prompt))
    for item in by_name["next_line"].items:  # four different lines of one token count, each after a newline
        assert len(set(item.choices)) == 4 and len({len(c) for c in item.choices}) == 1
        assert all(tokenizer.decode(list(c)).startswith("\n") for c in item.choices)


def test_the_set_is_fixed_by_its_seed(suite):
    _, docs, tokenizer, tasks = suite
    again = build_suite(docs, tokenizer, 48, 30, seed=0)
    other = build_suite(docs, tokenizer, 48, 30, seed=1)
    assert [t.hash for t in again] == [t.hash for t in tasks]
    assert all(a.hash != b.hash for a, b in zip(tasks, other))


def test_token_pipeline_is_refused_in_one_line():
    with pytest.raises(InputError, match="data=pystdlib or data=text"):
        heldout_texts(DataConfig(name="tokens", path="x.bin"))


# ---- the two-step ladder on synthetic data with known truth ----


def test_sigmoid_fit_recovers_known_parameters():
    truth = Sigmoid(a=0.6, b=0.25, k=3.0, L0=2.0)
    loss = np.linspace(0.5, 4.0, 30)
    fit = fit_sigmoid(loss, truth(loss))
    np.testing.assert_allclose([fit.a, fit.b, fit.k, fit.L0], [0.6, 0.25, 3.0, 2.0], rtol=1e-3)


def test_two_step_prediction_recovers_the_largest_model_from_exact_laws():
    law = {"E": 1.0, "A": 50.0, "B": 80.0, "alpha": 0.4, "beta": 0.35}
    sigmoid = Sigmoid(a=0.7, b=0.25, k=2.5, L0=2.5)
    rows = []
    for n in (1e4, 3e4, 1e5, 1e6):
        for d in np.geomspace(1e5, 1e7, 8):
            loss = float(predict_loss(n, d, **law))
            rows.append(
                {"run": f"n{n:g}", "N": n, "D": d, "final": d == 1e7, "loss": loss, "value": float(sigmoid(loss))}
            )
    prediction = two_step(pd.DataFrame(rows))
    assert prediction.target == "n1e+06"
    assert prediction.predicted_loss == pytest.approx(prediction.actual_loss, rel=1e-3)
    assert abs(prediction.error) < 1e-3


# ---- the command on a trained run ----


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("tasks") / "run"
    train(compose_config([*tiny_overrides, "model.seq_len=64", "train.tokens=8192", f"run_dir={run_dir}"]))
    (run_dir / "report.md").write_text("# Run\n\n<!-- probe:start -->\nprobes\n<!-- probe:end -->\n\nnotes by hand\n")
    args = [str(run_dir), "--n", "12"]
    assert tasks_command.main(args) == 0
    return run_dir, args, pd.read_parquet(run_dir / "tasks.parquet")


def test_every_checkpoint_task_and_metric_has_a_row(scored):
    run_dir, _, table = scored
    assert list(table.columns) == ["run", "step", "tokens", "flops", "params", "task", "metric", "value", "n"]
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    assert sorted(table.step.unique()) == steps
    per_step = table.groupby("step").size()
    assert (per_step == 10).all()  # 2 choice tasks x 3 metrics + 2 generation tasks x 2
    np.testing.assert_allclose(table.flops, table.tokens * table.flops.max() / table.tokens.max())  # 6N per token
    assert set(table.attrs["task_settings"]["tasks"]) == {
        "close_bracket",
        "induction",
        "recall_identifier",
        "next_line",
    }


@pytest.mark.slow
def test_rerun_scores_nothing_new_and_restores_missing_rows(scored, monkeypatch):
    run_dir, args, table = scored

    def no_loading(*args, **kwargs):
        pytest.fail("a re-run with every checkpoint scored must load no model")

    monkeypatch.setattr(measurements, "load_model", no_loading)
    assert tasks_command.main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tasks.parquet"), table)
    monkeypatch.undo()
    pruned = table[table.step != table.step.max()]
    pruned.attrs = table.attrs
    pruned.to_parquet(run_dir / "tasks.parquet")
    assert tasks_command.main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tasks.parquet"), table)


def test_other_settings_are_refused_in_one_line_and_change_nothing(scored, capsys):
    run_dir, args, table = scored
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    for argv in ([*args, "--seed", "1"], [*args, "--context", "999"], [str(run_dir / "missing")]):
        assert tasks_command.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_report_section_and_figure(scored):
    run_dir, _, _ = scored
    report = (run_dir / "report.md").read_text()
    start, end = markers("tasks")
    assert report.startswith("# Run\n\n<!-- probe:start -->\nprobes\n<!-- probe:end -->\n\n" + start)
    assert report.endswith("notes by hand\n") and report.count(start) == 1
    assert (run_dir / "figures" / "tasks_emergence.png").stat().st_size > 10_000
    assert "| close_bracket |" in report and "(figures/tasks_emergence.png)" in report
