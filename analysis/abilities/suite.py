"""What a task is: prompts with exact answers in token ids, the metrics that score them, and their hash.

Every item of every task is a prompt of exactly `context` tokens followed by one or more candidate
continuations, one of which is right. A generation task has a single candidate (the answer) and is
scored by exact match of the greedy continuation; a multiple-choice task has several and is scored
by which one the model finds most likely. Both are also scored continuously: the right answer's
mean log-likelihood per token, and for multiple choice the probability of the right choice among
the candidates (Schaeffer et al. 2023: a discrete metric can jump where a continuous one moves
smoothly). The set is fixed by its seed; its hash (sha256 of the items) travels with every score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

GENERATE, CHOICE = "generate", "choice"
# Metric names in tasks.parquet. Discrete: exact match of the greedy answer, or accuracy of the
# multiple choice. Continuous: the right answer's mean log-likelihood per token (nats), and the
# probability of the right choice (softmax of the candidates' total log-likelihoods).
EXACT_MATCH, ACCURACY, ANSWER_LOGPROB, CHOICE_PROB = "exact_match", "accuracy", "answer_logprob", "choice_prob"
METRIC_LABELS = {  # how the figures name each metric on an axis
    EXACT_MATCH: "exact match of the greedy answer",
    ACCURACY: "multiple-choice accuracy",
    CHOICE_PROB: "probability of the right choice",
    ANSWER_LOGPROB: "answer log-likelihood (nats/token)",
}


@dataclass(frozen=True)
class Item:
    """A prompt (token ids), candidate continuations (token ids), the index of the right one, and
    the right one as text for a person reading the task file."""

    prompt: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    answer: int
    text: str

    def as_dict(self) -> dict:
        return {
            "prompt": list(self.prompt),
            "choices": [list(c) for c in self.choices],
            "answer": self.answer,
            "text": self.text,
        }


@dataclass(frozen=True)
class Task:
    """One ability: what it measures, its chance level, and its items."""

    name: str
    kind: str  # GENERATE | CHOICE
    measures: str
    chance: float  # the discrete metric of a model that guesses (1/choices; ~0 for exact match)
    items: tuple[Item, ...]

    @property
    def discrete(self) -> str:
        return EXACT_MATCH if self.kind == GENERATE else ACCURACY

    @property
    def continuous(self) -> str:
        """The continuous metric the emergence figure sets beside the discrete one."""
        return ANSWER_LOGPROB if self.kind == GENERATE else CHOICE_PROB

    @property
    def metrics(self) -> tuple[str, ...]:
        return (
            (self.discrete, ANSWER_LOGPROB) if self.kind == GENERATE else (self.discrete, CHOICE_PROB, ANSWER_LOGPROB)
        )

    @property
    def hash(self) -> str:
        """sha256 of the items in order: equal hashes = the same prompts, candidates and answers."""
        payload = json.dumps([item.as_dict() for item in self.items], separators=(",", ":"))
        return hashlib.sha256(f"{self.name}\0{self.kind}\0{payload}".encode()).hexdigest()

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "measures": self.measures,
            "chance": self.chance,
            "hash": self.hash,
            "n": len(self.items),
            "items": [item.as_dict() for item in self.items],
        }


def task_from_dict(record: dict) -> Task:
    items = tuple(
        Item(tuple(i["prompt"]), tuple(tuple(c) for c in i["choices"]), int(i["answer"]), i["text"])
        for i in record["items"]
    )
    return Task(record["name"], record["kind"], record["measures"], float(record["chance"]), items)
