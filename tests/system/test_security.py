"""Security of a running stack: TLS and mutual TLS between the orchestrator and its backends (test
PKI made here with `cryptography`), plaintext refused where TLS is required, bearer-token auth
on the orchestrator, and no secret, server path or traceback in any error message."""

from __future__ import annotations

import sys

import grpc
import pytest

from genir.v1 import generator_pb2, orchestrator_pb2, orchestrator_pb2_grpc, retriever_pb2
from testkit.procs import Proc, free_port, grpcurl, health_status, proc_env, sample_sum, scrape
from tests.system.badinput import Outcome, via_bytes, via_grpcurl
from tests.system.certs import make_pki
from tests.system.conftest import make_world, start_stack

pytestmark = pytest.mark.timeout(600)

ORC = "genir.v1.Orchestrator"
LEAK_MARKERS = ("Traceback", 'File "', "/work/", "/tmp/", ".pem", ".key")

# One call per orchestrator method, valid apart from the missing/wrong token.
ORCH_CALLS = [("CreateSession", {"query": "a red ball"}, ""), ("NextRound", {"session_id": "f" * 32, "query": "x"}, ""),
              ("GetSession", {"session_id": "f" * 32}, ""), ("DeleteSession", {"session_id": "f" * 32}, ""),
              ("GetImage", {"ref": "a" * 64 + ".png"}, ""), ("RunDialog", {"target_id": "1"}, "response")]


def assert_no_leak(out: Outcome, secrets: list[str]):
    leaked = [s for s in secrets if s and s in out.message] + [m for m in LEAK_MARKERS if m in out.message]
    assert not leaked, f"message leaks {leaked}: {out.message!r}"


# ---------------------------------------------------------------------- token auth (the shared hardened stack)
@pytest.mark.parametrize("method,data,streaming", ORCH_CALLS, ids=[c[0] for c in ORCH_CALLS])
def test_token_required_on_every_method(hardened, method, data, streaming):
    target = hardened.stack.target("orchestrator")
    missing = via_grpcurl(target, f"{ORC}/{method}", data)
    assert missing.code == "UNAUTHENTICATED", missing
    assert "authorization: metadata 'authorization: Bearer <token>' is required" in missing.message
    wrong = via_grpcurl(target, f"{ORC}/{method}", data, headers=["authorization: Bearer guess-" + "x" * 20])
    assert wrong.code == "UNAUTHENTICATED", wrong
    assert "missing or wrong bearer token" in wrong.message and "guess-" not in wrong.message
    for out in (missing, wrong):
        assert_no_leak(out, hardened.secrets())


def test_token_scheme_prefix_and_raw_calls(hardened):
    target = hardened.stack.target("orchestrator")
    token = hardened.token
    cases = {"Basic scheme": [("authorization", f"Basic {token}")],
             "token without scheme": [("authorization", token)],
             "token prefix": [("authorization", f"Bearer {token[:-1]}")],
             "token with suffix": [("authorization", f"Bearer {token}x")]}
    req = orchestrator_pb2.GetSessionRequest(session_id="f" * 32)
    for name, md in cases.items():
        out = via_bytes(target, f"{ORC}/GetSession", req, metadata=md)
        assert out.code == "UNAUTHENTICATED", (name, out)
        assert_no_leak(out, hardened.secrets())
    # The right token gets past auth: the unknown session is then NOT_FOUND.
    ok = via_bytes(target, f"{ORC}/GetSession", req, metadata=[("authorization", f"bearer {token}")])
    assert ok.code == "NOT_FOUND" and "session_id" in ok.message, ok


def test_health_and_reflection_stay_open_without_token(hardened):
    target = hardened.stack.target("orchestrator")
    assert health_status(target) == 1
    listed = grpcurl(target, "list")
    assert listed.returncode == 0 and ORC in listed.stdout, listed.stderr


def test_missing_corpus_image_error_names_no_server_path(hardened):
    """A corpus image that vanished from disk: FAILED_PRECONDITION naming the corpus id and the
    relative path, never the absolute --image-root path."""
    world = hardened.world
    rel = world.corpus.read_text().split('"')[1 + 2 * 11]  # corpus id 11 (the last one)
    (world.image_root / rel).unlink()
    out = via_grpcurl(hardened.stack.target("orchestrator"), f"{ORC}/RunDialog", {"target_id": "11"},
                      headers=[f"authorization: Bearer {hardened.token}"])
    assert out.code == "FAILED_PRECONDITION", out
    assert "target 11" in out.message and rel in out.message, out.message
    assert_no_leak(out, hardened.secrets())


# ---------------------------------------------------------------------- TLS / mTLS stack
class TlsWorld:
    def __init__(self, stack, pki, world):
        self.stack, self.pki, self.world = stack, pki, world

    def creds(self, ca=None, cert=None, key=None):
        read = lambda p: p.read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(ca or self.pki.ca), read(key), read(cert))

    def client(self):
        return self.creds(self.pki.ca, self.pki.client_cert, self.pki.client_key)

    def secrets(self):
        p = self.pki
        return [str(p.ca.parent), str(self.stack.workdir), str(self.stack.models), str(self.world.image_root)]


