"""Write docs/configuration.md from the schemas (src/trainrun/config/) and the option files
(configs/), through trainrun.cli.reference.markdown().

    python scripts/gen_config_docs.py           # rewrite the file
    python scripts/gen_config_docs.py --check   # exit 1 if the file is out of date

tests/unit/test_docs.py runs the same comparison, so a schema key or an option added without
regenerating fails the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainrun.cli import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def main() -> int:
    missing = reference.undocumented()
    if missing:
        print("keys without a description (declare the field with setting(default, \"...\") in "
              "src/trainrun/config/):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    text = reference.markdown()
    if "--check" in sys.argv[1:]:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
