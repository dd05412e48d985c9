"""Generating SDKs from openapi/openapi.yaml (used by tests/e2e/test_generated_sdks.py)."""
