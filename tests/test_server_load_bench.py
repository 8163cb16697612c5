"""The load benchmark's client logic against a real server: integrity counters and TTFA."""
import pytest
from server_util import running_server

from voicestream.bench.load import build_parser, run_level

pytestmark = pytest.mark.usefixtures("one_torch_thread")


async def test_load_level_reports_clean_frames_and_ttfa(formant_voice):
    args = build_parser().parse_args(["--utterances", "2", "--words-per-second", "200", "--encoding", "mulaw", "--sample-rate", "8000"])
    async with running_server([formant_voice]) as (_, url):
        row = await run_level(url, 3, args, {})
    assert row["utterances"] == 6 and not row["errors"]
    assert row["lost_frames"] == 0 and row["duplicated_frames"] == 0 and row["frames"] > 100
    assert 0 < row["ttfa_ms_p50"] <= row["ttfa_ms_p95"] <= row["ttfa_ms_p99"] < 5000
    assert row["accepted_per_target_forward"] > 1.0 and 0 < row["rtf_mean"] < 2
