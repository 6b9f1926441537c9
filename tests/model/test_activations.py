"""The activation plan: measured on one layer per stack and scaled by depth, it matches (from above) a measurement
of the whole model, for both families, with and without activation checkpointing."""
import pytest

from trimodal.model.activations import Lengths, measure
from trimodal.model.sizes import main

SHORT = Lengths(text=24, audio_seconds=1.0, decoder=12)


@pytest.mark.parametrize("preset", ["tiny", "deepseek_vl"])
def test_scaled_by_depth_the_shallow_measurement_bounds_the_whole_model_closely(preset):
    shallow, whole = measure(preset, SHORT, batch=2), measure(preset, SHORT, batch=2, shallow=False)
    for checkpointing in (False, True):
        estimate, measured = shallow.bytes(2, checkpointing), whole.bytes(2, checkpointing)
        # a stack's layers share inputs (the decoder's memory) that scaling counts once per layer: an upper bound
        assert measured <= estimate <= 1.05 * measured, (checkpointing, estimate, measured)
    assert shallow.bytes(1, checkpointing=True) < 0.7 * shallow.bytes(1)  # blocks keep their inputs only
    assert set(shallow.depth) == set(shallow.per_layer) and max(shallow.depth.values()) >= 2


def test_activations_grow_with_batch_and_sequence_length():
    small, long = measure("tiny", SHORT, batch=2), measure("tiny", Lengths(text=48, audio_seconds=2.0, decoder=24),
                                                          batch=2)
    assert long.bytes(1) > 1.5 * small.bytes(1)
    assert small.bytes(4) == pytest.approx(2 * small.bytes(2)) and small.bytes(2, bf16=True) == small.bytes(1)


def test_memory_table_adds_measured_activations_at_a_batch(capsys):
    main(["--memory", "--gpus", "1", "2", "--batch", "2", "--text-tokens", "24", "--audio-seconds", "1",
          "--decoder-tokens", "12", "tiny"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| tiny | no |") or line.startswith("| tiny | yes |")]
    assert len(rows) == 2 and "largest batch, 2 GPUs" in out
    without, with_ = (float(r.split("|")[3]) for r in rows)
    assert 0 < with_ < without
