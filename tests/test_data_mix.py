"""The training mix (scaling/data/mix.py): data.exclude removes documents from the training split alone, so the
validation split, the tokenizer and the evaluation windows stay byte-identical; bad patterns are one line, exit 2."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from scaling import contract
from scaling.config import DataConfig
from scaling.data.cache import INDEX_HASHES
from scaling.data.eval_set import run_eval_windows
from scaling.data.load import load_corpus, load_tokenizer
from scaling.data.mix import DOCUMENTS_FILE
from scaling.data.sources import is_validation, text_sources
from scaling.errors import ConfigError
from tests.helpers import run_in_process

EXCLUDE = ["json_*", "email_*"]


def tiny_data(corpus_dir: Path, cache_dir: Path, **fields) -> DataConfig:
    """The data config of conftest's tiny_overrides."""
    base = dict(name="text", path=f"{corpus_dir}/*.txt", vocab_size=300, val_fraction=0.3, eval_tokens=2048)
    return DataConfig(**{**base, "eval_max_doc_share": 0.1, "cache_dir": str(cache_dir), **fields})


def split_documents(tokens: np.ndarray, tokenizer) -> list[str]:
    """The texts of a split's documents (each ends with end-of-text, id 0)."""
    return [
        tokenizer.decode(doc[:-1].tolist())
        for doc in np.split(np.asarray(tokens), np.flatnonzero(tokens == 0) + 1)[:-1]
    ]


def test_the_filter_changes_the_training_split_alone(tiny_corpus_dir, cache_dir):
    whole_cfg = tiny_data(tiny_corpus_dir, cache_dir)
    whole = load_corpus(whole_cfg, progress=False)
    mixed = load_corpus(dataclasses.replace(whole_cfg, exclude=EXCLUDE), progress=False)
    # One prepared corpus: the same tokenizer file and validation tokens, so the same evaluation windows.
    assert mixed.tokenizer_path == whole.tokenizer_path
    assert mixed.meta[contract.TOKENIZER_HASH] == whole.meta[contract.TOKENIZER_HASH]
    assert np.asarray(mixed.val).tobytes() == np.asarray(whole.val).tobytes()
    windows = [run_eval_windows(whole_cfg, corpus.val, 0, 32, 8) for corpus in (whole, mixed)]
    assert windows[0].digest() == windows[1].digest()
    # The training split holds exactly the kept training documents, in order; the excluded ones are gone.
    _, sources = text_sources(whole_cfg.path)
    train = [s for s in sources if Path(s.path).read_text() and not is_validation(s.relpath, whole_cfg.val_fraction)]
    kept = [Path(s.path).read_text() for s in train if not s.relpath.startswith(("json_", "email_"))]
    tokenizer = load_tokenizer(mixed.tokenizer_path)
    assert split_documents(mixed.train, tokenizer) == kept and 0 < len(kept) < len(train)
    assert mixed.meta["n_train_docs"] == len(kept) and mixed.meta["n_excluded_docs"] == len(train) - len(kept)
    assert mixed.meta["n_train_tokens"] == len(mixed.train) < len(whole.train)
    # The run's corpus_hash names its training mix; the prepared corpus's is kept beside it.
    assert mixed.meta[contract.CORPUS_HASH] != whole.meta[contract.CORPUS_HASH]
    assert mixed.meta["prepared_corpus_hash"] == whole.meta[contract.CORPUS_HASH] and mixed.meta["exclude"] == EXCLUDE


def test_a_cache_prepared_before_the_index_is_rebuilt_to_the_same_tokens(tiny_corpus_dir, tmp_path):
    cfg = tiny_data(tiny_corpus_dir, tmp_path / "cache")
    original = load_corpus(cfg, progress=False)
    folder = Path(original.tokenizer_path).parent
    (folder / DOCUMENTS_FILE).unlink()
    meta = json.loads((folder / "meta.json").read_text())
    del meta[INDEX_HASHES]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert load_corpus(cfg, progress=False).meta[contract.CORPUS_HASH] == original.meta[contract.CORPUS_HASH]
    with pytest.warns(UserWarning, match="was prepared by an older version .*rebuilding it"):
        mixed = load_corpus(dataclasses.replace(cfg, exclude=EXCLUDE), progress=False)
    assert mixed.meta[contract.TOKENIZER_HASH] == original.meta[contract.TOKENIZER_HASH]
    assert np.asarray(mixed.val).tobytes() == np.asarray(original.val).tobytes()
    (folder / DOCUMENTS_FILE).write_text('{"keys": [], "ends": []}')  # damaged after preparation
    with pytest.warns(UserWarning, match=f"is damaged \\({DOCUMENTS_FILE} does not have the sha256"):
        rebuilt = load_corpus(dataclasses.replace(cfg, exclude=EXCLUDE), progress=False)
    assert rebuilt.meta[contract.CORPUS_HASH] == mixed.meta[contract.CORPUS_HASH] and rebuilt.meta["n_train_docs"] > 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[nothing/*]", "'nothing/*' matches none of the"),
        ("[*]", "['*'] leaves none of the"),
    ],
)
def test_a_bad_filter_is_one_line_and_exit_2(tmp_path, tiny_overrides, monkeypatch, capsys, value, message):
    args = [f"run_dir={tmp_path / 'run'}", *tiny_overrides, "train.tokens=4096", f"data.exclude={value}"]
    code, err = run_in_process(args, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: data.exclude: ") and message in err and "; " in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_token_file_has_no_documents_to_exclude(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    with pytest.raises(ConfigError, match="data.exclude: .*data=tokens has no documents"):
        load_corpus(DataConfig(name="tokens", path=str(path), vocab_size=1000, exclude=["a*"]), progress=False)


def test_runs_of_two_training_mixes_are_scored_on_one_task_set(tiny_overrides, tmp_path):
    """The tasks are cut from the held-out documents, which the filter leaves alone, so analysis.tasks scores a
    sweep of two mixes (corpus_hash differs) on one task set instead of refusing it as two corpora."""
    import pandas as pd

    from analysis import tasks as tasks_command
    from tests.helpers import run_cli

    sweep = [
        "sweep.name=mix",
        "run_dir=null",
        f"results_root={tmp_path}",
        "model.seq_len=64",
        "train.tokens=4096",
        "data.exclude=[],[json_*]",
    ]
    trained = run_cli(["--multirun", *tiny_overrides, *sweep], timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = tmp_path / "mix"
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    assert table[contract.CORPUS_HASH].nunique() == 2 and table[contract.EVAL_DIGEST].nunique() == 1
    assert tasks_command.main([str(folder), "--n", "8", "--final"]) == 0
    scored = pd.read_parquet(folder / "tasks.parquet")
    assert scored["run"].nunique() == 2
