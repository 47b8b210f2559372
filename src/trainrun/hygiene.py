"""Import hygiene: the working folder never shadows the standard library or an installed package,
in every process trainrun runs in. The one step, run first.

Python puts a folder first on ``sys.path`` for ``python -m`` and ``python -c`` (the working
folder) and for a script (its folder). A ``csv.py``, ``pickle.py`` or ``numpy.py`` lying in the
folder a run starts in would then be imported in place of the real module, and run. Two halves:

* :func:`working_folder_last`, called by ``trainrun/__init__.py`` before it imports anything
  (this module needs only ``os``, ``sys`` and ``importlib.machinery``, which the interpreter has
  loaded before any code runs): a working folder on ``sys.path`` leaves its front for its end,
  so the user's own modules (``model._target_=mynet.Net``) stay importable but lose to any
  installed name. At the end of the path it could still answer for a name nothing earlier
  provides as a regular module: an installed *namespace* package (``mpl_toolkits``), or a
  standard-library module this platform lacks (``msvcrt``, ``winreg``) that a library probes
  for; :class:`InstalledFirst` (just before the path search) answers those imports without it.
  Every process that imports trainrun passes here first: the console scripts, ``python -m
  trainrun.cli`` (torchrun's ranks), the workers of ``trainer.devices``, joblib and submitit
  workers (they import trainrun to run the job) and the curves helper.
* :func:`protect`, called by every command's entry point (trainrun as a program, not as a
  library): the working folder leaves ``sys.path`` altogether, until a ``_target_`` names a
  module that nothing installed provides (:func:`trainrun.targets.locate` then puts it back,
  last): before that, a library probing for an optional package that is not installed
  (joblib's ``import psutil``) finds no stand-in for it either; after it, the folder is the
  folder of the user's own code. And ``PYTHONSAFEPATH=1`` (Python 3.11+'s ``-P``) goes into
  the environment, so the Python processes started from here (launcher workers, torch's
  elastic agent and its ranks, helpers) never put the working folder first, not even for the
  imports they make *before* trainrun's (joblib's and multiprocessing's start-up code, ``python
  -m torch.distributed.run``). Those that copy this process's ``sys.path`` (multiprocessing's
  spawn, loky) get it as it is here.

* :class:`WorkingFolderModules`: once :func:`protect` took the working folder off ``sys.path``, a
  user's module comes back through this finder, last on ``sys.meta_path``, never by putting the
  folder back on the path: it answers from the working folder only the top-level names a
  ``_target_`` named (:func:`user_folder_importable`) and the names those modules import
  themselves. A folder on ``sys.path`` would answer every name nothing installed provides, and
  torch, sympy and rich probe for many (``triton``, ``gmpy2``, ``tabulate``, ``colorama``): a
  ``tabulate.py`` lying beside the user's ``mynet.py`` would run. The names go to the processes
  started from here in :data:`USER_MODULES`.

What no package can do: ``python -m trainrun.cli`` started by a person (or by a torchrun a person
started) has already imported ``runpy``'s own modules (``warnings``, ``collections``,
``functools``, ``contextlib``, ``types``, ...) from the working folder before trainrun's first
line runs. ``python -P -m trainrun.cli``, ``PYTHONSAFEPATH=1`` or ``torchrun --no-python train``
close that (docs/troubleshooting.md).
"""

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import FrameType, ModuleType

SAFE_PATH = "PYTHONSAFEPATH"
# The working folder's modules a command may import (comma-separated top-level names), for the
# Python processes it starts (they install :class:`WorkingFolderModules` from it).
USER_MODULES = "TRAINRUN_USER_MODULES"

# A ``python -c`` helper's first statement (it needs no user module): the working folder off
# sys.path before anything is imported (Python 3.10 knows no PYTHONSAFEPATH).
BOOTSTRAP = "import os, sys; sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]"


class InstalledFirst:
    """Before the path search on ``sys.meta_path`` while the working folder is on ``sys.path``: a top-level import
    is answered from everything but the working folder when anything there has the name (a
    namespace package's portions included), and a standard-library name is never taken from the
    working folder (``nt``, ``winreg``: absent on this platform, probed for by libraries). Other
    names fall through to the usual search, which reaches the working folder last."""

    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None:  # a submodule: its package's own folders decide
            return None
        try:
            cwd = os.getcwd()
        except OSError:
            return None
        if cwd not in sys.path:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p not in ("", cwd)])
        if spec is None and name in sys.stdlib_module_names:
            raise ModuleNotFoundError(f"No module named {name!r} (the working folder's {name}.py is not "
                                      "the standard library's)", name=name)
        return spec


