"""Time-budgeted training loop shared by ``train`` and ``distill``.

Why its own module: both jobs need the same machinery - AdamW, warmup + cosine LR as a
pure function of the step, token-budget batches at a saved position, checkpoints every
few minutes that hold everything needed to continue *exactly* (weights in HF layout,
optimiser state, step, batch position, RNG states), a CSV log and a wall-clock budget -
and differ only in how a batch becomes a loss.

Checkpoint layout (``OUT/model``)::

    config.json, generation_config.json, model.safetensors   # loadable with load_causal_lm
    trainer_state.pt                                          # optimiser, step, position, RNG, config

Written to ``OUT/model.tmp`` then swapped in, so a kill mid-save leaves the previous one.
"""

from __future__ import annotations

import argparse

import contextlib
import csv
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..malloc import keep_freed_memory, release_freed_memory
from ..models import native_bf16
from .data import BatchPlan, Example, collate

__all__ = ["LoopConfig", "LossFn", "Trainer", "lr_at", "lr_by_time"]

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]]
MODEL_DIR = "model"
BEST_DIR = "best"
STATE_FILE = "trainer_state.pt"
LOG_FILE = "log.csv"


@dataclass
class LoopConfig:
    """Optimisation + budget settings; saved with each checkpoint."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    total_steps: int = 20000
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_tokens: int = 8192
    seed: int = 0
    minutes: float = 10.0  # wall-clock budget of this run (checkpoint time included)
    max_steps: int | None = None  # stop at this global step (tests, fixed-length runs)
    ckpt_minutes: float = 5.0
    eval_batches: int = 2  # heldout batches scored at each checkpoint (0: none)
    anneal: str = "steps"  # "steps": cosine over total_steps; "time": warmup, then cosine over this run's minutes
    keep_best: bool = False  # also keep the weights with the lowest heldout loss in OUT/best
    threads: int | None = 1
    bf16: bool = False  # autocast to bfloat16: ~2.9x faster on AVX512-BF16 CPUs, ~13x slower on AVX2 (weights stay fp32)
    device: str = "cpu"  # "cuda" when a GPU is available: same code, same checkpoints
    progress: bool = True
    extra: dict = field(default_factory=dict)  # job-specific settings to persist


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warmup, cosine decay to ``min_lr_ratio * lr`` at ``total_steps``, flat after."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.total_steps - cfg.warmup_steps, 1)
    return _cosine(min((step - cfg.warmup_steps) / span, 1.0), cfg)


def _cosine(t: float, cfg: LoopConfig) -> float:
    """``lr`` at ``t`` = 0 down to ``min_lr_ratio * lr`` at ``t`` = 1."""
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def lr_by_time(steps_run: int, spent: float, cfg: LoopConfig) -> float:
    """Warmup over this run's first ``warmup_steps``, then cosine to ``min_lr_ratio * lr``
    as the wall-clock budget is spent (``spent`` in [0, 1]).

    Why: on a borrowed GPU the budget is minutes, not steps, and how many steps fit is
    unknown beforehand; a step-based schedule would stop mid-decay (or decay too early).
    A resumed run anneals again over its own budget (a warm restart)."""
    if steps_run < cfg.warmup_steps:
        return cfg.lr * (steps_run + 1) / cfg.warmup_steps
    return _cosine(min(max(spent, 0.0), 1.0), cfg)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


class Trainer:
    """Runs ``loss_fn`` over batches of ``examples`` until the budget is spent."""

    def __init__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        loss_fn: LossFn,
        out: str | Path,
        cfg: LoopConfig,
        *,
        pad_id: int,
        heldout: Sequence[Example] = (),
        log_fields: Sequence[str] = ("loss",),
    ) -> None:
        self.model = model
        self.examples = list(examples)
        self.heldout = list(heldout)
        self.loss_fn = loss_fn
        self.out = Path(out)
        self.cfg = cfg
        self.pad_id = pad_id
        self.log_fields = list(log_fields)
        self.plan = BatchPlan([len(e) for e in self.examples], cfg.batch_tokens, cfg.seed)
        self.device = torch.device(cfg.device)
        model.to(self.device)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=cfg.betas,
        )
        self.step = 0
        self.position = (0, 0)
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.stop_requested = False  # set by SIGINT/SIGTERM during run(): finish the step, save, return
        self.best: tuple[float, int] | None = None  # (heldout loss, step) of OUT/best, with keep_best
        if (self.out / BEST_DIR / "best.json").exists():  # a resumed run competes with the best so far
            b = json.loads((self.out / BEST_DIR / "best.json").read_text())
            self.best = (float(b["heldout_loss"]), int(b["step"]))

    # ----- checkpoints -------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.out / MODEL_DIR

    def save(self) -> None:
        tmp = self.out / (MODEL_DIR + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)  # safetensors are written from CPU copies by HF
        state = {
            "step": self.step,
            "position": self.position,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "optimizer": self.opt.state_dict(),
            "rng": _rng_state(),
            "config": asdict(self.cfg),
        }
        torch.save(state, tmp / STATE_FILE)
        old = self.out / (MODEL_DIR + ".old")
        if self.model_dir.exists():
            os.replace(self.model_dir, old)
        os.replace(tmp, self.model_dir)
        if old.exists():
            shutil.rmtree(old)

    def _checkpoint(self) -> float | None:
        """Score the heldout set, save, and with ``keep_best`` keep the best weights apart.

        Why keep the best: many epochs over a few thousand sentences can start to overfit
        inside one GPU budget; the lowest heldout loss is the checkpoint to ship."""
        heldout = self.evaluate()
        self.save()
        if self.cfg.keep_best and heldout is not None and (self.best is None or heldout < self.best[0]):
            self.best = (heldout, self.step)
            tmp = self.out / (BEST_DIR + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            self.model.save_pretrained(tmp)
            (tmp / "best.json").write_text(json.dumps({"heldout_loss": heldout, "step": self.step}) + "\n")
            if (self.out / BEST_DIR).exists():
                shutil.rmtree(self.out / BEST_DIR)
            os.replace(tmp, self.out / BEST_DIR)
        return heldout

    def load_state(self) -> None:
        """Restore optimiser/step/position/RNG from ``OUT/model`` (weights are loaded by the caller)."""
        state = torch.load(self.model_dir / STATE_FILE, weights_only=False)
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.position = tuple(state["position"])
        self.tokens_seen = int(state["tokens_seen"])
        self.train_seconds = float(state["train_seconds"])
        _set_rng_state(state["rng"])
        self._truncate_log()

    @staticmethod
    def saved_config(out: str | Path) -> dict | None:
        p = Path(out) / MODEL_DIR / STATE_FILE
        return torch.load(p, weights_only=False)["config"] if p.exists() else None

    def _truncate_log(self) -> None:
        """Drop log rows past the checkpoint so a resumed log has no duplicate steps."""
        path = self.out / LOG_FILE
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    # ----- logging -----------------------------------------------------------------
    def _log(self, row: dict) -> None:
        path = self.out / LOG_FILE
        fields = ["step", "epoch", "train_s", "lr", "tokens", "tokens_per_s", *self.log_fields, "heldout_loss"]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.heldout or self.cfg.eval_batches <= 0:
            return None
        plan = BatchPlan([len(e) for e in self.heldout], self.cfg.batch_tokens, seed=12345)
        losses = []
        self.model.eval()
        for idx in plan.epoch(0)[: self.cfg.eval_batches]:
            batch = self._to_device(collate([self.heldout[i] for i in idx], self.pad_id))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                loss, _ = self.loss_fn(self.model, batch)
            losses.append(float(loss))
        self.model.train()
        return float(np.mean(losses))

    # ----- the loop ----------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM ask the loop to stop after the current step and save.

        Why: a run is often stopped by hand (Ctrl-C, ``kill``) or by a session ending, and
        everything since the last periodic checkpoint would otherwise be lost.  Handlers
        can only be installed from the main thread; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request(signum, frame):
            self.stop_requested = True

        old = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def run(self) -> dict:
        """Train until ``minutes`` or ``max_steps`` (or a SIGINT/SIGTERM); checkpoint
        periodically and at the end."""
        with self._stop_on_signals():
            return self._run()

    def _run(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        keep_freed_memory()  # a step's freed activations are reused, not faulted in again
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        start = time.perf_counter()
        last_ckpt = start
        budget = cfg.minutes * 60.0
        bar = tqdm(total=cfg.max_steps or cfg.total_steps, initial=self.step, unit="step", disable=not cfg.progress)
        last: dict = {}
        steps_run = 0
        while True:
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            if time.perf_counter() - start >= budget or self.stop_requested:
                break
            t0 = time.perf_counter()
            idx, next_pos = self.plan.at(*self.position)
            batch = self._to_device(collate([self.examples[i] for i in idx], self.pad_id))
            if cfg.anneal == "time":
                lr = lr_by_time(steps_run, (time.perf_counter() - start) / budget, cfg)
            else:
                lr = lr_at(self.step, cfg)
            for g in self.opt.param_groups:
                g["lr"] = lr
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, metrics = self.loss_fn(self.model, batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0
            n_tok = int(batch["attention_mask"].sum())
            self.step += 1
            release_freed_memory(self.step)  # every so often the heap's holes go back; it would otherwise only grow
            steps_run += 1
            self.position = next_pos
            self.tokens_seen += n_tok
            self.train_seconds += dt
            last = {"loss": float(loss.detach()), **metrics}
            row = {
                "step": self.step,
                "epoch": self.position[0],
                "train_s": round(self.train_seconds, 2),
                "lr": f"{lr:.3e}",
                "tokens": self.tokens_seen,
                "tokens_per_s": round(n_tok / dt, 1),
                **{k: f"{v:.4f}" for k, v in last.items()},
            }
            if time.perf_counter() - last_ckpt >= cfg.ckpt_minutes * 60.0:
                row["heldout_loss"] = _fmt(self._checkpoint())
                last_ckpt = time.perf_counter()
            self._log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{n_tok / dt:.0f}")
        bar.close()
        if self.stop_requested:  # stopping: save first, fast
            heldout = None
            self.save()
        else:
            heldout = self._checkpoint()
        if heldout is not None:
            self._log({"step": self.step, "epoch": self.position[0], "train_s": round(self.train_seconds, 2),
                       "lr": "", "tokens": self.tokens_seen, "tokens_per_s": "", "heldout_loss": _fmt(heldout)})
        return {
            "step": self.step,
            "steps_this_run": steps_run,
            "tokens_seen": self.tokens_seen,
            "train_seconds": round(self.train_seconds, 1),
            "tokens_per_s": round(self.tokens_seen / self.train_seconds, 1) if self.train_seconds else 0.0,
            "last": last,
            "heldout_loss": heldout,
            "stopped_by_signal": self.stop_requested,
            **({"best": {"heldout_loss": self.best[0], "step": self.best[1]}} if self.best else {}),
        }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def add_loop_arguments(ap: "argparse.ArgumentParser", *, warmup: bool = False) -> None:
    """The run-control flags shared by the train and distill CLIs (see :class:`LoopConfig`)."""
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of this run")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="stop at this global step")
    ap.add_argument("--total-steps", type=int, default=None, help="cosine schedule length")
    ap.add_argument("--lr", type=float, default=None)
    if warmup:
        ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--ckpt-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    add_bf16_arguments(ap)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--anneal", choices=["steps", "time"], default=None,
                    help="steps: cosine over --total-steps; time: cosine over this run's --minutes")
    ap.add_argument("--keep-best", action="store_true",
                    help="also keep the weights with the lowest heldout loss (scored at each checkpoint) in OUT/best")
    ap.add_argument("--no-progress", action="store_true")


def add_bf16_arguments(ap: "argparse.ArgumentParser") -> None:
    """``--bf16`` / ``--no-bf16``; unset, :func:`bf16_of` picks what the device computes natively."""
    bf16 = ap.add_mutually_exclusive_group()
    bf16.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                      help="bf16 autocast; weights and optimizer stay fp32 (default: where the device computes "
                           "bf16 natively, e.g. AVX512-BF16/AMX CPUs)")
    bf16.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32")


def bf16_of(args: "argparse.Namespace", device: str = "cpu") -> bool:
    """Whether to train in bf16 autocast on ``device``, from :func:`add_bf16_arguments` flags."""
    return native_bf16(device) if args.bf16 is None else args.bf16


def loop_overrides(args: "argparse.Namespace") -> dict:
    """:class:`LoopConfig` overrides from :func:`add_loop_arguments` flags."""
    overrides = {
        "minutes": args.minutes, "threads": args.threads, "max_steps": args.steps, "total_steps": args.total_steps,
        "lr": args.lr, "batch_tokens": args.batch_tokens, "ckpt_minutes": args.ckpt_minutes,
        "progress": not args.no_progress, "device": args.device,
        "bf16": bf16_of(args, args.device), "anneal": args.anneal, "keep_best": args.keep_best or None,
    }
    if hasattr(args, "warmup_steps"):
        overrides["warmup_steps"] = args.warmup_steps
    return overrides
