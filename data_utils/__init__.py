"""The jobs of `datasets.py`, one module each: layouts and metadata, images, captions, random draws, the dataset,
batches. `datasets` is the public entry module and re-exports them."""
