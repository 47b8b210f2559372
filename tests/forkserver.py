"""A fork server for the end-to-end tests: each ``train`` starts from a process that has already
imported torch, instead of paying Python's start and torch's import (2-4 s of CPU here) again.

Why: the end-to-end tier runs the real commands about a thousand times, and a run of several
processes starts an agent and a worker per process; most of each is ``import torch`` and
``torch._dynamo`` (which every optimizer's constructor imports). Preloaded once per pytest worker
and forked per process, the tier takes half the time, and every command is still its own
process running the installed entry point: its own working folder, environment, argv, file
descriptors, exit status, ``atexit`` and interpreter shutdown.

How: :func:`shim` writes a shim per console script (``train``, ``evaluate``, ...) and one for
``python`` into a temporary folder and starts the server. A shim is a few lines of Python started
with ``-IS`` (no site, milliseconds): it sends its argv, working folder, environment and open
file descriptors (the descriptors themselves, ``SCM_RIGHTS``) to the server, which forks; the
child takes the descriptors under their numbers, starts a session of its own, imports trainrun
fresh (only third-party packages are preloaded, so trainrun's import-time hygiene runs as in a
real start) and calls the entry point. Its ``sys.executable`` is the ``python`` shim, so the
processes a command starts the usual way (torchrun's agent and workers for
``trainer.devices=N``, submitit's local jobs, the curves helper) are children of the server too.
The shim forwards the signals it gets to its child and exits with the child's status (dying of
the same signal, where the child did); a shim that dies takes the child's process group with
it, and a shim dies with its parent (``PR_SET_PDEATHSIG``), as trainrun's agents and workers do.

What a fork cannot be is a fresh interpreter, so the server answers "exec the real one" (the
shim then ``exec``s the installed script or interpreter, as if it had never been there) when the
environment differs from the server's in a variable read when a process or a C library in it
starts (``OMP_*``, ``MKL_*``, ``PYTHON*``, ``LD_*``, ...), inside a SLURM job (slurmd tracks its
processes), and for an interpreter invocation other than ``[-P|-u|-B|-s] (-m mod | -c code |
script) args``. Tests that depend on a fresh interpreter otherwise (import hygiene, import
lists: the preloaded packages are in ``sys.modules``) run the real script:
``@pytest.mark.real_process`` or ``run_command(real=True)``. ``TRAINRUN_TESTS_FORKSERVER=0``
runs every command as a real process.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import importlib
import importlib.metadata
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path

# What most commands import, slowest first: torch and torch._dynamo (every optimizer), scikit-learn's
# data sets (data=synthetic, 0.7-1.4 s), matplotlib (the curves helper of every run that draws).
PRELOAD = ("torch", "torch._dynamo", "torch.distributed", "torch.distributed.run", "torch.distributed.checkpoint",
           "numpy", "sklearn.datasets", "matplotlib.figure", "matplotlib.backends.backend_agg", "hydra",
           "hydra.utils", "omegaconf", "rich.console", "tqdm")
COMMANDS = ("train", "evaluate", "predict", "export-model", "torchrun")
PYTHON = "python"  # the shim of the interpreter (sys.executable in a child)
# Environment variables read when a process (or a C library in it) starts: a request whose value
# differs from the server's runs as a real process. TORCH_NCCL_* are read when a process group is
# made (torchrun's agent sets one for its workers).
READ_AT_START = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH_", "TORCHINDUCTOR_", "PYTHON", "LD_",
                 "MALLOC_", "CUDA_")
# tests/toys.py kills its parent by pid where KILL_PARENT is set: a forked process's parent is
# the server, so such a command runs as the real one.
PARENT_SENSITIVE = ("KILL_PARENT",)
# Signals a command sends around (to its parent, to a group) must not end the server: it ignores
# them, and a child gets Python's defaults back.
STRAY_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
READ_LATER = ("TORCH_NCCL_", "PYTHONSAFEPATH")  # the latter: as -P, honoured by become()
PYTHON_FLAGS = ("-P", "-u", "-B", "-s")  # the interpreter's options a child can honour
REAL_PYTHON = sys.executable  # the virtual environment's interpreter (read before a child replaces it)
BIN = Path(REAL_PYTHON).parent

SHIM = '''#!{python} -IS
# A trainrun test shim (tests/forkserver.py): run `{command}` in a child of the fork server.
import ctypes, json, os, signal, socket, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent, as workers do
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.connect({socket_path!r})
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:  # the folder listing's own descriptor, closed by now
        return False
fds = [fd for fd in sorted(map(int, os.listdir("/proc/self/fd"))) if fd != server.fileno() and is_open(fd)]
request = {{"command": {command!r}, "args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
           "fds": fds, "inheritable": [os.get_inheritable(fd) for fd in fds]}}
socket.send_fds(server, [json.dumps(request).encode()], fds)
reply = json.loads(server.recv(1 << 16))
if "exec" in reply:  # what a fork cannot be: the real thing, in this process
    os.execv(reply["exec"], [reply["exec"], *sys.argv[1:]])
child = reply["pid"]
def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGCONT"):
    signal.signal(getattr(signal, name), forward)
reply = server.recv(1 << 16)
if not reply:
    sys.stderr.write("tests/forkserver.py: the fork server ended before the command\\n")
    sys.exit(255)
status = json.loads(reply)["status"]
if status < 0:  # die of the child's signal (SIGKILL's disposition cannot be set, nor needs to)
    if -status != signal.SIGKILL:
        signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
sys.exit(status)
'''


class Server:
    """One fork server of this (pytest worker) process and the folder of its shims."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="trainrun-forkserver-"))
        self.socket_path = str(self.folder / "socket")
        env = started_env()
        self.read_at_start = read_at_start(env)
        # Its own folder as working folder: a test looking for processes working in its folder
        # finds the commands, not the server.
        self.proc = subprocess.Popen([sys.executable, "-u", __file__, self.socket_path, str(self.folder)],
                                     cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the fork server did not start: {line!r}")
        for command in (*COMMANDS, PYTHON):
            shim = self.folder / command
            shim.write_text(SHIM.format(python=sys.executable, command=command, socket_path=self.socket_path))
            shim.chmod(0o755)
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # it ignores the polite signals (STRAY_SIGNALS)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


_server: Server | None = None


def enabled() -> bool:
    return os.environ.get("TRAINRUN_TESTS_FORKSERVER", "1") != "0"


def started_env() -> dict[str, str]:
    """The server's environment: this process's, as conftest.env_for_tests gives a command."""
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def read_at_start(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(READ_AT_START) and not k.startswith(READ_LATER)}


def shim(command: str) -> Path:
    """The shim that runs ``command`` (a console script, or ``python``) in a child of this
    worker's fork server: started on first use, and again when this process's environment has
    changed since in a variable read at start (a command given it would run as the real one)."""
    global _server
    if _server is not None and _server.read_at_start != read_at_start(started_env()):
        _server.stop()
    if _server is None or _server.proc.poll() is not None:
        _server = Server()
    return _server.folder / command


# ---- the server process ---------------------------------------------------------------------


def real_one(request: dict, own_env: dict[str, str]) -> str | None:
    """The executable to ``exec`` instead of forking (see the module's docstring), or None."""
    command, env = request["command"], request["env"]
    real = REAL_PYTHON if command == PYTHON else str(BIN / command)
    differ = sorted(k for k in {*env, *own_env} if k.startswith(READ_AT_START) and not k.startswith(READ_LATER)
                    and env.get(k) != own_env.get(k))
    why = (f"environment differs in {differ}" if differ else "a SLURM job" if "SLURM_JOB_ID" in env
           else "KILL_PARENT" if any(k in env for k in PARENT_SENSITIVE)
           else "interpreter options" if command == PYTHON and python_form(request["args"]) is None else None)
    if why is None:
        return None
    with Path(os.environ["TRAINRUN_FORKSERVER_LOG"]).open("a") as f:  # which commands ran real, and why
        f.write(f"real {command} {' '.join(request['args'])[:200]}: {why}\n")
    return real


def python_form(argv: list[str]) -> tuple[set[str], str, str, list[str]] | None:
    """``[flags] -m mod args`` / ``-c code args`` / ``script args`` as (flags, kind, target, args)."""
    flags, i = set(), 0
    while i < len(argv) and argv[i] in PYTHON_FLAGS:
        flags.add(argv[i])
        i += 1
    if i < len(argv) and argv[i] in ("-m", "-c") and i + 1 < len(argv):
        return flags, argv[i], argv[i + 1], argv[i + 2:]
    if i < len(argv) and not argv[i].startswith("-"):
        return flags, "script", argv[i], argv[i + 1:]
    return None


def serve(socket_path: str) -> tuple[dict, list[int]]:
    """Accept requests and fork a child for each; returns only in a child, with its request."""
    own_env = dict(os.environ)  # before the imports: torch's set some (TORCHINDUCTOR_CACHE_DIR)
    os.environ["TRAINRUN_FORKSERVER_LOG"] = str(Path(socket_path).with_name("server.log"))
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the preloaded objects out of the collector's sight: a child's collections do not copy them
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork keeps only the forking thread: a pool started by an import would be lost
        raise RuntimeError(f"the preloaded imports started {threads - 1} thread(s); a fork would lose them")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    listener.listen(64)
    parent = os.getppid()
    waiting: dict[int, socket.socket] = {}  # child pid -> its shim's connection
    for stray in STRAY_SIGNALS:
        signal.signal(stray, signal.SIG_IGN)
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # not our pipe: a child writes where its shim says
    os.close(devnull)
    log = Path(os.environ["TRAINRUN_FORKSERVER_LOG"])
    while os.getppid() == parent:  # the pytest worker is gone: so is the server
        try:
            child = step(listener, waiting, own_env)
        except Exception:  # never the end of the server: written down, and on to the next request
            with log.open("a") as f:
                traceback.print_exc(file=f)
            continue
        if child is not None:
            return child
    sys.exit(0)


def step(listener: socket.socket, waiting: dict[int, socket.socket],
         own_env: dict[str, str]) -> tuple[dict, list[int]] | None:
    """One turn of the server: admit what arrived, fork, tell shims their children's status.
    Returns the request in a forked child, None in the server."""
    readable, _, _ = select.select([listener, *waiting.values()], [], [], 0.05)
    for ready in readable:
        if ready is listener:
            conn, _ = listener.accept()
            fds = []
            try:
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 250)
                request = json.loads(message)
            except (OSError, ValueError):  # the shim died before its request was whole
                for fd in fds:
                    os.close(fd)
                conn.close()
                return None
            real = real_one(request, own_env)
            if real is not None:
                with contextlib.suppress(OSError):
                    conn.send(json.dumps({"exec": real}).encode())
                conn.close()
                for fd in fds:
                    os.close(fd)
                return None
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for other in waiting.values():
                    other.close()
                for stray in STRAY_SIGNALS:  # Python's own dispositions, as at a start
                    signal.signal(stray, signal.default_int_handler if stray == signal.SIGINT else signal.SIG_DFL)
                return request, fds
            for fd in fds:
                os.close(fd)
            waiting[pid] = conn
            try:
                conn.send(json.dumps({"pid": pid}).encode())
            except OSError:  # the shim is gone already: so is its child (below)
                end(pid, waiting)
        elif any(c is ready for c in waiting.values()):  # not one ended earlier in this turn
            try:
                gone = not ready.recv(1 << 10)
            except OSError:
                gone = True
            if gone:  # the shim died without its status: its child goes too
                end(next(p for p, c in waiting.items() if c is ready), waiting)
    while True:  # reap every child that ended; a waiting shim gets its status
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()
    return None


