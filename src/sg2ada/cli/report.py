"""`sg2ada report RUN_DIR`: a self-contained HTML summary of a training run (sg2ada.training.report):
loss, p and r_t curves, metric curves, health warnings, fakes grids over kimg, the memorisation
picture and the resolved configuration, written to RUN_DIR/report.html."""

from __future__ import annotations

from sg2ada.errors import UserError

HELP = "write one self-contained HTML page summarising a training run directory"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by sg2ada train")
    parser.add_argument("--out", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    parser.add_argument("--grids", type=int, default=4, metavar="N",
                        help="fakes grids to show, evenly spread over the run (default 4)")


def main(args) -> int:
    from sg2ada.training.report import write_report

    if args.grids < 0:
        raise UserError(f"--grids {args.grids}: must be 0 or more")
    print(write_report(args.run_dir, args.out, args.grids))
    return 0
