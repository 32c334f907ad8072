#!/usr/bin/env python3
"""Verify a factory release bundle on the target, with nothing but NumPy and the bundle's runtimes installed.

Checks that every file listed in ``manifest.json`` has its recorded sha256, then runs ``golden_input.npy`` through
each shipped artifact with its recorded runtime and options, and compares the embedding with the manifest's golden
embedding (cosine similarity at least the artifact's ``golden_min_cosine``). Exits 0 when everything matches, 1
otherwise, printing one line per check, and 2 when there is no readable manifest. A thin wrapper around
:mod:`factory.runtime.verify`, which imports no torch: run from a checkout, it finds ``factory`` beside ``deploy/``.

Usage: python verify_release.py RELEASE_DIR [--threads N]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    """Command line entry: prints one line per check, returns the exit code."""
    if importlib.util.find_spec("factory") is None:
        # Not installed: use the checkout (or unpacked bundle) this script lives in.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from factory.runtime.verify import main as verify_main

    return verify_main()


if __name__ == "__main__":
    sys.exit(main())
