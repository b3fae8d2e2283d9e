"""Mutation score of the modules where a silent bug changes a score or loses data (issue 18).

    nice -n 10 python -m bench.mutation [--only NAME ...] [--max-children 2] [--keep]

Not part of CI (bench/requirements-mutation.txt: mutmut). For each row of TARGETS it copies
the tree (tracked + untracked, not ignored files) into a scratch folder, writes a mutmut config
that mutates that one file (restricted to the listed functions) and selects only that row's
tests, runs `mutmut run`, and reads the verdicts. Prints one JSON object and a table; writes
bench/results/mutation.json (counts + every surviving mutant's diff).

Mutants listed in bench/mutation_equivalent.json ({name: reason}) are equivalent
(no test can tell them apart from the original) and leave the denominator. Timeouts count as
killed (the mutant made the tests hang or crawl: a test noticed). "no tests" (no selected test
reaches the function) counts as survived. Raise and log statements are not mutated
(DO_NOT_MUTATE: message wording changes no score and loses no data).

The copied tree has no ../shared beside it: the tests' data helper (tests/conftest.py) reads
GOLF_SHARED_DATA, which this script points at the real checkout's ../shared/data.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EQUIVALENT_FILE = REPO / "bench" / "mutation_equivalent.json"


@dataclass(frozen=True)
class Target:
    name: str
    path: str                      # file to mutate, relative to the repo root
    functions: tuple[str, ...]     # () = every function in the file; "Class.method" for methods
    tests: tuple[str, ...]         # pytest selection for this file (fast tests only)
    extra: tuple[str, ...] = field(default=())  # more pytest args (e.g. -k)


# The one table to edit: which code, restricted to which functions, checked by which tests.
TARGETS: tuple[Target, ...] = (
    Target("byte LUT + bpb", "golf/eval/bpb.py",
           ("build_byte_lut", "target_bytes", "bpb_from_sums", "ByteLUT.torch", "bytes_at",
            "range_bytes", "lut_target_bytes", "val_byte_counter"),
           ("tests/test_bpb.py", "tests/test_bpb_edges.py", "tests/test_bugs_caught.py::"
            "test_torch_and_numpy_byte_counts_agree_with_decoded_text_after_boundaries")),
    Target("scorer windows", "golf/eval/score.py",
           ("window_plan", "plan_coverage", "rank_slice", "batch_nll", "_batches", "_autocast",
            "_score_windows", "evaluate_bpb"),
           ("tests/test_evaluate.py",
            "tests/test_properties.py::test_window_plan_scores_every_target_once_with_full_context",
            "tests/test_properties.py::"
            "test_window_plan_defaults_to_non_overlapping_chunks_with_a_short_tail")),
    Target("GPTQ", "quant/gptq.py", ("_inverse_upper_cholesky", "gptq_quantize"),
           ("tests/test_quant_math.py", "tests/test_gptq_reference.py", "tests/test_bugs_caught.py::"
            "test_gptq_first_block_error_feedback_matches_a_column_by_column_solve")),
    Target("scalar quantizers", "quant/scalar.py", (),
           ("tests/test_quant_math.py", "tests/test_scalar_reference.py",
            "tests/test_quant_scales.py")),
    Target("log-grid scales", "quant/logscale.py", (),
           ("tests/test_quant_scales.py",)),
    Target("fitter guard", "quant/fitter.py",
           ("fit_budget", "_Fit.__init__", "_Fit.predicted", "_Fit.run", "_Fit.error", "_fit",
            "_bisect", "_step_back", "_repair", "_refine", "_coarsen", "lagrange_choice",
            "_lagrange_pick", "_float_swaps", "rate_order"),
           ("tests/test_fitter_guard.py", "tests/test_properties.py::"
            "test_fitter_never_returns_more_than_the_budget", "tests/test_properties.py::"
            "test_fitter_repair_turns_a_better_over_budget_choice_into_a_fitting_one")),
    Target("artifact", "quant/artifact.py",
           ("build_artifact", "_tensor_entries", "_compress_streams", "_join_codes", "_joint_stream",
            "_scale_parts", "_lay_out", "_seal", "write_atomic", "parse_artifact", "decode_tensors",
            "logical_streams", "row_scales_name", "pass_stream_name", "state_dict_from_tensors",
            "load_artifact"),
           ("tests/test_bugs_caught.py", "tests/test_quant_artifact.py", "tests/test_quant_scales.py",
            "tests/test_properties.py::test_artifact_round_trip_is_bit_exact_and_within_half_a_step",
            "tests/test_quant_lqer.py::test_artifact_carries_lqer_and_loads_codes_plus_correction"),
           ("-k", "not report")),  # the report/plot tests read the artifact, slowly
    Target("rANS", "quant/rans.py",
           ("decode", "encode_with_bits", "_tables", "_parse_tables", "_flat_tables", "_row_tables",
            "normalize", "counts_from_codes", "log_count_codes", "lanes_for"),
           ("tests/test_rans.py", "tests/test_bugs_caught.py::"
            "test_rans_every_changed_state_or_word_bit_is_an_error", "tests/test_bugs_caught.py::"
            "test_rans_segment_lengths_must_add_up_to_the_symbol_count",
            "tests/test_properties.py::test_rans_round_trips_any_segments")),
    Target("budget table + cap", "golf/submission/budget.py", (),
           ("tests/test_bugs_caught.py",
            "tests/test_pack.py::test_budget_counts_bytes_on_disk_and_enforces_cap")),
    Target("run dir (train)", "golf/run/rundir.py",
           ("run_dir_problem", "check_run_dir", "start_run_dir", "_clear_earlier_run",
            "unwritable_reason", "is_trained", "clear_staging", "publish_pair", "artifact_ref",
            "resolve_artifact_ref"),
           ("tests/test_rundir_ownership.py",)),
    Target("run dir (pack)", "golf/submission/assemble.py",
           ("check_out_dir", "_is_earlier_pack", "_swap_in", "_write"),
           ("tests/test_rundir_ownership.py",)),
)

# Cheapest first (when comparing rows run one at a time, or under --minutes)
RUN_ORDER = ("budget table + cap", "run dir (pack)", "run dir (train)", "GPTQ", "log-grid scales",
             "scalar quantizers", "rANS", "artifact", "scorer windows", "fitter guard", "byte LUT + bpb")

# Lines never mutated: the wording of an error or log line changes neither a score nor data
# (tests check messages for the names and fixes they must carry, not letter for letter).
# The condition that raises is still mutated; only the raise/log statement itself is skipped.
DO_NOT_MUTATE = (r"^\s*raise \w+\(", r"^\s*(log|say|print)\(")

KILLED, SURVIVED = {"killed", "timeout", "caught by type check"}, {"survived", "no tests"}


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def patterns(t: Target) -> list[str]:
    """mutmut mutant-name globs for the target's functions (methods: xǁClassǁmethod)."""
    mod = module_name(t.path)
    if not t.functions:
        return [f"{mod}.*"]
    out = []
    for f in t.functions:
        cls, _, meth = f.rpartition(".")
        out.append(f"{mod}.x\u01c1{cls}\u01c1{meth}__mutmut_*" if cls else f"{mod}.x_{f}__mutmut_*")
    return out


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("submission/", "bench/results/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def write_config(dest: Path, t: Target) -> None:
    lines = ["[mutmut]", "source_paths =", "    golf", "    quant", "only_mutate =", f"    {t.path}",
             "also_copy ="] + [f"    {p}" for p in ("eval_bpb.py", "pack.py", "train_gpt.py", "bench",
                                                     "pytest.ini")]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {a}" for a in t.tests + t.extra]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -x", "    -q",
              "timeout_multiplier = 8.0", "timeout_constant = 10.0",
              "process_isolation = forkserver", "do_not_mutate_patterns ="]
    lines += [f"    {p}" for p in DO_NOT_MUTATE]
    (dest / "setup.cfg").write_text("\n".join(lines) + "\n")


