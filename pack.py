"""Pack a finished run into a challenge submission folder (see golf/pack.py).

    python pack.py runs/<RUN_ID> [runs/<RUN_ID2> ...] [--out submission/<RUN_ID>] [--name N]
                   [--github-id G] [--blurb B] [--no-roundtrip] [--record --baseline-mean M ...]
    python pack.py --budget-only runs/<RUN_ID>     # budget table only, writes nothing
    python pack.py --code-bytes                    # exact bytes of the shipped train_gpt.py
"""
import sys

from golf.pack import main

if __name__ == "__main__":
    sys.exit(main())
