#!/usr/bin/python3
"""Export a torchvision Faster R-CNN or Mask R-CNN to an rcnn model bundle: the command line of
``rcnn_export.torchvision`` (run with --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rcnn_export.torchvision import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
