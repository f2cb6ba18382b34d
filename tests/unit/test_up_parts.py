"""genir up's pure parts: where tokens go, port and flag parsing, exit reasons."""

from __future__ import annotations

import signal

import pytest

from stack.up import DEFAULT_PORTS, ORDER, Stack, exit_reason, parse_ports, parse_service_flags


def test_tokens_reach_only_their_services_and_never_argv(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIR_AUTH_TOKEN", "from-my-shell")
    s = Stack(tmp_path / "m", tmp_path / "w", ports="free", services=ORDER, auth_token="user-tok",
              backend_token="backend-tok")
    env = {n: s.service_env(n) for n in ORDER}
    assert env["orchestrator"]["GENIR_AUTH_TOKEN"] == "user-tok"
    assert env["orchestrator"]["GENIR_BACKEND_TOKEN"] == "backend-tok"
    assert env["web"]["GENIR_WEB_ORCHESTRATOR_TOKEN"] == "user-tok"
    for name in ("generator", "refiner", "retriever"):
        assert env[name]["GENIR_AUTH_TOKEN"] == "backend-tok" and "GENIR_BACKEND_TOKEN" not in env[name]
    assert "GENIR_AUTH_TOKEN" not in env["triton"] and "GENIR_AUTH_TOKEN" not in env["web"]
    for name in ORDER:
        argv = " ".join(s.command(name).cmd)
        assert "user-tok" not in argv and "backend-tok" not in argv


def test_parse_ports_and_service_flags():
    ports = parse_ports("web=8088, orchestrator=50060:9110", DEFAULT_PORTS)
    assert ports["web"] == (8088, -1) and ports["orchestrator"] == (50060, 9110)
    assert ports["generator"] == DEFAULT_PORTS["generator"]
    for bad in ("web", "nope=1", "web=x", "web=1:y"):
        with pytest.raises(ValueError, match="NAME=PORT"):
            parse_ports(bad, DEFAULT_PORTS)
    flags = parse_service_flags(["generator=--drop-t5 --dtype float16", "generator=--max-batch-size 2"])
    assert flags == {"generator": ["--drop-t5", "--dtype", "float16", "--max-batch-size", "2"]}
    with pytest.raises(ValueError, match="NAME=FLAGS"):
        parse_service_flags(["gen=--x"])


def test_exit_reason():
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(None) == "still running"
