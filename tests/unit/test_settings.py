"""Presets -> effective settings (orchestrator/settings.py): per generator family, per refiner stage,
explicit options winning, and long queries cut to the generator's limits."""

from __future__ import annotations

import pytest

from genir.v1 import generator_pb2, orchestrator_pb2
from orchestrator.modes import fusion_weights, mode_name
from orchestrator.requests import resolve_options
from orchestrator.settings import effective_render, fit_chars, refiner_settings, sampling_for
from services.common import errors, presets


def info(pipeline_class="StableDiffusion3Pipeline", max_side=1536, default=1024, **kw):
    return generator_pb2.GeneratorInfo(pipeline_class=pipeline_class, default_width=default, default_height=default,
                                       max_width=max_side, max_height=max_side, size_multiple=16, default_steps=28,
                                       default_guidance=7.0, max_prompt_chars=4096, **kw)


def opts(**kw):
    return resolve_options(orchestrator_pb2.SessionOptions(**kw), "coco")


@pytest.mark.parametrize("cls,steps,guidance", [
    ("StableDiffusion3Pipeline", 28, 3.5),   # SD3.5-Large in genIR_CaptionImageRefinement.py
    ("FluxPipeline", 50, 3.5),               # FLUX.1-dev, same script
    ("Lumina2Pipeline", 50, 4.0),            # Lumina-Image-2.0, App. B
    ("HiDreamImagePipeline", 16, 0.0),       # HiDream-I1-Fast, App. B (guidance-distilled)
])
def test_paper_preset_is_the_default_and_renders_each_family_as_published(cls, steps, guidance):
    o = opts()
    assert o.preset == "paper" and o.prompt_set == "paper"
    r = effective_render(o, info(cls))
    assert (r.width, r.height, r.steps, r.guidance) == (1024, 1024, steps, guidance) and not r.notes


def test_flux_reads_512_t5_tokens_as_the_scripts_pass_and_others_keep_256():
    assert presets.max_sequence_length("FluxPipeline") == 512
    assert presets.max_sequence_length("StableDiffusion3Pipeline") == 256
    assert presets.max_sequence_length("FluxPipeline", 300) == 300  # the flag wins


def test_explicit_options_win_over_the_preset():
    o = opts(num_inference_steps=10, guidance_scale=0.0, width=512, height=768)
    r = effective_render(o, info())
    assert (r.width, r.height, r.steps, r.guidance) == (512, 768, 10, 0.0)


def test_service_preset_leaves_every_value_to_the_generator():
    o = opts(preset="service")
    r = effective_render(o, info())
    assert (r.width, r.height, r.steps, r.guidance) == (0, 0, 0, None) and o.prompt_set == ""
    assert r.effective(info())["guidance_scale"] == 7.0  # what the pipeline's call default means


def test_unknown_family_keeps_the_generator_defaults_and_records_no_family():
    r = effective_render(opts(), info("KandinskyPipeline"))
    assert (r.width, r.steps, r.guidance, r.family) == (0, 0, None, "")


def test_a_generator_too_small_for_the_paper_size_renders_at_its_default_and_says_so():
    small = info(max_side=512, default=64)
    r = effective_render(opts(), small)
    assert (r.width, r.height, r.steps, r.guidance) == (0, 0, 28, 3.5)
    eff = r.effective(small)
    assert (eff["width"], eff["height"]) == (64, 64) and "above this generator's limit 512x512" in eff["notes"][0]


@pytest.mark.parametrize("mode,stage,tokens", [
    ("genir", "caption", 500), ("genir", "compare", 400), ("genir", "refine", 500),
    ("fusion", "refine", 500), ("verbal", "caption", 200), ("verbal", "critique", 200), ("verbal", "refine", 200),
    ("prediction", "caption", 200), ("prediction", "compare", 400), ("prediction", "refine", 200),
])
def test_paper_sampling_per_stage_is_the_scripts(mode, stage, tokens):
    s = sampling_for(opts(), mode, stage, seed=5)
    assert s.seed == 5 and s.max_new_tokens == tokens and s.top_k == 64
    assert (round(s.temperature, 3), round(s.top_p, 3), round(s.repetition_penalty, 3)) == (0.7, 0.9, 1.1)


def test_max_new_tokens_option_overrides_every_stage_and_service_sends_only_seeds():
    assert sampling_for(opts(max_new_tokens=64), "genir", "compare", 1).max_new_tokens == 64
    s = sampling_for(opts(preset="service"), "genir", "caption", 1)
    assert not s.HasField("max_new_tokens") and not s.HasField("top_k") and not s.HasField("temperature")
    assert refiner_settings(opts(), "verbal")["max_new_tokens"] == {"caption": 200, "critique": 200, "refine": 200}


@pytest.mark.parametrize("kw,field", [({"preset": "fast"}, "options.preset"),
                                      ({"prompt_set": "v7"}, "options.prompt_set"),
                                      ({"max_new_tokens": -1}, "options.max_new_tokens"),
                                      ({"image_weight": 0.0, "text_weight": 0.0}, "options.image_weight")])
def test_bad_settings_are_invalid_argument_naming_the_field(kw, field):
    with pytest.raises(errors.InvalidArgument) as e:
        opts(**kw)
    assert e.value.message.startswith(field)


