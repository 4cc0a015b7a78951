"""Corpus preparation: exact tokenizer round trip, stable split, cache reuse under concurrency, token files."""

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from scaling.config import DataConfig
from scaling.data import load
from scaling.data.load import load_corpus, load_tokenizer
from scaling.data.prepare import EOT
from scaling.data.sources import is_validation, stdlib_sources, text_sources
from scaling.errors import ConfigError

UNICODE = "naïve café — 日本語 🐍 ünïcödé\n\tTabs,  two spaces,\r\nCRLF and a trailing space \n"


def make_text_corpus(folder: Path, n_files: int = 40) -> str:
    """Small real Python files from the standard library, two folders deep, plus one unicode file."""
    _, sources = stdlib_sources()
    small = [source for source in sources if 1000 < source.size < 6000][:n_files]
    for i, source in enumerate(small):
        target = folder / ("sub" if i % 2 else "") / source.relpath.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.path, target)
    (folder / "unicode.txt").write_text(UNICODE, encoding="utf-8", newline="")
    return str(folder / "**" / "*")


def text_config(tmp_path: Path, **overrides) -> DataConfig:
    fields = dict(name="text", vocab_size=300, val_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    return DataConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A prepared small text corpus, shared by the read-only tests."""
    tmp_path = tmp_path_factory.mktemp("small")
    cfg = text_config(tmp_path, path=make_text_corpus(tmp_path / "src"))
    return cfg, load_corpus(cfg, progress=False)


def test_tokenizer_round_trip(small):
    _, prepared = small
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.get_vocab_size() == 300 and tokenizer.token_to_id(EOT) == 0
    _, sources = stdlib_sources()
    snippets = [
        Path(s.path).read_bytes().decode()[:3000] for s in sources if s.relpath in ("abc.py", "json/decoder.py")
    ]
    for text in snippets + [UNICODE, "", "\x00\x7f\U0010ffff"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_splits_are_the_documents_joined_by_end_of_text(small):
    cfg, prepared = small
    root, sources = text_sources(cfg.path)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    texts = {"train": [], "val": []}
    for source in sources:
        texts["val" if is_validation(source.relpath, cfg.val_fraction) else "train"].append(
            Path(source.path).read_bytes().decode()
        )
    for split, tokens in (("train", prepared.train), ("val", prepared.val)):
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16 and tokens[-1] == 0
        documents = np.split(np.asarray(tokens), np.flatnonzero(tokens == 0) + 1)[:-1]
        assert [tokenizer.decode(doc[:-1].tolist()) for doc in documents] == texts[split]
    assert prepared.meta["n_val_docs"] == len(texts["val"]) > 0
    assert prepared.meta["n_train_tokens"] == len(prepared.train)
    assert prepared.meta["n_files"] == 41 and prepared.vocab_size == 300


def test_split_is_stable_and_about_the_fraction():
    keys = [f"pkg/module_{i}.py" for i in range(20000)]
    held_out = [is_validation(key, 0.01) for key in keys]
    assert held_out == [is_validation(key, 0.01) for key in keys]
    assert sum(held_out) == 186  # pins the hash itself: Python's hash() would change every process
    renamed = [f"renamed/{key}" if i % 3 == 0 else key for i, key in enumerate(keys)]
    moved = [a != b for a, b in zip(held_out, (is_validation(key, 0.01) for key in renamed))]
    assert not any(moved[i] for i in range(len(keys)) if i % 3)  # unchanged names keep their split
    assert any(moved)


def test_names_are_relative_to_the_glob_root(tmp_path):
    for where in ("a", "b/c"):
        (tmp_path / where / "docs").mkdir(parents=True)
        (tmp_path / where / "docs" / "x.txt").write_text("x")
    names = [text_sources(str(tmp_path / where / "**" / "*.txt"))[1][0].relpath for where in ("a", "b/c")]
    assert names == ["docs/x.txt", "docs/x.txt"]  # moving the corpus keeps its split


def test_cache_is_reused_without_retokenizing(tmp_path, monkeypatch):
    cfg = text_config(tmp_path, path=make_text_corpus(tmp_path / "src", n_files=10), val_fraction=0.5)
    first = load_corpus(cfg, progress=False)
    stamp = os.stat(first.train.filename).st_mtime_ns

    def fail(*args):
        raise AssertionError("prepared again")

    monkeypatch.setattr(load, "prepare", fail)
    start = time.perf_counter()
    second = load_corpus(cfg, progress=False)
    assert time.perf_counter() - start < 1.0
    assert second.meta == first.meta and os.stat(second.train.filename).st_mtime_ns == stamp
    np.testing.assert_array_equal(second.train, first.train)
    Path(text_sources(cfg.path)[1][0].path).write_text("changed")  # a new file stat means a new cache key
    with pytest.raises(AssertionError, match="prepared again"):
        load_corpus(cfg, progress=False)


def prepare_in_child(cfg: DataConfig) -> tuple[dict, str, str]:
    prepared = load_corpus(cfg, progress=False)
    data = np.asarray(prepared.train).tobytes() + np.asarray(prepared.val).tobytes()
    return prepared.meta, hashlib.sha256(data).hexdigest(), prepared.tokenizer_path


def test_concurrent_preparation_builds_once(tmp_path):
    cfg = text_config(tmp_path, path=make_text_corpus(tmp_path / "src"))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(prepare_in_child, [cfg, cfg])
    assert results[0] == results[1]
    cache = Path(cfg.cache_dir)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [Path(results[0][2]).parent.name]  # no temp dirs left
    assert prepare_in_child(cfg) == results[0]


def test_jsonl_documents_are_lines(tmp_path):
    lines = [json.dumps({"text": f"document {i}: " + "αβγ " * (i % 7), "id": i}) for i in range(200)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    prepared = load_corpus(text_config(tmp_path, path=str(tmp_path / "docs.jsonl"), val_fraction=0.1), progress=False)
    assert prepared.meta["n_train_docs"] + prepared.meta["n_val_docs"] == 200
    assert 5 < prepared.meta["n_val_docs"] < 40
    assert (np.asarray(prepared.val) == 0).sum() == prepared.meta["n_val_docs"]
    with pytest.raises(ConfigError, match="data.jsonl_field"):
        load_corpus(text_config(tmp_path, path=str(tmp_path / "docs.jsonl"), jsonl_field="body"), progress=False)


def tokens_config(tmp_path: Path, **overrides) -> DataConfig:
    return DataConfig(**{"name": "tokens", "vocab_size": 1000, "cache_dir": str(tmp_path / "cache"), **overrides})


def write_tokens(path: Path, values) -> str:
    np.asarray(values, np.uint16).tofile(path)
    return str(path)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (lambda t: dict(name="text", path=str(t / "nothing" / "*.txt")), "data.path"),  # empty glob
        (lambda t: dict(name="text", path=None), "data.path"),
        (lambda t: dict(name="text", path=write_tokens(t / "empty.txt", [])), "data.path"),  # one empty file
        (lambda t: dict(name="text", path=write_tokens(t / "x.txt", [0xFFFF] * 9)), "data.path"),  # not UTF-8
        (lambda t: dict(name="text", path=str(t / "*.txt"), vocab_size=100), "data.vocab_size"),
        (lambda t: dict(name="pystdlib", val_fraction=0.0), "data.val_fraction"),
        (lambda t: dict(name="wikipedia"), "data.name"),
        (lambda t: dict(name="tokens", path=str(t / "missing.bin")), "data.path"),
        (lambda t: dict(name="tokens", path=write_tokens(t / "a.bin", [1, 2, 999, 1000])), "data.vocab_size"),
        (
            lambda t: dict(name="tokens", path=write_tokens(t / "b.bin", [1, 2, 3]), token_dtype="uint32"),
            "data.token_dtype",
        ),
        (
            lambda t: dict(name="tokens", path=write_tokens(t / "c.bin", [1, 2]), token_dtype="float32"),
            "data.token_dtype",
        ),
        (
            lambda t: dict(name="tokens", path=write_tokens(t / "d.bin", [1, 2]), val_path=str(t / "no.bin")),
            "data.val_path",
        ),
    ],
)
def test_user_mistakes_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ConfigError) as caught:
        load_corpus(tokens_config(tmp_path, **overrides(tmp_path)), progress=False)
    assert str(caught.value).startswith(f"error: {field}: ")


def test_no_validation_document_is_explained(tmp_path):
    (tmp_path / "only.txt").write_text("one document cannot be split into train and validation")
    with pytest.raises(ConfigError, match="data.path: .* one document, which cannot be both trained on and held out"):
        load_corpus(text_config(tmp_path, path=str(tmp_path / "only.txt")), progress=False)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # the failed build left nothing


@pytest.mark.slow
def test_real_pystdlib_corpus_1024():
    """The one slow test: prepares the real corpus into the default cache (reused afterwards)."""
    cfg = DataConfig(name="pystdlib", vocab_size=1024)
    start = time.perf_counter()
    prepared = load_corpus(cfg, progress=False)
    print(f"pystdlib v1024: {time.perf_counter() - start:.1f}s, meta {prepared.meta}")
    meta = prepared.meta
    assert meta["n_files"] > 1000 and 0.005 < meta["n_val_docs"] / meta["n_files"] < 0.02
    assert meta["n_train_tokens"] > 5_000_000 and meta["n_val_tokens"] > 10_000
    assert len(prepared.train) == meta["n_train_tokens"] and prepared.train.dtype == np.uint16
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    text = Path(stdlib_sources()[0], "dataclasses.py").read_text()
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    start = time.perf_counter()
    load_corpus(cfg, progress=False)
    assert time.perf_counter() - start < 1.0
