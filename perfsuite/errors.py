"""Errors the suite raises: each names what went wrong and where.

Four kinds, and what the test run makes of them:

- :class:`InputError`: a file, option or value given to the suite is unusable (exit 2 in the CLI).
- :class:`BackendUnavailable`: this *environment* cannot run a backend: a package is missing, there
  is no GPU, the runtime does not support this GPU's compute capability, a provider is missing or
  has no kernel for the dtype. The only error that becomes a skip.
- :class:`BrokenEnvironment`: packages the suite itself needs (torch, torchvision) are installed but
  do not work together; nothing can run (exit 2 in the CLI, a usage error in pytest).
- :class:`BackendError`: the backend was tried and broke (a parse, build, session or execution
  failure). It fails the test with the library's own message.
"""

from __future__ import annotations


class PerfsuiteError(Exception):
    """Base class; the CLI prints these without a traceback."""


class InputError(PerfsuiteError, ValueError):
    """A file, option or value given to the suite is unusable."""


class WeightsError(InputError):
    """Model weights cannot be had or do not fit the model."""


class BrokenEnvironment(PerfsuiteError):
    """The suite's own dependencies are installed but broken; the message names the versions and the fix."""


class BackendUnavailable(PerfsuiteError):
    """A backend cannot run in this environment; the message says why and what to install."""


class BackendError(PerfsuiteError):
    """A backend was tried and failed; the message carries the library's own words."""
