import os
import sys

from .cli import main

status = main()
try:
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
except ValueError:
    several = False
if several:
    # A torchrun worker leaves without the interpreter's teardown, in which PyTorch's C++ state
    # is destroyed and now and then aborts ("terminate called without an active exception",
    # then a crash while faulthandler lists the threads: seen in the test suite's torchrun
    # runs) after every file is written and the process group destroyed; torchrun would then
    # report a finished run as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
