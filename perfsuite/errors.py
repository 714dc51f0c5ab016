"""Errors the suite raises for bad input: each names the input and says what is wrong."""

from __future__ import annotations


class PerfsuiteError(Exception):
    """Base class; the CLI prints these without a traceback."""


class InputError(PerfsuiteError, ValueError):
    """A file, option or value given to the suite is unusable."""


class WeightsError(InputError):
    """Model weights cannot be had or do not fit the model."""


class BackendUnavailable(PerfsuiteError):
    """A backend cannot run here; the message says why and what to install."""
