"""Operator and developer commands (``python -m tools.cli``) and the local stack they run.

The functions' package (``functions/chalicelib``) is importable from here on, as it is in Lambda.
"""

import sys
from pathlib import Path

_FUNCTIONS = str(Path(__file__).resolve().parent.parent / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.insert(0, _FUNCTIONS)
