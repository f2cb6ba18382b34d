"""The committed genir/v1 code matches what `make proto` generates from protos/ now."""

from genir import protogen


def test_generated_code_is_up_to_date(tmp_path):
    fresh = {p.name: p.read_bytes() for p in protogen.generate(tmp_path)}
    committed_dir = protogen.ROOT / "genir" / "v1"
    committed = {p.name: p.read_bytes() for p in committed_dir.glob("*_pb2*.py*")}
    assert set(fresh) == set(committed), "run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"out of date, run `make proto`: {stale}"


def test_contract_has_every_rpc():
    from genir.v1 import generator_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2

    def rpcs(mod, svc):
        return set(mod.DESCRIPTOR.services_by_name[svc].methods_by_name)

    assert rpcs(generator_pb2, "Generator") == {"Generate", "Info"}
    assert rpcs(refiner_pb2, "Refiner") == {"Caption", "Compare", "Refine", "Critique", "Info"}
    assert rpcs(retriever_pb2, "Retriever") == {"Search", "EmbedImages", "EmbedTexts", "Upsert", "CollectionInfo"}
    assert {"CreateSession", "NextRound", "GetSession", "DeleteSession", "RunDialog"} <= rpcs(orchestrator_pb2,
                                                                                             "Orchestrator")
