"""Logging: one line per record on stderr (journald adds the timestamps under systemd)."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the cynic_node loggers once; CYNIC_LOG_LEVEL or level picks the threshold."""
    chosen = (level or os.environ.get("CYNIC_LOG_LEVEL") or "info").upper()
    logger = logging.getLogger("cynic_node")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(chosen if chosen in logging.getLevelNamesMapping() else "INFO")
