"""The agent process ``trainer.devices=N`` starts: ``torchrun``'s own ``run(args)``, with a
quiet console and its outcome left for the ``train`` process that started it.

    python -m trainrun.cli.agent <torchrun options> --no-python python -m trainrun.cli <overrides>

Three differences from the ``torchrun`` console script, all at the edges:

* torch's logging is off in this process (the workers print as a single run does) and a failure
  is written to ``failures.json`` in the launch folder (rank, exit status, signal, the rank's
  error file) instead of torchrun's traceback and table;
* the signals are this module's: the first one stops the workers as torchrun does (torch's
  ``SignalException``: forwarded once, then ``--shutdown-timeout``), later ones are ignored (SLURM
  signals every process of a step, and ``train`` forwards what it gets), except a second SIGINT,
  which stops at once (the workers die with this process);
* this process dies with ``train`` (``PR_SET_PDEATHSIG``), and the workers with it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from trainrun.cli.ranks import FAILURES, LAUNCH_ENV, SIGNALS, die_with_parent


def _handler(received: set[int]):
    def handle(signum: int, frame: FrameType | None) -> None:
        if signum in received:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop at once, the workers with this process
                sys.stdout.flush()  # (an exception would land in torch's shutdown, whose finally
                os._exit(130)  # stops the workers again with SIGTERM and waits for their save)
            return
        received.add(signum)
        if len(received) == 1:  # the first: torchrun's own way of stopping the workers
            raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    return handle


def main() -> None:
    die_with_parent()
    logging.disable(logging.CRITICAL)
    args = parse_args(sys.argv[1:])
    args.signals_to_handle = "SIGPWR"  # torch installs none of its own over this module's
    received: set[int] = set()
    for name in SIGNALS:
        signal.signal(getattr(signal, name), _handler(received))
    code = 0
    try:
        run(args)
    except ChildFailedError as err:
        failures = {rank: {"exitcode": f.exitcode, "signal": f.signal_name(), "time": f.timestamp,
                           "data": f.error_file_data} for rank, f in err.failures.items()}
        (Path(os.environ[LAUNCH_ENV]) / FAILURES).write_text(json.dumps(failures))
        code = 1
    except SignalException as err:
        code = 128 + int(err.sigval)
    except KeyboardInterrupt:
        code = 130
    except Exception as err:  # torch's launcher itself failed: one line, train's paragraph follows
        print(f"trainrun: torch's launcher failed: {type(err).__name__}: {err}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
