"""`trimodal`: use a trained model from the terminal.

    trimodal predict --model models/student-int8 --image car.jpg --question "what color is it?"
    trimodal predict --model models/teacher --audio clip.wav --json
    trimodal serve --model models/student-int8 --model models/teacher --port 8000
    trimodal report                      # the last evaluation, models and baselines side by side
    trimodal report --compare HEAD deepseek-vl   # two revisions / experiments per modality subset
    trimodal promote student-int8        # production only if it beats the production model (trimodal/registry.py)

Exit codes: 0 done, 2 bad input (a media file the validate stage would reject, with its reason; a missing file or
model folder; a repository not in a state to promote; a params.yaml or conf/ value of the wrong type or an unknown
key, named in one line), 1 a promotion refused (not better), or anything else.
`python -m stages.<name>` still runs each DAG stage.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trimodal.config_errors import ConfigError

BAD_INPUT = 2


class InputError(Exception):
    """Input the user can fix; printed without a traceback, exit code 2."""


def read_media(source: str, fetch_timeout: float) -> bytes:
    """A media file's bytes from a local path or a URL fsspec opens (http(s), s3, file), the URL within
    `fetch_timeout` seconds in all (like serve's --fetch-timeout; nothing read from conf/, so it works installed)."""
    from trimodal.data.fetch import Budget, fetch_one
    from trimodal.data.sources import scheme_of

    if scheme_of(source) in ("", "file"):
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise InputError(f"{source}: no such file")
        return path.read_bytes()
    fetched = fetch_one(source, Budget(fetch_timeout, fetch_timeout, retries=0, names=("--fetch-timeout",) * 2))
    if fetched.data is None:
        raise InputError(f"{source}: {fetched.error}")
    return fetched.data


def predict(args: argparse.Namespace) -> int:
    if not (args.image or args.audio or args.text):
        raise InputError("give at least one input: --image, --audio or --text")
    image, audio = (read_media(m, args.fetch_timeout) if m else None for m in (args.image, args.audio))
    # torch and transformers only now: a mistyped path is told at once, not after seconds of imports
    from transformers.utils import logging as hf_logging

    from trimodal.data.media import Rejected
    from trimodal.serving.predictor import Inputs, Predictor

    inputs = Inputs(image=image, audio=audio, text=args.text, question=args.question)
    hf_logging.disable_progress_bar()  # no "Loading weights" bar around a one-line answer
    try:
        predictor = Predictor.load(args.model, top_k=args.top_k)
    except (OSError, ValueError) as e:  # no such folder, no limits recorded, a config of no family here
        raise InputError(str(e)) from None
    try:
        sample = predictor.prepare(inputs)
    except Rejected as e:  # which file: the reason names the modality ("image truncated: ...")
        raise InputError(str(e)) from None
    [prediction] = predictor.predict([sample])
    if args.json:
        print(json.dumps(prediction.to_dict(), indent=2))
        return 0
    print(f"inputs:   {', '.join(prediction.inputs)}")
    print(f"caption:  {prediction.caption}")
    if prediction.answer is not None:
        print(f"answer:   {prediction.answer}")
    print("labels:   " + ", ".join(f"{p['label']} {p['probability']:.3f}" for p in prediction.labels))
    return 0


def report(args: argparse.Namespace) -> int:
    from trimodal.evaluation.report import compare, read_headlines, table

    metrics = args.metrics
    if metrics is None or args.compare:  # only the paths: a params.yaml of an older commit may lack newer settings
        import yaml

        if not Path("params.yaml").is_file():
            raise InputError("no params.yaml here: run from the project root, or give --metrics DIR")
        try:
            paths = yaml.safe_load(Path("params.yaml").read_text())["paths"]
        except (yaml.YAMLError, TypeError, KeyError):
            raise ConfigError("params.yaml has no readable paths section: `python -m stages.common.params write` "
                              "rewrites it from conf/") from None
        metrics = metrics or paths["metrics"]
    if args.compare:
        try:
            print(compare(args.compare, paths["details"], args.variant))
        except Exception as e:  # dvc.api: an unknown revision, or one without an evaluation
            raise InputError(f"cannot compare {' '.join(args.compare)}: {e} (revisions: git commits, branches, tags "
                             "or experiment names from `dvc exp list`, each with a committed evaluation)") from None
        return 0
    try:
        headlines = read_headlines(Path(metrics) / "eval")
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    print(table(headlines))
    return 0


def promote(args: argparse.Namespace) -> int:
    from trimodal import registry

    return registry.main([args.variant, *(["--push"] if args.push else [])])


def serve(args: argparse.Namespace) -> int:
    from trimodal.serving.server import ServerSettings, run

    settings = ServerSettings(models=[Path(m) for m in args.model], host=args.host, port=args.port,
                              max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                              max_request_bytes=int(args.max_request_mb * 2**20),
                              max_media_bytes=int(args.max_media_mb * 2**20), remote_media=not args.no_remote_media,
                              fetch_timeout_s=args.fetch_timeout)
    try:
        run(settings)
    except (FileNotFoundError, ValueError) as e:  # a model folder that cannot be served, as predict tells it
        raise InputError(str(e)) from None
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="trimodal", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)

    p = commands.add_parser("predict", help="caption, answer and labels for one input")
    p.add_argument("--model", required=True, help="a saved model folder, e.g. models/student-int8")
    p.add_argument("--image", help="image file or URL")
    p.add_argument("--audio", help="audio file or URL (wav, flac, ogg, mp3)")
    p.add_argument("--text", help="text input")
    p.add_argument("--question", help="a question about the inputs")
    p.add_argument("--top-k", type=int, default=3, help="labels to show (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--fetch-timeout", type=float, default=20.0,
                   help="seconds to fetch an --image or --audio URL, all of it (default 20)")
    p.set_defaults(run=predict)

    r = commands.add_parser("report", help="the last evaluation, models and baselines side by side")
    r.add_argument("--metrics", help="the metrics folder (default: params.yaml's paths.metrics)")
    r.add_argument("--compare", nargs="+", metavar="REV",
                   help="git revisions or DVC experiment names: their evaluations per modality subset, side by side "
                        "(e.g. HEAD and an experiment run with -S model=deepseek_vl)")
    r.add_argument("--variant", default="teacher", help="with --compare: teacher, student or student-int8")
    r.set_defaults(run=report)

    g = commands.add_parser("promote", help="make HEAD's model production if it beats production on the test split")
    g.add_argument("variant", nargs="?", default="student-int8", help="teacher, student or student-int8")
    g.add_argument("--push", action="store_true", help="push the new GTO tags to origin")
    g.set_defaults(run=promote)

    s = commands.add_parser("serve", help="OpenAI-compatible HTTP server and demo page")
    s.add_argument("--model", action="append", required=True,
                   help="a saved model folder; repeat to serve several (the folder name is the model id)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch-size", type=int, default=16, help="requests batched into one forward pass")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch")
    s.add_argument("--max-request-mb", type=float, default=32, help="largest request body, media included")
    s.add_argument("--max-media-mb", type=float, default=16, help="largest single image or sound")
    s.add_argument("--fetch-timeout", type=float, default=20.0,
                   help="seconds to fetch an http(s) image_url, all of it (default 20)")
    s.add_argument("--no-remote-media", action="store_true", help="refuse http(s) image URLs (data: URLs only)")
    s.set_defaults(run=serve)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (InputError, ConfigError) as e:
        print(f"trimodal {args.command}: {e}", file=sys.stderr)
        return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
