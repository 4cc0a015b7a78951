"""The shape of the house: dependencies run one way, and importing a module changes nothing.

The import graph is read from the source (every import statement, at any depth), so a cycle hidden
inside a function is found as well as one at the top of a file.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("scaling", "analysis")
# Modules every other module may lean on: they import nothing of the project themselves.
FOUNDATIONS = ("scaling.config", "scaling.contract", "scaling.errors", "scaling.files", "analysis.failures")
# Leaves that import an optional extra at their top (they need it, and nothing of ours imports them):
# left out of the environment check, since the extra may be absent, and since lm_eval's own import
# sets HF_XET_HIGH_PERFORMANCE.
OPTIONAL_LEAVES = ("analysis.harness",)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The file's syntax tree, parsed once per process. Python 3.11 before 3.11.8 (gh-106905) keeps the
    parser's recursion count in one place for all threads: a traceback formatted at the same moment in
    another thread (asyncio reporting an orbax task's error, which parses the failing line) makes ast.parse
    raise a spurious SystemError. So parse each file once, and again when that is what went wrong."""
    source = path.read_text()
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, whether the import is at module level) for every import in `path`."""
    tree = parsed(path)
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from scaling import contract` imports the module scaling.contract
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            ]
        else:
            continue
        found += [(name, id(node) in top_level) for name in names if name.split(".")[0] in PACKAGES]
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: {target for target, _ in imports_of(path, modules) if target != name} for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_training_never_imports_analysis():
    graph = import_graph()
    offenders = {
        m: sorted(t for t in targets if t.startswith("analysis"))
        for m, targets in graph.items()
        if m.startswith("scaling")
    }
    assert not {m: t for m, t in offenders.items() if t}


# The rooms of scaling/, lowest first: a room may import the foundations and the rooms below it, never one
# above. What one model is (model/) knows nothing of how it is trained; a plan of runs (planning/) is
# arithmetic on shapes and budgets; one run (training/) knows nothing of the sweep it may belong to
# (sweeping/); the corpus (data/) knows nothing of models. The commands at the root sit above them all.
ROOMS = ("scaling.data", "scaling.model", "scaling.planning", "scaling.training", "scaling.sweeping")
# The root modules the rooms may lean on (the rest of the root are the commands and their helpers).
BASE = ("scaling.config", "scaling.contract", "scaling.errors", "scaling.files", "scaling.runtime", "scaling.diskspace")
ALLOWED = {
    "scaling.data": set(),
    "scaling.model": set(),
    "scaling.planning": {"scaling.model"},
    "scaling.training": {"scaling.data", "scaling.model", "scaling.planning"},
    "scaling.sweeping": {"scaling.data", "scaling.model", "scaling.planning", "scaling.training"},
}


def room_of(module: str) -> str | None:
    return next((room for room in ROOMS if module == room or module.startswith(room + ".")), None)


def room_violations(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    found = {}
    for module, targets in graph.items():
        room = room_of(module)
        if room is None:
            continue
        bad = [
            t
            for t in sorted(targets)
            if t.startswith("scaling")
            and room_of(t) != room
            and not (room_of(t) in ALLOWED[room] or t in BASE or t == "scaling")
        ]
        if bad:
            found[module] = bad
    return found


def test_each_room_imports_only_the_rooms_below_it():
    assert room_violations(import_graph()) == {}


def test_the_room_rule_sees_a_model_that_imports_training():
    graph = {"scaling.model.transformer": {"scaling.training.trainer", "scaling.config"}}
    assert room_violations(graph) == {"scaling.model.transformer": ["scaling.training.trainer"]}


def test_base_modules_import_only_foundations():
    graph = import_graph()
    for module in BASE:
        assert graph[module] <= set(FOUNDATIONS), module


def test_fits_import_no_training_code_even_indirectly():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("analysis.fits")):
        assert not [t for t in reachable(graph, module) if t.startswith("scaling")], module


@pytest.mark.parametrize("module", FOUNDATIONS)
def test_foundations_import_nothing_of_the_project(module):
    assert import_graph()[module] == set()


def test_project_imports_are_at_the_top_of_each_file():
    """An import inside a function hides a dependency from a reader (and hid a cycle before)."""
    modules = project_modules()
    nested = {name: [t for t, top in imports_of(path, modules) if not top] for name, path in modules.items()}
    assert not {name: targets for name, targets in nested.items() if targets}


ENV_CHECK = """
import importlib, json, logging, os, sys
# Third-party libraries are imported first: what their own import does (orbax adds a root log handler) is not
# what is checked, only what our modules do beyond it.
import jax, matplotlib, orbax.checkpoint, flax.nnx, optax, hydra  # noqa: E401


def state():
    loggers = {name: getattr(log, "level", None) for name, log in logging.root.manager.loggerDict.items()}
    return {
        "environ": dict(os.environ),
        "jax": {k: repr(v) for k, v in jax.config.values.items()},
        "backend": repr(dict.__getitem__(matplotlib.rcParams, "backend")),
        "loggers": {k: v for k, v in {**loggers, "root": logging.root.level}.items() if v},
        "handlers": len(logging.root.handlers),
    }


changed = {}
for name in json.loads(sys.argv[1]):
    before = state()
    importlib.import_module(name)
    after = state()
    diff = []
    for part in ("environ", "jax", "loggers"):
        old, new = before[part], after[part]
        diff += [f"{part}:{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    diff += [part for part in ("backend", "handlers") if before[part] != after[part]]
    if diff:
        changed[name] = diff
print(json.dumps(changed))
"""


def environment_changes(names: list[str], cwd: Path) -> dict[str, list[str]]:
    """Import each module in turn in a fresh interpreter; the variables each import changed."""
    result = subprocess.run(
        [sys.executable, "-c", ENV_CHECK, json.dumps(names)], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_any_module_leaves_the_environment_unchanged():
    """Side effects (environment variables such as XLA flags, JAX's config, matplotlib's backend, logger
    levels and handlers) belong to `runtime.initialize`, which the entry points call; importing a module
    must not set them."""
    assert environment_changes(sorted(set(project_modules()) - set(OPTIONAL_LEAVES)), REPO) == {}


@pytest.mark.parametrize("module", OPTIONAL_LEAVES)
def test_modules_with_optional_imports_are_leaves(module):
    graph = import_graph()
    assert module in graph and not [importer for importer, targets in graph.items() if module in targets]


def test_the_environment_check_sees_each_kind_of_side_effect(tmp_path):
    effects = {
        "sets_env": ("import os\nos.environ['SCALING_TEST_SIDE_EFFECT'] = '1'\n", ["environ:SCALING_TEST_SIDE_EFFECT"]),
        "sets_jax": ("import jax\njax.config.update('jax_enable_x64', True)\n", ["jax:jax_enable_x64"]),
        "sets_backend": ("import matplotlib\nmatplotlib.use('Agg')\n", ["backend"]),
        "sets_level": ("import logging\nlogging.getLogger('absl').setLevel(logging.ERROR)\n", ["loggers:absl"]),
    }
    for name, (source, _) in effects.items():
        (tmp_path / f"{name}.py").write_text(source)
    expected = {name: diff for name, (_, diff) in effects.items()}
    assert environment_changes(["json", *effects], tmp_path) == expected
