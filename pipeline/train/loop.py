"""The training loop: sandwich rule, in-place distillation, attentive sampling, DDP, resume.

One step: the sampler picks [largest, sampled..., smallest]; the largest learns from the
labels (label smoothing, dropout, drop-connect) and the others from the largest's soft
outputs (KL, no dropout; from the labels during the first `sandwich.label_epochs`, while
the largest is still near chance); gradients of all of them add up, are clipped by value and
applied once. Under torchrun the supernet is wrapped in DistributedDataParallel and the
candidates' minibatch losses are averaged over processes so every process keeps the same
subnet. The state is saved atomically every `checkpoint.every_steps` steps and at the end;
`resume=True` continues from it exactly (same batches, subnets, dropout masks, lr).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.errors import ConfigError
from pipeline.model import Supernet, save_checkpoint
from pipeline.progress import progress_bar
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.train.config import TrainConfig
from pipeline.train.data import EpochBatches, FolderDataset, load_splits, make_loader, steps_per_epoch
from pipeline.train.distributed import DistContext, barrier, gather_objects, init_distributed, mean_across
from pipeline.train.evaluate import EvalData, EvalResult, evaluate, to_resolution
from pipeline.train.optim import build_optimizer, build_scheduler
from pipeline.train.sampler import ArchSampler
from pipeline.train.state import STATE_FILE, SUPERNET_FILE, load_state, save_state

log = logging.getLogger(__name__)
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainResult:
    """Where the trained supernet is, how far training got, and the final evaluation."""

    checkpoint: Path
    steps: int
    evaluation: tuple[EvalResult, ...]


class JsonLog:
    """Append-only JSON-lines log (main process only); one object per line, flushed."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "a") if path else None

    def write(self, **record: Any) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


@dataclass
class _Run:
    """Everything a step needs, built once."""

    cfg: TrainConfig
    ctx: DistContext
    space: SearchSpace
    supernet: Supernet
    forward: nn.Module  # the DDP wrapper under torchrun, else the supernet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ArchSampler
    distill_from_step: int  # before it, the non-largest subnets learn from the labels


def _activate(run: _Run, config: SubnetConfig, teacher: bool) -> None:
    """Activate a subnet; dropout and drop-connect act on the largest (teacher) only."""
    run.supernet.set_active(config)
    sw = run.cfg.sandwich
    run.supernet.set_dropout_rate(sw.dropout if teacher else 0.0, sw.drop_connect if teacher else 0.0)


