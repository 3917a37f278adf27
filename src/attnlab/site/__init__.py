"""The classroom edition: the walkthrough as a static site (``attnlab site OUT``) with models run in the browser."""
