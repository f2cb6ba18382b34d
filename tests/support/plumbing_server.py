"""A test server built only on services/common: the genir.v1.Generator contract over a trivial
backend that paints the prompt's hash as a solid colour. It exercises the plumbing (bootstrap,
health, reflection, metrics, errors, drain) without loading a model; it is not the generator.

Test hooks: a prompt "sleep:S" holds the call S seconds (drain tests); "crash" raises an
unexpected exception (INTERNAL without a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib

from PIL import Image

from genir.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from services.common import config, images, validation
from services.common.server import Service, serve


class PaintServicer(generator_pb2_grpc.GeneratorServicer):
    def __init__(self, load_seconds: float):
        self.load_seconds = load_seconds

    async def Generate(self, request, context):
        prompt = validation.text(request.prompt, "prompt", max_chars=4096)
        width = validation.int_range(request.width or 64, "width", 8, 512)
        height = validation.int_range(request.height or 64, "height", 8, 512)
        if prompt.startswith("sleep:"):
            await asyncio.sleep(float(prompt.split(":", 1)[1]))
        if prompt == "crash":
            raise RuntimeError("secret internal detail /etc/passwd")
        colour = tuple(hashlib.sha256(prompt.encode()).digest()[:3])
        data = images.encode_image(Image.new("RGB", (width, height), colour))
        return generator_pb2.GenerateResponse(images=[images.to_proto(data, "PNG", width, height)],
                                              model="plumbing-test", width=width, height=height,
                                              timings=[common_pb2.Timing(stage="paint", seconds=0.0)])

    async def Info(self, request, context):
        return generator_pb2.GeneratorInfo(model="plumbing-test")


def main() -> int:
    parser = argparse.ArgumentParser()
    config.register(parser, config.ServerConfig, "plumbing", port=50099, metrics_port=9199)
    parser.add_argument("--load-seconds", type=float, default=0.0)
    args = parser.parse_args()
    config.setup_logging(args.log_level)
    servicer = PaintServicer(args.load_seconds)
    return asyncio.run(serve(args, [Service("genir.v1.Generator", generator_pb2_grpc.add_GeneratorServicer_to_server,
                                            servicer)], load=lambda: asyncio.sleep(args.load_seconds)))


if __name__ == "__main__":
    raise SystemExit(main())
