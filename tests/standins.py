"""A working folder full of stand-ins: a ``<name>.py`` for every standard-library module and every
installed top-level package, each leaving a marker file when it is imported (then handing over
to the real module, so that the command goes on and every stand-in it imports leaves its mark).

The names are not chosen by hand: they are Python's own list of standard-library modules and
the import names of every installed distribution. A marker means the working folder shadowed
that module in some process; the security tests require that none appears.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

# Imported from the working folder, a stand-in leaves its marker and then runs the real module in
# its place (found on sys.path without the working folder).
STANDIN = '''\
import sys as _sys
open({marker!r}, "w").close()
import _frozen_importlib as _bootstrap, _frozen_importlib_external as _external  # loaded at start-up
_spec = _external.PathFinder.find_spec(__name__, [p for p in _sys.path if p not in ("", {folder!r})])
if _spec is None:
    raise ImportError(f"the working folder's stand-in for {{__name__}} found no real module")
_real = _bootstrap.module_from_spec(_spec)
_sys.modules[__name__] = _real
_spec.loader.exec_module(_real)
'''

# A stand-in here would only break the tools around the test, never a trainrun process.
NOT_STANDED_IN = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
                  "ensurepip", "venv", "pydoc_data", "xxlimited", "xxlimited_35", "xxsubtype"}


# Optional packages a command's processes import when present (torch: triton, tensorflow, tvm;
# sympy: gmpy2, flint; rich: colorama; ...): the names a `train model._target_=usernet.Net` asked
# for and nothing answered, logged by a meta-path finder at the end of sys.meta_path. Stood in
# for where not installed: the working folder must not answer them either once a user module
# made it importable.
PROBED = ("triton", "tensorflow", "tvm", "gmpy2", "gmpy", "flint", "tabulate", "colorama", "pandas", "xarray",
          "hypothesis", "tree", "torchdistx", "tensorrt", "torch2trt", "onnx_tf", "fx2trt_oss", "pydot", "dill",
          "pynvml", "redis", "opt_einsum", "attr", "monkeytype", "envwrap", "torchcomms", "cuda", "org")


def standin_names() -> list[str]:
    """The standard library's top-level modules, every installed distribution's import names,
    and the optional packages probed for (:data:`PROBED`) that are not installed."""
    stdlib = {n for n in sys.stdlib_module_names if not n.startswith("_")}
    installed = {n for n in importlib.metadata.packages_distributions()
                 if n.isidentifier() and not n.startswith("_")}
    absent = {n for n in PROBED if importlib.util.find_spec(n) is None}
    return sorted((stdlib | installed | absent) - NOT_STANDED_IN - set(sys.builtin_module_names))


def plant(folder: Path, markers: Path) -> list[str]:
    """Write the stand-ins into ``folder``; their markers go to ``markers``. Returns the names."""
    markers.mkdir(parents=True, exist_ok=True)
    names = standin_names()
    for name in names:
        (folder / f"{name}.py").write_text(
            STANDIN.format(marker=str(markers.resolve() / f"{name}.imported"), folder=str(folder.resolve())))
    return names


def imported(markers: Path) -> list[str]:
    """The stand-ins some process imported."""
    return sorted(p.stem for p in markers.glob("*.imported"))


def clear(markers: Path) -> None:
    for path in markers.glob("*.imported"):
        path.unlink()


def before_any_package() -> set[str]:
    """The modules ``python -m <package>`` imports before the package's first line runs (runpy's
    own imports): out of any package's reach, asked of Python itself in an empty folder."""
    code = "import sys; a = set(sys.modules); import runpy; print(' '.join(set(sys.modules) - a))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}
