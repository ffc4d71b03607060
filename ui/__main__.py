"""Start the chat UI.

    python -m ui [--host 127.0.0.1] [--port 7860] [--model bundled] [--device cpu]
"""

from __future__ import annotations

import argparse
import os

from assistant.config import AssistantConfig


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ui", description="Gradio chat over the assistant")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")))
    p.add_argument("--model", default="bundled")
    p.add_argument("--embedder", default="bundled")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    from index.quiet import quiet_libraries
    from ui.app import AssistantPool, build_demo

    quiet_libraries()
    pool = AssistantPool(AssistantConfig(model=args.model, embedder=args.embedder, device=args.device))
    build_demo(pool).queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
