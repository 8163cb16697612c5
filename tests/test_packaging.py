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


def test_ray_extra_is_optional_and_tested_in_ci():
    """serve-ray needs Ray Serve: an extra of its own, pulled in by the test extra CI installs."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[serve]") for req in extras["ray"])
    assert any("ray" in req.split("[", 1)[1] for req in extras["test"] if req.startswith("voicestream["))
