"""Floor 3, training and storage: a width's ensemble (train), grids of them (sweep, Ray), the run store, FLOP counts
and ETAs (cost), and SpectralMonitor for your own loop.  Imports ``models`` and ``core``.
"""
