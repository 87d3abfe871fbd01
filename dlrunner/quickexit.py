"""Leaving the process without tearing down its modules one by one. Python's finalization of an
interpreter that imported torch takes seconds (measured on the 2-core VM: `import torch` then exit,
2-4 s past the last atexit handler; after a training run, up to 10 s) and writes nothing: every file
of a run is already on disk, closed. What must happen still happens, in the interpreter's own order:
threading's exit hooks run (executors' manager threads stop there: joblib's workers of a
`hydra/launcher=joblib` sweep, concurrent.futures pools) and other threads that are not daemons are
joined, then every atexit handler runs (Hydra's log handlers, loggers' own hooks), then stdout and
stderr are flushed."""
from __future__ import annotations

import atexit
import os
import sys
import threading


def exit_code(code: object) -> int:
    """sys.exit's convention: None is 0, an int is itself, anything else is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> None:
    status = exit_code(code)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:  # the interpreter's first step at exit: threading's exit hooks, then the joins
        shutdown()
    else:  # joining alone would wait forever on a pool whose threads stop only in those hooks
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
