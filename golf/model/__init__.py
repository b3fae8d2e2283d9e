"""The network: ModelConfig + GPT (gpt) and the frontier stack's config-free pieces (layers)."""
