import pytest


@pytest.fixture(scope="session")
def sd3_dir(tiny_models):
    return tiny_models / "sd3"


@pytest.fixture(scope="session")
def sd3(sd3_dir):
    """The real tiny SD3.5-shaped pipeline, loaded once through the service's backend."""
    from services.generator.pipeline import Pipeline

    return Pipeline(sd3_dir, device="cpu").load()
