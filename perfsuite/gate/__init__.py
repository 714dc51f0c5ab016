"""The regression gate: saved runs in, a per-benchmark verdict out.

``runs``      load saved pytest-benchmark runs (paths, globs, folders, storage ids)
``hardware``  the hardware fingerprint runs must share, and the software that may differ
``stability`` coefficient of variation of one benchmark in one run
``verdict``   the statistics: effect size plus a test with whole runs as the replicates
``store``     baselines on disk, one folder per hardware fingerprint
``tables``    plain and markdown rendering of a gate result
``settings``  thresholds from options and ``[tool.perfsuite.gate]``
"""
