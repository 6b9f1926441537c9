"""The report's INT8 speed section, from a hand-made quantize record."""
from stages.evaluate import speed_lines


def test_speed_lines_sum_the_called_linears_and_show_whole_model_latency():
    sweep = {
        "int8_min_features": 64, "kept_fp32": ["b"], "kept_fp32_narrow": ["b"], "slower_in_int8": ["b", "a"],
        "speed": [
            {"linear": "a", "calls_batch1": 2, "int8_ms_batch1": 1.0, "float_ms_batch1": 2.0, "fp32": False},
            {"linear": "b", "calls_batch1": 1, "int8_ms_batch1": 3.0, "float_ms_batch1": 0.5, "fp32": True},
            {"linear": "head", "calls_batch1": 0, "int8_ms_batch1": 0.0, "float_ms_batch1": 0.0, "fp32": False},
        ],
        "latency": {"fp32": {"ms_batch1": 8.0}, "int8_all": {"ms_batch1": 9.0}, "shipped": {"ms_batch1": 7.5}},
    }
    text = "\n".join(speed_lines(sweep))
    assert "fewer than 64 inputs" in text and "(1 Linear(s);" in text
    assert "1 of the 2 Linears the inference calls compute in INT8; 1 of those were slower" in text and "`a`" in text
    assert "| batch1 | 4.00 | 2.50 | 1.50 |" in text  # all INT8 1 + 3, all float 2 + 0.5, shipped 1 + 0.5
    assert "| fp32 | 8.00 |" in text and "| shipped | 7.50 |" in text


def test_speed_lines_say_when_speed_was_not_measured():
    assert "not measured" in speed_lines({"speed": []})[-1]
