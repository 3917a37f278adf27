"""Training: data preparation, the learning-rate schedule, the loop, and DDP plumbing."""
