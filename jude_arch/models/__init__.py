"""JUDE's training model, registered in BasicSR's MODEL_REGISTRY."""