def verdicts(dest: Path, t: Target) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code
    meta = json.loads((dest / "mutants" / (t.path + ".meta")).read_text())
    pats = patterns(t)
    return {k: status_by_exit_code[v] for k, v in meta["exit_code_by_key"].items()
            if any(fnmatch.fnmatchcase(k, p) for p in pats)}


def diff_of(dest: Path, name: str, env: dict) -> str:
    p = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=dest, env=env,
                       capture_output=True, text=True)
    return "\n".join(p.stdout.splitlines()[1:])


def run_target(t: Target, scratch: Path, max_children: int, equivalent: dict[str, str],
               seconds_allowed: float | None = None) -> dict:
    dest = scratch / t.name.replace(" ", "_").replace("+", "").replace("(", "").replace(")", "")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    copy_tree(dest)
    write_config(dest, t)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "GOLF_SHARED_DATA": os.environ.get("GOLF_SHARED_DATA", str(REPO.parent / "shared" / "data"))}
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                             *patterns(t)], cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=seconds_allowed)
        stopped = False
    except subprocess.TimeoutExpired:  # out of time: stop it, keep the verdicts it has saved
        os.killpg(proc.pid, 15)
        out, _ = proc.communicate()
        stopped = True
    except BaseException:  # interrupted: take mutmut and its workers down too
        os.killpg(proc.pid, 15)
        raise
    seconds = time.time() - t0
    if (proc.returncode != 0 and not stopped) or not (dest / "mutants" / (t.path + ".meta")).exists():
        return {"name": t.name, "path": t.path, "error": f"mutmut exited {proc.returncode}: {out[-1500:]}"}
    v = verdicts(dest, t)
    counts: dict[str, int] = {}
    for s in v.values():
        counts[s] = counts.get(s, 0) + 1
    equiv = [k for k, s in v.items() if s in SURVIVED and k in equivalent]
    alive = sorted(k for k, s in v.items() if s in SURVIVED and k not in equivalent)
    killed = sum(1 for s in v.values() if s in KILLED)
    scored = killed + len(alive)
    return {"name": t.name, "path": t.path, "functions": list(t.functions) or ["*"],
            "mutants": len(v), "checked": sum(1 for s in v.values() if s != "not checked"),
            "killed": killed, "survived": len(alive), "equivalent": len(equiv),
            "statuses": counts, "score": round(killed / scored, 4) if scored else None,
            "seconds": round(seconds, 1),
            "survivors": {k: diff_of(dest, k, env) for k in alive},
            "equivalent_mutants": {k: equivalent[k] for k in equiv}}


