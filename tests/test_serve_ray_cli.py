"""`voicestream serve-ray` argument handling, which needs no Ray installed."""
import subprocess
import sys

import pytest

from voicestream.cli import build_parser
from voicestream.scale.cli import ray_config, replica_args


def parse(*argv: str):
    return build_parser().parse_args(["serve-ray", *argv])


def test_fixed_replicas_and_resources():
    args = parse("--test-voice", "--replicas", "3", "--num-gpus", "0.5", "--max-sessions", "16", "--port", "9000")
    cfg = ray_config(args)
    assert cfg.autoscaling is None and cfg.num_replicas == 3 and cfg.port == 9000
    opts = cfg.deployment_options(max_sessions=args.max_sessions)
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["max_ongoing_requests"] == 16 + 4
    assert opts["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}


def test_autoscaling_flags_and_default_target():
    args = parse("--test-voice", "--min-replicas", "2", "--max-replicas", "6", "--max-sessions", "8",
                 "--upscale-delay", "5", "--downscale-delay", "60")
    opts = ray_config(args).deployment_options(max_sessions=8)
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"] == {
        "min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 6.0,  # 3/4 of --max-sessions
        "upscale_delay_s": 5.0, "downscale_delay_s": 60.0,
    }
    with pytest.raises(SystemExit, match="not both"):
        ray_config(parse("--test-voice", "--replicas", "2", "--max-replicas", "4"))
    with pytest.raises(SystemExit, match="min_replicas <= max_replicas"):
        ray_config(parse("--test-voice", "--min-replicas", "5", "--max-replicas", "4"))


def test_replicas_get_only_the_serve_arguments():
    args = parse("--test-voice", "--replicas", "2", "--api-key", "k", "--max-sessions", "8")
    forwarded = replica_args(args)
    assert forwarded["test_voice"] and forwarded["api_key"] == "k" and forwarded["max_sessions"] == 8
    assert not {"replicas", "num_gpus", "ray_address", "func", "command"} & set(forwarded)


def test_clear_error_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from voicestream.cli import main\n"
        "main(['serve-ray', '--test-voice'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "pip install 'voicestream[ray]'" in proc.stderr
