"""predict_mosaic: a PyTorch model over mosaic stores, seamless and block by block.

request -> plan (stores described, model fetched and checked, one probe
forward pass, blocks in checkerboard phases) -> block (the work of an
infer-block task: read, run patches, merge, write) with scratch (predictions
shared between neighbouring blocks). model_check refuses unsafe model files;
model fetches, loads and runs them; patches is the global patch grid.
"""