def test_fusion_weights_allow_zero_and_default_to_half():
    assert fusion_weights(orchestrator_pb2.SessionOptions()) == (0.5, 0.5)
    assert fusion_weights(orchestrator_pb2.SessionOptions(image_weight=1.0, text_weight=0.0)) == (1.0, 0.0)
    assert fusion_weights(orchestrator_pb2.SessionOptions(text_weight=0.0)) == (0.5, 0.0)


def test_hybrid_is_accepted_as_fusion_with_a_warning(caplog):
    assert mode_name("hybrid", session=True) == "fusion" and mode_name("fusion", session=False) == "fusion"
    assert any("now called 'fusion'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text,limit,expected", [
    ("a red kite", 4096, "a red kite"), ("alpha beta gamma", 12, "alpha beta"), ("alpha beta gamma", 10, "alpha beta"),
    ("x" * 20, 8, "x" * 8), ("alpha beta", 0, "alpha beta")])
def test_fit_chars_cuts_at_a_word_boundary(text, limit, expected):
    out = fit_chars(text, limit)
    assert out == expected and len(out) <= (limit or 4096)


async def _engine_over(servicers: dict):
    """An Engine whose backends are real in-process gRPC servers for the given servicers."""
    import grpc

    from genir.v1 import generator_pb2_grpc, refiner_pb2_grpc, retriever_pb2_grpc
    from orchestrator.clients import ServiceClients
    from orchestrator.engine import Engine
    from testkit.procs import free_port

    add = {"generator": generator_pb2_grpc.add_GeneratorServicer_to_server,
           "retriever": retriever_pb2_grpc.add_RetrieverServicer_to_server,
           "refiner": refiner_pb2_grpc.add_RefinerServicer_to_server}
    server, port = grpc.aio.server(), free_port()
    for name, servicer in servicers.items():
        add[name](servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    target = f"127.0.0.1:{port}"
    return Engine(ServiceClients.local(target, target, target), collection="c"), server


def _state():
    from orchestrator.dialog import DialogState

    return DialogState(options=opts(), collection="c", top_k=10, base_seed=0, key="k")


def test_a_text_query_longer_than_the_retriever_accepts_is_cut_not_refused():
    import asyncio

    from genir.v1 import retriever_pb2, retriever_pb2_grpc
    from services.common import validation

    seen = []

    class Recording(retriever_pb2_grpc.RetrieverServicer):
        async def Search(self, request, context):
            seen.append(request.text)
            return retriever_pb2.SearchResponse()

    async def go():
        eng, server = await _engine_over({"retriever": Recording()})
        try:
            await eng.search(_state(), text="kite " * 3000)
        finally:
            await eng.close()
            await server.stop(0)

    asyncio.run(go())
    assert len(seen) == 1 and 0 < len(seen[0]) <= validation.MAX_TEXT_CHARS and seen[0].endswith("kite")


def test_a_refiner_answer_over_the_generators_character_limit_is_rendered_from_its_head():
    """The generator refuses prompts over max_prompt_chars even with truncate_prompt; the engine cuts
    first, and reports what was rendered (the round records it as query_cut / rendered_query)."""
    import asyncio

    from genir.v1 import common_pb2, generator_pb2, generator_pb2_grpc

    seen = []

    class Recording(generator_pb2_grpc.GeneratorServicer):
        async def Info(self, request, context):
            return info(max_side=512, default=64)

        async def Generate(self, request, context):
            seen.append(request)
            return generator_pb2.GenerateResponse(images=[common_pb2.Image(data=b"png", width=64, height=64)])

    async def go():
        eng, server = await _engine_over({"generator": Recording()})
        try:
            return await eng.render(_state(), "red kite " * 1000)
        finally:
            await eng.close()
            await server.stop(0)

    image, rendered = asyncio.run(go())
    req = seen[0]
    assert image.data == b"png" and req.truncate_prompt and len(req.prompt) <= 4096
    assert rendered == req.prompt and ("red kite " * 1000).startswith(rendered)
    assert (req.num_inference_steps, round(req.guidance_scale, 3)) == (28, 3.5)  # the preset, sent explicitly


@pytest.mark.parametrize("mode,empty", [("genir", "Compare"), ("verbal", "Critique"), ("prediction", "Compare")])
def test_an_empty_comparison_or_critique_keeps_the_previous_query_instead_of_failing(mode, empty):
    """A VLM can answer nothing; Refine would refuse empty feedback and the target would drop out."""
    import asyncio

    from genir.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
    from orchestrator.dialog import Last

    calls = []

    class Answers(refiner_pb2_grpc.RefinerServicer):
        async def Compare(self, request, context):
            calls.append("Compare")
            return refiner_pb2.RefinerResponse(text="")

        async def Critique(self, request, context):
            calls.append("Critique")
            return refiner_pb2.RefinerResponse(text="  ")

        async def Refine(self, request, context):
            calls.append("Refine")
            return refiner_pb2.RefinerResponse(text="never used")

    async def go():
        eng, server = await _engine_over({"refiner": Answers()})
        st = _state()
        st.mode, st.target = mode, common_pb2.Image(data=b"t")
        st.last = Last("a red kite", common_pb2.Image(data=b"shown"), 3)
        try:
            return await eng._modes[mode].follow(st)
        finally:
            await eng.close()
            await server.stop(0)

    step = asyncio.run(go())
    assert (step.query, step.feedback) == ("a red kite", "") and calls == [empty]