def table(rows: list[dict]) -> str:
    out = [f"| {'module':<24} | {'file':<24} | checked / mutants | killed (timeout) | survived | equivalent | score |",
           f"|{'-' * 26}|{'-' * 26}|-------------------|------------------|----------|------------|-------|"]
    tk = ts = 0
    for r in rows:
        if "error" in r:
            out.append(f"| {r['name']:<24} | {r['path']:<24} | error: {r['error'][:60]} |")
            continue
        tk, ts = tk + r["killed"], ts + r["survived"]
        score = f"{100 * r['score']:.1f} %" if r["score"] is not None else "-"
        killed = f"{r['killed']} ({r['statuses'].get('timeout', 0)})"
        checked = f"{r.get('checked', r['mutants'])} / {r['mutants']}"
        out.append(f"| {r['name']:<24} | {r['path']:<24} | {checked:>17} | {killed:>16} | "
                   f"{r['survived']:>8} | {r['equivalent']:>10} | {score:>5} |")
    if tk + ts:
        out.append(f"| {'total':<24} | {'':<24} | {'':>17} | {tk:>16} | {ts:>8} | {'':>10} | "
                   f"{100 * tk / (tk + ts):.1f} % |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", help="target names (substring match) to run")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument("--rescore", action="store_true",
                    help="re-apply bench/mutation_equivalent.json to bench/results/mutation.json")
    ap.add_argument("--minutes", type=float, default=None,
                    help="time limit for the whole run, shared over the targets; a target out of "
                         "time is stopped and reported with the mutants it checked")
    a = ap.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("error: mutmut is not installed; pip install -r bench/requirements-mutation.txt",
              file=sys.stderr)
        return 2
    equivalent = json.loads(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.is_file() else {}
    if a.rescore:  # re-apply the equivalent list to the saved verdicts (no mutant is re-run)
        rows = json.loads((RESULTS / "mutation.json").read_text())["targets"]
        for r in rows:
            if "error" in r:
                continue
            dropped = {k: "(was listed as equivalent; rerun the row for its diff)"
                       for k in r["equivalent_mutants"] if k not in equivalent}
            r["survivors"].update(dropped)  # no longer claimed equivalent: a survivor again
            r["equivalent_mutants"] = {k: equivalent[k] for k in
                                       list(r["equivalent_mutants"]) + list(r["survivors"])
                                       if k in equivalent}
            r["survivors"] = {k: v for k, v in r["survivors"].items() if k not in equivalent}
            r["survived"], r["equivalent"] = len(r["survivors"]), len(r["equivalent_mutants"])
            scored = r["killed"] + r["survived"]
            r["score"] = round(r["killed"] / scored, 4) if scored else None
        (RESULTS / "mutation.json").write_text(json.dumps({"targets": rows}, indent=1,
                                                          ensure_ascii=False) + "\n")
        print(table(rows))
        return 0
    chosen = [t for t in TARGETS if not a.only or any(o.lower() in t.name.lower() for o in a.only)]
    chosen.sort(key=lambda t: RUN_ORDER.index(t.name) if t.name in RUN_ORDER else len(RUN_ORDER))
    scratch = Path(a.scratch or tempfile.mkdtemp(prefix="golf-mutation-"))
    rows = []
    end = time.time() + 60 * a.minutes if a.minutes else None
    try:
        for k, t in enumerate(chosen):
            allowed = (end - time.time()) / (len(chosen) - k) if end else None
            rows.append(run_target(t, scratch, a.max_children, equivalent, allowed))
            print(f"# {t.name}: " + json.dumps({k: v for k, v in rows[-1].items()
                                               if k not in ("survivors", "equivalent_mutants")}),
                  flush=True)
    finally:
        if not a.keep and a.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "mutation.json"
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in rows:
        r["date"] = now
    if a.only and path.is_file():  # a partial run replaces its own rows, keeps the others
        fresh = {r["name"] for r in rows}
        old = [r for r in json.loads(path.read_text())["targets"] if r["name"] not in fresh]
        order = [t.name for t in TARGETS]
        rows = sorted(old + rows, key=lambda r: order.index(r["name"]) if r["name"] in order else 99)
    path.write_text(json.dumps({"targets": rows}, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k not in ("survivors", "equivalent_mutants")}
                      for r in rows]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
