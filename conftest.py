"""Root conftest: loads the perfsuite pytest plugin for tests/ and benchmarks/."""

pytest_plugins = ["perfsuite.plugin"]
