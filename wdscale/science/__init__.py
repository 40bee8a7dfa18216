"""Floor 4, the science on records: analysis, verdicts, the measured law, regimes, reports, the study engine
(``study``), the lambda-exponent scan, the gallery, Kosson's balance, checkpoints (``inspect``) and the coordinate
check.  Imports ``training``, ``models`` and ``core``.
"""
