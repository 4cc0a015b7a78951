"""`python -m scaling.isoflop sweep=NAME [overrides]`: print a sweep's IsoFLOP grid (budgets, rungs, shapes,
tokens, dropped points and why), train nothing. The grid itself is scaling/planning/grids.py."""

from __future__ import annotations

import sys

from scaling.config import register_configs
from scaling.errors import ConfigError, Interrupted, exit_with
from scaling.overrides import check_overrides, whole_numbers
from scaling.planning.grids import describe_sweep_grid


def main(argv: list[str]) -> None:
    """`python -m scaling.isoflop sweep=NAME [overrides]`: print a sweep's grid, train nothing; a bad
    override is one line (exit 2), as for `scaling.train`."""
    from hydra import compose, initialize_config_module

    register_configs()
    argv = whole_numbers(argv)
    try:
        check_overrides(argv)
        with initialize_config_module(config_module="sweeps", version_base="1.3"):
            config = compose(config_name="config", overrides=argv, return_hydra_config=True)
        print(describe_sweep_grid(config))
    except ConfigError as err:
        exit_with(err, debug="debug=true" in argv)
    except KeyboardInterrupt:
        exit_with(Interrupted("nothing is written by this command"))


if __name__ == "__main__":
    main(sys.argv[1:])
