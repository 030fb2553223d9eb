"""Exporters that turn a Faster R-CNN model into an rcnn model bundle (format v1).

``core`` is framework-neutral: tracing, traced-vs-eager checks, the model.json writer and
the command-line options shared by every exporter. The framework adapters live next to
this package: ``tools/export_torchvision.py`` and ``tools/export_detectron2.py``.
"""
