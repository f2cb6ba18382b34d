"""The Triton launcher's failure paths: it must fail fast and loudly, never wait forever."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys

import pytest

from services.common.errors import Unavailable
from services.refiner.triton_client import TritonVLM
from services.refiner.triton_repository import DEFAULT_REPOSITORY, TritonStartError, set_parameter, write_repository
from stack.triton import TritonProcess
from testkit.procs import Proc, free_port
from testkit.procs import proc_env as proc_env


def test_generated_repository_points_at_the_model_and_leaves_the_source_alone(tmp_path):
    source_cfg = (DEFAULT_REPOSITORY / "gemma3" / "config.pbtxt").read_text()
    repo = write_repository(DEFAULT_REPOSITORY, tmp_path, "gemma3", {"model_path": "/data/my model",
                                                                       "num_threads": "3"})
    cfg = (repo / "gemma3" / "config.pbtxt").read_text()
    assert 'string_value: "/data/my model"' in cfg and 'key: "num_threads", value: { string_value: "3" }' in cfg
    assert (repo / "gemma3" / "1" / "model.py").is_file()
    assert (DEFAULT_REPOSITORY / "gemma3" / "config.pbtxt").read_text() == source_cfg
    with pytest.raises(TritonStartError, match="no parameter 'nope'"):
        set_parameter(cfg, "nope", "x")


def test_a_folder_without_config_json_is_refused_before_starting(tmp_path):
    proc = TritonProcess(DEFAULT_REPOSITORY, tmp_path, model=tmp_path)
    with pytest.raises(TritonStartError, match="no config.json"):
        proc.start()
    assert proc.popen is None


def test_a_server_that_never_gets_ready_is_killed_at_the_deadline(tmp_path):
    hang = tmp_path / "fake-tritonserver"
    hang.write_text("#!/bin/sh\nexec sleep 600\n")  # stands in for a Triton stuck loading its backend
    hang.chmod(hang.stat().st_mode | stat.S_IEXEC)
    proc = TritonProcess(DEFAULT_REPOSITORY, tmp_path, tritonserver=str(hang), http_port=free_port())
    proc.start()
    with pytest.raises(TimeoutError, match="not ready within 1s"):
        proc.wait_ready(timeout=1.0)
    assert not proc.alive()


def test_cli_exits_nonzero_with_the_reason_when_the_model_cannot_load(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    cli = Proc([sys.executable, "-m", "genir.cli", "serve", "triton", "--model", broken, "--workdir", tmp_path / "w",
                "--http-port", free_port(), "--grpc-port", free_port(), "--metrics-port", free_port(),
                "--num-threads", "1", "--ready-timeout", "240"], tmp_path / "cli.log", env=proc_env()).start()
    try:
        code = cli.popen.wait(240)  # Triton exits (--exit-on-error); the launcher must notice and exit too
    finally:
        cli.kill()
    log = cli.log(tail=20_000)
    assert code == 1, log
    assert "exited with code" in log and "gemma3" in log and "no-such-architecture" in log
    prefix = re.search(r"shm-region-prefix-name=(\S+)", log).group(1)
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(prefix)]  # cleaned after the crash


def test_the_model_refuses_to_load_without_the_contract_sampling_rules(tmp_path, tiny_models):
    # An empty value stands for a config.pbtxt written without genir/contract.py's parameters.
    cli = Proc([sys.executable, "-m", "genir.cli", "serve", "triton", "--model", tiny_models / "gemma3",
                "--workdir", tmp_path / "w", "--http-port", free_port(), "--grpc-port", free_port(),
                "--metrics-port", free_port(), "--num-threads", "1", "--ready-timeout", "240",
                "--parameter", "sampling_ranges="], tmp_path / "cli.log", env=proc_env()).start()
    try:
        code = cli.popen.wait(240)
    finally:
        cli.kill()
    log = cli.log(tail=20_000)
    assert code == 1, log
    assert "config.pbtxt has no 'sampling_ranges' parameter" in log and "genir/contract.py" in log


def test_client_reports_unavailable_naming_triton_when_nothing_listens():
    url = f"127.0.0.1:{free_port()}"

    async def call():
        vlm = TritonVLM(url, retry_seconds=0.5, timeout=10)
        try:
            await vlm.generate([{"role": "user", "content": "hi"}], [], {"max_new_tokens": 1})
        finally:
            await vlm.close()

    with pytest.raises(Unavailable, match=f"Triton at {url}"):
        asyncio.run(call())
