"""``python -m rasterflow.view [--port N] [--config FILE]``: the viewer in this process (the background
viewer of ``rasterflow.services`` runs this)."""

from __future__ import annotations

import argparse

from ..config import load_config
from . import LOOPBACK, serve

parser = argparse.ArgumentParser(prog="python -m rasterflow.view")
parser.add_argument("--host", default=LOOPBACK)
parser.add_argument("--port", type=int)
parser.add_argument("--config")
arguments = parser.parse_args()
serve(load_config(arguments.config), arguments.host, arguments.port)
