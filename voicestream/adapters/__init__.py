"""Source-tree shim: ``voicestream.adapters`` is the repository's top-level ``adapters/``.

Wheels map that folder here (pyproject force-include, with this shim excluded); in a source
checkout or editable install this file extends the package path to it, so the folder is
never importable as a top-level ``adapters`` package (that PyPI name belongs to others).
"""
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[2] / "adapters"
if _SOURCE.is_dir():
    __path__.append(str(_SOURCE))  # type: ignore[name-defined]
    exec(compile((_SOURCE / "__init__.py").read_text(), str(_SOURCE / "__init__.py"), "exec"))
