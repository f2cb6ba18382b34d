"""Server options the cluster relies on, on a real gRPC server (tests/support/plumbing_server, built
only on services/common): max connection age sends GOAWAY so DNS round-robin clients reconnect and
reach replicas added later (issue 16, problem 5), the grace lets a call longer than the age finish,
and the plaintext health port answers kubelet probes while the service port speaks TLS only
(problem 6)."""

from __future__ import annotations

import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genir.v1 import generator_pb2, generator_pb2_grpc
from services.common.server import connection_age_options
from testkit.procs import Proc, free_port, health_status
from tests.system.certs import make_pki


def plumbing(tmp_path, *flags) -> tuple[Proc, int]:
    """A plumbing server, not started yet: `with proc:` starts and stops it."""
    port = free_port()
    proc = Proc([sys.executable, "-m", "tests.support.plumbing_server", "--port", port, "--metrics-port", "-1",
                 *map(str, flags)], tmp_path / f"server-{port}.log")
    return proc, port


def states_seen(target: str, seconds: float) -> list[grpc.ChannelConnectivity]:
    """Connectivity states of one channel that makes a call at once, then idles for `seconds`."""
    seen: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(target) as ch:
        ch.subscribe(seen.append, try_to_connect=True)
        generator_pb2_grpc.GeneratorStub(ch).Generate(generator_pb2.GenerateRequest(prompt="a"), timeout=10)
        time.sleep(seconds)
    return seen


def test_connection_age_options_are_set_and_validated():
    assert dict(connection_age_options(120, 150)) == {"grpc.max_connection_age_ms": 120_000,
                                                      "grpc.max_connection_age_grace_ms": 150_000}
    assert connection_age_options(0, 150) == []
    with pytest.raises(SystemExit, match="grace"):
        connection_age_options(10, 0)


def test_aged_connection_gets_goaway_and_a_longer_call_still_finishes(tmp_path):
    aged, aged_port = plumbing(tmp_path, "--max-connection-age", 1, "--max-connection-age-grace", 20)
    with aged:
        aged.wait_healthy(aged_port, timeout=60)  # bound before the next free_port()
        never, never_port = plumbing(tmp_path, "--max-connection-age", 0)
        with never:
            never.wait_healthy(never_port, timeout=60)
            check_age(aged_port, never_port)


def check_age(aged_port: int, never_port: int) -> None:
    # GOAWAY after 1 s drops the channel from READY back to IDLE (it reconnects on the next call)
    seen = states_seen(f"127.0.0.1:{aged_port}", 4)
    assert grpc.ChannelConnectivity.READY in seen
    assert seen.index(grpc.ChannelConnectivity.IDLE, seen.index(grpc.ChannelConnectivity.READY)) > 0, seen
    # the control: without an age the connection stays up
    seen = states_seen(f"127.0.0.1:{never_port}", 4)
    assert seen[-1] == grpc.ChannelConnectivity.READY, seen
    # a call that outlasts the age completes inside the grace
    with grpc.insecure_channel(f"127.0.0.1:{aged_port}") as ch:
        reply = generator_pb2_grpc.GeneratorStub(ch).Generate(
            generator_pb2.GenerateRequest(prompt="sleep:3"), timeout=30)
    assert reply.images


def test_health_port_answers_plaintext_probes_while_the_service_port_needs_tls(tmp_path):
    pki = make_pki(tmp_path / "pki")
    health_port = free_port()
    proc, port = plumbing(tmp_path, "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                          "--health-port", health_port, "--load-seconds", 2)
    with proc:
        deadline = time.monotonic() + 60
        seen = set()
        while time.monotonic() < deadline and 1 not in seen:
            seen.add(health_status(f"127.0.0.1:{health_port}"))
            time.sleep(0.2)
        assert health_pb2.HealthCheckResponse.SERVING in seen, proc.log()
        # the same status object: NOT_SERVING while loading was visible on the probe port too
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        # the probe port serves health only, no genir service
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                generator_pb2_grpc.GeneratorStub(ch).Generate(generator_pb2.GenerateRequest(prompt="a"), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # the service port refuses plaintext and answers over TLS
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", creds) as ch:
            got = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert got.status == health_pb2.HealthCheckResponse.SERVING
        # SIGTERM: the probe port closes with the server
        stopper = threading.Thread(target=proc.terminate)
        stopper.start()
        stopper.join(60)
        assert health_status(f"127.0.0.1:{health_port}") is None
