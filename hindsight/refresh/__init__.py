"""Refreshing the model on the user's own outcomes: a trainable copy of the embedded GGUF, LoRA adapters
written back as GGUF for llama.cpp, and a registry of promoted adapters the server loads."""
