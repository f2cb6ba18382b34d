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


def test_client_read_token_prefers_the_file_and_refuses_an_empty_one(tmp_path, monkeypatch):
    import pytest

    from genir.client import read_token

    monkeypatch.setenv("GENIR_AUTH_TOKEN", "from-env")
    assert read_token() == "from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert read_token(str(tmp_path / "t")) == "from-file"
    (tmp_path / "t").write_text("")
    with pytest.raises(SystemExit, match="empty"):
        read_token(str(tmp_path / "t"))
