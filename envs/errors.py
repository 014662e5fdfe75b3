"""Exception types shared by the whole package.

Every error raised on bad user input derives from :class:`RLScanIQAError` and also from
``ValueError``, so callers can catch either; the message always names the offending file
(and line, for label files) and says what is wrong with it.
"""

from __future__ import annotations


class RLScanIQAError(Exception):
    """Base class for errors raised by rl_scaniqa on bad input."""


class ImageError(RLScanIQAError, ValueError):
    """An image file is missing, unreadable, truncated or not a usable panorama."""


class LabelError(RLScanIQAError, ValueError):
    """A label file is missing, or one of its rows is missing or malformed."""


class DatasetError(RLScanIQAError, ValueError):
    """A dataset folder does not match its expected layout."""


class CacheError(RLScanIQAError, ValueError):
    """A feature cache is stale, built with other settings, corrupt, or holds NaN features."""
