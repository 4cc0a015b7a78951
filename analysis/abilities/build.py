"""The task suite, cut from held-out documents: four abilities, each fixed by a seed.

Every prompt is the `context` tokens that precede the answer in its document (or, for induction,
a window of the document with a repeat appended), so it looks like a training window. Candidates
are collected in document order, then a seeded generator picks `n` of them: the same corpus,
tokenizer, context, n and seed give the same items and so the same hash.

  close_bracket      which closer, ) ] or }, comes next, when its opener is inside the prompt:
                     the nesting a parser tracks. Multiple choice, classes balanced: chance 1/3.
  induction          a window of held-out text followed by the first tokens of a span seen once
                     in it; the answer is what followed that span (Olsson et al. 2022's induction:
                     [A][B] ... [A] -> [B]). Exact match: chance ~0.
  recall_identifier  the first use of a name defined earlier in the prompt (def/class/import/
                     assignment): recall across the file, not the next word's statistics. Exact
                     match: chance ~0.
  next_line          the true next line against three lines of other held-out files, re-indented
                     like it and of the same token count (so no length or indentation cue).
                     Multiple choice by log-likelihood: chance 1/4.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections import Counter
from collections.abc import Iterator

import numpy as np
from tokenizers import Tokenizer

from analysis.abilities.documents import Document
from analysis.abilities.suite import CHOICE, GENERATE, Item, Task

MAX_ANSWER = 16  # tokens of the longest answer or candidate: prompt + answer fit in context + 16
CLOSERS = {")": "(", "]": "[", "}": "{"}
MIN_BRACKET_CHARS = 8  # an opener at least this far back: "()" or "[0]" is a bigram, not nesting
INDUCTION_PREFIX, INDUCTION_ANSWER = 4, 4  # tokens repeated as the cue, tokens to copy after it
INDUCTION_GAP = 16  # the first occurrence ends at least this many tokens before the repeat
INDUCTION_STRIDE = 8  # candidate spans every 8 tokens of a window
MIN_NAME_CHARS = 4
COMMON_NAMES = set(dir(builtins)) | set(keyword.kwlist) | {"self", "cls", "args", "kwargs"}
DEFINITION = re.compile(
    r"\b(?:def|class)\s+([A-Za-z_]\w*)|^[ \t]*([A-Za-z_]\w*)[ \t]*=(?!=)|\bimport\s+([A-Za-z_]\w*)|\bas\s+([A-Za-z_]\w*)",
    re.M,
)
MIN_LINE_CHARS = 8  # shorter lines (") ", "else:") are too generic to tell apart
NEXT_LINE_CHOICES = 4
DISTRACTOR_POOL = 2000  # lines of held-out files drawn once as distractor candidates (encoded per indentation)


def close_bracket(docs: list[Document], tokenizer: Tokenizer, context: int, n: int, rng: np.random.Generator) -> Task:
    by_closer: dict[str, list[tuple[Document, int]]] = {closer: [] for closer in CLOSERS}
    for doc in docs:
        for closer, index in _bracket_closers(doc, context):
            by_closer[closer].append((doc, index))
    per_class = min(n // len(CLOSERS), *(len(found) for found in by_closer.values()))
    choices = tuple((tokenizer.token_to_id(closer),) for closer in CLOSERS)
    items = []
    for answer, closer in enumerate(CLOSERS):
        for i in sorted(rng.choice(len(by_closer[closer]), per_class, replace=False)):
            doc, index = by_closer[closer][i]
            items.append(Item(tuple(doc.ids[index - context : index].tolist()), choices, answer, closer))
    return Task(
        "close_bracket",
        CHOICE,
        "which bracket closes next, ) ] or }, its opener inside the prompt",
        1 / len(CLOSERS),
        tuple(items),
    )


def _bracket_closers(doc: Document, context: int) -> Iterator[tuple[str, int]]:
    """(closer, token index) of closers that are one token and whose opener lies inside the prompt."""
    stack: list[tuple[str, int]] = []
    for match in re.finditer(r"[()\[\]{}]", doc.text):
        char, pos = match.group(), match.start()
        if char not in CLOSERS:
            stack.append((char, pos))
            continue
        if not stack or stack[-1][0] != CLOSERS[char]:
            stack.clear()  # unbalanced (a bracket inside a string): start afresh
            continue
        opened = stack.pop()[1]
        span = doc.span(pos, pos + 1)
        if (
            span
            and span[0] >= context
            and pos - opened >= MIN_BRACKET_CHARS
            and doc.offsets[span[0] - context][0] <= opened
        ):
            yield char, span[0]


def induction(docs: list[Document], context: int, n: int, rng: np.random.Generator) -> Task:
    candidates = [(doc, start, s) for doc in docs for start, s in _induction_spans(doc, context)]
    items = []
    for i in sorted(rng.choice(len(candidates), min(n, len(candidates)), replace=False)):
        doc, start, s = candidates[i]
        window = doc.ids[start : start + context - INDUCTION_PREFIX]
        cue, answer = (
            window[s : s + INDUCTION_PREFIX],
            window[s + INDUCTION_PREFIX : s + INDUCTION_PREFIX + INDUCTION_ANSWER],
        )
        items.append(
            Item(
                tuple(np.concatenate([window, cue]).tolist()),
                (tuple(answer.tolist()),),
                0,
                "".join(
                    doc.text[a:b]
                    for a, b in doc.offsets[
                        start + s + INDUCTION_PREFIX : start + s + INDUCTION_PREFIX + INDUCTION_ANSWER
                    ]
                ),
            )
        )
    return Task(
        "induction",
        GENERATE,
        f"copy the {INDUCTION_ANSWER} tokens that followed a {INDUCTION_PREFIX}-token "
        "span seen once earlier in the prompt",
        0.0,
        tuple(items),
    )


def _induction_spans(doc: Document, context: int) -> Iterator[tuple[int, int]]:
    """(window start, span start in the window): windows of context - PREFIX tokens, each followed by a
    repeat of a span whose first PREFIX tokens occur nowhere else in the window (one right answer)."""
    width = context - INDUCTION_PREFIX
    last = width - INDUCTION_PREFIX - INDUCTION_ANSWER - INDUCTION_GAP
    for start in range(0, len(doc.ids) - width + 1, width):
        window = doc.ids[start : start + width]
        grams = Counter(map(tuple, np.lib.stride_tricks.sliding_window_view(window, INDUCTION_PREFIX).tolist()))
        for s in range(0, last + 1, INDUCTION_STRIDE):
            if grams[tuple(window[s : s + INDUCTION_PREFIX].tolist())] == 1:
                yield start, s


def recall_identifier(docs: list[Document], context: int, n: int, rng: np.random.Generator) -> Task:
    candidates = [(doc, span, a) for doc in docs for span, a in _first_uses(doc, context)]
    items = []
    for i in sorted(rng.choice(len(candidates), min(n, len(candidates)), replace=False)):
        doc, (i0, i1), a = candidates[i]
        items.append(
            Item(
                tuple(doc.ids[i0 - context : i0].tolist()),
                (tuple(doc.ids[i0:i1].tolist()),),
                0,
                doc.text[a : doc.offsets[i1 - 1][1]],
            )
        )
    return Task(
        "recall_identifier",
        GENERATE,
        "the first use of a name defined earlier in the prompt (def, class, import, assignment)",
        0.0,
        tuple(items),
    )


def _first_uses(doc: Document, context: int) -> Iterator[tuple[tuple[int, int], int]]:
    """(answer token span, answer's first character) of each defined name's first use on a later line."""
    seen = set()
    for match in DEFINITION.finditer(doc.text):
        group = next(g for g in range(1, 5) if match.group(g))
        name, defined = match.group(group), match.start(group)
        if name in seen or len(name) < MIN_NAME_CHARS or name in COMMON_NAMES:
            continue
        seen.add(name)
        line_end = doc.text.find("\n", defined)
        use = re.compile(rf"\b{re.escape(name)}\b").search(doc.text, line_end) if line_end >= 0 else None
        if use is None:
            continue
        a = use.start() - 1 if doc.text[use.start() - 1] == " " else use.start()  # " name" is one word token
        span = doc.span(a, use.end())
        if (
            span
            and span[0] >= context
            and span[1] - span[0] <= MAX_ANSWER
            and doc.offsets[span[0] - context][0] <= defined
        ):
            yield span, a


def next_line(docs: list[Document], tokenizer: Tokenizer, context: int, n: int, rng: np.random.Generator) -> Task:
    candidates = [(d, span, a, b) for d, doc in enumerate(docs) for span, a, b in _line_spans(doc, context)]
    pool = Distractors(docs, tokenizer, rng)
    items = []
    for i in rng.permutation(len(candidates)):
        if len(items) == n:
            break
        d, (i0, i1), a, b = candidates[i]
        doc = docs[d]
        item = pool.item(doc.ids[i0 - context : i0], doc.ids[i0:i1], doc.text[a + 1 : b], d, rng)
        if item is not None:
            items.append(item)
    return Task(
        "next_line",
        CHOICE,
        "the true next line against 3 lines of other files, same indentation and token count",
        1 / NEXT_LINE_CHOICES,
        tuple(items),
    )


def _line_spans(doc: Document, context: int) -> Iterator[tuple[tuple[int, int], int, int]]:
    """(token span, a, b) of "\\n" + line for lines of MIN_LINE_CHARS after a non-blank line, where
    characters [a, b) are the newline and the line without its own newline."""
    start = 0
    for line in doc.text.split("\n"):
        a, b = start - 1, start + len(line)
        start = b + 1
        if a <= 0 or doc.text[a - 1].isspace() or len(line.strip()) < MIN_LINE_CHARS or line != line.rstrip():
            continue
        span = doc.span(a, b)
        if span and span[0] >= context and span[1] - span[0] <= MAX_ANSWER:
            yield span, a, b


class Distractors:
    """A seeded sample of lines of the held-out files, encoded once per indentation on demand."""

    def __init__(self, docs: list[Document], tokenizer: Tokenizer, rng: np.random.Generator):
        lines = [
            (d, line.strip())
            for d, doc in enumerate(docs)
            for line in doc.text.split("\n")
            if len(line.strip()) >= MIN_LINE_CHARS
        ]
        picked = sorted(rng.choice(len(lines), min(DISTRACTOR_POOL, len(lines)), replace=False)) if lines else []
        self.lines = [lines[i] for i in picked]
        self.tokenizer = tokenizer
        self.by_length: dict[str, dict[int, list[tuple[int, str, tuple[int, ...]]]]] = {}

    def _by_length(self, indent: str) -> dict[int, list[tuple[int, str, tuple[int, ...]]]]:
        """Pool lines indented by `indent` after a newline (as they would follow a prompt), by token count."""
        if indent not in self.by_length:
            batch = self.tokenizer.encode_batch_fast(["\n" + indent + text for _, text in self.lines])
            buckets: dict[int, list] = {}
            for (d, text), encoding in zip(self.lines, batch):
                buckets.setdefault(len(encoding.ids), []).append((d, text, tuple(encoding.ids)))
            self.by_length[indent] = buckets
        return self.by_length[indent]

    def item(
        self, prompt: np.ndarray, answer: np.ndarray, line: str, doc_index: int, rng: np.random.Generator
    ) -> Item | None:
        """The item with NEXT_LINE_CHOICES - 1 lines of other files, indented like `line` and exactly as many
        tokens long; None if too few qualify."""
        indent = line[: len(line) - len(line.lstrip())]
        bucket = self._by_length(indent).get(len(answer), [])
        same = [ids for d, text, ids in bucket if d != doc_index and text != line.strip()]
        if len(same) < NEXT_LINE_CHOICES - 1:
            return None
        distractors = [same[i] for i in rng.choice(len(same), NEXT_LINE_CHOICES - 1, replace=False)]
        position = int(rng.integers(NEXT_LINE_CHOICES))
        choices = distractors[:position] + [tuple(answer.tolist())] + distractors[position:]
        return Item(tuple(prompt.tolist()), tuple(choices), position, line)


def build_suite(docs: list[Document], tokenizer: Tokenizer, context: int, n: int, seed: int) -> list[Task]:
    """The four tasks, each drawn with its own generator so that changing one leaves the others' items."""
    rngs = [np.random.default_rng([seed, k]) for k in range(4)]
    return [
        close_bracket(docs, tokenizer, context, n, rngs[0]),
        induction(docs, context, n, rngs[1]),
        recall_identifier(docs, context, n, rngs[2]),
        next_line(docs, tokenizer, context, n, rngs[3]),
    ]
