"""Floor 2, the models and their data: the synthetic core, the Transformer, the vmapped ensemble, corpora, RunConfig,
the preset designs, and ``own/`` (your model file).  Imports only ``core``.
"""
