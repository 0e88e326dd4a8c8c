"""What a run shows and leaves behind: a tqdm bar (samples/s, loss, running AUC), `metrics.jsonl`,
PNG plots of the loss and evaluation curves, a summary table and the embedding-table stats.

The JSONL file is appended to, never rewritten, so a resumed run extends its predecessor's curves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .hooks import Hook
from .metrics import AUC

log = logging.getLogger("recis.train")

if TYPE_CHECKING:
    from .trainer import Trainer


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table with aligned columns.

    Examples:
        >>> print(format_table([["auc", "0.75"]], ["metric", "value"]))
        metric  value
        ------  -----
        auc     0.75
    """
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def embedding_rows(stats: dict[str, dict[str, int]]) -> list[list[str]]:
    """Rows for the embedding table: rows, hit rate, inserted, admitted (min_count), evicted, memory (MiB)."""
    out = []
    for name, s in stats.items():
        lookups = s.get("lookups", 0)
        hit = s.get("hits", 0) / lookups if lookups else math.nan
        out.append(
            [
                name,
                str(s.get("rows", 0)),
                f"{hit:.3f}",
                str(s.get("inserts", 0)),
                str(s.get("admitted", 0)),
                str(s.get("evicted", 0)),
                f"{s.get('memory_bytes', 0) / 2**20:.1f}",
            ]
        )
    return out


