"""Checkpoints (safetensors, atomic), weight maps to and from other formats, the model catalogue."""
