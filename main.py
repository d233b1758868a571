#!/usr/bin/env python3
"""The jobsched stdio node: ``python3 main.py [--db PATH] ...`` (``--help`` lists the flags).

Standard library only: this runs on a bare machine with nothing installed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jobsched.cli import exit_process, run_node

if __name__ == "__main__":
    exit_process(run_node(prog="main.py"))
