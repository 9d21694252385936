"""Offline evaluation: Inception FID/KID/IS through torch-fidelity from local weights, IS with a dataset classifier,
R-precision, CLIP score, shapes attribute accuracy, named protocols with JSONL provenance, and Markdown reports.

Modules: `inception` (weights, extractor), `metrics` (FID/IS/KID maths), `fid_stats` (.npz statistics and the
real-set cache), `rprecision`, `clip_score`, `classifier` and `train_classifier`, `protocols` (`run_protocols`),
`report` (`write_report`, `save_caption_grid`), `evaluate` (command line).
"""
