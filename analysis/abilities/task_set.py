"""task_set.json: the items a task table was scored on, with the settings and corpus that cut them.

Kept apart from the table (task_table.py) so that a report can read which tasks were scored without the
machinery that scores them.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.abilities.suite import Task, task_from_dict
from scaling.files import write_text

TASK_SET_FILE = "task_set.json"


def write_task_set(path: Path, header: dict, tasks: list[Task]) -> None:
    write_text(path, json.dumps({**header, "tasks": [task.as_dict() for task in tasks]}) + "\n")


def read_task_set(path: Path) -> tuple[dict, list[Task]] | None:
    """(header, tasks) of a stored task set, or None if there is none."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return {k: v for k, v in record.items() if k != "tasks"}, [task_from_dict(t) for t in record["tasks"]]