def _train_step(run: _Run, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
    """One sandwich step (`step` = steps done before it); returns the losses of the largest
    and the smallest (KL to the largest, or cross-entropy while `step < distill_from_step`)."""
    sw = run.cfg.sandwich

    @torch.no_grad()
    def minibatch_losses(candidates: Sequence[SubnetConfig]) -> list[float]:
        losses = []
        for config in candidates:
            _activate(run, config, teacher=False)
            logits = run.supernet(to_resolution(images, config.resolution))
            losses.append(F.cross_entropy(logits, labels))
        return mean_across(run.ctx, torch.stack(losses)).tolist()

    archs = run.sampler.sandwich(sw.num_arch_training, minibatch_losses)
    run.optimizer.zero_grad(set_to_none=True)
    _activate(run, archs[0], teacher=True)
    logits = run.forward(to_resolution(images, archs[0].resolution))
    loss = F.cross_entropy(logits, labels, label_smoothing=sw.label_smoothing)
    loss.backward()
    soft = F.softmax(logits.detach(), dim=1)
    distill = step >= run.distill_from_step
    stats = {"loss_largest": loss.item()}
    for config in archs[1:]:
        _activate(run, config, teacher=False)
        student = run.forward(to_resolution(images, config.resolution))
        if distill:
            kd = F.kl_div(F.log_softmax(student, dim=1), soft, reduction="batchmean")
        else:
            kd = F.cross_entropy(student, labels, label_smoothing=sw.label_smoothing)
        kd.backward()
    stats["loss_smallest_kd" if distill else "loss_smallest_ce"] = kd.item()
    if run.cfg.optimizer.grad_clip_value > 0:
        nn.utils.clip_grad_value_(run.supernet.parameters(), run.cfg.optimizer.grad_clip_value)
    run.optimizer.step()
    run.scheduler.step()
    stats["mflops_sampled"] = [round(run.sampler.mflops(c), 3) for c in archs[1:-1]]
    return stats


def _state(run: _Run, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "config": run.cfg.to_dict(),
        "model": run.supernet.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "sampler_rng": run.sampler.state(),
        "torch_rng": gather_objects(run.ctx, torch.get_rng_state()),
    }


def _restore(run: _Run, path: Path) -> int:
    """Load the saved state into `run`; returns the step to continue from."""
    state = load_state(path)
    essential = ("space", "data", "batch_size", "seed", "epochs", "image_size", "sandwich", "sampler", "optimizer")
    changed = [k for k in essential if state["config"].get(k) != run.cfg.to_dict()[k]]
    if changed:
        raise ConfigError(f"cannot resume {path}: the config differs in {changed}; "
                          "use the run's original settings or a new checkpoint.dir")
    run.supernet.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.sampler.set_state(state["sampler_rng"])
    rng_states = state["torch_rng"]
    if len(rng_states) == run.ctx.world:
        torch.set_rng_state(rng_states[run.ctx.rank])
    else:
        log.warning("resuming with %d processes instead of %d: dropout masks will differ", run.ctx.world,
                    len(rng_states))
    return int(state["step"])


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, evaluate_at_end: bool = True,
          max_steps: int | None = None) -> TrainResult:
    """Train a supernet by `cfg`; the result's checkpoint loads with `load_supernet`.

    Under torchrun every process calls this; process 0 writes files and evaluates.
    `max_steps` stops early (state saved, schedule unchanged) for time-boxed jobs; a later
    `resume=True` call continues as if never stopped.
    """
    if not cfg.data:
        raise ConfigError("no training data: pass --data DIR (image folders root/train/<class>/, root/val/<class>/)")
    ctx = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    space = SearchSpace.load(cfg.space)
    train_folder, val_folder = load_splits(cfg.data)
    num_classes = len(train_folder.classes)
    image_size = cfg.image_size or max(space.resolutions)
    spe = steps_per_epoch(len(train_folder), cfg.batch_size, ctx.world)
    if spe == 0:
        raise ConfigError(f"{len(train_folder)} training images do not fill one batch of {cfg.batch_size} "
                          f"per process x {ctx.world}; lower batch_size")
    total = max(1, round(cfg.epochs * spe))
    torch.manual_seed(cfg.seed)  # identical initial weights in every process
    supernet = Supernet(space, num_classes, cfg.sandwich.dropout, cfg.sandwich.drop_connect).to(ctx.device)
    optimizer = build_optimizer(supernet, cfg.optimizer, cfg.batch_size * ctx.world)
    scheduler = build_scheduler(optimizer, round(cfg.optimizer.warmup_epochs * spe), total)
    sampler = ArchSampler(space, cfg.sampler, num_classes, cfg.seed)
    forward: nn.Module = supernet
    if ctx.distributed:
        forward = DistributedDataParallel(supernet, find_unused_parameters=True, broadcast_buffers=False)
    run = _Run(cfg, ctx, space, supernet, forward, optimizer, scheduler, sampler,
               round(cfg.sandwich.label_epochs * spe))

    run_dir = Path(cfg.checkpoint.dir)
    state_path = run_dir / STATE_FILE
    step = _restore(run, state_path) if resume else 0
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / LOG_FILE).unlink(missing_ok=True)
    jlog = JsonLog(run_dir / LOG_FILE if ctx.is_main else None)
    jlog.write(event="start", step=step, total_steps=total, steps_per_epoch=spe, world=ctx.world,
               num_classes=num_classes, resume=resume, config=cfg.to_dict())
    log.info("training %s on %s: %d classes, %d steps (%d per epoch), global batch %d, sampler %s/%s",
             space.name, cfg.data, num_classes, total, spe, cfg.batch_size * ctx.world, cfg.sampler.method,
             cfg.sampler.estimator)
    dataset = FolderDataset(train_folder, image_size, train=True, seed=cfg.seed, min_crop_area=cfg.min_crop_area)
    epochs = -(-total // spe)
    supernet.train()
    stop = total if max_steps is None else min(total, max_steps)
    try:
        while step < stop:
            epoch, start = divmod(step, spe)
            batches = EpochBatches(len(train_folder), cfg.batch_size, epoch, cfg.seed, rank=ctx.rank,
                                   world=ctx.world, start=start).batches[:stop - step]
            bar = progress_bar(total=min(spe, total - epoch * spe), initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                               unit="step", disable=not (progress and ctx.is_main), dynamic_ncols=True)
            tick = time.perf_counter()
            for images, labels in make_loader(dataset, batches, cfg.workers):
                lr = optimizer.param_groups[0]["lr"]
                stats = _train_step(run, images.to(ctx.device), labels.to(ctx.device), step)
                step += 1
                now = time.perf_counter()
                throughput = len(images) * ctx.world / (now - tick)
                tick = now
                bar.set_postfix(loss=f"{stats['loss_largest']:.3f}", img_s=f"{throughput:.0f}", lr=f"{lr:.4f}")
                bar.update()
                jlog.write(event="step", step=step, epoch=epoch, lr=lr, images_per_s=round(throughput, 1), **stats)
                if step % cfg.checkpoint.every_steps == 0 or step == stop:
                    state = _state(run, step)  # collective: every process takes part
                    if ctx.is_main:
                        save_state(state_path, state)
            bar.close()
        if step < total:
            log.info("stopped at step %d of %d; continue with resume", step, total)
            return TrainResult(state_path, step, ())
        results = _finish(run, run_dir, step, num_classes, train_folder.classes, image_size, jlog,
                          evaluate_at_end, progress)
    finally:
        jlog.close()
    return TrainResult(run_dir / SUPERNET_FILE, step, results)


def _finish(run: _Run, run_dir: Path, step: int, num_classes: int, classes: Sequence[str], image_size: int,
            jlog: JsonLog, evaluate_at_end: bool, progress: bool) -> tuple[EvalResult, ...]:
    """Process 0 saves the supernet and evaluates the smallest and largest subnets."""
    results: tuple[EvalResult, ...] = ()
    if run.ctx.is_main:
        cfg = run.cfg
        if evaluate_at_end:
            data = EvalData.from_root(cfg.data, image_size, recalib_batches=cfg.evaluation.recalib_batches,
                                      batch_size=cfg.evaluation.batch_size, workers=cfg.workers, seed=cfg.seed)
            results = tuple(evaluate(run.supernet, [run.space.smallest(), run.space.largest()], data,
                                     progress=progress))
            for r in results:
                jlog.write(event="eval", step=step, **r.to_dict())
        extra = {"train": {"step": step, "config": cfg.to_dict(), "classes": list(classes),
                           "image_size": image_size, "evaluation": [r.to_dict() for r in results]}}
        save_checkpoint(run_dir / SUPERNET_FILE, run.supernet, extra)  # atomic
        jlog.write(event="end", step=step, checkpoint=str(run_dir / SUPERNET_FILE))
    barrier(run.ctx)
    return results
