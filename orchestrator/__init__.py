"""The orchestrator: dialog rounds over the generator, refiner and retriever; sessions; evaluation."""
