"""``python -m jobsched ...``: the same commands as the ``jobsched`` script."""

import sys

from jobsched.cli import main

sys.exit(main())
