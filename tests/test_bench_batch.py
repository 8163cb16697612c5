"""`voicestream bench batch` runs both modes side by side and reports what it measured."""
import json

from voicestream.cli import main


def test_bench_batch_reports_both_modes(capsys):
    rc = main(["bench", "batch", "--sessions", "1", "3", "--utterances", "1", "--max-new-tokens", "40",
               "--arrival-window", "0.2", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert [lv["sessions"] for lv in report["levels"]] == [1, 3]
    for lv in report["levels"]:
        for mode in ("per_session", "batched"):
            row = lv[mode]
            assert row["utterances"] == lv["sessions"] and not row["errors"]
            assert row["tokens"] == 40 * lv["sessions"] and row["tokens_per_s"] > 0
            assert 0 < row["ttfa_ms_p50"] <= row["ttfa_ms_p95"]
        assert lv["throughput_ratio"] > 0
        done, total = map(int, lv["identical_audio"].split("/"))
        assert total == lv["sessions"] and 0 <= done <= total
