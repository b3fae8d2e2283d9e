"""The shipped train_gpt.py is the same bytes in every process: the fitter counts its code
bytes in the training process and pack builds the file again later, so a byte of difference
(a set rendered in hash order, for instance) would put the submission over what was fitted."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ("import hashlib, sys; sys.path.insert(0, {repo!r}); from golf import pack; "
          "b = pack.build_train_script(True); p = pack.build_train_script(False); "
          "print(len(b), hashlib.sha256(b).hexdigest(), hashlib.sha256(p).hexdigest(), pack.code_bytes())")


def build_in_fresh_process(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO))], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.split()


def test_packed_script_bytes_do_not_depend_on_the_hash_seed():
    a, b = build_in_fresh_process("1"), build_in_fresh_process("4242")
    assert a == b, (a, b)
    size, _sha_compressed, _sha_plain, counted = a
    # the fitter's figure (code_bytes) is the size of the form that ships, by construction
    assert int(counted) <= int(size)
    from golf import pack
    forms = pack.build_forms()
    assert int(counted) == min(len(v) for v in forms.values())
    assert hashlib.sha256(pack.build_train_script(False)).hexdigest() == a[2]  # and in this process
