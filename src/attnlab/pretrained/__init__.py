"""Real pretrained models loaded into attnlab's own model code, offline, from registry packages.

``minilm``: all-MiniLM-L6-v2 sentence embeddings (encoder-only); ``smollm2``: SmolLM2-135M-Instruct
(decoder-only, from a 4-bit GGUF file). The catalogue (``attnlab.catalog``, one floor up) lists both,
so ``attnlab.load("minilm")`` works; these modules never import it.
"""
