"""#2014's TRAIN_SEQ_SCHEDULE with its LR re-warm-up (#2014's progressive context), on a fake step
counter and a fake clock."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from golf.run.config import Config
from golf.train.seq_schedule import SeqSchedule, Stage, parse_seq_schedule, stage_at
from golf.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
RECORD = "1024@0.100,2048@0.700,3072@1.000"


def test_parse_the_records_schedule_and_refuse_bad_ones():
    assert parse_seq_schedule(RECORD) == (Stage(1024, 0.1), Stage(2048, 0.7), Stage(3072, 1.0))
    assert parse_seq_schedule(" ") == ()
    for bad in ("1024", "1024@x", "0@1.0", "1024@0.7,2048@0.5,3072@1", "1024@0.5,2048@0.9"):
        with pytest.raises(ValueError, match="TRAIN_SEQ_SCHEDULE="):
            parse_seq_schedule(bad)


def test_stage_is_the_first_whose_threshold_reaches_the_fraction():
    stages = parse_seq_schedule(RECORD)
    for frac, want in ((0.0, 1024), (0.1, 1024), (0.1001, 2048), (0.7, 2048), (0.7001, 3072),
                       (1.0, 3072)):
        assert stage_at(stages, frac) == want, frac


def test_lr_rewarms_for_32_steps_after_each_change_on_a_fake_step_counter():
    sched = SeqSchedule(parse_seq_schedule(RECORD), 3072, 32)
    lens, factors = {}, {}
    for step in range(200):                      # fraction = step / 200
        sched.update(step, step / 200)
        lens[step], factors[step] = sched.seq_len, sched.lr_factor(step)
    assert lens[20] == 1024 and lens[21] == 2048 and lens[140] == 2048 and lens[141] == 3072
    assert all(factors[s] == 1.0 for s in range(21))                # the first stage: no warm-up
    for s0 in (21, 141):                                              # s0 = first step of a stage
        assert [factors[s0 + i] for i in range(33)] == [(i + 1) / 32 for i in range(32)] + [1.0]
    off = SeqSchedule((), 2048, 32)
    off.update(0, 0.0)
    off.update(5, 0.9)
    assert off.seq_len == 2048 and off.lr_factor(5) == 1.0


def test_trainer_switches_on_the_wallclock_fraction_with_a_fake_clock():
    cfg = Config().replace(train_seq_len=3072, train_seq_schedule=RECORD, seq_change_warmup_steps=32,
                           iterations=100_000)
    logs: list[str] = []
    t = SimpleNamespace(cfg=cfg, step=40, train_ms=0.0, cap_ms=100_000.0, log=logs.append,
                        seq=SeqSchedule(parse_seq_schedule(RECORD), 3072, 32))
    seen = []
    for ms in (0.0, 10_000.0, 10_001.0, 12_000.0, 70_001.0):
        t.train_ms = ms
        Trainer.switch_seq_len(t)
        seen.append(t.seq.seq_len)
        t.step += 1
    assert seen == [1024, 1024, 2048, 2048, 3072]
    assert logs == ["seq_len:2048 step:42 frac:0.100 lr_rewarmup_steps:32",
                    "seq_len:3072 step:44 frac:0.700 lr_rewarmup_steps:32"]
    assert t.seq.lr_factor(44) == 1 / 32 and t.seq.lr_factor(45) == 2 / 32


def test_schedule_settings_are_checked():
    bad = Config().replace(train_seq_len=2048, train_seq_schedule=RECORD).problems()
    assert any("longest length must equal TRAIN_SEQ_LEN=2048" in p for p in bad)
    assert any(p.startswith("TRAIN_SEQ_SCHEDULE='1@2'")
               for p in Config().replace(train_seq_schedule="1@2").problems())


@pytest.mark.parametrize("packing", [False, True])
def test_training_follows_the_schedule_and_rewarms(tiny_config, tmp_path, packing):
    """4 steps, 32 until half-way then 64 (TRAIN_SEQ_LEN): the change at step index 3 logs and
    that step's LR factor is 1/2 (SEQ_CHANGE_WARMUP_STEPS=2; WARMDOWN_ITERS=0 keeps the rest 1)."""
    from golf.train.loop import train
    cfg = tiny_config.replace(runs_dir=str(tmp_path), run_id="sched", iterations=4, warmdown_iters=0,
                              train_seq_schedule="32@0.5,64@1.0", seq_change_warmup_steps=2,
                              doc_attention=packing, doc_packing=packing, train_log_every=1,
                              gptq_calib_batches=1, max_eval_tokens=2048)
    lines: list[str] = []
    res = train(cfg, log=lines.append)
    assert [s for s in lines if s.startswith("seq_len:")] == [
        "seq_len:64 step:3 frac:0.750 lr_rewarmup_steps:2"]
    metrics = [json.loads(s) for s in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    mults = [m["lr_mult"] for m in metrics if "lr_mult" in m]
    assert mults == [1.0, 1.0, 1.0, 0.5]
