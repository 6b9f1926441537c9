"""The report's INT8 speed section, from a hand-made sweep."""
from stages.evaluate import speed_lines


def test_speed_lines_sum_the_called_linears_and_show_the_candidates():
    sweep = {
        "kept_fp32_slow": ["b"], "chosen": "swept",
        "speed": [
            {"linear": "a", "calls_batch1": 2, "int8_ms_batch1": 1.0, "float_ms_batch1": 2.0, "fp32": False},
            {"linear": "b", "calls_batch1": 1, "int8_ms_batch1": 3.0, "float_ms_batch1": 0.5, "fp32": True},
            {"linear": "head", "calls_batch1": 0, "int8_ms_batch1": 0.0, "float_ms_batch1": 0.0, "fp32": False},
        ],
        "candidates": {"int8": {"ms_batch1": 9.0, "kept_fp32": 0}, "swept": {"ms_batch1": 7.5, "kept_fp32": 1}},
        "fp32_latency": {"ms_batch1": 8.0},
    }
    text = "\n".join(speed_lines(sweep))
    assert "1 Linear(s) were slower in INT8" in text and "1 of the 2 Linears the inference calls" in text
    assert "| batch1 | 4.00 | 2.50 | 1.50 |" in text  # all INT8 1 + 3, all float 2 + 0.5, shipped 1 + 0.5
    assert "shipped: `swept`" in text and "| fp32 | all | 8.00 |" in text and "| swept | 1 | 7.50 |" in text


def test_speed_lines_say_when_there_was_no_sweep():
    assert "No speed sweep" in speed_lines({"speed": []})[0]
