"""The TV-L1 budget is chosen by rule on the selection half (bench/flow_summary.py), never on the report half."""
from bench.flow_summary import choose, merge


def row(name, ms, ped2_select, ped1_select, report=50.0, size=128):
    auc = lambda s: {"classical": {"micro": s, "select": s, "report": report}}  # noqa: E731
    return {"name": name, "size": size, "settings": {}, "ms_per_pair_cpu_1core": ms,
            "ped2_stream_micro": auc(ped2_select), "ped1_stream_micro": auc(ped1_select)}


def test_the_cheapest_point_within_tolerance_on_every_dataset_is_chosen():
    rows = [row("full", 200, 98.0, 65.0), row("a", 20, 97.6, 64.6), row("b", 10, 97.4, 70.0),
            row("c", 5, 99.0, 63.0), row("small", 1, 99.0, 70.0, size=96)]
    # b is cheaper than a but 0.6 under on Ped2; c fails Ped1; "small" is another size
    assert choose(rows)["name"] == "a"
    assert choose(rows, tolerance=1.0)["name"] == "b"


def test_the_report_half_does_not_choose():
    rows = [row("full", 200, 98.0, 65.0, report=99.0), row("a", 20, 97.0, 65.0, report=100.0)]
    assert choose(rows)["name"] == "full"


def test_no_reference_no_choice(tmp_path):
    assert choose([row("a", 20, 97.0, 65.0)]) is None
    p = tmp_path / "r.json"
    p.write_text('{"budget": [{"name": "a", "size": 128, "settings": {}, "ms_per_pair_opencv": 3.0, "ped2_stream_micro": {"classical": {"micro": 1}}}]}')
    q = tmp_path / "m.json"
    q.write_text('{"budget": [{"name": "a", "size": 128, "settings": {}, "ped2_stream_micro": {"model": {"short": {"micro": 2}}}}]}')
    merged = merge([p, q])
    assert merged[0]["ped2_stream_micro"] == {"classical": {"micro": 1}, "model": {"short": {"micro": 2}}}
    assert merged[0]["ms_per_pair_cpu_1core"] == 3.0


def test_a_point_the_flow_ae_was_not_checked_on_is_not_chosen_when_a_model_row_is_required():
    rows = [row("full", 200, 98.0, 65.0), row("a", 20, 98.0, 65.0), row("b", 10, 98.0, 65.0)]
    rows[1]["ped2_stream_micro"]["model"] = {"short": {"micro": 97.0}}
    assert choose(rows)["name"] == "b"
    assert choose(rows, require_model=("ped2",))["name"] == "a"
