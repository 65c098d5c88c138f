"""Fuzz tests of every wire parser (issue 9 part 1); shared mutators in :mod:`.strategies`."""
