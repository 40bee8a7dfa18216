"""Floor 1, the rules and the maths: the rule table and param_groups (the whole muP parametrization), the theory's
formulas, sigma_top by block Krylov, one atomic save, the error classes, the thread policy.  Imports nothing of
wdscale.
"""
