"""perfsuite: performance and numerical-parity suite for deep-learning inference.

The pieces, in the order data flows through them:

- ``models``      build a torchvision model with pretrained, local or deterministic random weights
- ``images``      fixture images -> normalized input batch (the report's preprocessing)
- ``backends``    one runner per inference backend (eager, onnxruntime, ...), with a lifecycle
- ``timing``      synchronized latency measurement (CUDA events / synchronize before the clock)
- ``tolerances``  how far each precision may stray from the fp32 reference, and why
- ``comparator``  parity statistics of a backend's outputs against the reference
- ``results``     the versioned ``extra_info`` schema every benchmark row carries
- ``plugin``      the pytest plugin tying it together; ``cli`` the ``perfsuite`` command
"""

__version__ = "0.1.0"