USER_NAMES: set[str] = set()  # what WorkingFolderModules answers (a module-level set: no typing import here)


class WorkingFolderModules:
    """Last on ``sys.meta_path`` in a command (nothing installed has the name, or an earlier
    finder would have answered): a top-level module from the working folder only when a
    ``_target_`` named it (:attr:`names`) or a module answered here imports it (a sibling of the
    user's ``mynet.py``, also imported lazily, in a function). A name anything else asks for is
    not there: ``import triton`` from torch gets ``ModuleNotFoundError``, as without the folder."""

    names = USER_NAMES

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None or name in sys.stdlib_module_names:  # a submodule: its package decides
            return None
        try:
            cwd = os.getcwd()
        except OSError:
            return None
        if name not in cls.names and not cls._asked_by_users_module():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [cwd])
        if spec is not None:
            cls.names.add(name)
        return spec

    @classmethod
    def _asked_by_users_module(cls) -> bool:
        """Whether the import statement (or ``importlib.import_module`` call) asking comes from
        a module this finder answered: the first frame outside the import machinery decides.
        ``sys._getframe`` is the documented way to the caller's frame; ``inspect`` would import a
        dozen modules before the path is safe."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if not (frame.f_code.co_filename.startswith("<frozen") or module in ("importlib", __name__)):
                return module.partition(".")[0] in cls.names
            frame = frame.f_back
        return False


def _install_user_modules(names: Sequence[str]) -> None:
    WorkingFolderModules.names.update(n for n in names if n.isidentifier())
    if WorkingFolderModules not in sys.meta_path:
        sys.meta_path.append(WorkingFolderModules)  # a finder class, as importlib's own PathFinder


def _install_finder() -> None:
    """Just before the path search (built-in and frozen modules are answered first, as ever)."""
    if not any(isinstance(f, InstalledFirst) for f in sys.meta_path):
        at = next((i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder), 0)
        sys.meta_path.insert(at, InstalledFirst())


def working_folder_last() -> str:
    """Move the working folder (``""`` or its path), where it is on ``sys.path``, to its end,
    behind :class:`InstalledFirst`; returns the folder. Cheap and idempotent. A working folder
    that was deleted is no place to import from: it just leaves ``sys.path`` (the command then
    says what is wrong with it)."""
    if os.environ.get(USER_MODULES):  # a process a command started: its user modules, as there
        _install_user_modules(os.environ[USER_MODULES].split(","))
    try:
        cwd = os.getcwd()
    except OSError:
        sys.path[:] = [p for p in sys.path if p != ""]
        return ""
    if "" in sys.path or cwd in sys.path:
        _install_finder()
        if sys.path[-1:] != [cwd] or "" in sys.path or sys.path.count(cwd) > 1:
            sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
            sys.path.append(cwd)
    return cwd


def user_folder_importable(top: str = "") -> str:
    """Make the user's module ``top`` (``mynet`` of ``model._target_=mynet.Net``) importable from
    the working folder; returns the folder. In a command (:func:`protect`): through
    :class:`WorkingFolderModules`, for that name alone (and the processes started from here);
    in a library user's process: the folder on ``sys.path``, last."""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""
    if _PROTECTED or os.environ.get(SAFE_PATH) == "1":  # a command, or a process one started
        _install_user_modules([top])
        os.environ[USER_MODULES] = ",".join(sorted(WorkingFolderModules.names))
        return cwd
    if cwd not in sys.path:
        sys.path.append(cwd)
    return working_folder_last()


def protect() -> None:
    """trainrun as a program: the working folder off ``sys.path`` (a user module puts it back,
    last, when located), and every Python process started from this one starts without it first
    (``PYTHONSAFEPATH=1``; Python 3.10 ignores it, and there the helpers start with
    :data:`BOOTSTRAP`)."""
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
    os.environ[SAFE_PATH] = "1"
    global _PROTECTED
    _PROTECTED = True
    WorkingFolderModules.names.clear()  # this command's targets name them again
    os.environ.pop(USER_MODULES, None)
    _install_user_modules([])


_PROTECTED = False  # set by protect(): this process is a trainrun command
