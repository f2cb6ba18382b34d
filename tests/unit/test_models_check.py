"""`genir models check DIR` on the tiny models and on broken folders."""

from __future__ import annotations

import json
import shutil

from genir import cli
from genir.models_check import check, safetensors_params


def test_tiny_models_pass_and_each_service_is_named(tiny_models, capsys):
    assert cli.main(["models", "check", str(tiny_models)]) == 0
    out = capsys.readouterr().out
    assert "generator  sd3/: StableDiffusion3Pipeline" in out and "with --drop-t5" in out
    assert "refiner    gemma3/: Gemma3ForConditionalGeneration via Triton, image input" in out
    assert "retriever  blip/: BlipForImageTextRetrieval" in out and "used by genir up" in out
    assert "retriever  clip/: CLIPModel" in out and "--retriever-model clip" in out


def test_parameter_counts_come_from_the_safetensors_headers(tiny_models):
    from safetensors.torch import load_file

    tensors = load_file(str(tiny_models / "blip" / "model.safetensors"))
    assert safetensors_params(tiny_models / "blip") == sum(t.numel() for t in tensors.values())


def test_broken_folders_are_named(tiny_models, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "sd3", models / "sd3", ignore=shutil.ignore_patterns("transformer"))
    shutil.copytree(tiny_models / "gemma3", models / "gemma3")
    cfg = json.loads((models / "gemma3" / "config.json").read_text())
    (models / "gemma3" / "config.json").write_text(json.dumps({**cfg, "architectures": ["LlamaForCausalLM"]}))
    rep = check(models)
    assert any("lacks transformer/" in p for p in rep.problems)
    assert any("'LlamaForCausalLM', not a Gemma-3 model" in p for p in rep.problems)
    assert any("blip/ (the retriever, --retriever-model blip) is missing" in p for p in rep.problems)
    assert cli.main(["models", "check", str(models)]) == 2
    assert "3 problem(s)" in capsys.readouterr().err
