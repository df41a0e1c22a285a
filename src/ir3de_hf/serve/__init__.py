# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de serve``: an OpenAI-compatible server that routes each request to an expert, answered in-process (local
backend, micro-batched) or by OpenAI-compatible expert servers such as vLLM serving one LoRA adapter per expert.

Importing this package imports nothing heavy; `ir3de_hf.serve.app.create_app` needs FastAPI (the ``serve`` extra).
"""
