"""Checkpoint formats: Hugging Face folders in compressed-tensors format (`hf`) and qtriton's
safetensors files (`serialization`)."""
