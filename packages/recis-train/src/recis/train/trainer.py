"""`Trainer`: runs stages or online windows over a model of hash-table embeddings and dense layers.

It knows the model only through `transform(batch)` (run in the input thread) and
`forward(batch) -> {head: logits}`; objectives map heads to labels and losses. Everything a resume
needs (tables, optimizers, reader position, step, RNG) goes into the checkpoint, so a resumed run
computes the same losses as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recis.core import keep_freed_memory
from recis.embedding import EmbeddingEngine

from .checkpoint import Checkpointer
from .distributed import Ranks, fully_shard_dense
from .evaluation import batch_rows, score
from .hooks import CheckpointEvery, EvictEvery, Hook
from .objectives import Objective, total_loss
from .online import run_online
from .pipeline import InputPipeline, check_labels, restore_source
from .report import Reporter
from .run_state import RunState
from .stages import OnlineData, Stage, StepTimer, TrainerConfig, batches_per_pass, make_schedule

Batch = dict[str, Any]


log = logging.getLogger("recis.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; raised before that step changed any parameter."""


class Trainer:
    """Trains `model` with a sparse and a dense optimizer; `fit()` runs the stages, `evaluate()` scores.

    Args:
        model: `forward(batch) -> {head: logits}`, optionally `transform(batch)` for feature transforms.
        train_data: iterable of batch dicts (a `recis.io.ColumnReader`, ...) or an `OnlineData`.
        eval_data: iterable of batch dicts for `evaluate()`, or None.
        sparse_optimizer: a `recis.optim` optimizer over the model's embedding engines (or None).
        dense_optimizer: a `torch.optim` optimizer over the dense parameters (or None).
        config: a `TrainerConfig`.

    Examples:
        >>> from recis.embedding import EmbeddingSpec
        >>> from recis.optim import SparseAdam
        >>> from recis.train.models import LogisticRegression
        >>> model = LogisticRegression(EmbeddingEngine({"item": EmbeddingSpec(1)}))
        >>> data = [{"item": torch.tensor([1, 2]), "label": torch.tensor([1, 0])}] * 20
        >>> trainer = Trainer(model, data, data, SparseAdam(model, lr=0.1), torch.optim.Adam(model.parameters(), 0.1),
        ...                   TrainerConfig(progress=False))
        >>> trainer.fit()["eval"]["label.auc"]
        1.0
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Iterable[Batch] | OnlineData | None,
        eval_data: Iterable[Batch] | None = None,
        sparse_optimizer: torch.optim.Optimizer | None = None,
        dense_optimizer: torch.optim.Optimizer | None = None,
        config: TrainerConfig | None = None,
    ):
        self.model, self.train_data, self.eval_data = model, train_data, eval_data
        model.to((config or TrainerConfig()).device)  # dense layers; tables stay where their specs put them
        self.sparse_optimizer, self.dense_optimizer = sparse_optimizer, dense_optimizer
        self.config = cfg = config or TrainerConfig()
        if cfg.grad_accum < 1:
            raise ValueError(f"TrainerConfig.grad_accum must be >= 1, got {cfg.grad_accum}")
        if cfg.dense_sharding not in ("ddp", "fsdp"):
            raise ValueError(f"TrainerConfig.dense_sharding must be 'ddp' or 'fsdp', got {cfg.dense_sharding!r}")
        fused = bool(getattr(sparse_optimizer, "fused", False))
        if fused and (cfg.grad_accum > 1 or cfg.clip_grad_norm):
            raise ValueError("Trainer: a fused sparse optimizer rules out grad_accum > 1 and clip_grad_norm")
        self.objectives = list(cfg.objectives) or [Objective("label")]
        self.stages = list(cfg.stages) or [Stage("train", train_data, epochs=cfg.epochs, steps=cfg.max_steps)]
        self.engines = [m for m in model.modules() if isinstance(m, EmbeddingEngine)]
        # Under torch.distributed: tables sharded by row, dense parameters under DDP or FSDP, rank 0 reports.
        self.ranks = Ranks.current()
        self.fsdp: list[nn.Module] = []  # FSDP's sharding units, when the dense layers are sharded
        if self.ranks.world > 1:
            for engine in self.engines:
                if not engine.sharded:
                    engine.shard()
        if self.ranks.world > 1 and cfg.dense_sharding == "fsdp":
            with self.ranks.guard("sharding the dense parameters (FSDP)"):
                self.fsdp = fully_shard_dense(model, [dense_optimizer] if dense_optimizer is not None else [])
        self.ddp: nn.Module | None = None
        self._ddp_params: tuple[str, ...] = ()
        self.optimizers = {k: o for k, o in (("sparse", sparse_optimizer), ("dense", dense_optimizer)) if o is not None}
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        out = Path(cfg.output_dir) if cfg.output_dir else None
        self.checkpointer = Checkpointer(out / "checkpoints", cfg.keep_checkpoints) if out else None
        main = self.ranks.is_main
        self.reporter = Reporter(out if main else None, cfg.progress and main, cfg.log_every)
        self.hooks: list[Hook] = [self.reporter, *cfg.hooks]
        if cfg.tensorboard and out is not None and main:
            from .tensorboard import TensorBoardWriter

            board = TensorBoardWriter(out / "tensorboard")
            self.reporter.sinks.append(lambda record: board.record(self, record))
            self.hooks.append(board)
        if self.checkpointer is not None:
            self.hooks.append(CheckpointEvery(cfg.checkpoint_every))
        self.hooks.append(EvictEvery(cfg.evict_every))
        self.timing = StepTimer()
        self._sparse_t0 = 0.0
        for engine in self.engines:  # times the sparse forward; both hooks return None (output unchanged)
            engine.register_forward_pre_hook(torch.compiler.disable(self._sparse_start))
            engine.register_forward_hook(torch.compiler.disable(self._sparse_end))
        if cfg.compile:
            model.compile()
        self.run = RunState()
        self.stage_name = self.stages[0].name
        self.should_stop, self.stop_reason = False, ""
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self._start_samples = 0
        self._eval_step = -1

    # ---- state ---------------------------------------------------------------------------------

    def _sparse_start(self, *_: Any) -> None:
        self._sparse_t0 = time.perf_counter()

    def _sparse_end(self, *_: Any) -> None:
        if self.model.training:
            self._add_time("sparse_forward", self._sparse_t0)

    def _add_time(self, part: str, t0: float) -> float:
        now = time.perf_counter()
        self.timing.add(part, now - t0)
        return now

    @property
    def step(self) -> int:
        """Optimizer steps taken (`run.step`)."""
        return self.run.step

    @property
    def samples(self) -> int:
        """Training rows consumed (`run.samples`)."""
        return self.run.samples

    @property
    def epoch(self) -> int:
        """Passes over the current stage's data finished (`run.epoch`)."""
        return self.run.epoch

    @property
    def stage_step(self) -> int:
        """Steps into the current stage (`run.stage_step`)."""
        return self.run.stage_step

    def state(self) -> dict[str, Any]:
        """The trainer's own state, saved in checkpoints: the `RunState`, the RNG and the world size
        (with several ranks, each rank's reader position and RNG under "ranks": a collective, as
        saving is)."""
        state = self.run.to_dict() | {"rng": torch.get_rng_state(), "world_size": self.ranks.world}
        if self.ranks.world > 1:
            state["ranks"] = self.ranks.gather({"position": self.run.position, "rng": torch.get_rng_state().tolist()})
        return state

    def save_checkpoint(self, delta: bool = False) -> Path | None:
        """Saves a checkpoint of the current step, a delta over the previous one if asked (no-op
        without an output_dir)."""
        if self.checkpointer is None:
            return None
        state = self.state()
        self.last_checkpoint = self.checkpointer.save(self.run.step, self.model, self.optimizers, state, delta)
        return self.last_checkpoint

    def resume(self, path: str | Path = "latest") -> bool:
        """Loads checkpoint `path` ("latest": the newest in output_dir); False when there is none."""
        if path == "latest":
            found = self.checkpointer.latest() if self.checkpointer is not None else None
            if found is None:
                return False
            path = found
        state = (self.checkpointer or Checkpointer(Path(path).parent)).load(path, self.model, self.optimizers)
        self.run = RunState.from_dict(state)
        torch.set_rng_state(state["rng"])
        saved_world = state.get("world_size", 1)
        if saved_world == self.ranks.world and "ranks" in state:
            mine = state["ranks"][self.ranks.rank]
            self.run.position = mine["position"]
            torch.set_rng_state(torch.tensor(mine["rng"], dtype=torch.uint8))
        elif saved_world != self.ranks.world and self.run.position is not None:
            # Rows and dense state re-distribute to any world size; reader positions do not.
            warnings.warn(
                f"[recis.train] checkpoint saved by {saved_world} ranks, resumed on {self.ranks.world}: "
                "the interrupted pass over the data restarts from its beginning",
                stacklevel=2,
            )
            self.run.position = None
        self.last_checkpoint = Path(path)
        return True

    # ---- training ------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Runs the stages from the start (or from `config.resume`); returns the summary.

        Raises:
            NonFiniteLossError: the loss became NaN/inf; the message names the step and the last checkpoint.
        """
        cfg = self.config
        if cfg.keep_freed_memory:
            keep_freed_memory()
        resumed = self.resume(cfg.resume) if cfg.resume else False
        if not cfg.resume and cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        if resumed:
            self._extend_finished_stage()
        self.timing = StepTimer()
        start_step, t0 = self.run.step, time.perf_counter()
        self._start_samples = self.run.samples
        for hook in self.hooks:
            hook.on_fit_start(self)
        try:
            while self.run.stage_index < len(self.stages) and not self.should_stop:
                stage = self.stages[self.run.stage_index]
                self.stage_name = stage.name
                if isinstance(stage.data, OnlineData) or (
                    stage.data is None and isinstance(self.train_data, OnlineData)
                ):
                    run_online(self, stage)
                else:
                    self._run_stage(stage)
                if self.should_stop:
                    break
                run = self.run
                run.finished_epochs, run.finished_steps = run.epoch, run.stage_step
                run.stage_index, run.stage_step, run.epoch, run.position = run.stage_index + 1, 0, 0, None
            if cfg.checkpoint_at_end and self.run.step > start_step:
                self.save_checkpoint()
        finally:
            self.reporter.close_bar()
            self.prepare_stage(None)
            if self.checkpointer is not None:
                self.checkpointer.close()  # the directory's writer lock goes with the run
        return self._finish(start_step, time.perf_counter() - t0)

    def _extend_finished_stage(self) -> None:
        """After resuming a finished run: reopens its last stage when it now asks for more epochs or
        steps than it ran (the next pass starts at the data's beginning); otherwise says there is
        nothing to train."""
        run, last = self.run, self.stages[-1] if self.stages else None
        if run.stage_index < len(self.stages) or last is None or isinstance(last.data or self.train_data, OnlineData):
            return
        if run.finished_epochs is None or run.finished_steps is None:  # a checkpoint from before these were kept
            self.stop_reason = "nothing to train"
            log.info("nothing to train: the run finished its stages at step %d", run.step)
            return
        epochs = last.epochs or (1 if last.steps is None else 10**9)
        if epochs > run.finished_epochs and (last.steps is None or last.steps > run.finished_steps):
            run.stage_index, run.epoch, run.stage_step, run.position = (
                len(self.stages) - 1,
                run.finished_epochs,
                run.finished_steps,
                None,
            )
            log.info("resuming finished stage %r at epoch %d, step %d", last.name, run.epoch, run.step)
            return
        self.stop_reason = "nothing to train"
        log.info(
            "nothing to train: the run finished its stages at step %d (stage %r: %d epochs, %d steps); raise "
            "train.epochs (and train.max_steps, if set) to train on",
            run.step, last.name, run.finished_epochs, run.finished_steps,
        )  # fmt: skip

    def _finish(self, start_step: int, seconds: float) -> dict[str, Any]:
        if self.eval_data is not None and not self.last_eval and self.stop_reason != "nothing to train":
            self.evaluate()
        trained = self.run.samples - self._start_samples
        if self.ranks.world > 1:  # samples and speed of all ranks together
            trained = sum(self.ranks.gather(trained))
        summary: dict[str, Any] = {
            "steps": self.run.step, "samples": self.run.samples, "ranks": self.ranks.world,
            "seconds": round(seconds, 2),
            "samples_per_s": trained / seconds if seconds > 0 and self.run.step > start_step else math.nan,
            "data_wait_fraction": self.timing.data_wait_fraction(), "stop_reason": self.stop_reason or "done",
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "eval": dict(self.last_eval), "time_split": self.timing.fractions(),
            "embedding": {f"{i}.{k}": v for i, e in enumerate(self.engines) for k, v in e.stats().items()},
        }  # fmt: skip
        for hook in self.hooks:
            hook.on_fit_end(self, summary)
        return summary

    def prepare_stage(self, stage: Stage | None) -> None:
        """Train mode, with the stage's frozen parameters off and frozen engines read-only (eval
        mode); None: everything trainable again."""
        self.model.train()
        names = dict(self.model.named_modules())
        for name, p in self.model.named_parameters():
            if not hasattr(p, "_recis_requires_grad"):
                p._recis_requires_grad = p.requires_grad  # type: ignore[attr-defined]
            p.requires_grad_(p._recis_requires_grad and (stage is None or stage.trains(name)))  # type: ignore[attr-defined]
        for name, module in names.items():
            if isinstance(module, EmbeddingEngine) and stage is not None and not stage.trains(name):
                module.eval()
        self._wrap_dense()

    def _wrap_dense(self) -> None:
        """With several ranks, wraps the model in DDP for its trainable dense parameters (again
        whenever a stage changes which ones train: DDP fixes its set when built). FSDP needs no
        rewrap: it reduces the gradients of whichever parameters have one."""
        if self.ranks.world == 1 or self.config.dense_sharding == "fsdp":
            return
        from torch.nn.parallel import DistributedDataParallel

        trainable = tuple(n for n, p in self.model.named_parameters() if p.requires_grad)
        if trainable != self._ddp_params or self.ddp is None:
            with self.ranks.guard("wrapping the dense parameters in DDP"):
                self.ddp = DistributedDataParallel(self.model) if trainable else None
            self._ddp_params = trainable

    def _set_lr(self, factor: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _run_stage(self, stage: Stage) -> None:
        data = stage.data if stage.data is not None else self.train_data
        if data is None or isinstance(data, OnlineData):
            raise ValueError(f"Stage {stage.name!r} has no data and the Trainer has no train_data")
        per_pass = batches_per_pass(data)
        epochs = stage.epochs or (1 if stage.steps is None else 10**9)
        total = stage.steps or (per_pass * epochs // self.config.grad_accum if per_pass else None)
        self.prepare_stage(stage)
        schedule = make_schedule(stage.lr_schedule)
        self.reporter.start_bar(stage.name, total, self.run.stage_step)
        while self.run.epoch < epochs and not self.stage_done(stage):
            if self.run.position is None and hasattr(data, "set_epoch"):
                data.set_epoch(self.run.epoch)
            if not self.train_pass(stage, data, schedule, total):
                break
            self.run.epoch, self.run.position = self.run.epoch + 1, None
            more = self.run.epoch < epochs and not self.stage_done(stage)
            if (
                more
                and self.config.eval_every_epoch
                and self.eval_data is not None
                and self._eval_step != self.run.step
            ):
                self.evaluate()  # an EarlyStopping hook may stop the stage here
        if not self.should_stop and self.eval_data is not None and self._eval_step != self.run.step:
            self.evaluate()

    # ---- the pieces a training loop is made of (the stages above, the online windows) ----------

    def stage_done(self, stage: Stage) -> bool:
        """Whether training must stop (a hook asked) or `stage` has taken all its steps."""
        return self.should_stop or (stage.steps is not None and self.run.stage_step >= stage.steps)

    def train_pass(self, stage: Stage, data: Iterable[Batch], schedule: Any, total: int | None) -> bool:
        """One pass over `data` with the learning-rate `schedule` (`stages.make_schedule`; `total`:
        the steps it spans), resumed at `run.position` when that is inside this pass. True when it
        ran to the end of the data; False when the stage or the run stopped first."""
        skip = restore_source(data, self.run.position)
        consumed = self.run.position["consumed"] if self.run.position and not skip else 0
        return self._train_pass(stage, data, schedule, total, skip, consumed)

    def end_window(self, key: str) -> None:
        """Marks online window `key` finished and runs the hooks' `on_window_end` (checkpoint, eviction)."""
        self.run.window_done, self.run.position = key, None
        for hook in self.hooks:
            hook.on_window_end(self, key)

    def _train_pass(
        self, stage: Stage, data: Iterable[Batch], schedule: Any, total: int | None, skip: int, consumed: int
    ) -> bool:
        transform = getattr(self.model, "transform", None)
        pipe = InputPipeline(data, transform, self.config.prefetch, skip, consumed, self.config.device)
        micro: list[tuple[Batch, dict[str, Any]]] = []
        wait = 0.0
        with contextlib.closing(pipe):
            for item in self._agreed(pipe):
                self.timing.add("data_wait", pipe.wait_s - wait)
                wait = pipe.wait_s
                micro.append(item)
                if len(micro) < self.config.grad_accum:
                    continue
                self._set_lr(schedule(self.run.stage_step, total))
                previous, self.run.position = self.run.position, micro[-1][1]  # hooks may checkpoint after this step
                try:
                    self._optimizer_step([b for b, _ in micro])
                except NonFiniteLossError:
                    self.run.position = previous
                    raise
                micro = []
                if self.stage_done(stage):
                    return False
        return True

    def _agreed(self, items: Iterable[Any]) -> Iterable[Any]:
        """`items` while every rank still has one (a pass ends for all when one rank's data does)."""
        it = iter(items)
        while True:
            item = next(it, None)
            with self.ranks.guard(f"step {self.run.step + 1} (agreeing on the next batch)"):
                more = self.ranks.all_have(item is not None)
            if not more:
                return
            yield item

    def _optimizer_step(self, batches: list[Batch]) -> None:
        with self.ranks.guard(f"step {self.run.step + 1}"):
            self._step(batches)

    def _step(self, batches: list[Batch]) -> None:
        cfg = self.config
        losses: dict[str, float] = {}
        total = 0.0
        model = self.ddp or self.model
        for i, batch in enumerate(batches):
            check_labels(self.objectives, batch)
            t = time.perf_counter()
            sparse_before = self.timing.seconds["sparse_forward"]
            last = i == len(batches) - 1  # DDP and FSDP average dense gradients after the last micro-batch
            for unit in self.fsdp:
                unit.set_requires_gradient_sync(last)  # type: ignore[operator]
            with contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync():  # type: ignore[operator]
                with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    outputs = model(batch)
                loss, parts = total_loss(self.objectives, outputs, batch)
                t = self._add_time("dense_forward", t)
                self.timing.add("dense_forward", -(self.timing.seconds["sparse_forward"] - sparse_before))
                shown = self.ranks.mean(loss.detach())  # all ranks see a NaN anywhere, and stop together
                if not torch.isfinite(shown):
                    self._stop_non_finite(float(shown), parts)
                (loss / len(batches)).backward()
            self._add_time("backward", t)
            total += float(shown) / len(batches)
            for k, v in parts.items():
                losses[k] = losses.get(k, 0.0) + float(v) / len(batches)
            self._observe(outputs, batch)
            self.run.samples += batch_rows(batch)
        t = time.perf_counter()
        if cfg.clip_grad_norm:
            from recis.optim import clip_grad_norm_

            dense = [p for p in self.model.parameters() if p.grad is not None]
            sparse = [self.sparse_optimizer] if self.sparse_optimizer is not None else []
            clip_grad_norm_(dense, sparse, cfg.clip_grad_norm)  # type: ignore[arg-type]
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.step()
            self.sparse_optimizer.zero_grad()
        t = self._add_time("sparse_update", t)
        if self.dense_optimizer is not None:
            self.dense_optimizer.step()
            self.dense_optimizer.zero_grad()
        self._add_time("dense_update", t)
        self.run.step += 1
        self.run.stage_step += 1
        logs = {"step": self.run.step, "stage": self.stage_name, "epoch": self.run.epoch, "loss": total,
                "lr_factor": self._lr_factor(), **{f"{k}.loss": v for k, v in losses.items()}}  # fmt: skip
        for hook in self.hooks:
            hook.on_step_end(self, logs)
        if self.config.eval_every and self.run.step % self.config.eval_every == 0 and self.eval_data is not None:
            self.evaluate()

    def _lr_factor(self) -> float:
        for opt in self.optimizers.values():
            g = opt.param_groups[0]
            return float(g["lr"] / g["initial_lr"]) if g["initial_lr"] else 1.0
        return 1.0

    def _stop_non_finite(self, value: float, parts: dict[str, torch.Tensor]) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad()
        for engine in self.engines:
            engine.clear_sparse_grads()
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        window = f", window {self.run.window!r}" if self.run.window else ""
        where = f"stage {self.stage_name!r}, epoch {self.run.epoch}{window}"
        last = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"[recis.train] loss is {value} at step {self.run.step + 1} ({where}; per objective: {detail}); "
            f"stopped before applying it; {last}"
        )

    def _observe(self, outputs: dict[str, torch.Tensor], batch: Batch) -> None:
        for obj in self.objectives:
            if obj.loss == "bce":
                self.reporter.observe(obj.predictions(outputs[obj.head_name]), batch[obj.label])
                return

    # ---- online --------------------------------------------------------------------------------

    # ---- evaluation ----------------------------------------------------------------------------

    def evaluate(self, data: Iterable[Batch] | None = None, max_batches: int | None = None) -> dict[str, float]:
        """Scores the model on `data` (default eval_data); see `evaluation.score` for the metrics."""
        data = data if data is not None else self.eval_data
        if data is None:
            raise ValueError("Trainer.evaluate: no data given and the Trainer has no eval_data")
        cfg, was_training = self.config, self.model.training
        try:
            limit = max_batches or cfg.eval_batches
            with self.ranks.guard(f"evaluation at step {self.run.step}"), self.reporter.eval_bar(data, limit) as tick:
                result = score(self.model, data, self.objectives, cfg.group_column, cfg.prefetch, cfg.bf16,
                               limit, self.ranks, cfg.device, tick)  # fmt: skip
        finally:
            if was_training:
                self.prepare_stage(self.stages[min(self.run.stage_index, len(self.stages) - 1)])
        self.last_eval, self._eval_step = result, self.run.step
        for hook in self.hooks:
            hook.on_eval_end(self, result)
        return result
