#!/usr/bin/python3
"""Export a Detectron2 (v0.6) Faster R-CNN or Mask R-CNN to an rcnn model bundle: the command
line of ``rcnn_export.detectron2`` (run with --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rcnn_export.detectron2 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
