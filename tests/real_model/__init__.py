"""The real-model tier: lmgate in front of llama.cpp's own server running a tiny chat model.

The emulator proves the protocol; this tier proves the gateway against real generation,
driven by the official SDKs. One module per concern: injection, streaming, disconnects,
embeddings, the Anthropic surface, the queue, two servers behind one gateway. Usage and
tokens/s metrics, and capability detection against a plain OpenAI-compatible upstream,
belong in modules of their own here
(`test_usage_metrics.py`, `test_capabilities.py`) as those features land.

Every test collected here is marked `real_model` (`pytest -m "not real_model"` leaves the
tier out). The engine installs on first use into a cache directory (see `engine.py`).
"""
