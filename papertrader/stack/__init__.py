"""The stack: one master, its workers and their services, run and watched as a whole.

``pt up``, ``pt down``, ``pt restart`` and ``pt status`` are thin commands over
this package:

* ``record.py``: ``stack.json`` in the state directory, every child's recipe
  (command line, environment, working directory) and its current run;
* ``plan.py``: what happens before the first child starts (services, schema,
  keys, worker registration, the recipes);
* ``supervisor.py``: start in order, restart a crashed child with back-off,
  stop in order;
* ``control.py``: foreground and detached start, stop, restart, as the
  commands call them; ``__main__.py`` is the detached supervisor process;
* ``runfiles.py``: servers announcing themselves in ``run/``, so a process
  started by hand for the state directory is seen and stopped too;
* ``processes.py``: pids with start times, signals, ports.
"""

from papertrader.stack.control import (
    master_lists_workers,
    restart,
    run_foreground,
    running_stack,
    start_detached,
    stop,
)
from papertrader.stack.plan import StackOptions
from papertrader.stack.record import Child, StackError, StackRecord, load_record
from papertrader.stack.runfiles import RunningServer, announced, running_servers
from papertrader.stack.supervisor import Supervisor, install_supervisor_logging

__all__ = [
    "Child",
    "RunningServer",
    "StackError",
    "StackOptions",
    "StackRecord",
    "Supervisor",
    "announced",
    "install_supervisor_logging",
    "load_record",
    "master_lists_workers",
    "restart",
    "running_servers",
    "run_foreground",
    "running_stack",
    "start_detached",
    "stop",
]
