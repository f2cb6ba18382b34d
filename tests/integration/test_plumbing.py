"""The shared plumbing, exercised through a real server process and the real grpcurl binary."""

import json
import sys
import threading
import time

import grpc
import pytest

from genir.v1 import generator_pb2, generator_pb2_grpc
from testkit.procs import Proc, free_port, grpcurl, health_status, sample_sum, samples, scrape


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port, mport = free_port(), free_port()
    proc = Proc([sys.executable, "-m", "tests.support.plumbing_server", "--port", port, "--metrics-port", mport,
                 "--load-seconds", "0.5"], tmp_path_factory.mktemp("plumbing") / "server.log").start()
    proc.wait_healthy(port, timeout=60)
    yield proc, f"127.0.0.1:{port}", mport
    assert proc.terminate() == 0, proc.log()


def test_reflection_lists_and_describes(server):
    _, target, _ = server
    listed = grpcurl(target, "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "genir.v1.Generator" in services and "grpc.health.v1.Health" in services
    described = grpcurl(target, "describe", "genir.v1.Generator")
    assert described.returncode == 0 and "rpc Generate" in described.stdout


def test_health_serving_via_grpcurl(server):
    _, target, _ = server
    out = grpcurl(target, "grpc.health.v1.Health/Check", data={})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "SERVING"


def test_bad_input_is_invalid_argument_and_server_keeps_serving(server):
    _, target, _ = server
    bad = grpcurl(target, "genir.v1.Generator/Generate", data={"prompt": "   "})
    assert bad.returncode == 64 + 3, (bad.returncode, bad.stdout, bad.stderr)
    err = json.loads(bad.stdout or bad.stderr)
    assert err["code"] == 3 and "prompt" in err["message"]
    good = grpcurl(target, "genir.v1.Generator/Generate", data={"prompt": "a red kite", "width": 32})
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["images"][0]["width"] == 32


def test_unexpected_error_is_internal_without_leaks(server):
    _, target, _ = server
    out = grpcurl(target, "genir.v1.Generator/Generate", data={"prompt": "crash"})
    assert out.returncode == 64 + 13
    msg = json.loads(out.stdout or out.stderr)["message"]
    assert "internal error" in msg and "/etc/passwd" not in msg and "Traceback" not in msg


def test_each_rpc_has_its_own_request_limit(server):
    """Info takes 64 KiB and Generate 256 KiB (services.common.limits): a body over the RPC's limit
    is refused before parsing, naming the RPC and its limit; over the largest limit, gRPC core
    refuses it before buffering. The server keeps serving."""
    from tests.system.badinput import via_bytes

    _, target, _ = server
    # a well-formed 200 KiB body (field 1 is unknown to InfoRequest, so it would parse)
    small = via_bytes(target, "genir.v1.Generator/Info", generator_pb2.GenerateRequest(prompt="x" * (200 << 10)))
    assert small.code == "RESOURCE_EXHAUSTED", small
    assert "Info: the request is" in small.message and "limit of 64 KiB" in small.message, small
    parsed = via_bytes(target, "genir.v1.Generator/Generate", generator_pb2.GenerateRequest(prompt="p" * (200 << 10)))
    assert parsed.code == "INVALID_ARGUMENT" and "prompt" in parsed.message, parsed   # within 256 KiB: parsed
    big = via_bytes(target, "genir.v1.Generator/Generate", generator_pb2.GenerateRequest(prompt="p" * (1 << 20)))
    assert big.code == "RESOURCE_EXHAUSTED" and "vs. 262144" in big.message, big
    assert via_bytes(target, "genir.v1.Generator/Info", b"").code == "OK"
    assert health_status(target) == 1


def test_metrics_have_conventional_names_and_codes(server):
    _, target, mport = server
    with grpc.insecure_channel(target) as ch:
        stub = generator_pb2_grpc.GeneratorStub(ch)
        stub.Generate(generator_pb2.GenerateRequest(prompt="ok"))
        with pytest.raises(grpc.RpcError) as e:
            stub.Generate(generator_pb2.GenerateRequest(prompt=""))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = scrape(mport)
    base = dict(grpc_type="unary", grpc_service="genir.v1.Generator", grpc_method="Generate")
    assert sample_sum(text, "grpc_server_started_total", **base) >= 2
    assert sample_sum(text, "grpc_server_handled_total", grpc_code="OK", **base) >= 1
    assert sample_sum(text, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **base) >= 1
    counts = samples(text, "grpc_server_handling_seconds_count")
    assert any(lab.get("grpc_method") == "Generate" and lab.get("grpc_code") == "INVALID_ARGUMENT" for lab, _ in counts)
    assert {"grpc_type", "grpc_service", "grpc_method", "grpc_code"} <= set(counts[0][0])


def test_not_serving_until_loaded(tmp_path):
    port = free_port()
    # A long load, so a busy machine still sees it; the load can still end between the health
    # check and the call, in which case the call may succeed but health must say SERVING by then.
    proc = Proc([sys.executable, "-m", "tests.support.plumbing_server", "--port", port, "--metrics-port", "-1",
                 "--load-seconds", "12"], tmp_path / "slow.log").start()
    try:
        seen, refused = set(), 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = health_status(f"127.0.0.1:{port}")
            seen.add(status)
            if status == 1:
                break
            if status == 2:  # while loading, service calls are refused as UNAVAILABLE
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    try:
                        generator_pb2_grpc.GeneratorStub(ch).Generate(generator_pb2.GenerateRequest(prompt="x"),
                                                                      timeout=5)
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                        refused += 1
                    else:
                        assert health_status(f"127.0.0.1:{port}") == 1, "a call succeeded while NOT_SERVING"
            time.sleep(0.1)
        assert 2 in seen and 1 in seen, seen  # NOT_SERVING first, SERVING after load
        assert refused >= 1
        assert health_status(f"127.0.0.1:{port}", "liveness") == 1  # the liveness probe's name, after load
    finally:
        assert proc.terminate() == 0


def test_sigterm_drains_in_flight_call(tmp_path):
    port = free_port()
    proc = Proc([sys.executable, "-m", "tests.support.plumbing_server", "--port", port, "--metrics-port", "-1"],
                tmp_path / "drain.log").start()
    proc.wait_healthy(port, timeout=60)
    target = f"127.0.0.1:{port}"
    result = {}

    def slow_call():
        with grpc.insecure_channel(target) as ch:
            try:
                r = generator_pb2_grpc.GeneratorStub(ch).Generate(generator_pb2.GenerateRequest(prompt="sleep:3"),
                                                                  timeout=30)
                result["ok"] = r.images[0].width
            except grpc.RpcError as e:
                result["err"] = e.code()

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(1.0)  # the call is in flight
    proc.popen.send_signal(15)
    time.sleep(0.5)
    with grpc.insecure_channel(target) as ch:  # new calls are refused while draining
        with pytest.raises(grpc.RpcError) as e:
            generator_pb2_grpc.GeneratorStub(ch).Generate(generator_pb2.GenerateRequest(prompt="new"), timeout=5)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    t.join(30)
    assert result.get("ok") == 64, result
    assert proc.popen.wait(30) == 0, proc.log()
