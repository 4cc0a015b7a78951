"""Test helpers: compose a RunConfig exactly as the CLI does, and run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from scaling.config import RunConfig, register_configs, to_dataclass

REPO = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str]) -> RunConfig:
    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        return to_dataclass(compose(config_name="config", overrides=overrides))


def run_cli(args: list[str], module: str = "scaling.train", timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, **kwargs
    )
