"""trainrun: a command-line PyTorch training runner driven by Hydra config files."""

# First, before any other import: the working folder must not shadow the modules imported next
# (importlib.metadata alone pulls in csv, email, pathlib, zipfile, ...). See trainrun.hygiene.
from trainrun.hygiene import working_folder_last

working_folder_last()

from importlib.metadata import PackageNotFoundError, version  # noqa: E402  (after the path is safe)

try:
    __version__ = version("trainrun")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
