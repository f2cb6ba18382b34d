import argparse

from services.common import config


def test_env_fallback_and_flag_precedence(monkeypatch):
    monkeypatch.setenv("GENIR_GENERATOR_PORT", "6001")
    monkeypatch.setenv("GENIR_GENERATOR_COMPILE", "true")
    p = argparse.ArgumentParser()
    config.add_server_flags(p, "generator", 50051, 9101)
    config.add_flag(p, "compile", service="generator", default=False, bool_flag=True)
    args = p.parse_args([])
    assert args.port == 6001 and args.metrics_port == 9101 and args.compile is True
    assert p.parse_args(["--port", "7000", "--no-compile"]).port == 7000
    assert p.parse_args(["--no-compile"]).compile is False
    assert "GENIR_GENERATOR_PORT" in p.format_help()
