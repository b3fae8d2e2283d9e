"""The training loop's control paths, driven by a fake clock so they are exact and fast: the
wallclock cap minus the GPTQ reserve, elapsed time carried over RESUME, WARMUP_STEPS priming
with every state restored, and SIGINT/SIGTERM (checkpoint, nothing exported, exit 130)."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

import golf.train.loop as golf_train
from golf.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """Stands in for the `time` module inside golf.train.loop: perf_counter advances `tick` seconds per
    call, so every training step (one call before, one after) takes exactly `tick` seconds.
    `on_call` (call number -> action) lets a test act at a given moment, e.g. send a signal."""

    def __init__(self, tick: float = 1.0, on_call=None):
        self.t, self.tick, self.calls, self.on_call = 0.0, tick, 0, on_call

    def perf_counter(self) -> float:
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        self.t += self.tick
        return self.t

    def __getattr__(self, name):
        return getattr(time, name)


def _cfg(tiny_config, tmp_path, **kw):
    base = dict(runs_dir=str(tmp_path), grad_accum_steps=1, max_eval_tokens=2048,
                gptq_calib_batches=0, iterations=20, warmdown_iters=0)
    return tiny_config.replace(**{**base, **kw})


def _sd(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("cap,reserve,steps", [(10.0, 4.0, 6), (7.5, 2.0, 6), (0.0, 4.0, 20)])
def test_wallclock_cap_stops_the_loop_at_cap_minus_reserve(tiny_config, tmp_path, monkeypatch,
                                                           cap, reserve, steps):
    """1 s per step on the fake clock: the loop gets MAX_WALLCLOCK_SECONDS - GPTQ_RESERVE_SECONDS
    (ceil to whole steps), and MAX_WALLCLOCK_SECONDS=0 means no cap at all."""
    monkeypatch.setattr(golf_train, "time", FakeClock(1.0))
    lines: list[str] = []
    res = train(_cfg(tiny_config, tmp_path, max_wallclock_seconds=cap, gptq_reserve_seconds=reserve,
                     run_id="cap"), log=lines.append)
    assert res.steps == steps
    assert res.train_time_ms == pytest.approx(1000.0 * steps)
    assert res.stopped_early == (steps < 20)
    assert any("stopping_early: wallclock_cap" in s for s in lines) == (steps < 20)
    assert (res.run_dir / "ema.pt").is_file() and not res.interrupted


def test_a_run_that_ends_by_iterations_gives_the_same_weights_at_any_speed(tiny_config, tmp_path,
                                                                          monkeypatch):
    """The same seed and settings on a fast and a slow machine (1 s vs 3 s per step, 12 steps
    under a 40 s budget neither reaches): bit-identical weights. With the time-only warmdown the
    slow run's LR decayed from step 8 (40 s < 18 steps' worth of its time) and the fast run's
    never did, so the weights followed the machine's speed."""
    sds = []
    for tick in (1.0, 3.0):
        monkeypatch.setattr(golf_train, "time", FakeClock(tick))
        res = train(_cfg(tiny_config, tmp_path, max_wallclock_seconds=41.0, gptq_reserve_seconds=1.0,
                         iterations=12, warmdown_iters=6, run_id=f"speed{tick:g}"), log=lambda s: None)
        assert res.steps == 12 and not res.stopped_early
        sds.append(_sd(res.run_dir / "ema.pt"))
    assert sds[0].keys() == sds[1].keys()
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])


def test_resume_carries_elapsed_time_into_the_cap(tiny_config, tmp_path, monkeypatch):
    """3 steps, a stop, then RESUME: the clock restarts at 3 s, so a 6 s loop budget ends at step
    6 in total (resetting the elapsed time would allow 6 more steps)."""
    cfg = _cfg(tiny_config, tmp_path, max_wallclock_seconds=10.0, gptq_reserve_seconds=4.0,
               run_id="resumed")
    monkeypatch.setattr(golf_train, "time", FakeClock(1.0))
    part = train(cfg, stop_after_steps=3, log=lambda _m: None)
    ck = torch.load(part.run_dir / "checkpoint.pt", weights_only=True)
    assert (ck["step"], ck["elapsed_ms"]) == (3, pytest.approx(3000.0))
    monkeypatch.setattr(golf_train, "time", FakeClock(1.0))
    done = train(cfg.replace(resume=str(part.run_dir)), log=lambda _m: None)
    assert done.steps == 6 and done.train_time_ms == pytest.approx(6000.0)


class _CountingStepper(golf_train.Stepper):
    steps = 0

    def step(self):
        type(self).steps += 1
        return super().step()


def test_warmup_steps_prime_then_restore_every_state(tiny_config, tmp_path, monkeypatch):
    """WARMUP_STEPS=3 runs three real optimizer steps and then restores model, optimizers and
    loader: the trained weights are bit-identical to a run without warmup."""
    monkeypatch.setattr(golf_train, "Stepper", _CountingStepper)
    cfg = _cfg(tiny_config, tmp_path, iterations=4)
    _CountingStepper.steps = 0
    plain = train(cfg.replace(run_id="plain", warmup_steps=0), log=lambda _m: None)
    assert _CountingStepper.steps == 4
    _CountingStepper.steps = 0
    lines: list[str] = []
    warm = train(cfg.replace(run_id="warm", warmup_steps=3), log=lines.append)
    assert _CountingStepper.steps == 3 + 4  # the priming steps really ran
    assert any("warmup_steps:3 done (state restored)" in s for s in lines)
    for name in ("model.pt", "ema.pt"):
        a, b = _sd(plain.run_dir / name), _sd(warm.run_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_exports_nothing_and_restores_handlers(tiny_config, tmp_path,
                                                                          monkeypatch, signum):
    """A signal during step 3 is handled at that step's end: checkpoint.pt at step 3, no
    model/ema export, interrupted=True, and the process's own handlers are back afterwards."""
    before = signal.getsignal(signum)
    fire = lambda n: os.kill(os.getpid(), signum) if n == 6 else None  # 2 calls per step
    monkeypatch.setattr(golf_train, "time", FakeClock(0.01, on_call=fire))
    res = train(_cfg(tiny_config, tmp_path, run_id="sig"), log=lambda _m: None)
    assert res.interrupted and res.steps == 3
    ck = torch.load(res.run_dir / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3
    assert not (res.run_dir / "model.pt").exists() and not (res.run_dir / "ema.pt").exists()
    assert signal.getsignal(signum) is before


def test_interrupted_pipeline_exits_130_and_says_how_to_resume(tiny_config, tmp_path, monkeypatch,
                                                               capsys):
    """golf.main's exit path: after the checkpoint, exit status 130 and a RESUME hint; no pack."""
    from golf import main as golf_main
    fire = lambda n: os.kill(os.getpid(), signal.SIGTERM) if n == 4 else None
    monkeypatch.setattr(golf_train, "time", FakeClock(0.01, on_call=fire))
    cfg = _cfg(tiny_config, tmp_path, run_id="sigmain")
    with pytest.raises(SystemExit) as ei:
        golf_main.run_pipeline(cfg, do_pack=False)
    assert ei.value.code == 130
    run = tmp_path / "sigmain"
    log = (run / "train.log").read_text()
    assert "train:interrupted step:2" in log and f"RESUME={run}" in log
    assert (run / "checkpoint.pt").is_file() and not (run / "final_model.gkq").exists()
