"""Batched speculative decoding across sessions (continuous batching over slot caches)."""
from .scheduler import BatchConfig, BatchedDecoder
from .slots import SlotModel, UnsupportedModelError

__all__ = ["BatchConfig", "BatchedDecoder", "SlotModel", "UnsupportedModelError"]
