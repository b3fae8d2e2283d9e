"""`python -m golf.data` is an alias for `python -m golf.data.prepare`."""
import sys

from golf.data.prepare import main

sys.exit(main())
