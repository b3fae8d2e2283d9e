"""The training loop: one process on CPU, torchrun (NCCL/gloo) on many.

Gradients are averaged by an explicit all-reduce (no DDP wrapper) so clipping sees the
global gradient and 1 GPU with accumulation equals N GPUs at the same global batch.
"""
from __future__ import annotations

import copy
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from golf import rundir as rd
from golf.config import Config
from golf.distributed import all_reduce_ as _allreduce, host_max, init_distributed
from golf.atomic import atomic_save
from golf.model import GPT, count_parameters
from golf.checkpoint import load_torch_file
from golf.errors import TrainError
from golf.step import Stepper
from golf.optim import build_optimizers, ema_decay_at, lr_multiplier, muon_momentum, set_lrs


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
            with open(path, "a") as f:
                f.write(msg + "\n")
    return log


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


def train(cfg: Config, run_dir: Path | None = None, *, log: Callable[[str], None] | None = None,
          stop_after_steps: int | None = None) -> TrainResult:
    """Train cfg's model; writes the run dir on rank 0 and returns its paths and final numbers.

    `stop_after_steps` (test hook) behaves like a SIGTERM after that many total steps:
    it writes checkpoint.pt and returns with stopped_early=True.
    """
    from golf.bpb import val_byte_counter
    from golf.data.loader import DistributedTokenLoader
    from golf.data.shards import dataset_text_transform, load_val_bytes, load_val_tokens
    from golf.data.tokenizer import load_tokenizer

    cfg.validate()  # every bad setting at once, before any data is read or anything written
    di = init_distributed()
    dev = di.device
    # ---- validate everything before the first step ------------------------------------------
    accum = resolve_grad_accum(cfg, di.world_size)
    calib_batches_for_rank(cfg.gptq_calib_batches, di.rank, di.world_size)  # checked before training
    cfg, given = rd.absolute_paths(cfg)  # recorded absolute: eval and pack work from anywhere
    ckpt_path = rd.resolve_resume(cfg.resume) if cfg.resume else None
    run_dir = rd.resolve_run_dir(cfg, ckpt_path, run_dir)
    in_place = ckpt_path is not None and run_dir == ckpt_path.parent  # a fork starts a new folder
    changes: list[str] = []
    if ckpt_path is not None:
        rd.check_resume(ckpt_path, cfg, run_dir, changes)
    rd.check_run_dir(run_dir, cfg, resuming=in_place)
    sp = load_tokenizer(cfg.tokenizer_path, cfg.vocab_size)
    loader = DistributedTokenLoader(cfg.data_path, rank=di.rank, world_size=di.world_size,
                                    seed=cfg.seed, vocab_size=cfg.vocab_size)
    val_tokens = load_val_tokens(cfg.data_path, cfg.vocab_size)
    lut = val_byte_counter(sp, cfg.vocab_size, val_tokens, load_val_bytes(cfg.data_path),
                           text_transform=dataset_text_transform(cfg.data_path),
                           where=str(cfg.data_path))
    ckpt = (load_torch_file(ckpt_path, "unset RESUME to start fresh, or point it at another run's "
                            f"{rd.CHECKPOINT}", keys=("model", "step")) if ckpt_path else None)

    cleared = (rd.start_run_dir(run_dir, cfg.replace(run_id=run_dir.name), di.world_size,
                                resuming=in_place, given=given) if di.rank == 0 else [])
    log = log or make_logger(run_dir, di.rank)
    if cleared:
        log(f"overwrite:{run_dir} removed the earlier run's {', '.join(cleared)}")
    if ckpt_path is not None and not in_place:
        log(f"fork:{ckpt_path} -> {run_dir} (the source run is not written)")
    for change in changes:
        log(f"resume:change {change}")

    torch.manual_seed(cfg.seed)
    base = GPT(cfg).to(dev)
    n_params = count_parameters(base)
    log(f"model_params:{n_params}")
    log(f"world_size:{di.world_size} grad_accum_steps:{accum}")
    xl = cfg.xsa_layers()
    log(f"XSA:last_{len(xl)} active_layers:{xl} gate:{int(cfg.xsa_gate)}")
    log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
        f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
        f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
    opts = build_optimizers(base, cfg)
    cuda = dev.type == "cuda"
    model = torch.compile(base, dynamic=False) if (cuda and cfg.compile) else base
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False))

    stepper = Stepper(base, opts, rank=di.rank, world=di.world_size, accum=accum,
                      clip_norm=cfg.grad_clip_norm, sharded=cfg.muon_sharded,
                      reduce_bf16=cfg.muon_reduce_bf16)

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if cuda:  # pinned: a pageable copy would make the host wait for the device queue
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast:
            return model(x, y)

    def train_step() -> torch.Tensor:
        """One optimizer step on the next global batch; the mean loss stays on the device."""
        loss = stepper.accumulate(forward, micro_batches())
        stepper.step()
        stepper.zero()
        return loss

    def micro_batches():
        return [loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, accum) for _ in range(accum)]

    # ---- compile priming: run WARMUP_STEPS real steps, then restore every state -------------
    if cfg.warmup_steps > 0 and ckpt is None:
        saved = (copy.deepcopy(base.state_dict()), [copy.deepcopy(o.state_dict()) for o in opts],
                 copy.deepcopy(loader.state_dict()))
        stepper.zero()
        for _ in range(cfg.warmup_steps):
            train_step()
        base.load_state_dict(saved[0])
        for o, s in zip(opts, saved[1]):
            o.load_state_dict(s)
        loader.load_state_dict(saved[2])
        log(f"warmup_steps:{cfg.warmup_steps} done (state restored)")

    ema = ({k: v.detach().float().clone() for k, v in base.state_dict().items()} if cfg.ema_decay > 0 else None)
    step, train_ms = 0, 0.0
    if ckpt is not None:
        base.load_state_dict(ckpt["model"])
        for o, s in zip(opts, ckpt["optimizers"]):
            o.load_state_dict(s)
        loader.load_state_dict(ckpt["loader"][di.rank] if isinstance(ckpt["loader"], list) else ckpt["loader"])
        if ema is not None and ckpt.get("ema") is not None:
            ema = {k: v.to(dev) for k, v in ckpt["ema"].items()}
        step, train_ms = int(ckpt["step"]), float(ckpt["elapsed_ms"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        log(f"resume:{ckpt_path} step:{step} elapsed_ms:{train_ms:.0f}")

    ema_keys = list(ema) if ema is not None else []
    ema_vals = [ema[k] for k in ema_keys]
    cap_ms = 1000.0 * max(cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds, 0.0) if cfg.max_wallclock_seconds > 0 else 0.0
    metrics_path = run_dir / rd.METRICS
    tokens_per_step = cfg.train_batch_tokens

    def write_metrics(rec: dict) -> None:
        if di.rank == 0:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def validate(m: torch.nn.Module):
        from golf.evaluate import evaluate_bpb
        r = evaluate_bpb(m, val_tokens, lut, seq_len=cfg.train_seq_len, stride=0,
                         batch_tokens=cfg.val_batch_size, device=dev,
                         max_tokens=cfg.max_eval_tokens or None, rank=di.rank, world_size=di.world_size)
        m.train()
        return r

    interrupted = {"flag": False}

    def on_signal(signum, _frame):
        interrupted["flag"] = True
    old_handlers = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old_handlers[s] = signal.signal(s, on_signal)
    except ValueError:  # not the main thread: no signal handling
        pass

    def save_checkpoint(kept: str = f"the previous {rd.CHECKPOINT}, if any") -> Path | None:
        loaders = [None] * di.world_size
        if di.world_size > 1:
            dist.all_gather_object(loaders, loader.state_dict())
        else:
            loaders = [loader.state_dict()]
        opt_states = stepper.state_dicts()  # a collective in the sharded form
        if di.rank != 0:
            return None
        with rd.io_guard(f"writing the checkpoint at step {step}", kept):
            return atomic_save({"model": base.state_dict(), "ema": ema, "optimizers": opt_states,
                                "loader": loaders, "step": step, "elapsed_ms": train_ms,
                                "rng": {"cpu": torch.get_rng_state()}, "config": cfg.to_dict()},
                               run_dir / rd.CHECKPOINT)

    base.train()
    stopped_early, last_loss = False, float("nan")
    val_loss = val_bpb = float("nan")
    try:
        while step < cfg.iterations and not (cap_ms > 0 and train_ms >= cap_ms):  # (resumed at the cap)
            t0 = time.perf_counter()
            mult = lr_multiplier(step, train_ms, cap_ms, cfg.warmdown_iters, cfg.iterations)
            set_lrs(opts, mult, muon_momentum(step, cfg))
            loss_t = train_step()
            if ema is not None:
                d = ema_decay_at(step, cfg.ema_decay, cfg.ema_warmup)
                with torch.no_grad():  # one fused update over all tensors
                    live = base.state_dict()
                    torch._foreach_mul_(ema_vals, d)
                    torch._foreach_add_(ema_vals, [live[k].float() for k in ema_keys], alpha=1 - d)
            step += 1
            last = step >= cfg.iterations
            log_now = bool(cfg.train_log_every) and (step % cfg.train_log_every == 0 or step == 1)
            val_now = bool(cfg.val_loss_every) and step % cfg.val_loss_every == 0
            ckpt_now = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
            if log_now or val_now or ckpt_now or last:  # only steps that read results wait for
                last_loss = float(_allreduce(loss_t.float()).div_(di.world_size))  # the device
                if cuda:
                    torch.cuda.synchronize()
            train_ms += 1000.0 * (time.perf_counter() - t0)
            # one host-side all-reduce (MAX) decides stopping for every rank: elapsed and signal
            elapsed_max, flag = host_max([train_ms, float(interrupted["flag"])])
            sig = flag > 0
            step_avg = train_ms / max(step, 1)
            tok_s = tokens_per_step * step / max(train_ms, 1e-9) * 1000.0
            hit_cap = cap_ms > 0 and elapsed_max >= cap_ms
            if log_now:
                left = cfg.iterations - step
                eta = left * step_avg / 1000.0
                if cap_ms > 0:
                    eta = min(eta, max(cap_ms - train_ms, 0.0) / 1000.0)
                log(f"step:{step}/{cfg.iterations} train_loss:{last_loss:.4f} train_time:{train_ms:.0f}ms "
                    f"step_avg:{step_avg:.2f}ms tok_s:{tok_s:.0f} eta:{eta:.0f}s")
                write_metrics({"step": step, "train_loss": last_loss, "train_time_ms": train_ms,
                               "tokens_per_s": tok_s, "lr_mult": mult})
            if val_now and not last and not hit_cap:
                r = validate(base)  # timer is paused: validation is outside train_ms
                log(f"step:{step}/{cfg.iterations} val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
                    f"train_time:{train_ms:.0f}ms step_avg:{step_avg:.2f}ms")
                write_metrics({"step": step, "train_loss": last_loss, "val_loss": r.val_loss,
                               "val_bpb": r.val_bpb, "train_time_ms": train_ms, "tokens_per_s": tok_s})
            if ckpt_now and not last and not hit_cap:
                ck = save_checkpoint()  # outside train_ms, like validation; a collective on all ranks
                log(f"checkpoint:{ck} step:{step}/{cfg.iterations}")
            if sig or (stop_after_steps is not None and step >= stop_after_steps and not last):
                ck = save_checkpoint()
                log(f"stopping_early: signal step:{step}/{cfg.iterations} checkpoint:{ck}")
                return TrainResult(run_dir, step, train_ms, float("nan"), float("nan"), None, None, None,
                                   True, tok_s, interrupted=True)
            if hit_cap:
                stopped_early = step < cfg.iterations
                log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)

    # ---- a resumable checkpoint first: a failure in any final output loses no training -------
    final_ck = save_checkpoint()
    log(f"checkpoint:{final_ck} step:{step}/{cfg.iterations} (final, before the exports)")
    kept = (f"{run_dir / rd.CHECKPOINT} at step {step} (all training); free space and finish with "
            f"RESUME={run_dir} python train_gpt.py")
    # ---- export: raw and EMA weights, final validation on the EMA weights -------------------
    t_cal = time.perf_counter()  # everything from here to the Hessians counts against the budget
    sd = {k: v.detach().float().cpu() for k, v in base.state_dict().items()}
    ema_sd = {k: v.float().cpu() for k, v in ema.items()} if ema is not None else sd
    ema_model = GPT(cfg).to(dev)
    ema_model.load_state_dict(ema_sd)
    # calibration runs inside the training budget on fresh training batches (never val)
    calib_path = None
    # the reserve is taken from the loop so that loop + calibration fit the full wallclock
    budget_ms = 1000.0 * cfg.max_wallclock_seconds if cfg.max_wallclock_seconds > 0 else 0.0
    try:
        from quant import collect_hessians
    except ImportError as exc:  # pragma: no cover - quant is part of the tree
        log(f"warning: quant not importable ({exc}); skipping calibration")
        collect_hessians = None
    if collect_hessians is not None and cfg.gptq_calib_batches > 0:
        # the calibration set is the first GPTQ_CALIB_BATCHES micro-batches of the stream after
        # training, split over ranks like a training step (rank r takes parts r, r+W, ...), so
        # it is the same set of tokens whatever the world size at the same global batch
        n_mine = calib_batches_for_rank(cfg.gptq_calib_batches, di.rank, di.world_size)
        batches = [loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, accum)[0].to(dev)
                   for _ in range(n_mine)]
        ema_model.eval()
        with autocast:
            hs = collect_hessians(ema_model, batches, all_reduce=_allreduce)
        n_tok = int(_allreduce(torch.tensor([sum(b.numel() for b in batches)], device=dev)).item())
        elapsed = train_ms + 1000.0 * (time.perf_counter() - t_cal)
        if di.rank == 0:
            with rd.io_guard("writing the Hessians", kept):
                calib_path = atomic_save({"hessians": hs, "tokens": n_tok, "elapsed_ms": elapsed,
                                          "train_budget_ms": budget_ms, "source": "train"},
                                         run_dir / rd.HESSIANS)
        log(f"calibration:done hessians:{len(hs)} tokens:{n_tok} elapsed_ms:{elapsed:.0f} "
            f"budget_ms:{budget_ms:.0f}")
    r = validate(ema_model)
    val_loss, val_bpb = r.val_loss, r.val_bpb
    step_avg = train_ms / max(step, 1)
    log(f"step:{step}/{cfg.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
        f"train_time:{train_ms:.0f}ms step_avg:{step_avg:.2f}ms (ema)")
    tok_s = tokens_per_step * step / max(train_ms, 1e-9) * 1000.0
    write_metrics({"step": step, "train_loss": last_loss, "val_loss": val_loss, "val_bpb": val_bpb,
                   "train_time_ms": train_ms, "tokens_per_s": tok_s})
    model_path = ema_path = None
    if di.rank == 0:
        with rd.io_guard("writing the final weights", kept):
            model_path = atomic_save({"config": cfg.to_dict(), "state_dict": sd}, run_dir / rd.MODEL)
            ema_path = atomic_save({"config": cfg.to_dict(), "state_dict": ema_sd}, run_dir / rd.EMA)
    return TrainResult(run_dir, step, train_ms, val_loss, val_bpb, model_path, ema_path,
                       calib_path if di.rank == 0 else None, stopped_early, tok_s)
