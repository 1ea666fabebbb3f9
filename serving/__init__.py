"""Serving: vLLM engine lifecycle and local model materialization."""