class Reporter(Hook):
    """Progress bar, JSONL metrics log, plots and summary. Created by the Trainer from its config.

    Args:
        output_dir: where metrics.jsonl, loss.png, eval.png and summary.txt go (None: nothing written).
        progress: show a tqdm bar.
        log_every: steps between log records (and bar updates).
        running_auc_samples: the bar's AUC is over the latest this many training examples.
    """

    def __init__(
        self,
        output_dir: str | Path | None,
        progress: bool = True,
        log_every: int = 50,
        running_auc_samples: int = 20000,
    ):
        self.dir = Path(output_dir) if output_dir is not None else None
        self.sinks: list[Callable[[dict[str, Any]], None]] = []
        self.progress, self.log_every = progress, max(1, log_every)
        self.running_auc = AUC(max_samples=running_auc_samples)
        self.history: list[dict[str, Any]] = []
        self._bar: Any = None
        self._mark = (time.perf_counter(), 0)
        self._loss_sum, self._loss_n = 0.0, 0
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def jsonl(self) -> Path | None:
        return self.dir / "metrics.jsonl" if self.dir is not None else None

    def write(self, record: dict[str, Any]) -> None:
        """Appends one record to metrics.jsonl (and keeps it in `history`), and hands it to every
        `sinks` entry (e.g. a TensorBoard writer)."""
        self.history.append(record)
        for sink in self.sinks:
            sink(record)
        if self.jsonl is not None:
            with self.jsonl.open("a") as f:  # strict JSON: a NaN or inf metric is written as null
                f.write(json.dumps(_finite(record), allow_nan=False) + "\n")

    def start_bar(self, desc: str, total: int | None, initial: int = 0) -> None:
        self.close_bar()
        if self.progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=True)
        self._mark = (time.perf_counter(), 0)

    @contextlib.contextmanager
    def eval_bar(self, data: Any, limit: int | None) -> Iterator[Callable[[], None] | None]:
        """A bar under the training bar while an evaluation runs (when progress is shown): yields
        what to call after each batch, or None."""
        if not self.progress:
            yield None
            return
        from tqdm.auto import tqdm

        from .stages import batches_per_pass

        total = batches_per_pass(data)
        total = min(total, limit) if total and limit else total or limit
        bar = tqdm(total=total, desc="eval", unit="batch", dynamic_ncols=True, leave=False, position=1)
        try:
            yield lambda: bar.update(1)
        finally:
            bar.close()

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def observe(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Feeds the running AUC (first BCE objective's training predictions); soft labels (e.g.
        distillation targets) have no AUC and are left out."""
        if bool(((labels == 0) | (labels == 1)).all()):
            self.running_auc.update(preds, labels)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self._loss_sum += logs["loss"]
        self._loss_n += 1
        if self._bar is not None:
            self._bar.update(1)
        if trainer.step % self.log_every:
            return
        now, samples = time.perf_counter(), trainer.samples
        t0, s0 = self._mark
        rate = (samples - s0) / (now - t0) if now > t0 and s0 else math.nan
        self._mark = (now, samples)
        record = {
            "kind": "train",
            **logs,
            "loss": self._loss_sum / self._loss_n,
            "samples_per_s": rate,
            "running_auc": self.running_auc.compute(),
            "data_wait": trainer.timing.data_wait_fraction(),
        }
        self._loss_sum, self._loss_n = 0.0, 0
        self.write(record)
        if self._bar is not None:
            self._bar.set_postfix(
                {"loss": f"{record['loss']:.4f}", "auc": f"{record['running_auc']:.4f}", "samples/s": f"{rate:.0f}"},
                refresh=False,
            )

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.write({"kind": "eval", "step": trainer.step, "stage": trainer.stage_name, **metrics})
        shown = {k: f"{v:.4f}" for k, v in metrics.items() if k.endswith(("auc", "loss"))}
        if self._bar is not None:
            self._bar.write(f"eval @ step {trainer.step}: {shown}")
        else:
            log.info("eval @ step %d: %s", trainer.step, shown)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.close_bar()
        self.write({"kind": "summary", **{k: v for k, v in summary.items() if k != "embedding"}})
        text = self.summary_text(summary)
        if self.progress:
            print(text)
        else:  # without a bar the summary goes to the "recis.train" logger (the CLI shows INFO)
            log.info("%s", text)
        if self.dir is not None:
            (self.dir / "summary.txt").write_text(text + "\n")
            self.plot()

    def summary_text(self, summary: dict[str, Any]) -> str:
        rows = [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in summary.get("eval", {}).items()]
        parts = [format_table(rows, ["metric", "value"])] if rows else []
        run = [
            [k, f"{v:.4g}" if isinstance(v, float) else str(v)]
            for k, v in summary.items()
            if k not in ("eval", "embedding", "time_split")
        ]
        run += [[f"time: {k}", f"{v:.1%}"] for k, v in summary.get("time_split", {}).items()]
        parts.append(format_table(run, ["run", "value"]))
        emb = embedding_rows(summary.get("embedding", {}))
        if emb:
            parts.append(format_table(emb, ["table", "rows", "hit rate", "inserted", "admitted", "evicted", "MiB"]))
        return "\n\n".join(parts)

    def plot(self) -> list[Path]:
        """loss.png (training loss by step) and eval.png (evaluation metrics by step) from metrics.jsonl."""
        assert self.dir is not None and self.jsonl is not None
        if not self.jsonl.is_file():
            return []
        from matplotlib.figure import Figure  # not pyplot: the user's backend and figures stay as they are

        def number(x: Any) -> float:
            return math.nan if x is None else float(x)

        records = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] in ("eval", "window_eval")]
        written = []
        if train:
            fig = Figure(figsize=(7, 4))
            ax = fig.subplots()
            ax.plot([r["step"] for r in train], [number(r["loss"]) for r in train], label="train loss")
            if any(not math.isnan(number(r.get("running_auc"))) for r in train):
                ax2 = ax.twinx()
                aucs = [number(r.get("running_auc")) for r in train]
                ax2.plot([r["step"] for r in train], aucs, color="C1", label="running AUC")
                ax2.set_ylabel("running AUC")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.set_title("training")
            fig.tight_layout()
            fig.savefig(self.dir / "loss.png", dpi=100)
            written.append(self.dir / "loss.png")
        keys = sorted({k for r in evals for k in r if k.endswith(("auc", "gauc"))})
        if evals and keys:
            fig = Figure(figsize=(7, 4))
            ax = fig.subplots()
            for k in keys:
                pts = [(r["step"], number(r[k])) for r in evals if k in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
            ax.set_xlabel("step")
            ax.set_ylabel("evaluation")
            ax.legend()
            fig.tight_layout()
            fig.savefig(self.dir / "eval.png", dpi=100)
            written.append(self.dir / "eval.png")
        return written


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (in dicts and lists) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
