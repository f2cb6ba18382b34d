import argparse

from services.common import config


def test_env_fallback_and_flag_precedence(monkeypatch):
    monkeypatch.setenv("GENIR_GENERATOR_PORT", "6001")
    monkeypatch.setenv("GENIR_GENERATOR_COMPILE", "true")
    p = argparse.ArgumentParser()
    config.register(p, config.ServerConfig, "generator", port=50051, metrics_port=9101)
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


def test_each_service_config_is_typed_frozen_and_built_from_its_flags(monkeypatch):
    import dataclasses

    import pytest

    from genir.web.app import WebConfig
    from genir.web.app import add_arguments as web_flags
    from orchestrator.server import OrchestratorConfig
    from orchestrator.server import add_arguments as orchestrator_flags
    from services.generator.server import GeneratorConfig
    from services.generator.server import add_arguments as generator_flags
    from services.refiner.server import RefinerConfig
    from services.refiner.server import add_arguments as refiner_flags
    from services.retriever.server import RetrieverConfig
    from services.retriever.server import add_arguments as retriever_flags

    monkeypatch.setenv("GENIR_REFINER_TRITON_TIMEOUT", "7.5")
    for cls, add, port in [(GeneratorConfig, generator_flags, 50051), (RefinerConfig, refiner_flags, 50052),
                           (RetrieverConfig, retriever_flags, 50053), (OrchestratorConfig, orchestrator_flags, 50050),
                           (WebConfig, web_flags, 8080)]:
        p = argparse.ArgumentParser()
        add(p)
        ns = p.parse_args([])
        cfg = cls.from_args(ns)
        # every flag is a field and every field a flag: one list of settings per service
        assert {f.name for f in dataclasses.fields(cls)} == set(vars(ns)), cls.__name__
        assert cfg.port == port and cfg.log_level == "INFO"
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.port = 1
    refiner = argparse.ArgumentParser()
    refiner_flags(refiner)
    cfg = RefinerConfig.from_args(refiner.parse_args(["--client-tls-ca", "ca.pem"]))
    assert cfg.triton_timeout == 7.5 and cfg.client_tls_ca == "ca.pem" and cfg.max_new_tokens_limit == 1024
    monkeypatch.setenv("GENIR_WEB_ORCHESTRATOR", "orc:7000")
    web = argparse.ArgumentParser()
    web_flags(web)
    assert WebConfig.from_args(web.parse_args([])).orchestrator == "orc:7000"


def test_default_of_is_the_flags_default_and_refuses_unknown_fields():
    import pytest

    p = argparse.ArgumentParser()
    config.register(p, config.ServerConfig, "generator")
    assert config.default_of(config.ServerConfig, "max_inflight") == p.parse_args([]).max_inflight == 64
    with pytest.raises(TypeError, match="no field 'nope'"):
        config.default_of(config.ServerConfig, "nope")
