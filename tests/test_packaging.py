"""The top-level adapters/ folder is importable as voicestream.adapters (never as `adapters`
in a wheel), and the console script is declared."""
import tomllib
from pathlib import Path

import voicestream.adapters

ROOT = Path(__file__).resolve().parents[1]


def test_adapters_folder_maps_into_the_package():
    assert any(Path(p).resolve() == (ROOT / "adapters").resolve() for p in voicestream.adapters.__path__)
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = cfg["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"] == {"adapters": "voicestream/adapters"}
    assert "voicestream/adapters/__init__.py" in wheel["exclude"]
    assert cfg["project"]["scripts"]["voicestream"] == "voicestream.cli:main"
