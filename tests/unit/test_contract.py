"""genir/contract.py is the one home of the contract's rules: the Triton model receives them through
config.pbtxt, and the places that used to restate them read them from there."""

from __future__ import annotations

import json

import pytest

from genir import contract
from orchestrator import modes
from services.common import presets, validation
from services.common.errors import InvalidArgument
from services.refiner.triton_repository import DEFAULT_REPOSITORY, get_parameter
from stack.triton import TritonProcess

CHECKED_IN = DEFAULT_REPOSITORY / "gemma3" / "config.pbtxt"


def written_config(tmp_path, **parameters) -> str:
    """The config.pbtxt `genir serve triton` writes (a named binary skips the wheel's backends)."""
    TritonProcess(DEFAULT_REPOSITORY, tmp_path, tritonserver="tritonserver", parameters=parameters).command()
    return (tmp_path / "model_repository" / "gemma3" / "config.pbtxt").read_text()


def test_the_launcher_writes_the_contract_into_config_pbtxt(tmp_path):
    text = written_config(tmp_path)
    for key, value in contract.triton_parameters().items():
        assert get_parameter(text, key) == value
    ranges = json.loads(get_parameter(text, "sampling_ranges"))
    assert ranges["temperature"] == [0.0, 2.0, False] and ranges["repetition_penalty"] == [1.0, 2.0, False]
    assert json.loads(get_parameter(text, "sampling_defaults")) == contract.DEFAULT_SAMPLING


def test_a_parameter_given_to_the_launcher_wins_over_the_contract_default(tmp_path):
    text = written_config(tmp_path, max_new_tokens_limit="64")
    assert get_parameter(text, "max_new_tokens_limit") == "64"
    assert get_parameter(text, "sampling_ranges") == contract.triton_parameters()["sampling_ranges"]


def test_the_checked_in_config_pbtxt_carries_the_same_values():
    # Triton started without the launcher (the container image) reads this file as it is.
    text = CHECKED_IN.read_text()
    assert {k: get_parameter(text, k) for k in contract.triton_parameters()} == contract.triton_parameters()


def test_the_paper_preset_reads_the_contract_defaults():
    d = contract.DEFAULT_SAMPLING
    assert (presets.TEMPERATURE, presets.TOP_P, presets.TOP_K, presets.REPETITION_PENALTY) == \
        (d["temperature"], d["top_p"], d["top_k"], d["repetition_penalty"]) == (0.7, 0.9, 64, 1.1)


def test_the_mode_strategies_are_the_contract_modes():
    assert tuple(modes.MODES) == contract.MODES
    assert tuple(n for n, m in modes.MODES.items() if m.session) == contract.SESSION_MODES
    assert set(contract.MODE_ALIASES.values()) <= set(contract.MODES)


@pytest.mark.parametrize("name, inside, outside", [
    ("temperature", [0.0, 2.0], [2.01, -0.1]),
    ("top_p", [1.0, 1e-6], [0.0, 1.01]),
    ("repetition_penalty", [1.0, 2.0], [0.99, 2.5]),
    ("top_k", [0, 1000], [-1, 1001]),
    ("seed", [0, 2**63 - 1], [-1, 2**63]),
])
def test_sampling_ranges_accept_their_ends_and_refuse_beyond(name, inside, outside):
    allowed = contract.SAMPLING_RANGES[name]
    for v in inside:
        assert v in allowed and validation.in_range(v, name, allowed) == v
    for v in outside:
        assert v not in allowed
        with pytest.raises(InvalidArgument, match=f"{name}: .* is out of range"):
            validation.in_range(v, name, allowed)


def test_range_text_shows_an_open_low_end():
    assert str(contract.SAMPLING_RANGES["top_p"]) == "(0, 1]"
    assert str(contract.SAMPLING_RANGES["top_k"]) == "[0, 1000]"


@pytest.mark.parametrize("value, expected", [("7", 7), (" 12 ", 12), ("", None), ("-1", None), ("²", None),
                                             ("1" * 17, None), ("1" * 16, int("1" * 16))])
def test_corpus_ids_are_short_ascii_decimals(value, expected):
    assert contract.parse_corpus_id(value) == expected


def test_a_chatir_dialog_needs_the_caption_and_one_string_per_round():
    assert contract.chatir_dialog_length(0) == 1 and contract.chatir_dialog_length(10) == 11
