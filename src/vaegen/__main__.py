"""`python -m vaegen`: the command line, with a torchrun worker's exit that skips teardown."""

import os
import sys

from .cli import main
from .training.distributed import started_by_torchrun

status = main()
if started_by_torchrun():
    # A torchrun worker leaves without the interpreter's teardown, in which PyTorch's C++ state
    # is destroyed and now and then aborts ("terminate called without an active exception",
    # then a crash while faulthandler lists the threads: seen in the test suite's torchrun
    # runs) after every file is written and the process group destroyed; torchrun would then
    # report a finished run as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