def end(pid: int, waiting: dict[int, socket.socket]) -> None:
    """Kill a child whose shim is gone, with its process group; it is reaped with the others."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    waiting.pop(pid).close()


def become(request: dict, fds: list[int], shims: Path) -> None:
    """In the forked child: take the shim's descriptors (under their numbers), folder,
    environment and argv; the ``python`` shim is this process's interpreter."""
    os.setsid()  # a process group of its own: a dying shim takes it, and the command's workers
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in fds]  # clear of the targets
    for fd in fds:
        os.close(fd)
    for target, fd, inheritable in zip(request["fds"], high, request["inheritable"], strict=True):
        os.dup2(fd, target, inheritable=inheritable)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR is read again
    sys.executable = str(shims / PYTHON)
    here = Path(__file__).resolve().parent
    base = [p for p in sys.path if not p or Path(p).resolve() != here]
    if request["command"] == PYTHON:
        flags, kind, target, args = python_form(request["args"]) or (set(), "", "", [])
        first = []
        if "-P" not in flags and not os.environ.get("PYTHONSAFEPATH"):
            first = [str(Path(target).resolve().parent)] if kind == "script" else [os.getcwd() if kind == "-m" else ""]
        sys.path[:] = [*first, *base]
        run_python(kind, target, args)
    else:
        # A console script's path: its own folder first, then the interpreter's (not tests/).
        sys.path[:] = [*([] if os.environ.get("PYTHONSAFEPATH") else [str(BIN)]), *base]
        sys.argv = [str(BIN / request["command"]), *request["args"]]
        (found,) = importlib.metadata.entry_points(group="console_scripts", name=request["command"])
        sys.exit(found.load()())


def run_python(kind: str, target: str, args: list[str]) -> None:
    """``python -m target args`` / ``-c target args`` / ``target args`` in this process."""
    if kind == "-m":
        sys.argv = [target, *args]  # runpy puts the module's file in argv[0]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif kind == "-c":
        sys.argv = ["-c", *args]
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(target, "<string>", "exec"), main.__dict__)
    else:
        sys.argv = [target, *args]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    request, fds = serve(sys.argv[1])
    become(request, fds, Path(sys.argv[2]))
    sys.exit(0)
