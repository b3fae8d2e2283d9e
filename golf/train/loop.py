"""The training loop: one process on CPU, torchrun (NCCL/gloo) on many.

Gradients are averaged by an explicit all-reduce (no DDP wrapper) so clipping sees the
global gradient and 1 GPU with accumulation equals N GPUs at the same global batch.
"""
from __future__ import annotations

import copy
import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.distributed as dist

from golf.run import rundir as rd
from golf.run.atomic import atomic_save
from golf.eval.bpb import val_byte_counter
from golf.run.checkpoint import load_torch_file
from golf.run.config import Config
from golf.data.inputs import check_dataset
from golf.data.loader import DistributedTokenLoader
from golf.data.packing import DocumentPackingLoader
from golf.data.shards import (dataset_text_transform, find_shards, load_val_bytes, load_val_tokens,
                              train_pattern)
from golf.data.tokenizer import load_tokenizer
from golf.run.distributed import all_reduce_ as _allreduce, host_max, init_distributed
from golf.run.errors import TrainError
from golf.eval.score import EvalResult, Scoring, evaluate_bpb
from golf.model.gpt import GPT, count_parameters
from golf.train.optim import (build_optimizers, ema_decay_at, muon_momentum, schedule_multiplier, set_lrs,
                        training_fraction)
from golf.train.seq_schedule import SeqSchedule, parse_seq_schedule
from golf.train.step import StepPlan, Stepper
from quant import collect_error_weights, collect_hessians


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    train_time_ms: float
    final_val_loss: float
    final_val_bpb: float
    model_path: Path | None
    ema_path: Path | None
    calib_path: Path | None
    stopped_early: bool
    tokens_per_s: float
    interrupted: bool = False     # SIGINT/SIGTERM: checkpoint written, nothing exported (every rank)


