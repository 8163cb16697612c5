"""Model-family and agent-framework adapters, installed as ``voicestream.adapters``.

The folder lives at the top of the repository (``adapters/``) and is mapped into the
distribution by pyproject's force-include, so nothing imports a top-level ``adapters``.
"""
