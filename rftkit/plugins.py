"""Importing user Python files (custom tasks, verifiers, objectives) named in `imports:`."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from rftkit.errors import ConfigError


def import_file(path: str, base: Path | None = None) -> None:
    """Import a .py file by path (relative to `base`, then to the working directory)."""
    candidates = [Path(path)] + ([base / path] if base is not None else [])
    file = next((p for p in candidates if p.is_file()), None)
    if file is None:
        raise ConfigError(f"imports: file '{path}' not found (looked in: {', '.join(str(c) for c in candidates)})")
    file = file.resolve()
    name = "rftkit_user_" + hashlib.sha1(str(file).encode()).hexdigest()[:10]
    if name in sys.modules:
        return  # already imported: registering twice would be a duplicate-name error
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report where it failed, without our traceback
        del sys.modules[name]
        tb = traceback.extract_tb(e.__traceback__)[-1]
        raise ConfigError(f"imports: '{file}' failed to import: {type(e).__name__}: {e} "
                          f"(at {tb.filename}:{tb.lineno})") from None
