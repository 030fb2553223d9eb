"""Exporters that turn a Faster / Mask R-CNN into an rcnn model bundle (format v1).

``core`` is framework-neutral: tracing, traced-vs-eager checks, the model.json writer and
the command-line options shared by every exporter. The framework adapters sit beside it:
``torchvision`` (torchvision's detection models) and ``detectron2`` (Detectron2 v0.6 configs).
Their command lines are ``tools/export_torchvision.py`` and ``tools/export_detectron2.py``.
"""
