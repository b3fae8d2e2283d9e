"""CPU ablations: the record stack (P1125, + each R29 feature alone, the full R29) and, with
`--stack frontier`, the CPU frontier preset minus each of its features, against today's `cpu`.

    python -m bench.ablation [--stack r29|frontier] [--iterations 150] [--seeds 1337,42]
                             [--data DIR --tokenizer MODEL] [--out bench/results/ablation.json]
                             [--only p1125,r29] [--threads 1]

Each configuration is the main job (`train_gpt.py`, a subprocess) at the CPU size on the proxy
corpus (`python -m golf.data.prepare proxy`: validation = 100 held-out C4 documents, official
sp1024 tokenizer), with a fixed step count (MAX_WALLCLOCK_SECONDS=0, so a slow or busy machine changes
ms/step but never how many steps a variant gets), the same seed for every configuration of a
pair (same init stream and same training tokens), chunked evaluation (EVAL_STRIDE=0) on the same
MAX_EVAL_TOKENS for all, and PACK=0. Quantization is the main job's own: GPTQ fitted to the
default 16,000,000-byte budget, which a 0.7 M-parameter model fits in fp16, so the gap is ~0
unless `--env BUDGET_BYTES=...` tightens it.

Configurations (the P1125 baseline already trains with OPTIM_GROUPS=records, so the optimizer
item is switched the other way: `p1125_legacy` is P1125 with golfkit's old groups, and
"records vs legacy" is p1125 minus it):

    p1125          PRESET=cpu_p1125
    +bigram        BIGRAM_VOCAB_SIZE=512 BIGRAM_DIM=32   (the cpu preset's sizes)
    +smear         SMEAR_GATE=1                          (SMEAR_BOS_FIX=0, as R29)
    +ve            VE_DIM=32 VE_LAYERS=-2,-1
    p1125_legacy   OPTIM_GROUPS=legacy
    +rope          ROPE_BASE=10000*2**(16/14)
    +qk1.5         QK_GAIN_INIT=1.5
    r29            PRESET=cpu (all of the above, records groups)

Per run it records model_params, ms/step (train.log's last step_avg), pre- and post-quant
val_bpb and the gap (summary.json), wall seconds and the load average around the run (other
jobs on a shared machine inflate ms/step). A run whose folder already holds a finished result
for the same settings is reused, so an interrupted bench continues where it stopped
(`--fresh` retrains). The output is one JSON file and a table: mean over seeds, the per-seed
spread (max - min) and, for each configuration, the paired difference to p1125 per seed.

`--stack frontier` (issue 29; base `cpu_frontier`, the CPU default): each row switches one
feature off on top of PRESET=cpu_frontier (FRONTIER_CONFIGS below), and `cpu` is the R29 CPU
preset; every row keeps its preset's scaled cap (golf.run.rules.scaled_cap_bytes), so the gap is real.

Cost: 16 runs of 150 steps x 8,192 tokens. Measured 2026-12-01 with `--threads 1` beside other
jobs (load 2-4 on 2 cores): 44 min, 145-235 s a run. On 2 quiet cores (~0.47 s/step at 2
threads) it should be ~90 s a run, ~25 min. Build the corpus first with
`python -m golf.data.prepare proxy --stdlib-mb 2` (web text 64 % of the training bytes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from golf.run import rundir as rd  # noqa: E402
from golf.run.config import CPU_PRESET, R29_ROPE_BASE, Config  # noqa: E402

BASE = "p1125"
# name -> (what it switches, environment on top of the common one)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "p1125": ("P1125 stack (PRESET=cpu_p1125)", {"PRESET": "cpu_p1125"}),
    "+bigram": ("+ BigramHash 512x32", {"PRESET": "cpu_p1125",
                                         "BIGRAM_VOCAB_SIZE": str(CPU_PRESET["bigram_vocab_size"]),
                                         "BIGRAM_DIM": str(CPU_PRESET["bigram_dim"])}),
    "+smear": ("+ SmearGate", {"PRESET": "cpu_p1125", "SMEAR_GATE": "1", "SMEAR_BOS_FIX": "0"}),
    "+ve": ("+ VE 32 on the last two layers", {"PRESET": "cpu_p1125",
                                                "VE_DIM": str(CPU_PRESET["ve_dim"]),
                                                "VE_LAYERS": CPU_PRESET["ve_layers"]}),
    "p1125_legacy": ("OPTIM_GROUPS=legacy (resid_mix etc. to Muon)",
                     {"PRESET": "cpu_p1125", "OPTIM_GROUPS": "legacy"}),
    "+rope": ("+ RoPE base 22,082", {"PRESET": "cpu_p1125", "ROPE_BASE": repr(R29_ROPE_BASE)}),
    "+qk1.5": ("+ QK gain 1.5", {"PRESET": "cpu_p1125", "QK_GAIN_INIT": "1.5"}),
    "r29": ("full R29 stack (PRESET=cpu)", {"PRESET": "cpu"}),
}

# --stack frontier: the CPU frontier preset with one feature off per row, and the R29 CPU preset
FRONTIER_BASE = "cpu_frontier"
_CF = {"PRESET": "cpu_frontier"}
FRONTIER_CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "cpu_frontier": ("CPU frontier preset (the CPU default)", dict(_CF)),
    "-loop": ("depth loop off", {**_CF, "NUM_LOOPS": "0"}),
    "-lanes": ("two-lane parallel residual off", {**_CF, "PARALLEL_START_LAYER": "0"}),
    "-skip_gates": ("skip gates off (plain weighted skips)", {**_CF, "SKIP_GATES_ENABLED": "0"}),
    "-sparse_gate": ("sparse attention gate off", {**_CF, "SPARSE_ATTN_GATE_ENABLED": "0"}),
    "-smear_gate": ("new SmearGate off", {**_CF, "SMEAR_GATE_ENABLED": "0"}),
    "-doc_attention": ("per-document attention off", {**_CF, "DOC_ATTENTION": "0"}),
    "-polar_express": ("classic Newton-Schulz, no row normalisation",
                       {**_CF, "MUON_NS_COEFFS": "classic", "MUON_ROW_NORMALIZE": "0"}),
    "cpu": ("R29 CPU preset (PRESET=cpu, the old default)", {"PRESET": "cpu"}),
}
STACKS: dict[str, tuple[dict[str, tuple[str, dict[str, str]]], str]] = {
    "r29": (CONFIGS, BASE), "frontier": (FRONTIER_CONFIGS, FRONTIER_BASE)}

_STEP_AVG = re.compile(r"^step:(\d+)/\d+ .*step_avg:([0-9.]+)ms")
_PARAMS = re.compile(r"^model_params:(\d+)")


def common_env(args: argparse.Namespace) -> dict[str, str]:
    """Settings every configuration shares (identical across the ablation)."""
    env = {
        "DATA_PATH": args.data, "TOKENIZER_PATH": args.tokenizer,
        "ITERATIONS": str(args.iterations), "WARMDOWN_ITERS": str(args.warmdown),
        "MAX_WALLCLOCK_SECONDS": "0", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "10",
        "EVAL_STRIDE": "0", "MAX_EVAL_TOKENS": str(args.max_eval_tokens), "PACK": "0",
    }
    for kv in args.env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise SystemExit(f"error: --env {kv!r} is not KEY=VALUE")
        env[k] = v
    return env


def parse_log(path: Path) -> dict:
    """model_params and step_avg (training time / steps) from a run's train.log: the final
    `(ema)` line, which covers every step, else the last logged step."""
    out: dict = {}
    for line in path.read_text().splitlines():
        if m := _PARAMS.match(line):
            out["params"] = int(m.group(1))
        elif (m := _STEP_AVG.match(line)) and ("(ema)" in line or "ms_final" not in out):
            out["steps"], out["ms_per_step"] = int(m.group(1)), float(m.group(2))
            if "(ema)" in line:
                out["ms_final"] = True
    out.pop("ms_final", None)
    return out


def run_one(name: str, seed: int, args: argparse.Namespace, runs_dir: Path) -> dict:
    env_over = {**STACKS[args.stack][0][name][1], **common_env(args), "SEED": str(seed)}
    run_id = f"{re.sub(r'[^A-Za-z0-9_.-]', '', name.replace('+', 'plus_').replace('-', 'minus_'))}_s{seed}"
    run_dir = runs_dir / run_id
    record = run_dir / "ablation_run.json"
    if not args.fresh and record.is_file():
        prev = json.loads(record.read_text())
        if prev.get("env") == env_over and prev.get("threads") == args.threads:
            print(f"ablation:{name} seed:{seed} reused {run_dir}", flush=True)
            return {**prev, "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    threads = str(args.threads)
    # the shell's own settings (a QK_GAIN_INIT, PRESET or RESUME left exported) must not leak in
    ours = {f.upper() for f in Config().to_dict()} | {"PRESET", "QUANT_ONLY", "EVAL_ONLY", "RESUME"}
    inherited = {k: v for k, v in os.environ.items() if k not in ours}
    env = {**inherited, **env_over, "RUN_ID": run_id, "RUNS_DIR": str(runs_dir),
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "GOLF_COMPRESS_THREADS": threads,
           "PYTHONUNBUFFERED": "1"}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    print(f"ablation:{name} seed:{seed} start load:{load0:.2f}", flush=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / f"{run_id}.out", "w") as out:
        proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (runs_dir / f"{run_id}.out").read_text().splitlines()[-15:]
        raise SystemExit(f"error: {name} seed {seed} failed (exit {proc.returncode}); "
                         f"log {runs_dir / (run_id + '.out')}:\n" + "\n".join(tail))
    summary = json.loads((run_dir / rd.SUMMARY).read_text())
    res = {"config": name, "seed": seed, "env": env_over, "threads": args.threads, "run_dir": str(run_dir),
           **parse_log(run_dir / rd.TRAIN_LOG),
           "pre_val_bpb": summary["pre_val_bpb"], "post_val_bpb": summary["post_val_bpb"],
           "gap": summary["gap"], "model_bytes": summary["model_bytes"],
           "eval_partial": summary.get("partial", False),
           "phase_seconds": summary.get("phase_seconds", {}), "wall_seconds": round(wall, 1),
           "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2)}
    for junk in (rd.MODEL, rd.CHECKPOINT):  # ema.pt, hessians.pt, artifact: eval_bpb.py / QUANT_ONLY
        (run_dir / junk).unlink(missing_ok=True)
    record.write_text(json.dumps(res, indent=1))
    print(f"ablation:{name} seed:{seed} pre:{res['pre_val_bpb']:.4f} post:{res['post_val_bpb']:.4f} "
          f"ms/step:{res.get('ms_per_step', float('nan')):.0f} wall:{wall:.0f}s", flush=True)
    return res


def _spread(xs: list[float]) -> float:
    return max(xs) - min(xs) if xs else float("nan")


def aggregate(runs: list[dict], names: list[str], stack: str = "r29") -> dict:
    """Per configuration: mean and spread over seeds, and the paired delta to the baseline."""
    configs, base_name = STACKS[stack]
    base = {r["seed"]: r for r in runs if r["config"] == base_name}
    out = {}
    for name in names:
        rs = [r for r in runs if r["config"] == name]
        if not rs:
            continue
        agg: dict = {"what": configs[name][0], "seeds": [r["seed"] for r in rs],
                     "params": rs[0].get("params")}
        for key in ("pre_val_bpb", "post_val_bpb", "gap", "ms_per_step"):
            xs = [r[key] for r in rs if r.get(key) is not None]
            agg[key] = {"mean": statistics.fmean(xs), "spread": _spread(xs), "per_seed": xs}
        d = [r["pre_val_bpb"] - base[r["seed"]]["pre_val_bpb"] for r in rs if r["seed"] in base]
        if d and name != base_name:
            agg[f"delta_pre_vs_{base_name}"] = {"mean": statistics.fmean(d), "spread": _spread(d), "per_seed": d}
        out[name] = agg
    return out


def table(agg: dict, base_name: str = BASE) -> str:
    lines = [f"| config | params | ms/step (min over seeds) | pre val_bpb (mean ± spread/2) | Δpre vs {base_name} (per seed) "
             "| post val_bpb | gap |",
             "|---|---|---|---|---|---|---|"]
    for name, a in agg.items():
        d = a.get(f"delta_pre_vs_{base_name}")
        dtxt = "–" if d is None else (f"{d['mean']:+.4f} (" + ", ".join(f"{x:+.4f}" for x in d["per_seed"]) + ")")
        lines.append(
            f"| `{name}` {a['what']} | {a['params']:,} | {min(a['ms_per_step']['per_seed']):.0f} "
            f"| {a['pre_val_bpb']['mean']:.4f} ± {a['pre_val_bpb']['spread'] / 2:.4f} | {dtxt} "
            f"| {a['post_val_bpb']['mean']:.4f} | {a['gap']['mean']:+.6f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", choices=sorted(STACKS), default="r29",
                    help="r29: P1125 + each R29 feature; frontier: cpu_frontier minus each feature")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--warmdown", type=int, default=None,
                    help="WARMDOWN_ITERS (default 30%% of --iterations, the CPU preset's 120/400)")
    ap.add_argument("--seeds", default="1337,42")
    ap.add_argument("--data", default="./data/datasets/proxy_sp1024")
    ap.add_argument("--tokenizer", default="./data/tokenizers/fineweb_1024_bpe.model")
    ap.add_argument("--max-eval-tokens", type=int, default=65536,
                    help="MAX_EVAL_TOKENS for every run (the proxy val split holds 68,713)")
    ap.add_argument("--only", default="", help="comma-separated subset of the stack's rows: "
                    + "; ".join(f"{k}: {', '.join(c)}" for k, (c, _b) in STACKS.items()))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2),
                    help="OMP_NUM_THREADS of each run (default: $OMP_NUM_THREADS, else 2)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra variable for every run (e.g. BUDGET_BYTES=400000)")
    ap.add_argument("--runs-dir", default="bench/results/ablation_runs")
    ap.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--out", default="bench/results/ablation.json")
    args = ap.parse_args(argv)
    if args.warmdown is None:
        args.warmdown = max(1, round(0.3 * args.iterations))
    configs, base_name = STACKS[args.stack]
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(configs)
    bad = [n for n in names if n not in configs]
    if bad:
        raise SystemExit(f"error: --only {','.join(bad)}: unknown; choose from {', '.join(configs)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for p in (args.data, args.tokenizer):
        if not Path(p).exists():
            raise SystemExit(f"error: {p} does not exist; build the proxy corpus first: "
                             "python -m golf.data.prepare proxy --stdlib-mb 2")
    # the runs start in the repository root: relative paths are taken from here
    args.data, args.tokenizer = (os.path.relpath(Path(p).resolve(), REPO) for p in (args.data, args.tokenizer))
    runs_dir = Path(args.runs_dir).resolve()
    t0 = time.time()
    runs = [run_one(n, s, args, runs_dir) for s in seeds for n in names]
    agg = aggregate(runs, names, args.stack)
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "bench_seconds": round(time.time() - t0, 1), "threads": args.threads,
        "runs_wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1),
        "reused_runs": sum(bool(r.get("reused")) for r in runs),
        "command": " ".join(["python -m bench.ablation", *(argv if argv is not None else sys.argv[1:])]),
        "common_env": common_env(args), "git": _git(), "configs": agg, "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(json.dumps(result, indent=2))
    print(table(agg, base_name))
    print(f"wrote {out} ({result['bench_seconds']:.0f} s; the runs themselves "
          f"{result['runs_wall_seconds']:.0f} s, {result['reused_runs']} reused)")
    return 0


def _git() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


if __name__ == "__main__":
    raise SystemExit(main())