@pytest.fixture(scope="module")
def tls(tiny_models, tmp_path_factory):
    """Generator: TLS. Retriever and refiner: mutual TLS (client certificate from the test CA
    required). Orchestrator: TLS towards its own clients, and TLS + client certificate towards
    every backend. Triton stays on loopback plaintext (the refiner's --client-tls-* would cover it)."""
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    world = make_world(root, n_images=8, seed=3)
    server = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key]
    mutual = server + ["--tls-client-ca", pki.ca]
    client = ["--client-tls-ca", pki.ca, "--client-tls-cert", pki.client_cert, "--client-tls-key", pki.client_key]
    as_client = (str(pki.ca), str(pki.client_cert), str(pki.client_key))
    stack = start_stack(tiny_models, world, root / "stack", "tls",
                        extra_args={"generator": server, "retriever": mutual, "refiner": mutual},
                        orchestrator_args=client + server + ["--retry-attempts", 2],
                        health_tls={"generator": (str(pki.ca), None, None), "retriever": as_client,
                                    "refiner": as_client, "orchestrator": (str(pki.ca), None, None)})
    try:
        yield TlsWorld(stack, pki, world)
    finally:
        codes = stack.stop()
        assert all(c == 0 for c in codes.values()), codes


def test_dialog_through_tls_and_mtls(tls):
    stack = tls.stack
    with grpc.secure_channel(stack.target("orchestrator"), tls.creds()) as ch:
        rounds = list(orchestrator_pb2_grpc.OrchestratorStub(ch).RunDialog(
            orchestrator_pb2.RunDialogRequest(target_id="2", rounds=1,
                                              options=orchestrator_pb2.SessionOptions(top_k=4, seed=3)), timeout=120))
    assert [r.index for r in rounds] == [0, 1]
    assert all(len(r.hits) == 4 and r.HasField("target_rank") and r.generated.data for r in rounds)
    # The backends only listen with TLS, and they did the work.
    for svc, method in (("generator", "Generate"), ("retriever", "Search"), ("refiner", "Caption"),
                        ("refiner", "Refine")):
        assert sample_sum(scrape(stack.metrics_port(svc)), "grpc_server_handled_total", grpc_method=method,
                          grpc_code="OK") >= 1, (svc, method)


@pytest.mark.parametrize("name,method,req", [
    ("generator", "genir.v1.Generator/Info", generator_pb2.InfoRequest()),
    ("retriever", "genir.v1.Retriever/CollectionInfo", retriever_pb2.CollectionInfoRequest(collection="tls")),
    ("refiner", "genir.v1.Refiner/Refine", b""),
    ("orchestrator", f"{ORC}/GetSession", orchestrator_pb2.GetSessionRequest(session_id="f" * 32)),
])
def test_plaintext_refused_by_tls_servers(tls, name, method, req):
    target = tls.stack.target(name)
    assert health_status(target) is None, f"{name} answered a plaintext health check"
    out = via_bytes(target, method, req, timeout=5)
    assert out.code == "UNAVAILABLE", (name, out)
    cli = grpcurl(target, method, data={}, timeout=3)
    assert cli.returncode != 0 and "OK" not in cli.stdout, (name, cli.stdout, cli.stderr)


def test_mtls_backends_refuse_clients_without_a_trusted_certificate(tls):
    pki = tls.pki
    req = retriever_pb2.CollectionInfoRequest(collection="tls")
    for name in ("retriever", "refiner"):
        target = tls.stack.target(name)
        method = "genir.v1.Retriever/CollectionInfo" if name == "retriever" else "genir.v1.Refiner/Refine"
        payload = req if name == "retriever" else b""
        no_cert = via_bytes(target, method, payload, timeout=10, credentials=tls.creds())
        assert no_cert.code == "UNAVAILABLE", (name, no_cert)
        rogue = via_bytes(target, method, payload, timeout=10,
                          credentials=tls.creds(pki.ca, pki.rogue_client_cert, pki.rogue_client_key))
        assert rogue.code == "UNAVAILABLE", (name, rogue)
        good = via_bytes(target, method, payload, timeout=30, credentials=tls.client())
        # past the handshake the request itself is judged (Refine with no caption is INVALID_ARGUMENT)
        assert good.code == ("OK" if name == "retriever" else "INVALID_ARGUMENT"), (name, good)
    # The TLS-only generator takes a client without a certificate.
    assert via_bytes(tls.stack.target("generator"), "genir.v1.Generator/Info", generator_pb2.InfoRequest(),
                     credentials=tls.creds()).code == "OK"


def test_client_refuses_a_server_its_ca_does_not_trust(tls):
    pki = tls.pki
    for name in ("generator", "orchestrator"):
        out = via_bytes(tls.stack.target(name), "genir.v1.Generator/Info" if name == "generator" else
                        f"{ORC}/GetSession", b"", timeout=10,
                        credentials=tls.creds(pki.rogue_ca, pki.client_cert, pki.client_key))
        assert out.code == "UNAVAILABLE", (name, out)


@pytest.mark.slow
def test_orchestrator_without_client_tls_cannot_use_tls_backends(tls, tmp_path):
    """An orchestrator started without --client-tls-* gets nowhere with TLS backends, and says so
    without leaking paths."""
    stack = tls.stack
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "genir.cli", "serve", "orchestrator", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", mport, "--generator", stack.target("generator"), "--refiner", stack.target("refiner"),
           "--retriever", stack.target("retriever"), "--collection", "tls", "--db", tmp_path / "s.sqlite",
           "--corpus", tls.world.corpus, "--image-root", tls.world.image_root, "--retry-attempts", 1]
    proc = Proc(cmd, tmp_path / "orch.log", env=proc_env()).start()
    try:
        proc.wait_healthy(port, timeout=120)
        out = via_bytes(f"127.0.0.1:{port}", f"{ORC}/RunDialog", orchestrator_pb2.RunDialogRequest(target_id="1"),
                        streaming="response", timeout=60)
        assert out.code == "UNAVAILABLE", out
        # the first backend a dialog needs (the retriever, for the corpus check) is named
        assert "retriever" in out.message.lower() or "refiner" in out.message.lower(), out.message
        assert_no_leak(out, tls.secrets())
    finally:
        assert proc.terminate() == 0, proc.log()[-3000:]