def make_logger(run_dir: Path | None, rank: int) -> Callable[[str], None]:
    """Rank 0 prints each line and appends it to run_dir/train.log; other ranks stay silent."""
    path = Path(run_dir) / rd.TRAIN_LOG if run_dir is not None else None

    def log(msg: str) -> None:
        if rank != 0:
            return
        print(msg, flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            rd.append_line(path, msg)
    return log


def hyperparameters_block(cfg: Config) -> str:
    """The run's settings in the records' `Hyperparameters:` form, one indented `key: value`
    per field: each seed's log then shows what it ran with, so a reviewer (or golf.audit)
    can compare the seeds' logs key by key (#2124's third seed came from another config)."""
    return "Hyperparameters:\n" + "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items())


def resolve_grad_accum(cfg: Config, world_size: int) -> int:
    """GRAD_ACCUM_STEPS or 8 // world_size; checks the global batch splits evenly."""
    accum = cfg.grad_accum_steps or max(1, 8 // world_size)
    parts = world_size * accum * cfg.train_seq_len
    if cfg.train_batch_tokens <= 0 or cfg.train_batch_tokens % parts:
        raise TrainError(f"TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} is not divisible by world_size "
                         f"{world_size} x grad_accum {accum} x TRAIN_SEQ_LEN {cfg.train_seq_len} = {parts}; "
                         f"set TRAIN_BATCH_TOKENS to a multiple of {parts}")
    return accum


def calib_batches_for_rank(total: int, rank: int, world_size: int) -> int:
    """How many of the `total` calibration micro-batches rank `rank` draws (parts r, r+W, ...)."""
    if 0 < total < world_size:
        raise TrainError(f"GPTQ_CALIB_BATCHES={total} is below the world size {world_size}: every "
                         f"rank needs a calibration batch; set it to 0 or at least {world_size}")
    return max(0, -(-(total - rank) // world_size))


def make_loader(cfg: Config, rank: int, world_size: int, accum: int
                ) -> DistributedTokenLoader | DocumentPackingLoader:
    """DOC_PACKING's packed-row loader (every TRAIN_SEQ_SCHEDULE length must divide its row,
    as in #2014) or the seeded TRAIN_SEQ_LEN-row one."""
    if not cfg.doc_packing:
        return DistributedTokenLoader(cfg.data_path, rank=rank, world_size=world_size, seed=cfg.seed,
                                      vocab_size=cfg.vocab_size)
    local = cfg.train_batch_tokens // (world_size * accum)
    bad = [s.seq_len for s in parse_seq_schedule(cfg.train_seq_schedule) if local % s.seq_len]
    if bad:
        raise TrainError(f"TRAIN_SEQ_SCHEDULE={cfg.train_seq_schedule!r}: lengths {bad} do not divide "
                         f"the packed row of {local} tokens (TRAIN_BATCH_TOKENS / ranks / accum); "
                         "use divisors of it")
    return DocumentPackingLoader(cfg.data_path, rank=rank, world_size=world_size,
                                 vocab_size=cfg.vocab_size, bos_id=cfg.bos_id)


def train(cfg: Config, run_dir: Path | None = None, *, log: Callable[[str], None] | None = None,
          stop_after_steps: int | None = None) -> TrainResult:
    """Train cfg's model; writes the run dir on rank 0 and returns its paths and final numbers.

    `stop_after_steps` (test hook) behaves like a SIGTERM after that many total steps:
    it writes checkpoint.pt and returns with stopped_early=True.
    """
    with rd.held_locks():  # the run's lock, until golf.main's command ends if it holds one
        t = Trainer(cfg, run_dir, log)
        t.build()
        if t.cfg.warmup_steps > 0 and t.ckpt is None:
            t.prime_compile()
        t.set_ema({k: v.detach().float().clone() for k, v in t.base.state_dict().items()}
                  if t.cfg.ema_decay > 0 else None)  # from the weights after priming
        if t.ckpt is not None:
            t.restore()
        stopped = t.loop(stop_after_steps)
        if isinstance(stopped, TrainResult):  # a signal: checkpoint written, nothing exported
            return stopped
        return t.finish(stopped)


@contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call `handler` inside the block (main thread only)."""
    old_handlers = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old_handlers[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: no signal handling
        pass
    try:
        yield
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


class Due(NamedTuple):
    """What a finished step does besides training (the *_EVERY settings)."""
    last: bool
    log: bool
    val: bool
    ckpt: bool


class Trainer:
    """One run's shared state; train() calls its phases in order."""

    def __init__(self, cfg: Config, run_dir: Path | None, log: Callable[[str], None] | None):
        """Setup: every check first, then the data and the resumed checkpoint, and only then is
        the run dir written (golf.run.rundir's rules)."""
        cfg.validate()  # every bad setting at once, before any data is read or anything written
        self.di = di = init_distributed()
        self.dev = di.device
        self.accum = resolve_grad_accum(cfg, di.world_size)
        calib_batches_for_rank(cfg.gptq_calib_batches, di.rank, di.world_size)  # checked before training
        cfg, given = rd.absolute_paths(cfg)  # recorded absolute: eval and pack work from anywhere
        self.cfg = cfg
        self.ckpt_path = ckpt_path = rd.resolve_resume(cfg.resume) if cfg.resume else None
        self.run_dir = run_dir = rd.resolve_run_dir(cfg, ckpt_path, run_dir)
        in_place = ckpt_path is not None and run_dir == ckpt_path.parent  # a fork starts a new folder
        changes: list[str] = []
        if ckpt_path is not None:
            rd.check_resume(ckpt_path, cfg, run_dir, changes)
        rd.check_run_dir(run_dir, cfg, resuming=in_place)
        sp = load_tokenizer(cfg.tokenizer_path, cfg.vocab_size)
        check_dataset(cfg.data_path, cfg.tokenizer_path, cfg.vocab_size)
        self.loader = make_loader(cfg, di.rank, di.world_size, self.accum)
        self.seq = SeqSchedule(parse_seq_schedule(cfg.train_seq_schedule), cfg.train_seq_len,
                               cfg.seq_change_warmup_steps)
        self.seq.update(0, 0.0)
        self.val_tokens = load_val_tokens(cfg.data_path, cfg.vocab_size)
        self.lut = val_byte_counter(sp, cfg.vocab_size, self.val_tokens, load_val_bytes(cfg.data_path),
                                    text_transform=dataset_text_transform(cfg.data_path),
                                    where=str(cfg.data_path))
        self.ckpt = (load_torch_file(ckpt_path, "unset RESUME to start fresh, or point it at another "
                                     f"run's {rd.CHECKPOINT}", keys=("model", "step")) if ckpt_path else None)

        if di.rank == 0:  # held until the command ends (golf.main), or this process does
            rd.lock_run(run_dir, f"train_gpt.py training {run_dir}")
        cleared = (rd.start_run_dir(run_dir, cfg.replace(run_id=run_dir.name), di.world_size,
                                    resuming=in_place, given=given) if di.rank == 0 else [])
        self.log = log = log or make_logger(run_dir, di.rank)
        if cleared:
            log(f"overwrite:{run_dir} removed the earlier run's {', '.join(cleared)}")
        if ckpt_path is not None and not in_place:
            log(f"fork:{ckpt_path} -> {run_dir} (the source run is not written)")
        for change in changes:
            log(f"resume:change {change}")
        log(hyperparameters_block(cfg.replace(run_id=run_dir.name)))
        log(f"train_shards:{len(find_shards(train_pattern(cfg.data_path)))}")
        log(f"val_tokens:{len(self.val_tokens)}")
        self.step, self.train_ms, self.last_loss = 0, 0.0, float("nan")
        self.interrupted = self.nonfinite = False
        self.cap_ms = (1000.0 * max(cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds, 0.0)
                       if cfg.max_wallclock_seconds > 0 else 0.0)

    def build(self) -> None:
        """The model (seeded), its optimizers and the step engine."""
        cfg, dev, log = self.cfg, self.dev, self.log
        torch.manual_seed(cfg.seed)
        self.base = base = GPT(cfg).to(dev)
        log(f"model_params:{count_parameters(base)}")
        base.looping = cfg.num_loops > 0 and cfg.enable_looping_at <= 0  # the switch: switch_loop
        log(f"world_size:{self.di.world_size} grad_accum_steps:{self.accum}")
        xl = cfg.xsa_layers()
        log(f"XSA:last_{len(xl)} active_layers:{xl} gate:{int(cfg.xsa_gate)}")
        log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
            f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
            f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
        self.opts = build_optimizers(base, cfg)
        self.cuda = dev.type == "cuda"
        self.model = torch.compile(base, dynamic=False) if (self.cuda and cfg.compile) else base
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda
                         else torch.autocast("cpu", enabled=False))
        self.stepper = Stepper(base, self.opts, StepPlan(
            rank=self.di.rank, world=self.di.world_size, accum=self.accum,
            clip_norm=cfg.grad_clip_norm, sharded=cfg.muon_sharded,
            reduce_bf16=cfg.muon_reduce_bf16))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cuda:  # pinned: a pageable copy would make the host wait for the device queue
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        with self.autocast:
            return self.model(x, y)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch: TRAIN_SEQ_LEN (or the schedule's stage) rows, or a packed row
        whose segment cut the model takes from the same length (DOC_PACKING)."""
        seq_len = self.seq.seq_len or self.cfg.train_seq_len
        if self.cfg.doc_packing:
            self.base.doc_window = seq_len
        return self.loader.next_batch(self.cfg.train_batch_tokens, seq_len, self.accum)

    def train_step(self) -> torch.Tensor:
        """One optimizer step on the next global batch; the mean loss stays on the device.
        A non-finite loss on any rank skips the update on every rank (self.nonfinite is set),
        so the weights, optimizers and EMA stay the last good ones."""
        loss = self.stepper.accumulate(self.forward, [self.next_batch() for _ in range(self.accum)])
        # the one per-step host read of the loss: every rank must agree before the update
        self.nonfinite = host_max([float(not torch.isfinite(loss).all())])[0] > 0
        if not self.nonfinite:
            self.stepper.step()
        self.stepper.zero()
        return loss

    def prime_compile(self) -> None:
        """Run WARMUP_STEPS real steps (compile priming), then restore every state."""
        base, opts, loader = self.base, self.opts, self.loader
        saved = (copy.deepcopy(base.state_dict()), [copy.deepcopy(o.state_dict()) for o in opts],
                 copy.deepcopy(loader.state_dict()))
        self.stepper.zero()
        start = base.looping  # a loop that switches on later is primed in both states (two graphs)
        for state in ([False, True] if self.cfg.num_loops > 0 and not start else [start]):
            base.looping = state
            for _ in range(self.cfg.warmup_steps):
                self.train_step()
        base.looping = start
        base.load_state_dict(saved[0])
        for o, s in zip(opts, saved[1]):
            o.load_state_dict(s)
        loader.load_state_dict(saved[2])
        self.log(f"warmup_steps:{self.cfg.warmup_steps} done (state restored)")

    def set_ema(self, ema: dict[str, torch.Tensor] | None) -> None:
        self.ema = ema
        self.ema_keys = list(ema) if ema is not None else []
        self.ema_vals = [ema[k] for k in self.ema_keys]

    def restore(self) -> None:
        """Continue from checkpoint.pt: weights, optimizers, stream, EMA, clock and RNG."""
        ckpt = self.ckpt
        self.base.load_state_dict(ckpt["model"])
        for o, s in zip(self.opts, ckpt["optimizers"]):
            o.load_state_dict(s)
        ld = ckpt["loader"]
        self.loader.load_state_dict(ld[self.di.rank] if isinstance(ld, list) else ld)
        if self.ema is not None and ckpt.get("ema") is not None:
            self.set_ema({k: v.to(self.dev) for k, v in ckpt["ema"].items()})
        self.step, self.train_ms = int(ckpt["step"]), float(ckpt["elapsed_ms"])
        if ckpt.get("seq_schedule"):
            self.seq.load_state_dict(ckpt["seq_schedule"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        self.log(f"resume:{self.ckpt_path} step:{self.step} elapsed_ms:{self.train_ms:.0f}")

    def loop(self, stop_after_steps: int | None) -> TrainResult | bool:
        """Steps to ITERATIONS or the cap: whether the cap stopped it early, or the interrupted
        TrainResult after a signal (or the test hook)."""
        cfg = self.cfg
        self.base.train()
        with stop_signals(self.on_signal):
            while self.step < cfg.iterations and not (self.cap_ms > 0 and self.train_ms >= self.cap_ms):
                mult, due = self.timed_step()  # (the condition: resumed at the cap)
                # one host-side all-reduce (MAX) decides stopping for every rank: elapsed and signal
                elapsed_max, flag = host_max([self.train_ms, float(self.interrupted)])
                hit_cap = self.cap_ms > 0 and elapsed_max >= self.cap_ms
                self.report(mult, due, hit_cap)
                if flag > 0 or (stop_after_steps is not None and self.step >= stop_after_steps
                                and not due.last):
                    ck = self.save_checkpoint()
                    self.log(f"stopping_early: signal step:{self.step}/{cfg.iterations} checkpoint:{ck}")
                    return TrainResult(self.run_dir, self.step, self.train_ms, float("nan"), float("nan"),
                                       None, None, None, True, self.tokens_per_s(), interrupted=True)
                if hit_cap:
                    self.log(f"stopping_early: wallclock_cap train_time:{self.train_ms:.0f}ms "
                             f"step:{self.step}/{cfg.iterations}")
                    return self.step < cfg.iterations
        return False

    def stop_nonfinite(self, loss: float) -> None:
        """The first non-finite loss: checkpoint the state from before that step (weights,
        optimizers, EMA, stream position; its update was skipped) and stop with one line."""
        self.loader.load_state_dict(self.loader_before)
        ck = self.save_checkpoint()
        bad = self.step + 1
        self.log(f"train:nonfinite step:{bad}/{self.cfg.iterations} train_loss:{loss} checkpoint:{ck} "
                 f"holds step {self.step}")
        raise TrainError(f"train_loss is {loss} at step {bad}: training stopped; {ck or 'checkpoint.pt'} "
                         f"holds step {self.step}, the last finite state. Lower the learning rates "
                         f"(MATRIX_LR, TIED_EMBED_LR, SCALAR_LR) and start a new run, or export "
                         f"those weights with RESUME={self.run_dir} ITERATIONS={self.step} "
                         "python train_gpt.py")

    def on_signal(self, _signum: int, _frame: Any) -> None:
        self.interrupted = True

    def timed_step(self) -> tuple[float, Due]:
        """One step (+ EMA) timed into train_ms; the loss is read back (a host wait) only on
        steps that report it."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.loader_before = self.loader.state_dict()  # the stream as the last good state saw it
        self.switch_loop()
        self.switch_seq_len()
        mult = schedule_multiplier(cfg, self.step, self.train_ms, self.cap_ms) * self.seq.lr_factor(self.step)
        set_lrs(self.opts, mult, muon_momentum(self.step, cfg))
        loss_t = self.train_step()
        if self.nonfinite:
            self.stop_nonfinite(float(loss_t))
        if self.ema is not None:
            d = ema_decay_at(self.step, cfg.ema_decay, cfg.ema_warmup)
            with torch.no_grad():  # one fused update over all tensors
                live = self.base.state_dict()
                torch._foreach_mul_(self.ema_vals, d)
                torch._foreach_add_(self.ema_vals, [live[k].float() for k in self.ema_keys], alpha=1 - d)
        self.step = step = self.step + 1
        due = Due(last=step >= cfg.iterations,
                  log=bool(cfg.train_log_every) and (step % cfg.train_log_every == 0 or step == 1),
                  val=bool(cfg.val_loss_every) and step % cfg.val_loss_every == 0,
                  ckpt=bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0)
        if any(due):  # only steps that read results wait for the device
            self.last_loss = float(_allreduce(loss_t.float()).div_(self.di.world_size))
            if self.cuda:
                torch.cuda.synchronize()
        self.train_ms += 1000.0 * (time.perf_counter() - t0)
        return mult, due

    def switch_loop(self) -> None:
        """Turn the depth loop on (one-way) once the training fraction reaches ENABLE_LOOPING_AT."""
        cfg = self.cfg
        if self.base.looping or cfg.num_loops <= 0:
            return
        frac = training_fraction(self.step, self.train_ms, self.cap_ms, cfg.iterations)
        if frac >= cfg.enable_looping_at:
            self.base.looping = True
            enc, dec = cfg.layer_plan(looping=True)
            self.log(f"loop:on step:{self.step} frac:{frac:.3f} encoder:{enc} decoder:{dec}")

    def switch_seq_len(self) -> None:
        """TRAIN_SEQ_SCHEDULE's stage for this step (a change starts its LR re-warm-up)."""
        frac = training_fraction(self.step, self.train_ms, self.cap_ms, self.cfg.iterations)
        if self.seq.update(self.step, frac):
            self.log(f"seq_len:{self.seq.seq_len} step:{self.step} frac:{frac:.3f} "
                     f"lr_rewarmup_steps:{self.cfg.seq_change_warmup_steps}")

    def step_avg(self) -> float:
        return self.train_ms / max(self.step, 1)

    def tokens_per_s(self) -> float:
        return self.cfg.train_batch_tokens * self.step / max(self.train_ms, 1e-9) * 1000.0

    def report(self, mult: float, due: Due, hit_cap: bool) -> None:
        """The step's log line, validation and checkpoint as `due` says (outside train_ms)."""
        cfg, step, train_ms = self.cfg, self.step, self.train_ms
        step_avg, tok_s = self.step_avg(), self.tokens_per_s()
        if due.log:
            eta = (cfg.iterations - step) * step_avg / 1000.0
            if self.cap_ms > 0:
                eta = min(eta, max(self.cap_ms - train_ms, 0.0) / 1000.0)
            self.log(f"step:{step}/{cfg.iterations} train_loss:{self.last_loss:.4f} train_time:{train_ms:.0f}ms "
                     f"step_avg:{step_avg:.2f}ms tok_s:{tok_s:.0f} eta:{eta:.0f}s")
            self.write_metrics({"step": step, "train_loss": self.last_loss, "train_time_ms": train_ms,
                                "tokens_per_s": tok_s, "lr_mult": mult})
        if due.val and not due.last and not hit_cap:
            self.validate(self.base)
        if due.ckpt and not due.last and not hit_cap:
            ck = self.save_checkpoint()  # a collective on all ranks
            self.log(f"checkpoint:{ck} step:{step}/{cfg.iterations}")

    def finish(self, stopped_early: bool) -> TrainResult:
        """A resumable checkpoint first (a failure in any final output loses no training), then
        calibration, validation of the EMA weights and the raw + EMA exports."""
        cfg, run_dir, step = self.cfg, self.run_dir, self.step
        final_ck = self.save_checkpoint()
        self.log(f"checkpoint:{final_ck} step:{step}/{cfg.iterations} (final, before the exports)")
        kept = (f"{run_dir / rd.CHECKPOINT} at step {step} (all training); free space and finish with "
                f"RESUME={run_dir} python train_gpt.py")
        t_cal = time.perf_counter()  # everything from here to the Hessians counts against the budget
        sd = {k: v.detach().float().cpu() for k, v in self.base.state_dict().items()}
        ema_sd = {k: v.float().cpu() for k, v in self.ema.items()} if self.ema is not None else sd
        ema_model = GPT(cfg).to(self.dev)
        ema_model.load_state_dict(ema_sd)
        calib_path = self.calibrate(ema_model, t_cal, kept) if cfg.gptq_calib_batches > 0 else None
        r = self.validate(ema_model, " (ema)")
        model_path = ema_path = None
        if self.di.rank == 0:
            with rd.io_guard("writing the final weights", kept):
                model_path = atomic_save({"config": cfg.to_dict(), "state_dict": sd}, run_dir / rd.MODEL)
                ema_path = atomic_save({"config": cfg.to_dict(), "state_dict": ema_sd}, run_dir / rd.EMA)
        return TrainResult(run_dir, step, self.train_ms, r.val_loss, r.val_bpb, model_path, ema_path,
                           calib_path if self.di.rank == 0 else None, stopped_early, self.tokens_per_s())

    def calibrate(self, ema_model: torch.nn.Module, t_cal: float, kept: str) -> Path | None:
        """GPTQ Hessians inside the training budget, on fresh training batches (never val)."""
        cfg, di, dev = self.cfg, self.di, self.dev
        # the reserve is taken from the loop so that loop + calibration fit the full wallclock
        budget_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else 0.0
        # the first GPTQ_CALIB_BATCHES micro-batches of the stream after training, split over
        # ranks like a training step (rank r takes parts r, r+W, ...), so it is the same set of
        # tokens whatever the world size at the same global batch
        n_mine = calib_batches_for_rank(cfg.gptq_calib_batches, di.rank, di.world_size)
        pairs = [tuple(t.to(dev) for t in self.next_batch()) for _ in range(n_mine)]
        batches = [x for x, _ in pairs]
        ema_model.eval()
        ema_model.doc_window = self.base.doc_window  # packed rows: the training segment cut
        with self.autocast:
            hs = collect_hessians(ema_model, batches, all_reduce=_allreduce)
            # the fitter's error weights (QUANT_FISHER), on the same batches: a subset chosen per
            # rank (it was each rank's first half) is another token set at each world size, and
            # the artifact then depended on how many ranks calibrated
            om = (collect_error_weights(ema_model, pairs, all_reduce=_allreduce)
                  if cfg.quant_fisher else None)
        n_tok = int(_allreduce(torch.tensor([sum(b.numel() for b in batches)], device=dev)).item())
        elapsed = self.train_ms + 1000.0 * (time.perf_counter() - t_cal)
        calib_path = None
        if di.rank == 0:
            with rd.io_guard("writing the Hessians", kept):
                calib_path = atomic_save({"hessians": hs, "tokens": n_tok, "elapsed_ms": elapsed,
                                          "train_budget_ms": budget_ms, "source": "train",
                                          **({"error_weights": om} if om else {})},
                                         self.run_dir / rd.HESSIANS)
        self.log(f"calibration:done hessians:{len(hs)} tokens:{n_tok} elapsed_ms:{elapsed:.0f} "
                 f"budget_ms:{budget_ms:.0f}")
        return calib_path

    def validate(self, m: torch.nn.Module, tag: str = "") -> EvalResult:
        """Chunked val_bpb of `m`, logged and recorded (the clock is paused meanwhile)."""
        cfg, di = self.cfg, self.di
        m.doc_window = 0  # eval rows are their own window (the training cut is set per batch)
        scoring = Scoring(seq_len=cfg.train_seq_len, stride=0, batch_tokens=cfg.val_batch_size,
                          device=self.dev, rank=di.rank, world_size=di.world_size)
        r = evaluate_bpb(m, self.val_tokens, self.lut, scoring,
                         max_tokens=cfg.max_eval_tokens or None)
        m.train()
        self.log(f"step:{self.step}/{cfg.iterations} val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
                 f"train_time:{self.train_ms:.0f}ms step_avg:{self.step_avg():.2f}ms{tag}")
        self.write_metrics({"step": self.step, "train_loss": self.last_loss, "val_loss": r.val_loss,
                            "val_bpb": r.val_bpb, "train_time_ms": self.train_ms,
                            "tokens_per_s": self.tokens_per_s()})
        return r

    def write_metrics(self, rec: dict) -> None:
        if self.di.rank == 0:
            rd.append_line(self.run_dir / rd.METRICS, json.dumps(rec))

    def save_checkpoint(self) -> Path | None:
        """checkpoint.pt, all a resume needs (a collective: every rank's stream position)."""
        di = self.di
        loaders = [None] * di.world_size
        if di.world_size > 1:
            dist.all_gather_object(loaders, self.loader.state_dict())
        else:
            loaders = [self.loader.state_dict()]
        opt_states = self.stepper.state_dicts()  # a collective in the sharded form
        if di.rank != 0:
            return None
        with rd.io_guard(f"writing the checkpoint at step {self.step}", f"the previous {rd.CHECKPOINT}, if any"):
            return atomic_save({"model": self.base.state_dict(), "ema": self.ema, "optimizers": opt_states,
                                "loader": loaders, "seq_schedule": self.seq.state_dict(), "step": self.step, "elapsed_ms": self.train_ms,
                                "rng": {"cpu": torch.get_rng_state()}, "config": self.cfg.to_dict()},
                               self.run_dir / rd.CHECKPOINT)
