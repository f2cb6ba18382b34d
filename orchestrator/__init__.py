"""The orchestrator service: dialog rounds over the generator, refiner and retriever; sessions."""
