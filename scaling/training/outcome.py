"""What a launch says when a run ends, or is found ended, and the exit status it leaves: one line per run
(`completed: N=... -> RUN_DIR`, `diverged at step S (...)`, `preempted: stopped by SIGTERM ...`), and the
status of scaling/errors.py's table (0 completed, 3 diverged or failed, 128 + the signal that stopped it).
"""

from __future__ import annotations

from pathlib import Path

from scaling import contract
from scaling.errors import EXIT_RUN_FAILED, signal_exit_code


def exit_code(summary: dict) -> int:
    """The command's exit status for a run that ended this way (the table is in scaling/errors.py)."""
    if summary.get("status") == contract.COMPLETED:
        return 0
    if summary.get("status") == contract.PREEMPTED:
        return signal_exit_code(summary.get(contract.STOP_SIGNAL))
    return EXIT_RUN_FAILED


def one_line(s: dict) -> str:
    if s["status"] == contract.PREEMPTED:
        where = f": stopped by {s.get(contract.STOP_SIGNAL)} at step {s['steps_done']} and checkpointed (the same command resumes it)"
    elif contract.DIVERGED_STEP in s:
        where = f" at step {s[contract.DIVERGED_STEP]} ({s[contract.DIVERGED_REASON]})"
    else:
        where = ""
    return (
        f"{s['status']}{where}: N={s['params_total']:,} D={s['tokens_trained']:,} "
        f"eval_loss={s['final_eval_loss']:.4f} in {s['wall_s']:.1f}s -> {s['run_dir']}"
    )


def already_line(s: dict, run_dir: Path) -> str:
    """What a relaunch of a finished run says: nothing to do, and for a diverged run why and what would help."""
    if s.get("status") == contract.DIVERGED:
        return (
            f"{run_dir}: already diverged at step {s.get(contract.DIVERGED_STEP)} ({s.get(contract.DIVERGED_REASON)}); "
            "it would diverge again, bit for bit: lower train.lr, with another run_dir or overwrite=true"
        )
    return f"{run_dir}: already {s.get('status')} ({s.get('steps')} steps); nothing to do"
