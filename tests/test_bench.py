"""`python -m backend.bench`: its measurements run once against the tiny model, on 2 s of speech, one thread.

Only that the figures come out (positive, finite) and that the JSON and the report hold them; no time is
asserted, the figures themselves are the bench's business."""

import json
import math

from backend import bench


def numbers(value):
    """Every number in a nested dict/list (bools and None aside)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in numbers(v)]
    return []


def test_the_bench_measures_every_figure_and_writes_them(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    results = bench.run_bench(tiny_model, "cpu", repeats=1, threads=1, short_seconds=2.0, long_seconds=3.0,
                              memory_seconds=(2.0, 3.0, 4.0), folder=tmp_path / "bench", log=lambda text: None)
    figures = results["figures"]
    for name in ("generate_short_1", "generate_short_4", "generate_long_1", "cold_ready", "cold_hello",
                 "cold_loaded"):
        figure = figures[name]
        assert len(figure["runs"]) == 1 and figure["median"] == figure["runs"][0]
        assert all(math.isfinite(x) and x > 0 for x in (figure["median"], figure["min"], figure["max"])), name
    assert figures["generate_short_4"]["takes"] == 4 and figures["generate_short_1"]["speech_seconds"] == 2.0
    assert figures["cold_ready"]["median"] <= figures["cold_loaded"]["median"]
    assert figures["range_resample"]["range_frames"] == 50 and figures["range_resample"]["median"] > 0
    for name in ("generate_short_1", "generate_short_4", "generate_long_1"):
        stages = figures[name]["stages"]
        assert set(stages) == {"request", "audio_encode", "sampling", "steps", "takes_reply"}
        assert stages["sampling"] > 0 and stages["steps"] >= 2
    memory = figures["memory"]
    assert set(memory["by_length"]) == {"2", "3", "4"} and memory["reference_seconds"] == 3.0
    peaks = [item["peak_mib"] for item in memory["by_length"].values()]
    assert all(math.isfinite(p) and p > 0 for p in peaks) and isinstance(memory["bounded"], bool)
    assert all(isinstance(figures[name]["met"], bool) for name in bench.TARGETS)
    assert results["model"]["name"] == "tiny-thunder"
    assert "espeak-ng" in results["speech"] or "SYNTHETIC" in results["speech"]
    assert all(math.isfinite(x) for x in numbers(results))

    # The JSON the command writes, and the report it prints.
    out = tmp_path / "bench.json"
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: results)
    assert bench.main(["--checkpoint", str(tiny_model), "--repeats", "1", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert {"command", "machine", "checkpoint", "device", "repeats", "service_command", "speech", "model",
            "versions", "targets", "figures"} <= set(written)
    assert set(written["figures"]) == {"cold_ready", "cold_hello", "cold_loaded", "memory_after_load_mib",
                                       "first_generate", "generate_short_1", "generate_short_4", "generate_long_1",
                                       "range_resample", "memory"}
    report = capsys.readouterr().out
    assert "python -m backend.bench --checkpoint" in report and "cold start: spawn -> ready" in report
    assert "range resample 2 s in a 3 s take" in report
    assert "<= 0.5 s" in report and ("met" in report or "MISSED" in report)


def test_profile_prints_the_top_entries(tiny_model):
    report = bench.profile_generate(tiny_model, "cpu", seconds=2.0, top=15, threads=1)
    assert "cumulative" in report and "generate" in report


def test_the_generate_figures_ask_for_the_settings_given(tmp_path, monkeypatch):
    """--guidance G: every timed generate request carries the settings; without it, none (the model's own)."""
    asked = []

    class Client:
        pid = 0

        def ask(self, kind, timeout=None, **fields):
            asked.append(fields)
            return 0.5, {"takes": [{}] * fields["takes"], "seconds": 0.4}, []

    monkeypatch.setattr(bench, "reset_peak_memory", lambda pid: True)
    monkeypatch.setattr(bench, "process_memory", lambda pid: {"VmHWM": 1.0})
    monkeypatch.setattr(bench, "_wav_seconds", lambda path: 10.0)
    figure = bench.measure_generate(Client(), tmp_path / "a.wav", 4, 2, settings={"guidance": 2.0})
    assert figure["takes"] == 4 and [a["settings"] for a in asked] == [{"guidance": 2.0}] * 2
    asked.clear()
    bench.measure_generate(Client(), tmp_path / "a.wav", 1, 1)
    assert "settings" not in asked[0]
    assert bench.build_parser().parse_args(["--guidance", "2"]).guidance == 2.0
