"""`python -m web.settings_table`: prints the README's configuration table from the settings table, or writes it in."""

from __future__ import annotations

import argparse
import sys

from web.config import markdown_table, write_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web.settings_table", description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the table into README.md instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        print("README.md updated" if write_readme() else "README.md was up to date", file=sys.stderr)
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
