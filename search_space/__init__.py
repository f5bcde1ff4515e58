"""Activation families, the study-spec schema and the spec → Optuna mapping.

Torch-free at this level: `registry`, `recipes`, `spec` and `suggest` import without torch (the service
uses them). `modules`, `build`, `curves`, `fits` and `kernels` need torch (workers).
"""
