"""Start the chat UI (`make run`), or look after the users file of pilot logins.

    python -m ui [--host 127.0.0.1] [--port 7860] [--model bundled] [--users FILE] [--no-upload] [--no-feedback]
    python -m ui --users users.txt --admin alice          # alice approves uploads in the UI
    python -m ui --users users.txt --security session_idle_minutes=15 --security lockout_minutes=30
    python -m ui --shared-uploads --upload-limit max_pages=300
    python -m ui hash-password            # asks for a name and password, prints "name:$scrypt$ln=15,r=8,p=1$..."
    python -m ui rehash-users users.txt   # rewrites passwords written in clear as scrypt hashes
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from assistant.__main__ import (
    AUDIT_URL_HELP,
    add_backend_args,
    add_context_encoder_arg,
    add_evidence_encoder_arg,
    add_intent_mode_arg,
    add_settings_arg,
)
from assistant.config import AssistantConfig
from assistant.packs import available_packs


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in {"0", "false", "no", "off", ""}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ui", description="Gradio chat over the assistant",
        epilog="other commands: `python -m ui hash-password` prints a users-file line for a password; "
               "`python -m ui rehash-users FILE` rewrites a users file's clear passwords as scrypt hashes")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")))
    p.add_argument("--domain", default=None, help="domain shown first (bank, hospital or a pack folder; "
                                                  "default: bank)")
    p.add_argument("--model", default=None, help="LLM (default: bundled, or $RA_MODEL)")
    p.add_argument("--embedder", default=None, help="embedder (default: bundled, or $RA_EMBEDDER)")
    p.add_argument("--device", default=None)
    add_backend_args(p)  # --backend, --base-url, --timeout, --retries, --gguf-quant: as `python -m assistant`
    add_intent_mode_arg(p)
    add_evidence_encoder_arg(p)
    add_context_encoder_arg(p)
    p.add_argument("--audit-url", default=None, help=AUDIT_URL_HELP)
    p.add_argument("--adapter", action="append", default=[],
                   help="a fine-tuned adapter directory to offer in settings (repeatable); adapters under "
                        "DATA_DIR/adapters are found by themselves")
    add_settings_arg(p)
    p.add_argument("--grounding", default=None,
                   help="grounding-check weights from `python -m assistant fit-grounding` (an adapter's own "
                        "grounding.json is used with it by itself)")
    p.add_argument("--users", default=None,
                   help="users file for pilot logins (also RA_UI_USERS_FILE, or RA_UI_USERS='name:HASH,...'); "
                        "lines from `python -m ui hash-password`")
    p.add_argument("--security", action="append", default=[], metavar="NAME=VALUE",
                   help="login throttling, session lifetimes and framing, e.g. session_idle_minutes=15, "
                        "lockout_after=10, frame_ancestors='https://huggingface.co', proxy_hops=1 (fields of "
                        "ui/guard.py GuardSettings; repeatable; also RA_UI_SECURITY='NAME=VALUE,...')")
    p.add_argument("--no-upload", action="store_true", help="hide document upload (also RA_UI_UPLOAD=0)")
    p.add_argument("--no-feedback", action="store_true", help="hide thumbs and comments (also RA_UI_FEEDBACK=0)")
    p.add_argument("--admin", action="append", default=None,
                   help="a login name that may approve or reject uploads in the UI (repeatable; also "
                        "RA_UI_ADMINS='alice,bob'); `python -m index approve` works without one")
    p.add_argument("--shared-uploads", action="store_true",
                   help="uploads join the shared index at once, as before approvals existed (also "
                        "RA_UI_SHARED_UPLOADS=1); by default they are private to the uploading session until "
                        "an administrator approves them")
    p.add_argument("--upload-limit", action="append", default=[], metavar="NAME=VALUE",
                   help="what one uploaded file may cost to read, e.g. max_pages=300 or max_memory_bytes=1GB "
                        "(fields of index/limits.py IngestLimits; repeatable)")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("RA_UI_CONCURRENCY", "4")),
                   help="requests worked on at once (default 4)")
    p.add_argument("--max-queue", type=int, default=int(os.environ.get("RA_UI_MAX_QUEUE", "64")),
                   help="requests allowed to wait; more are refused as busy (default 64)")
    p.add_argument("--no-warm-up", action="store_true", help="do not load the models before serving")
    return p


def hash_password_command() -> int:
    """Ask for a name and a password (twice); print the users-file line."""
    from ui.auth import hash_password

    name = input("user name: ").strip()
    if not name or ":" in name:
        print("error: a user name is not empty and holds no ':'", file=sys.stderr)
        return 2
    password = getpass.getpass("password: ")
    if not password or getpass.getpass("again: ") != password:
        print("error: the two passwords differ (or are empty): nothing printed", file=sys.stderr)
        return 2
    print(f"{name}:{hash_password(password)}")
    return 0


def rehash_users_command(argv: list[str]) -> int:
    """Rewrite the clear passwords of a users file as scrypt hashes; say what is left."""
    from ui.auth import UsersError, rehash_file

    p = argparse.ArgumentParser(prog="python -m ui rehash-users",
                                description="rewrite passwords written in clear as scrypt hashes, in place")
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        report = rehash_file(args.file)
    except UsersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: {len(report.rehashed)} password(s) written in clear now scrypt hashes"
          + (f" ({', '.join(report.rehashed)})" if report.rehashed else ""))
    if report.left:
        print(f"{len(report.left)} unsalted SHA-256 line(s) left ({', '.join(report.left)}): a digest cannot be "
              "rehashed without the password. Each is rewritten as scrypt at that user's next login while the "
              "server can write this file; or replace it with a line from `python -m ui hash-password`.")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hash-password"]:
        return hash_password_command()
    if argv[:1] == ["rehash-users"]:
        return rehash_users_command(argv[1:])
    args = parser().parse_args(argv)
    if args.concurrency < 1 or args.max_queue < 1:
        print("error: --concurrency and --max-queue must be at least 1", file=sys.stderr)
        return 2
    from index.errors import UserError
    from index.quiet import quiet_libraries
    from ui.auth import load_users
    from ui.guard import GuardSettings, guarded_launch, login_audit

    quiet_libraries()
    try:
        users = load_users(args.users)
        security = GuardSettings.parse(os.environ.get("RA_UI_SECURITY", "").split(",") + args.security)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in users.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    from index.limits import IngestLimits
    from index.uploads import UploadSettings
    from ui.app import CSS, AssistantPool, UIConfig, build_demo, find_adapters

    try:
        base = AssistantConfig.load(args.settings, domain=args.domain, model=args.model, embedder=args.embedder,
                                    device=args.device, backend=args.backend, grounding=args.grounding,
                                    base_url=args.base_url, audit_url=args.audit_url,
                                    request_timeout=args.request_timeout, retries=args.retries,
                                    gguf_quant=args.gguf_quant, intent_mode=args.intent_mode,
                                    evidence_encoder=args.evidence_encoder, context_encoder=args.context_encoder)
        pool = AssistantPool(base)
        admins = args.admin or [a.strip() for a in os.environ.get("RA_UI_ADMINS", "").split(",") if a.strip()]
        uploads = UploadSettings(private=not (args.shared_uploads or _flag("RA_UI_SHARED_UPLOADS", False)),
                                 limits=IngestLimits.parse(args.upload_limit))
        ui = UIConfig(upload=not args.no_upload and _flag("RA_UI_UPLOAD", True),
                      feedback=not args.no_feedback and _flag("RA_UI_FEEDBACK", True),
                      concurrency=args.concurrency, max_queue=args.max_queue,
                      adapters=find_adapters(base.data_dir, args.adapter), uploads=uploads, admins=admins,
                      logout=bool(users))
        if admins and not users:
            print("warning: --admin has no effect without logins (--users): approve with `python -m index approve`",
                  file=sys.stderr)
        if not args.no_warm_up:  # load the index, classifier and LLM now: the first question is then fast
            _ = pool.get(base.domain).generator
            pool.warm([d for d in available_packs() if d != base.domain])  # the others while serving
        demo = build_demo(pool, ui)
    except (UserError, OSError) as exc:  # anything else is a bug: it ends with its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    guarded = guarded_launch(security, users, login_audit(base.audit_target) if users else None)
    print(f"serving on http://{args.host}:{args.port}" + (f" ({len(users)} user(s) may log in)" if users else ""),
          flush=True)
    demo.launch(server_name=args.host, server_port=args.port, css=CSS,
                auth_message="Log in with the account your pilot team gave you." if users else None,
                max_file_size=f"{ui.max_file_mb}mb", footer_links=["api"], **guarded)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
