"""`recis-train CONFIG.toml`: train (or evaluate) the model a config file describes, end to end.

recis-train examples/movielens.toml
recis-train run.toml --resume --set train.epochs=3 --set optim.dense.lr=0.01
recis-train run.toml --eval-only        # score the latest checkpoint on data.eval
torchrun --nproc_per_node=2 -m recis.train.cli run.toml   # the same config on 2 ranks

Errors are one line on stderr, and the exit code says which kind: 2 the config, or the data's
columns checked against it before the first step; 1 bad data met during training (the traceback
with --debug); 3 a non-finite loss; 4 a failed collective.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from recis.core import version_line

from . import config as cfgmod
from .distributed import DistributedError, Ranks, init_from_env
from .pipeline import SchemaError
from .report import format_table
from .trainer import NonFiniteLossError, Trainer


def _trainer(run: cfgmod.Run) -> Trainer:
    return Trainer(run.model, run.train_data, run.eval_data, run.sparse_optimizer, run.dense_optimizer, run.trainer)


def run_config(data: dict[str, Any], resume: bool = False, eval_only: bool = False) -> dict[str, Any]:
    """Runs a loaded config (see `config.load`); returns {"model": summary, "baseline": summary or absent}."""
    run = cfgmod.build(data)
    if run.trainer.output_dir and Ranks.current().is_main and not eval_only:  # recis-export rebuilds the model from it
        Path(run.trainer.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(run.trainer.output_dir) / "config.json").write_text(json.dumps(data, indent=1, default=str))
    if resume or eval_only:
        run.trainer = replace(run.trainer, resume="latest")
    results: dict[str, Any] = {}
    trainer = _trainer(run)
    if eval_only:
        if run.eval_data is None:
            raise cfgmod.ConfigError("--eval-only needs config key 'data.eval'")
        if not trainer.resume("latest"):
            raise cfgmod.ConfigError(f"--eval-only: no checkpoint under {run.trainer.output_dir}/checkpoints")
        metrics = trainer.evaluate()
        if Ranks.current().is_main:
            print(json.dumps(metrics, indent=1))
        return {"model": {"eval": metrics}}
    results["model"] = trainer.fit()
    if "baseline" in data:
        base = cfgmod.build(data, model_key="baseline")
        out = f"{run.trainer.output_dir}/baseline" if run.trainer.output_dir else None
        base.trainer = replace(base.trainer, output_dir=out, resume="latest" if resume else None)
        results["baseline"] = _trainer(base).fit()
        if Ranks.current().is_main:
            print(
                compare(
                    results["model"]["eval"],
                    results["baseline"]["eval"],
                    data["model"]["type"],
                    data["baseline"]["type"],
                )
            )
    return results


def compare(model: dict[str, float], baseline: dict[str, float], name: str, base_name: str) -> str:
    """A side-by-side table of two runs' evaluation metrics."""
    rows = []
    for k in model:
        a, b = model[k], baseline.get(k, math.nan)
        rows.append([k, f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}"])
    return format_table(rows, ["metric", name, base_name, "difference"])


def configure_logging(level: str) -> None:
    """Shows the "recis" loggers' messages at `level` and above on stderr, one plain line each
    (the library itself adds no handlers: a program embedding it decides)."""
    logger = logging.getLogger("recis")
    logger.setLevel(level.upper())
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after the handler is made)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recis-train", description="Train a RecIS model from a TOML config.")
    parser.add_argument("--version", action="version", version="%(prog)s: " + version_line("recis-train"))
    parser.add_argument("config", help="the TOML config file")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the latest checkpoint on data.eval")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (values parse as TOML)")  # fmt: skip
    parser.add_argument("--dist-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="under torchrun: how long a collective may wait for the other ranks")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="print the full traceback of a data error in training")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="messages of the recis loggers shown (on stderr)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings and errors only")
    args = parser.parse_args(argv)
    configure_logging("warning" if args.quiet else args.log_level)
    if args.quiet:
        args.set = [*args.set, "train.progress=false"]
    try:
        init_from_env(args.dist_timeout)  # under torchrun: readers and tables shard by rank
        data = cfgmod.load(args.config, args.set)
        results = run_config(data, args.resume, args.eval_only)
    except cfgmod.ConfigError as e:
        print(f"recis-train: {args.config}: {e}", file=sys.stderr)
        return 2
    except SchemaError as e:
        print(f"recis-train: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"recis-train: {e}", file=sys.stderr)
        return 3
    except DistributedError as e:
        print(f"recis-train: {e}", file=sys.stderr)
        return 4
    except (ValueError, TypeError, KeyError, OSError) as e:  # bad data met in training (nulls, a list label, ...)
        if args.debug:
            traceback.print_exc()
        else:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e  # a KeyError's str() adds quotes
            print(f"recis-train: error: {message} (--debug prints the traceback)", file=sys.stderr)
        return 1
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
