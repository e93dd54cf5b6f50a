"""tailgym: tail-latency research for LLM-serving schedulers."""
__version__ = "0.1.0"
