"""The node's log: one JSON object per line in `HOME/logs/node.log` (rotated), readable text on
the terminal, with plan ids, model ids and peers as fields to grep and filter by.

    handler = attach_file_log(home.logs_dir / LOG_FILE)     # Node.start
    log.info("pulled %s from %s", model_id, addr, extra={"model_id": model_id, "peer": addr})
    detach(handler)                                           # Node.stop

A line looks like
`{"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "node.network.view",
"msg": "peer joined: 127.0.0.1:7471", "peer": "127.0.0.1:7471", "ids": []}`: the fields named
in `FIELDS` come from `extra=`, and `ids` lists every `sha256:` id the message mentions, so a
plan or model can be followed through lines that were written without fields.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import time
from pathlib import Path
from typing import Any

LOG_FILE = "node.log"
# Rotation: a long-running node keeps at most (1 + LOG_BACKUPS) × LOG_MAX_BYTES of log.
LOG_MAX_BYTES = 10 << 20
LOG_BACKUPS = 5
# `extra=` keys that become top-level JSON fields.
FIELDS = ("plan_id", "model_id", "peer", "key_id", "kind", "state", "bytes", "seconds")
ID_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the FIELDS given, ids, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        doc: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name, "msg": msg}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        doc["ids"] = sorted(set(ID_PATTERN.findall(msg)))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def attach_file_log(path: Path, level: int = logging.INFO) -> logging.Handler:
    """Send INFO and up to a rotating JSON log at `path`, keeping the terminal as quiet as the
    user asked (its handlers keep their level; a root at WARNING is lowered to INFO for the file)."""
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                                   encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    root = logging.getLogger()
    if root.level > level or root.level == logging.NOTSET:
        for other in root.handlers:  # the console stays at the level it effectively had
            if other.level == logging.NOTSET:
                other.setLevel(root.level if root.level != logging.NOTSET else logging.WARNING)
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
