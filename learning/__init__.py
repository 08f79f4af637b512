"""The SLM learns from the LLM: LoRA adapters trained on verified decisions (``tierflow learn``),
measured against the base SLM on decisions they never saw, and promoted only on evidence."""
