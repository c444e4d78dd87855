"""The model: a Qwen3/Llama-style decoder, its loader, tokenizer and the embedded tiny models."""
