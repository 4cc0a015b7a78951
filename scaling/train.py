"""`python -m scaling.train`: train one model, or with `--multirun sweep=NAME` a whole sweep.

The command line lives in scaling/cli.py, training in scaling/training/trainer.py.
"""

from scaling.cli import train_cli

if __name__ == "__main__":
    train_cli()
